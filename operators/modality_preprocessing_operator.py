"""ModalityPreprocessing: turns each selected series into model-ready 224² RGB tensors."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from operators.messages import PreparedStudy, StudySelection
from operators.preprocessing import PreprocessingSettings, load_preprocessing_settings, prepare_series
from operators.stage_operator import StudyStageOperator

logger = logging.getLogger("biomedclip_map.preprocessing")


class NothingPreparedError(RuntimeError):
    """None of a study's selected series could be prepared for the model."""


def prepare_study(
    selection: StudySelection,
    settings: PreprocessingSettings,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> PreparedStudy:
    """Prepare every selected series; a series that cannot be prepared is left out with a log line.

    The study fails only if no selected series could be prepared, because a report on the series
    that did work is still useful to the reader (the report lists exactly what was evaluated).
    """
    prepared = PreparedStudy(study=selection.study)
    problems: list[str] = []
    for chosen in selection.selected:
        try:
            prepared.series.append(prepare_series(chosen, settings, mean, std, study_ref=selection.study.ref))
        except Exception as exc:  # a bad series must not hide the good ones; logged and counted
            problem = f"series {chosen.series.header.get('SeriesNumber', '?')} ({chosen.selection_name}): {exc}"
            logger.error("study %s: %s; this series is left out of the report", selection.study.ref, problem)
            problems.append(problem)
    prepared.left_out = len(problems)
    if not prepared.series:
        raise NothingPreparedError("no selected series could be prepared: " + "; ".join(problems))
    return prepared


class ModalityPreprocessingOperator(StudyStageOperator):
    """Batch[StudySelection] → Batch[PreparedStudy]."""

    def __init__(
        self,
        fragment,
        *args,
        settings_path: Path,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        **kwargs,
    ):
        settings = load_preprocessing_settings(settings_path)
        step = partial(prepare_study, settings=settings, mean=mean, std=std)
        super().__init__(fragment, *args, stage="preprocessing", step=step, **kwargs)
