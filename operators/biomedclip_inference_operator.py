"""BiomedCLIPInference: zero-shot scores of every prepared series, on the configured backend."""

from __future__ import annotations

from operators.stage_operator import StudyStageOperator
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer


class BiomedCLIPInferenceOperator(StudyStageOperator):
    """Batch[PreparedStudy] → Batch[StudyAnalysis], with the model the caller opened and keeps warm."""

    def __init__(self, fragment, *args, analyzer: ZeroShotAnalyzer, **kwargs):
        super().__init__(fragment, *args, stage="inference", step=analyzer.analyse, **kwargs)
