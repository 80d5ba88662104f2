"""Settings of ModalityPreprocessing: window presets, slice and frame sampling, resizing.

They live in `app/config/preprocessing.yaml` so that a site can change, say, the CT window or the
number of slices analysed per volume without touching Python. The defaults of these dataclasses
are the shipped values, so code and tests can use `PreprocessingSettings()` directly. They are
pydantic dataclasses: the file is checked by the schema layer (`common.configuration`), and an
error names the file and the dotted key.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator
from pydantic.dataclasses import dataclass

from common.configuration import STRICT_DATACLASS, ConfigurationError, load_config_file


class PreprocessingConfigError(ConfigurationError):
    """The preprocessing settings file is malformed; the message names the file and the key."""


def _ordered_percentiles(value: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= value[0] < value[1] <= 100:
        raise ValueError("expected two percentiles [low, high] with 0 <= low < high <= 100")
    return value


def _modality(value: str) -> str:
    if not value.strip():
        raise ValueError("a modality code such as CT must not be empty")
    return value.strip().upper()


Percentiles = Annotated[tuple[float, float], AfterValidator(_ordered_percentiles)]
Modality = Annotated[str, AfterValidator(_modality)]


@dataclass(frozen=True, config=STRICT_DATACLASS)
class WindowPreset:
    """A CT display window in Hounsfield units: `width` and `level` (the window centre)."""

    name: str
    width: Annotated[float, Field(gt=0)]
    level: float

    @property
    def lower(self) -> float:
        return self.level - self.width / 2

    @property
    def upper(self) -> float:
        return self.level + self.width / 2

    def describe(self) -> str:
        return f"{self.name.replace('_', ' ')} window (W{self.width:g}/L{self.level:g} HU)"


def _default_presets() -> dict[str, WindowPreset]:
    return {
        "soft_tissue": WindowPreset("soft_tissue", 400, 40),
        "lung": WindowPreset("lung", 1500, -600),
        "bone": WindowPreset("bone", 1800, 400),
        "brain": WindowPreset("brain", 80, 40),
    }


def _default_body_parts() -> dict[str, str]:
    return {
        "HEAD": "brain",
        "BRAIN": "brain",
        "SKULL": "brain",
        "HEADNECK": "soft_tissue",
        "NECK": "soft_tissue",
        "CHEST": "lung",
        "LUNG": "lung",
        "THORAX": "lung",
        "ABDOMEN": "soft_tissue",
        "PELVIS": "soft_tissue",
        "ABDOMENPELVIS": "soft_tissue",
        "CHESTABDOMEN": "soft_tissue",
        "CHESTABDPELVIS": "soft_tissue",
        "LIVER": "soft_tissue",
        "KIDNEY": "soft_tissue",
        "SPINE": "bone",
        "CSPINE": "bone",
        "TSPINE": "bone",
        "LSPINE": "bone",
        "SSPINE": "bone",
        "EXTREMITY": "bone",
    }


@dataclass(frozen=True, config=STRICT_DATACLASS)
class CtSettings:
    """How Hounsfield units are windowed: presets, the choice by body part, the three-window option."""

    presets: dict[str, WindowPreset] = field(default_factory=_default_presets)
    body_part_windows: dict[str, str] = field(default_factory=_default_body_parts)
    default_window: str = "soft_tissue"
    window: str | None = None
    channel_windows: tuple[str, str, str] | None = None

    @field_validator("presets", mode="before")
    @classmethod
    def _presets_are_named_by_their_key(cls, raw: object) -> object:
        """In the file a preset is `name: {width, level}`; the key is its name."""
        if isinstance(raw, dict):
            named = {}
            for name, value in raw.items():
                named[name] = {"name": str(name), **value} if isinstance(value, dict) else value
            return named
        return raw

    @field_validator("body_part_windows", mode="before")
    @classmethod
    def _body_parts_upper_case(cls, raw: object) -> object:
        return {str(k).strip().upper(): v for k, v in raw.items()} if isinstance(raw, dict) else raw

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError("presets: give at least one window preset")
        known = sorted(self.presets)
        named = [("default_window", self.default_window)]
        named += [(f"body_part_windows.{part}", name) for part, name in self.body_part_windows.items()]
        if self.window is not None:
            named.append(("window", self.window))
        named += [(f"channel_windows[{i}]", name) for i, name in enumerate(self.channel_windows or ())]
        for key, name in named:
            if name not in self.presets:
                raise ValueError(f"{key}: {name!r} is not one of the presets {known}")


@dataclass(frozen=True, config=STRICT_DATACLASS)
class VolumeSettings:
    """How many representative slices of a volume are analysed, spread over which central fraction."""

    slices: Annotated[int, Field(ge=1)] = 3
    coverage: Annotated[float, Field(gt=0, le=1)] = 0.8


@dataclass(frozen=True, config=STRICT_DATACLASS)
class MultiframeSettings:
    """How many frames of a multi-frame object (cine loop, video) are analysed."""

    max_frames: Annotated[int, Field(ge=1)] = 4


@dataclass(frozen=True, config=STRICT_DATACLASS)
class MrSettings:
    """The lower and upper percentiles each MR image is scaled between."""

    percentiles: Percentiles = (0.5, 99.5)


@dataclass(frozen=True, config=STRICT_DATACLASS)
class ProjectionSettings:
    """CR/DX/MG and other greyscale images: the header's window, else scaling between percentiles."""

    use_header_window: bool = True
    fallback_percentiles: Percentiles = (0.5, 99.5)


@dataclass(frozen=True, config=STRICT_DATACLASS)
class PreprocessingSettings:
    """Everything ModalityPreprocessing can be told; the defaults are the shipped configuration."""

    image_size: Annotated[int, Field(ge=16)] = 224
    padding: Literal["mean", "black"] = "mean"
    min_image_side: Annotated[int, Field(ge=1)] = 8
    volume_modalities: tuple[Modality, ...] = ("CT", "MR", "PT")
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    max_instances: Annotated[int, Field(ge=1)] = 8
    multiframe: MultiframeSettings = field(default_factory=MultiframeSettings)
    ct: CtSettings = field(default_factory=CtSettings)
    mr: MrSettings = field(default_factory=MrSettings)
    projection: ProjectionSettings = field(default_factory=ProjectionSettings)


PADDING_CHOICES = ("mean", "black")


def load_preprocessing_settings(path: Path) -> PreprocessingSettings:
    """Read and validate the preprocessing settings file; PreprocessingConfigError names the file and key."""
    return load_config_file(Path(path), PreprocessingSettings, error=PreprocessingConfigError, what="preprocessing settings file")
