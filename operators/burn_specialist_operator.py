"""BurnSpecialist: depth, wound map, %TBSA, flags and overlay for burn photographs; other series pass through."""

from __future__ import annotations

from functools import partial

from operators.burn_analysis import add_burn_findings
from operators.burn_config import BurnConfig
from operators.stage_operator import StudyStageOperator
from operators.zero_shot_analyzer import ZeroShotAnalyzer


class BurnSpecialistOperator(StudyStageOperator):
    """Batch[StudyAnalysis] → Batch[StudyAnalysis] with `series.burn` set on burn-photograph series.

    Reuses the analyzer's backend, tokenizer and text-embedding cache for the depth classes, and
    the image embeddings the inference step computed. The configuration was read and checked before
    the run started (`app.configuration`).
    """

    def __init__(self, fragment, *args, analyzer: ZeroShotAnalyzer, config: BurnConfig, **kwargs):
        step = partial(
            add_burn_findings,
            backend=analyzer.backend,
            tokenizer=analyzer.tokenizer,
            cache=analyzer.cache,
            config=config,
        )
        super().__init__(fragment, *args, stage="burn analysis", step=step, **kwargs)
