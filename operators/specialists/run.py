"""The step that runs every configured specialist on one study."""

from __future__ import annotations

from collections.abc import Sequence

from operators.messages import StudyAnalysis
from operators.specialists.protocol import Specialist


def add_specialist_findings(analysis: StudyAnalysis, *, specialists: Sequence[Specialist]) -> StudyAnalysis:
    """Run each specialist on the study, in order, and keep what each found (nothing: not applicable)."""
    for specialist in specialists:
        found = specialist.analyse(analysis)
        if found is not None:
            analysis.specialists.append(found)
    return analysis
