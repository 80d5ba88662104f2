"""A test-only specialist that adds one coded finding to every CT series it is configured for.

It is written the way a real specialist would be (its own package, its own configuration file and
schema, a `SpecialistKind`), and it is registered by one line in the test that uses it; nothing in
the SR, capture or JSON modules knows it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from common.codes import Code
from common.configuration import load_yaml_file, validate_document
from operators.sr import coding
from operators.messages import FindingGroup, FindingSummary, MeasuredValue, SpecialistFindings, StudyAnalysis
from operators.specialists.protocol import SpecialistKind
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer

TOY_SCHEME = "99BMCLIP"
TOY_METHOD = Code(TOY_SCHEME, "TOY-METHOD", "Toy specialist check")
TOY_FINDING = Code(TOY_SCHEME, "TOY-FINDING", "Toy finding present")
TOY_COUNT = Code(TOY_SCHEME, "TOY-COUNT", "Images the toy specialist looked at")
IMAGES_UNIT = Code("UCUM", "{images}", "images")
NARRATIVE = "Toy specialist: looked at the analysed images of each configured series."


class ToyConfig(BaseModel):
    """`toy.yaml`: the selections the toy specialist serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    selections: tuple[str, ...]


def load_toy_config(path: Path) -> ToyConfig:
    return validate_document(load_yaml_file(path), ToyConfig, source=path)


@dataclass
class ToySpecialist:
    config: ToyConfig
    name: str = "toy"

    def analyse(self, analysis: StudyAnalysis) -> SpecialistFindings | None:
        groups, summary = [], []
        for index, series in enumerate(analysis.series, start=1):
            if series.selection.selection_name not in self.config.selections:
                continue
            groups.append(
                FindingGroup(
                    tracking_identifier=f"#{index} Toy check",
                    method=TOY_METHOD,
                    source_images=(series.images[0].source,),
                    measurements=(MeasuredValue(TOY_COUNT, float(len(series.images)), IMAGES_UNIT),),
                    evaluations=((TOY_FINDING, coding.YES),),
                    algorithm_name="toy specialist",
                    algorithm_version="0.1",
                )
            )
            summary.append(FindingSummary(series.selection.selection_name, "toy finding present"))
        if not groups:
            return None
        return SpecialistFindings("toy", tuple(groups), (NARRATIVE,), tuple(summary))


TOY = SpecialistKind(
    name="toy",
    default_config=Path(__file__).with_name("toy.yaml"),
    load_config=load_toy_config,
    selections=lambda config: config.selections,
    build=lambda config, _analyzer: ToySpecialist(config),
)
