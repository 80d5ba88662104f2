"""SeriesSelector: picks the series each named analysis applies to, by the SDK's rules format."""

from __future__ import annotations

import logging
from functools import partial

from operators.messages import OutcomeStatus, StudyHeader, StudyOutcome, StudySelection
from operators.dicom_input.selection_rules import SelectionRules, select_series
from operators.stage_operator import StudyStageOperator

logger = logging.getLogger("biomedclip_map.series_selection")


def selection_or_outcome(study: StudyHeader, rules: SelectionRules) -> StudySelection | StudyOutcome:
    """The study's selected series, or a NOTHING_SELECTED outcome (no report) with its reason."""
    selection = select_series(study, rules)
    if selection.selected:
        for line in selection.not_selected:
            logger.info("study %s, %s", study.ref, line)
        return selection
    reason = "no series to analyse: " + "; ".join(selection.not_selected) + "; no report is produced for this study"
    logger.warning("study %s: %s", study.ref, reason)
    return StudyOutcome(study_ref=study.ref, status=OutcomeStatus.NOTHING_SELECTED, reason=reason, stage="selection")


class SeriesSelectorOperator(StudyStageOperator):
    """Batch[StudyHeader] → Batch[StudySelection]."""

    def __init__(self, fragment, *args, rules: SelectionRules, **kwargs):
        super().__init__(fragment, *args, stage="selection", step=partial(selection_or_outcome, rules=rules), **kwargs)
