"""ModalityPreprocessing: turns each selected series into model-ready 224² RGB tensors."""

from __future__ import annotations

import logging
from functools import partial

from operators.messages import (
    OutcomeStatus,
    PreparedStudy,
    StudyOutcome,
    StudySelection,
)
from operators.dicom_input.pixel_data import PixelDataError
from operators.preparation.preprocessing import (
    PreprocessingError,
    PreprocessingSettings,
    prepare_series,
)
from operators.dicom_input.slice_geometry import geometry_notes
from operators.stage_operator import StudyStageOperator

logger = logging.getLogger("biomedclip_map.preprocessing")


def prepare_study(
    selection: StudySelection,
    settings: PreprocessingSettings,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> PreparedStudy | StudyOutcome:
    """Prepare every selected series; a series whose images cannot be used is left out with its reason.

    Images that cannot be used (too small, blank, unsupported or undecodable pixel data) are a
    property of the data: the series is left out with one log line and a sentence in the report, and
    a study none of whose selected series can be used ends with nothing to analyse (a
    NOTHING_SELECTED outcome, exit code 0). Any other exception is an internal error and fails the
    study (`study_batch.advance` logs it with its traceback).
    """
    prepared = PreparedStudy(study=selection.study)
    for chosen in selection.selected:
        try:
            prepared.series.append(prepare_series(chosen, settings, mean, std, study_ref=selection.study.ref))
        except (PreprocessingError, PixelDataError) as exc:
            number = chosen.series.header.get("SeriesNumber", "?")
            modality = chosen.series.modality or "no modality"
            note = f"Series {number} ({modality}, selection '{chosen.selection_name}') was left out: {exc.short}."
            logger.warning("study %s: %s", selection.study.ref, note)  # the files and details were logged above
            prepared.notes.append(note)
            prepared.left_out += 1
            continue
        volume = chosen.series.modality.strip().upper() in settings.volume_modalities and len(chosen.series.instances) > 1
        irregular = geometry_notes(chosen.series.instances) if volume else []
        if irregular:
            number = chosen.series.header.get("SeriesNumber", "?")
            note = f"Series {number} ({chosen.series.modality}) is an irregular volume: {'; '.join(irregular)}."
            logger.warning("study %s: %s", selection.study.ref, note)
            prepared.notes.append(note)
    if not prepared.series:
        reason = "none of the selected images could be used: " + " ".join(prepared.notes) + " No report is produced."
        logger.warning("study %s: nothing to analyse: %s", selection.study.ref, reason)
        return StudyOutcome(
            study_ref=selection.study.ref, status=OutcomeStatus.NOTHING_SELECTED, reason=reason, stage="preprocessing"
        )
    return prepared


class ModalityPreprocessingOperator(StudyStageOperator):
    """Batch[StudySelection] → Batch[PreparedStudy]."""

    def __init__(
        self,
        fragment,
        *args,
        settings: PreprocessingSettings,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        **kwargs,
    ):
        step = partial(prepare_study, settings=settings, mean=mean, std=std)
        super().__init__(fragment, *args, stage="preprocessing", step=step, **kwargs)
