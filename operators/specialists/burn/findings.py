"""The burn specialist's own findings: per photograph depth, wound map, region, %TBSA and flags.

These types stay inside the burn specialist; `operators.specialists.burn.report` turns them into
the generic findings (`operators.messages.SpecialistFindings`) that the report, the captures and
the JSON results handle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from common.codes import Code
from common.zero_shot_tasks import ZeroShotTask
from operators.messages import ImageSource



class FlagValue(str, enum.Enum):
    """The value of a clinical flag: raised, not raised, or not decidable from the data."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BurnFlag:
    """A clinical flag of the burn specialist: its concept, its value and, in words, the inputs it used."""

    concept: Code
    value: FlagValue
    inputs: str


@dataclass(frozen=True)
class ImagedRegion:
    """The body region a photograph shows, as its header says (finding site, TBSA share, special area).

    `share_percent` is the region's share of the total body surface (None: the table has none, e.g.
    a joint) by `share_rule`; `source` names the attribute the region was read from.
    """

    name: str
    site: Code
    laterality: str
    source: str
    share_percent: float | None
    share_rule: str
    special: FlagValue
    special_reason: str


@dataclass(frozen=True)
class WoundArea:
    """The area of one wound colour class, as a percentage of the visible skin."""

    concept: Code
    name: str
    percent_of_skin: float


@dataclass(frozen=True)
class WoundMapSummary:
    """What the colour analysis measured; percentages are None when it could not measure (`note` says why)."""

    measured: bool
    note: str
    skin_percent_of_image: float | None = None
    wound_percent_of_skin: float | None = None
    classes: tuple[WoundArea, ...] = ()
    analysed_size: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class TbsaEstimate:
    """Estimated burned %TBSA (None: not estimable from this image) and how, or why not, in words."""

    percent: float | None
    method: str


@dataclass
class BurnImageFindings:
    """The burn specialist's findings for one photograph; `overlay` is the image for the Secondary Capture.

    `wound_labels` is the wound map's label array (`operators.specialists.burn.wound_colour`, on the
    reduced analysis copy of the photograph), None where the wound map measured nothing; it
    becomes the photograph's DICOM Segmentation.
    """

    source: ImageSource
    depth_probabilities: np.ndarray
    wound_map: WoundMapSummary
    region: ImagedRegion | None
    tbsa: TbsaEstimate
    flags: tuple[BurnFlag, ...]
    overlay: np.ndarray | None = None
    wound_labels: np.ndarray | None = None


@dataclass
class BurnFindings:
    """Burn findings of one series: the depth task (labels in probability order), per-photograph findings."""

    depth_task: ZeroShotTask
    images: list[BurnImageFindings]
    depth_method: str

    @staticmethod
    def top(task: ZeroShotTask, probabilities: np.ndarray) -> tuple[str, float]:
        """The most probable depth class's name and its probability."""
        index = int(np.argmax(probabilities))
        return task.labels[index].name, float(probabilities[index])


