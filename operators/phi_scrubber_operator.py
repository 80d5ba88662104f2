"""PHIScrubber: the study's free text, scrubbed, before the SR writer uses any of it."""

from __future__ import annotations

import logging

from operators.phi.clinical_context import scrub_analysis
from operators.messages import StudyAnalysis
from operators.stage_operator import StudyStageOperator

logger = logging.getLogger("biomedclip_map.phi_scrubber")


class PHIScrubberOperator(StudyStageOperator):
    """Batch[StudyAnalysis] → Batch[StudyAnalysis] with its texts scrubbed, `redactions` counted and,
    when the site asks for it, the scrubbed `clinical_context` line."""

    def __init__(self, fragment, *args, clinical_context: bool = False, **kwargs):
        self.clinical_context = clinical_context
        super().__init__(fragment, *args, stage="phi scrubbing", step=self._scrub, **kwargs)

    def _scrub(self, analysis: StudyAnalysis) -> StudyAnalysis:
        scrubbed = scrub_analysis(analysis, clinical_context=self.clinical_context)
        counts = ", ".join(f"{category} {count}" for category, count in scrubbed.redactions.items()) or "none"
        logger.info("study %s: free text scrubbed (redactions: %s)", analysis.study.ref, counts)
        return scrubbed
