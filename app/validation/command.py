"""`biomedclip-map validate`: run the MAP's analysis on labelled studies and write the validation report.

The studies go through the same graph as a MAP run, through the one run API (`app.run.run`) with
`write_reports` off, so what is measured is exactly what the SR would report; no DICOM is
written. Exit codes: 0 the report was written; 1 it was written but some studies failed or no
labelled case got a result (the log says which); 2 nothing could start (a setting, the model,
the configuration or the labels file; the message names the file, line and column).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from app.run import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, configuration_of, run
from app.settings import RunSettings
from app.validation.cases import match_cases
from app.validation.labels import LabelsFileError, read_labels
from app.validation.metrics import MetricSettings
from app.validation.report import ValidationResult, measure_task, write_report
from common.configuration import ConfigurationError
from operators.messages import OutcomeStatus

logger = logging.getLogger("biomedclip_map.validation")

#: Seconds between two progress lines when stderr is not a terminal (a terminal gets every study).
PROGRESS_EVERY_S = 5.0
STAGE_WORDS = {"preprocessing": "reading images", "inference": "analysing"}


class ProgressLine:
    """Shows studies done / total and the time left of each slow stage on a stream (stderr).

    The run API tells it when a stage starts (0 done) and after each study; the measuring of each
    task after each set of cases (all of them, then each subgroup value). On a terminal the
    line is rewritten in place after every study; otherwise a line is written at most every
    `PROGRESS_EVERY_S` seconds, and always for the first and the last study.
    """

    def __init__(self, stream: TextIO | None = None, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started: dict[str, float] = {}
        self.last_shown = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if done == 0 or stage not in self.started:
            self.started[stage] = now
            return
        elapsed = now - self.started[stage]
        words = STAGE_WORDS.get(stage, stage)
        unit = "case sets (all, then each subgroup)" if stage.startswith("measuring") else "studies"
        if done >= total:
            line = f"validate: {words}: {done}/{total} {unit} done in {elapsed:.0f} s"
        else:
            line = f"validate: {words}: {done}/{total} {unit}, about {elapsed / done * (total - done):.0f} s left"
        terminal = self.stream.isatty()
        if not terminal and done not in (1, total) and now - self.last_shown < PROGRESS_EVERY_S:
            return
        self.last_shown = now
        self.stream.write(("\r" + line + ("\n" if done >= total else "")) if terminal else line + "\n")
        self.stream.flush()


@dataclass(frozen=True)
class ValidationRun:
    """What `validate` did: its exit code, the report files (empty when none was written) and the result."""

    exit_code: int
    written: dict[str, Path]
    result: ValidationResult | None = None


def validate(
    settings: RunSettings, labels_file: Path, report_dir: Path, metrics: MetricSettings = MetricSettings(),
    progress: ProgressLine | None = None,
) -> ValidationRun:
    """Check the labels, analyse the input folder without writing reports, measure, write the report."""
    try:
        configuration = configuration_of(settings)
        labels = read_labels(labels_file, configuration.tasks)
    except (ConfigurationError, LabelsFileError) as exc:
        logger.error("cannot start: %s", exc)
        return ValidationRun(EXIT_CANNOT_START, {})
    logger.info("labels file: %d case(s) for task(s) %s", len(labels.cases), ", ".join(labels.tasks()))
    progress = progress or ProgressLine()
    # no SR, hence no operating points: a new model or prompt set is validated before it has any
    report = run(replace(settings, write_reports=False, operating_points=None), configuration=configuration, progress=progress)
    if report.start_error is not None:
        return ValidationRun(EXIT_CANNOT_START, {})
    cases = match_cases(labels, report.analyses, settings.uid_salt)
    for case in cases.unmatched:
        logger.warning("labels file line %d (%s): no result: %s", case.line, case.task, case.reason)
    if not cases.scored:
        logger.error("no labelled case got a result: no report written (see the lines above)")
        return ValidationRun(EXIT_STUDY_FAILED, {})
    tasks = {name: measure_task(configuration.tasks.tasks[name], cases.of_task(name), metrics, progress)
             for name in labels.tasks() if cases.of_task(name)}
    result = ValidationResult(
        model=report.model, backend=report.backend, labels=labels, cases=cases, settings=metrics, tasks=tasks,
        studies_analysed=len(report.analyses),
        studies_not_analysed=len([o for o in report.outcomes if o.status is not OutcomeStatus.ANALYSED]),
    )
    written = write_report(result, report_dir)
    logger.info("validation report written: %s (%d case(s))", written["html"], len(cases.scored))
    if result.model.untrained:
        logger.warning("the model is UNTRAINED: the validation figures measure chance only")
    return ValidationRun(EXIT_OK if report.exit_code == EXIT_OK else EXIT_STUDY_FAILED, written, result)
