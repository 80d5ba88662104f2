"""Specialists: each registered specialist adds its findings to the studies it applies to."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from operators.specialists.protocol import Specialist
from operators.specialists.run import add_specialist_findings
from operators.stage_operator import StudyStageOperator


class SpecialistsOperator(StudyStageOperator):
    """Batch[StudyAnalysis] → Batch[StudyAnalysis] with `analysis.specialists` filled.

    The specialists were built for the run by the application (`app.specialists`) from their
    checked configurations.
    """

    def __init__(self, fragment, *args, specialists: Sequence[Specialist], **kwargs):
        step = partial(add_specialist_findings, specialists=tuple(specialists))
        super().__init__(fragment, *args, stage="specialists", step=step, **kwargs)
