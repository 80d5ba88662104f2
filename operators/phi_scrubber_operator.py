"""PHIScrubber: the study's free text, scrubbed, before the SR writer uses any of it."""

from __future__ import annotations

import logging
from pathlib import Path

from operators.clinical_context import analysed_input_files, scrub_analysis
from operators.messages import StudyAnalysis
from operators.stage_operator import StudyStageOperator

logger = logging.getLogger("biomedclip_map.phi_scrubber")


class PHIScrubberOperator(StudyStageOperator):
    """Batch[StudyAnalysis] → Batch[StudyAnalysis] with `clinical_context` and `redactions` set.

    Also keeps, per study ref, the input files of the analysed instances, which the de-identified
    export (`--deid-export`) may copy after the SR writer has written the study's results.
    """

    def __init__(self, fragment, *args, clinical_context: bool = False, **kwargs):
        self.clinical_context = clinical_context
        self.analysed_inputs: dict[str, list[Path]] = {}
        super().__init__(fragment, *args, stage="phi scrubbing", step=self._scrub, **kwargs)

    def _scrub(self, analysis: StudyAnalysis) -> StudyAnalysis:
        scrubbed = scrub_analysis(analysis, clinical_context=self.clinical_context)
        self.analysed_inputs[analysis.study.ref] = analysed_input_files(analysis)
        counts = ", ".join(f"{category} {count}" for category, count in scrubbed.redactions.items()) or "none"
        logger.info("study %s: free text scrubbed (redactions: %s)", analysis.study.ref, counts)
        return scrubbed
