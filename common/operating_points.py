"""Site operating points: a threshold per label, chosen on a site's validation report, and the decision rule.

A site file (JSON, written by `biomedclip-map operating-points` from a validation report) holds,
per task and label, the probability threshold chosen and how (Youden's J, a target sensitivity
or a target specificity), together with what it was measured on. It is tied to exactly one model
(weights SHA-256) and one prompt set per task (`ZeroShotTask.prompt_set_sha256`):
`check_operating_points` refuses a file made for other weights or other prompts, with a message
saying which, so a run never applies thresholds measured on something else.

The decision for one label: **indeterminate** when the probability lies within `band` of the
threshold, or when the series' two most probable labels are closer than `min_top1_margin`;
otherwise **present** at or above the threshold and **absent** below it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.configuration import ConfigModel, ConfigurationError, load_config_file

FILE_KIND = "biomedclip-map operating points"
FILE_FORMAT = 1
METHODS = ("youden", "sensitivity", "specificity")


class OperatingPointsError(ConfigurationError):
    """The site's operating points cannot be used; the message names the file and what does not match."""


class Decision(str, enum.Enum):
    """What a label's probability means at the site's operating point."""

    PRESENT = "present"
    ABSENT = "absent"
    INDETERMINATE = "indeterminate"


class MethodEntry(ConfigModel):
    name: Literal["youden", "sensitivity", "specificity"]
    target: float | None = Field(default=None, gt=0, lt=1)


class IndeterminateEntry(ConfigModel):
    band: float = Field(ge=0, lt=0.5, description="half-width of the indeterminate band around each threshold")
    min_top1_margin: float = Field(ge=0, lt=1, description="below this gap between the two most probable labels, every label is indeterminate")


class ModelEntry(ConfigModel):
    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LabelPointEntry(ConfigModel):
    threshold: float = Field(ge=0, le=1)
    sensitivity: float = Field(ge=0, le=1)
    specificity: float = Field(ge=0, le=1)
    positives: int = Field(ge=1)
    negatives: int = Field(ge=1)


class TaskPointsEntry(ConfigModel):
    prompt_set_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: dict[str, LabelPointEntry]
    not_set: dict[str, str] = {}


class OperatingPointsFile(ConfigModel):
    """The site file's schema (unknown keys are refused)."""

    kind: Literal["biomedclip-map operating points"]
    format: Literal[1]
    created: str
    method: MethodEntry
    indeterminate: IndeterminateEntry
    model: ModelEntry
    validation_report_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data_set: dict[str, str | int]
    tasks: dict[str, TaskPointsEntry]


@dataclass(frozen=True)
class OperatingPoint:
    """One label's threshold and the rule around it."""

    threshold: float
    method: str
    """In words, for the report: 'Youden's J', 'target sensitivity 0.90', 'target specificity 0.95'."""
    band: float
    min_top1_margin: float

    def decide(self, probability: float, top1_margin: float) -> Decision:
        """Present, absent or indeterminate for this label's probability (see the module docstring)."""
        if abs(probability - self.threshold) < self.band or top1_margin < self.min_top1_margin:
            return Decision.INDETERMINATE
        return Decision.PRESENT if probability >= self.threshold else Decision.ABSENT


@dataclass(frozen=True)
class SiteOperatingPoints:
    """The checked site file: per task, per label, the operating point (labels without one are absent)."""

    source: Path
    model_sha256: str
    tasks: dict[str, dict[str, OperatingPoint]]
    report_sha256: str

    def for_task(self, task: str) -> dict[str, OperatingPoint]:
        return self.tasks.get(task, {})


def method_words(name: str, target: float | None) -> str:
    """The method in words, as the report names it."""
    return "Youden's J" if name == "youden" else f"target {name} {target:.2f}"


def load_operating_points(path: Path) -> OperatingPointsFile:
    """Read and check the site file's shape; OperatingPointsError names the file and key."""
    document = load_config_file(Path(path), OperatingPointsFile, error=OperatingPointsError, what="operating points file")
    if document.method.name != "youden" and document.method.target is None:
        raise OperatingPointsError(f"{path}: method.target: a target {document.method.name} is required")
    return document


def check_operating_points(path: Path, model_sha256: str, prompt_sets: dict[str, str]) -> SiteOperatingPoints:
    """The site file's operating points, refused unless made for these weights and these prompt sets.

    `prompt_sets` maps each task of the run to its `prompt_set_sha256`. A task of the file that
    the run does not have, or whose prompts differ, is refused, as are other weights.
    """
    document = load_operating_points(path)
    if document.model.sha256 != model_sha256:
        raise OperatingPointsError(
            f"{path}: made for model weights sha256 {document.model.sha256[:12]}… ({document.model.name} "
            f"{document.model.version}), but this run's model has sha256 {model_sha256[:12]}…; validate this model "
            "and choose its operating points again ('biomedclip-map validate', then 'biomedclip-map operating-points')"
        )
    tasks: dict[str, dict[str, OperatingPoint]] = {}
    for name, entry in document.tasks.items():
        if name not in prompt_sets:
            raise OperatingPointsError(f"{path}: tasks.{name}: this run has no task of that name (tasks: {', '.join(sorted(prompt_sets))})")
        if entry.prompt_set_sha256 != prompt_sets[name]:
            raise OperatingPointsError(
                f"{path}: tasks.{name}: made for another prompt set (sha256 {entry.prompt_set_sha256[:12]}…, this run's "
                f"is {prompt_sets[name][:12]}…): the task's labels, templates or descriptions changed since the "
                "validation; validate again and choose new operating points"
            )
        words = method_words(document.method.name, document.method.target)
        tasks[name] = {
            label: OperatingPoint(point.threshold, words, document.indeterminate.band, document.indeterminate.min_top1_margin)
            for label, point in entry.labels.items()
        }
    return SiteOperatingPoints(Path(path), model_sha256, tasks, document.validation_report_sha256)
