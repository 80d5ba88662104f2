"""The burn specialist as the product sees it: configured by `burn.yaml`, run on burn photographs."""

from __future__ import annotations

from dataclasses import dataclass

from operators.messages import SpecialistFindings, StudyAnalysis
from operators.specialists.burn.analysis import burn_findings
from operators.specialists.burn.config import DEFAULT_BURN_CONFIG, BurnConfig, load_burn_config
from operators.specialists.burn.report import SPECIALIST_NAME, burn_specialist_findings
from operators.specialists.protocol import SpecialistKind
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer


@dataclass
class BurnSpecialist:
    """Depth, wound map, %TBSA, flags and an overlay capture for each photograph of a burn selection.

    Reuses the analyzer's backend, tokenizer and text-embedding cache for the depth classes, and
    the image embeddings the inference step computed.
    """

    config: BurnConfig
    analyzer: ZeroShotAnalyzer
    name: str = SPECIALIST_NAME

    def analyse(self, analysis: StudyAnalysis) -> SpecialistFindings | None:
        analysed = burn_findings(
            analysis,
            backend=self.analyzer.backend,
            tokenizer=self.analyzer.tokenizer,
            cache=self.analyzer.cache,
            config=self.config,
        )
        return burn_specialist_findings(analysed, analysis.model, self.config.colour) if analysed else None


BURN = SpecialistKind(
    name=SPECIALIST_NAME,
    default_config=DEFAULT_BURN_CONFIG,
    load_config=load_burn_config,
    selections=lambda config: config.selections,
    build=lambda config, analyzer: BurnSpecialist(config, analyzer),
)
