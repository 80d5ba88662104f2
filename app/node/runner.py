"""Running the application graph on one study, with the model opened once and kept warm.

Each job runs the same MAP run as `biomedclip-map run` (`app.cli.execute_run`: the
`BiomedCLIPMapApp` graph, its outcomes and exit code) on the job's `input/` folder, writing into its
`output/` folder, with the node's one `ZeroShotAnalyzer` passed in so the model, its inference
backend and the cached text embeddings stay loaded across studies. The run's options are built
with the MAP's own argument parser, so every option a run takes (`processing.run_arguments`) works
here too.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from app.node.config import NodeConfig, NodeConfigError

logger = logging.getLogger("biomedclip_map.node.runner")

NODE_CONTROLLED = {"-i", "--input", "-o", "--output", "-m", "--model", "-w", "--workdir"}


class ModelUnavailable(RuntimeError):
    """The model (or its settings) cannot be opened; the message names the path or setting."""


@dataclass
class StudyRunResult:
    """How one run of a job ended and which DICOM files it produced."""

    status: str  # "reported", "nothing_selected", "refused" (quarantined at once) or "failed"
    reason: str = ""
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def run_parser() -> argparse.ArgumentParser:
    from app.cli import add_run_arguments

    parser = argparse.ArgumentParser(prog="biomedclip-map run", add_help=False)
    add_run_arguments(parser)
    return parser


def check_run_arguments(arguments: list[str]) -> None:
    """NodeConfigError naming `processing.run_arguments` when they are not valid MAP run options."""
    controlled = sorted({a.split("=", 1)[0] for a in arguments} & NODE_CONTROLLED)
    if controlled:
        raise NodeConfigError(
            f"processing.run_arguments: {', '.join(controlled)} are set by the node for each study; remove them"
        )
    _args, unknown = run_parser().parse_known_args(["-i", ".", *arguments])
    if unknown:
        raise NodeConfigError(f"processing.run_arguments: not options of a MAP run: {' '.join(unknown)}")


def run_argv(config: NodeConfig, input_dir: Path, output_dir: Path) -> list[str]:
    """The `biomedclip-map run` arguments of one job."""
    p = config.processing
    argv = ["-i", str(input_dir), "-o", str(output_dir), "-m", str(p.models), "-w", str(config.work_dir)]
    argv += ["-l", config.log_level]
    if p.allow_untrained:
        argv.append("--allow-untrained")
    if p.backend:
        argv += ["--backend", p.backend]
    if p.rules:
        argv += ["--rules", str(p.rules)]
    if p.tasks:
        argv += ["--tasks", str(p.tasks)]
    if p.results_json:
        argv += ["--results-json", str(p.results_json)]
    return argv + list(p.run_arguments)


def open_analyzer(config: NodeConfig, scratch: Path):
    """Open the model once for the node's lifetime; ModelUnavailable naming what to fix."""
    from app.cli import settings_from_args
    from app.settings import SettingsError
    from engines.base import BackendUnavailable
    from engines.selection import BackendConfigError
    from models.errors import ModelDirectoryError
    from operators.tasks import TaskConfigError
    from operators.zero_shot_analyzer import ZeroShotAnalyzer

    args = run_parser().parse_args(run_argv(config, scratch, scratch / "model-check-output"))
    try:
        settings = settings_from_args(args)
        return ZeroShotAnalyzer.open(settings)
    except (SettingsError, ModelDirectoryError, TaskConfigError, BackendUnavailable, BackendConfigError) as exc:
        raise ModelUnavailable(
            f"{exc} [in the node's configuration: processing.models (--models), processing.allow_untrained "
            "(--allow-untrained), processing.backend (--backend), processing.tasks]"
        ) from exc


class StudyRunner:
    """Runs jobs through the application graph with one warm analyzer."""

    def __init__(self, config: NodeConfig, analyzer):
        self.config = config
        self.analyzer = analyzer

    def run(self, folder: Path) -> StudyRunResult:
        """Analyse `folder/input` into a fresh `folder/output`; never raises for a study's failure."""
        from app.cli import EXIT_CANNOT_START, execute_run
        from operators.messages import OutcomeStatus

        input_dir, output_dir = folder / "input", folder / "output"
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir()
        args = run_parser().parse_args(run_argv(self.config, input_dir, output_dir))
        result = execute_run(args, analyzer=self.analyzer)
        files = sorted(output_dir.glob("*.dcm"))
        if result.exit_code == EXIT_CANNOT_START:
            return StudyRunResult("failed", "the run could not start (the log line before says why)", seconds=result.seconds)
        refused = [o for o in result.outcomes if o.status is OutcomeStatus.REFUSED]
        if refused:
            return StudyRunResult("refused", refused[0].reason, seconds=result.seconds)
        failed = [o for o in result.outcomes if o.status is OutcomeStatus.FAILED]
        if failed:
            first = failed[0]
            return StudyRunResult("failed", f"{first.stage}: {first.reason}" if first.stage else first.reason, seconds=result.seconds)
        if result.exit_code != 0:
            return StudyRunResult("failed", f"the run ended with exit code {result.exit_code}", seconds=result.seconds)
        if any(o.status is OutcomeStatus.REPORTED for o in result.outcomes):
            if not files:
                return StudyRunResult("failed", "the study was reported but no DICOM result was written", seconds=result.seconds)
            return StudyRunResult("reported", files=files, seconds=result.seconds)
        reason = "; ".join(o.reason for o in result.outcomes if o.reason) or "no analysable instance"
        return StudyRunResult("nothing_selected", reason, files=files, seconds=result.seconds)
