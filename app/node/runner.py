"""Running the application graph on one study, with the model opened once and kept warm.

Each job runs the same MAP run as `biomedclip-map run` (`app.run.run`: the `BiomedCLIPMapApp`
graph and its typed outcomes) on the job's `input/` folder, writing into its `output/` folder, with
the node's one `ZeroShotAnalyzer` passed in so the model, its inference backend and the cached
text embeddings stay loaded across studies. The run's settings come from the node's validated
configuration (`processing.*`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from app.configuration import ProductConfiguration, load_product_configuration
from app.node.config import NodeConfig
from common.configuration import ConfigurationError
from app.run import RunReport, run, site_operating_points
from app.settings import RunSettings, SettingsError, resolve_run_settings
from operators.messages import OutcomeStatus, OutputFile
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer

logger = logging.getLogger("biomedclip_map.node.runner")


class ModelUnavailable(RuntimeError):
    """The model (or its settings) cannot be opened; the message names the path or setting."""


@dataclass
class JobResult:
    """How one run of a job ended and which DICOM files (with their identities) it produced."""

    status: OutcomeStatus
    reason: str = ""
    outputs: list[OutputFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [o.path for o in self.outputs]


def run_settings(config: NodeConfig, input_dir: Path, output_dir: Path) -> RunSettings:
    """The MAP run settings of one job, from the node's validated configuration."""
    p = config.processing
    return resolve_run_settings(
        input_path=input_dir,
        output_path=output_dir,
        models_path=p.models,
        work_dir=config.work_dir,
        allow_untrained=p.allow_untrained,
        backend=p.backend,
        results_json_dir=p.results_json,
        selection_rules=p.rules,
        tasks=p.tasks,
        audit_log=p.audit_log,
        deid_export=p.deid_export,
        deid_include_inputs=p.deid_include_inputs,
        clinical_context=p.clinical_context,
        operating_points=p.operating_points,
    )


def node_configuration(config: NodeConfig) -> ProductConfiguration:
    """The product configuration files the node's runs use (processing.rules, processing.tasks), checked."""
    p = config.processing
    defaults = RunSettings(input_path=Path("."), output_path=Path("."), models_path=p.models, work_dir=config.work_dir)
    return load_product_configuration(
        selection_rules=p.rules or defaults.selection_rules, tasks=p.tasks or defaults.tasks,
        preprocessing=defaults.preprocessing, specialist_files={"burn": defaults.burn_config},
    )


def open_analyzer(config: NodeConfig, scratch: Path, configuration: ProductConfiguration) -> ZeroShotAnalyzer:
    """Open the model once for the node's lifetime; ModelUnavailable naming what to fix.

    The site's operating points (processing.operating_points) are checked against the opened
    model and the tasks here, so a file made for other weights or prompts stops the node at start
    instead of failing every study.
    """
    from app.analyzer import open_analyzer as open_model
    from common.operating_points import OperatingPointsError
    from engines.base import BackendUnavailable
    from engines.selection import BackendConfigError
    from models.errors import ModelDirectoryError

    try:
        settings = run_settings(config, scratch, scratch / "model-check-output")
        analyzer = open_model(settings, configuration.tasks)
    except (SettingsError, ConfigurationError, ModelDirectoryError, BackendUnavailable, BackendConfigError) as exc:
        raise ModelUnavailable(
            f"{exc} [in the node's configuration: processing.models (--models), processing.allow_untrained "
            "(--allow-untrained), processing.backend (--backend), processing.tasks]"
        ) from exc
    try:
        site_operating_points(settings, analyzer, configuration)
    except OperatingPointsError as exc:
        raise ModelUnavailable(f"{exc} [in the node's configuration: processing.operating_points]") from exc
    return analyzer


def job_result(report: RunReport) -> JobResult:
    """The node's view of a run of one job (one study): reported, nothing to analyse, refused or failed."""
    if report.start_error is not None:
        return JobResult(OutcomeStatus.FAILED, f"the run could not start: {report.start_error}", seconds=report.seconds)
    if report.error is not None:
        return JobResult(OutcomeStatus.FAILED, report.error, seconds=report.seconds)
    for status in (OutcomeStatus.REFUSED, OutcomeStatus.FAILED):
        ended = report.of_status(status)
        if ended:
            first = ended[0]
            return JobResult(status, f"{first.stage}: {first.reason}" if first.stage else first.reason, seconds=report.seconds)
    reported = report.of_status(OutcomeStatus.REPORTED)
    if reported:
        # Captures before the report (file-name order), as the node has always delivered them.
        outputs = sorted((o for outcome in reported for o in outcome.outputs if o.is_dicom), key=lambda o: o.path.name)
        if not outputs:
            return JobResult(OutcomeStatus.FAILED, "the study was reported but no DICOM result was written", seconds=report.seconds)
        return JobResult(OutcomeStatus.REPORTED, outputs=outputs, seconds=report.seconds)
    reason = "; ".join(o.reason for o in report.outcomes if o.reason) or "no analysable instance"
    return JobResult(OutcomeStatus.NOTHING_SELECTED, reason, seconds=report.seconds)


class StudyRunner:
    """Runs jobs through the application graph with one warm analyzer."""

    def __init__(self, config: NodeConfig, analyzer: ZeroShotAnalyzer, configuration: ProductConfiguration):
        self.config = config
        self.analyzer = analyzer
        self.configuration = configuration

    def run(self, folder: Path) -> JobResult:
        """Analyse `folder/input` into a fresh `folder/output`; never raises for a study's failure."""
        input_dir, output_dir = folder / "input", folder / "output"
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir()
        try:
            settings = run_settings(self.config, input_dir, output_dir)
        except SettingsError as exc:
            return JobResult(OutcomeStatus.FAILED, f"the run could not start: {exc}")
        return job_result(run(settings, self.analyzer, self.configuration))
