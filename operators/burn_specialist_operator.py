"""BurnSpecialist: depth, wound map, %TBSA, flags and overlay for burn photographs; other series pass through."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from operators.burn_analysis import add_burn_findings
from operators.burn_config import DEFAULT_BURN_CONFIG, load_burn_config
from operators.stage_operator import StudyStageOperator
from operators.zero_shot_analyzer import ZeroShotAnalyzer


class BurnSpecialistOperator(StudyStageOperator):
    """Batch[StudyAnalysis] → Batch[StudyAnalysis] with `series.burn` set on burn-photograph series.

    Reuses the analyzer's backend, tokenizer and text-embedding cache for the depth classes, and
    the image embeddings the inference step computed. The configuration is read (and checked)
    when the graph is built, so a malformed file stops the run before any study is touched.
    """

    def __init__(self, fragment, *args, analyzer: ZeroShotAnalyzer, config_path: Path = DEFAULT_BURN_CONFIG, **kwargs):
        step = partial(
            add_burn_findings,
            backend=analyzer.backend,
            tokenizer=analyzer.tokenizer,
            cache=analyzer.cache,
            config=load_burn_config(config_path),
        )
        super().__init__(fragment, *args, stage="burn analysis", step=step, **kwargs)
