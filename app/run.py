"""One typed entry for a MAP run over an input folder; every front end starts a run here.

`run(settings, analyzer)` opens the model unless an open analyzer is passed (the DICOM node and the
demo keep one warm), checks the export folder, runs the graph once, records the run (de-identified
export, audit trail) and returns a `RunReport`: every study's typed `StudyOutcome`, the run's exit
code and its duration. Nothing is parsed from text and nothing leaves the graph but through the
`RunResults` the SR writer fills.

Exit codes: 0 every study was reported or had nothing to analyse (the log says why); 1 at least
one study failed internally or was refused because its instances disagree on patient identity
(the others were still processed); 2 the run could not start (a setting, the model folder or the
configuration is unusable; `RunReport.start_error` says which).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from app.configuration import ProductConfiguration, load_product_configuration
from app.log_privacy import LOG_REDACTOR
from app.settings import RunSettings, SettingsError
from common.configuration import ConfigurationError
from common.model_identity import ModelIdentity
from common.operating_points import SiteOperatingPoints, check_operating_points
from operators.messages import OutcomeStatus, RunResults, StudyAnalysis, StudyOutcome
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer
from operators.study_batch import StageProgress

EXIT_OK = 0
EXIT_STUDY_FAILED = 1
EXIT_CANNOT_START = 2

logger = logging.getLogger("biomedclip_map")


@dataclass(frozen=True)
class RunReport:
    """What one run did: each study's outcome, the exit code, how long it took, why it could not start."""

    outcomes: tuple[StudyOutcome, ...] = ()
    seconds: float = 0.0
    start_error: str | None = None
    error: str | None = None
    """Set when the run started but broke as a whole: the graph stopped, or the audit trail could not be written."""
    exported: dict[str, int] = field(default_factory=dict)
    """De-identified files written per study reference."""
    analyses: tuple[StudyAnalysis, ...] = ()
    """Each analysed study's analysis, when the run wrote no reports (`RunSettings.write_reports` False)."""
    model: ModelIdentity | None = None
    """The model the run used (None: it could not start)."""
    backend: str = ""
    """The inference backend the run used."""

    def of_status(self, status: OutcomeStatus) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.status is status]

    @property
    def exit_code(self) -> int:
        if self.start_error is not None:
            return EXIT_CANNOT_START
        if self.error is not None or self.of_status(OutcomeStatus.FAILED) or self.of_status(OutcomeStatus.REFUSED):
            return EXIT_STUDY_FAILED
        return EXIT_OK


def configuration_of(settings: RunSettings) -> ProductConfiguration:
    """The run's checked configuration files (ConfigurationError names the file and key)."""
    return load_product_configuration(
        selection_rules=settings.selection_rules, tasks=settings.tasks, preprocessing=settings.preprocessing,
        specialist_files={"burn": settings.burn_config},
    )


def site_operating_points(
    settings: RunSettings, analyzer: ZeroShotAnalyzer, configuration: ProductConfiguration
) -> SiteOperatingPoints | None:
    """The site's operating points file, checked against this run's model weights and prompt sets.

    None without a file. Raises OperatingPointsError (a ConfigurationError: the run cannot start)
    naming the file when it was made for other weights or other prompts.
    """
    if settings.operating_points is None:
        return None
    prompt_sets = {name: task.prompt_set_sha256 for name, task in configuration.tasks.tasks.items()}
    points = check_operating_points(settings.operating_points, analyzer.model.identity.sha256, prompt_sets)
    logger.info(
        "site operating points %s: %d label(s) of task(s) %s", settings.operating_points,
        sum(len(labels) for labels in points.tasks.values()), ", ".join(sorted(points.tasks)) or "none",
    )
    return points


def run(
    settings: RunSettings,
    analyzer: ZeroShotAnalyzer | None = None,
    configuration: ProductConfiguration | None = None,
    *,
    progress: StageProgress | None = None,
) -> RunReport:
    """Run the MAP once over `settings.input_path` (see the module docstring).

    A caller that keeps the model warm passes its `analyzer` and the `configuration` it was opened
    with; otherwise both are made here, and any problem with them ends the run before any study.
    `progress` is told after each study of the slow stages (site validation shows it).
    """
    from app.run_records import prepare_run_records, record_run
    from engines.base import BackendUnavailable
    from engines.selection import BackendConfigError
    from models.errors import ModelDirectoryError
    from operators.outputs.audit import AuditWriteError

    started = time.perf_counter()
    # From here on, every path below the input folder is logged as a salted reference.
    LOG_REDACTOR.start_run(settings.input_path, settings.uid_salt)
    try:
        prepare_run_records(settings)
        configuration = configuration or configuration_of(settings)
        if analyzer is None:
            from app.analyzer import open_analyzer

            analyzer = open_analyzer(settings, configuration.tasks)
        operating_points = site_operating_points(settings, analyzer, configuration)
    except (SettingsError, ConfigurationError, ModelDirectoryError, BackendUnavailable, BackendConfigError) as exc:
        logger.error("cannot start: %s", exc)
        return RunReport(seconds=time.perf_counter() - started, start_error=str(exc))

    from app.application import BiomedCLIPMapApp

    model, backend = analyzer.identity, analyzer.backend.name
    results = RunResults()
    app = BiomedCLIPMapApp(settings, analyzer, configuration, results, progress, operating_points)
    try:
        app.run()
    except Exception as exc:  # the graph itself broke (not one study): report it, with its traceback, and fail
        logger.error("the application graph stopped: %s: %s", type(exc).__name__, exc, exc_info=True)
        return RunReport(tuple(results.outcomes), time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}", model=model, backend=backend)
    outcomes = tuple(results.outcomes)
    try:
        exported = record_run(outcomes, settings, model, backend)
    except AuditWriteError as exc:
        logger.error("%s", exc)
        return RunReport(outcomes, time.perf_counter() - started, error=str(exc), model=model, backend=backend)
    report = RunReport(outcomes, time.perf_counter() - started, exported=exported, analyses=tuple(results.analyses), model=model, backend=backend)
    logger.info(
        "run finished: %d study(ies) reported, %d analysed without a report, %d with nothing to analyse, "
        "%d refused (patient identity), %d failed",
        len(report.of_status(OutcomeStatus.REPORTED)),
        len(report.of_status(OutcomeStatus.ANALYSED)),
        len(report.of_status(OutcomeStatus.NOTHING_SELECTED)),
        len(report.of_status(OutcomeStatus.REFUSED)),
        len(report.of_status(OutcomeStatus.FAILED)),
    )
    return report
