"""Per-study isolation for the stages of the graph.

Every operator applies its stage function to each study of the incoming batch through `advance`,
so that one study failing (a corrupt series, a model error) ends only that study, with a log line
and a FAILED outcome, while the others go on. Nothing is swallowed: the failure is logged with its
traceback and counted in the run's exit code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from operators.messages import Batch, OutcomeStatus, StudyHeader, StudyOutcome

S = TypeVar("S")
R = TypeVar("R")

#: Told as a stage starts and after each of its studies: (stage, studies done, studies in the batch). Front ends use it
#: to show progress (site validation prints studies done / total and the time left).
StageProgress = Callable[[str, int, int], None]


def study_of(item: object) -> StudyHeader:
    """The study an item of any stage belongs to (the loader's items are studies themselves)."""
    return item if isinstance(item, StudyHeader) else item.study  # type: ignore[attr-defined]


def advance(
    batch: Batch[S],
    stage: str,
    step: Callable[[S], R | StudyOutcome],
    logger: logging.Logger,
    progress: StageProgress | None = None,
) -> Batch[R]:
    """Apply `step` to each study of `batch`; a study that raises ends there as FAILED.

    `step` may also return a `StudyOutcome` to end a study deliberately (for example when a study
    has nothing selectable), which is carried to the end of the graph like a failure.
    `progress`, if given, is told as the stage starts (0 done) and after each study, whether it
    went on or ended.
    """
    result: Batch[R] = Batch(ended=list(batch.ended), skipped_files=list(batch.skipped_files))
    if progress is not None:
        progress(stage, 0, len(batch.items))
    for done, item in enumerate(batch.items, start=1):
        _advance_one(item, stage, step, logger, result)
        if progress is not None:
            progress(stage, done, len(batch.items))
    return result


def _advance_one(item: S, stage: str, step: Callable[[S], R | StudyOutcome], logger: logging.Logger, result: Batch[R]) -> None:
    """Apply `step` to one study, timing it, and put what came out (item or ending) into `result`."""
    study = study_of(item)
    started = time.perf_counter()
    try:
        produced = step(item)
    except Exception as exc:  # one study's failure must not stop the others
        study.timings[stage] = round(time.perf_counter() - started, 4)
        logger.error(
            "study %s failed in %s: %s: %s", study.ref, stage, type(exc).__name__, exc, exc_info=True
        )
        result.ended.append(
            StudyOutcome(
                study_ref=study.ref,
                status=OutcomeStatus.FAILED,
                reason=f"{type(exc).__name__}: {exc}",
                stage=stage,
                timings=study.timings,
            )
        )
        return
    study.timings[stage] = round(time.perf_counter() - started, 4)
    logger.debug("study %s: %s took %.3f s", study.ref, stage, study.timings[stage])
    if isinstance(produced, StudyOutcome):
        produced.timings = study.timings  # the same dict: later stages' times show in the outcome too
        result.ended.append(produced)
    else:
        result.items.append(produced)
