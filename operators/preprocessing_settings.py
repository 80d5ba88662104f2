"""Settings of ModalityPreprocessing: window presets, slice and frame sampling, resizing.

They live in `app/config/preprocessing.yaml` so that a site can change, say, the CT window or the
number of slices analysed per volume without touching Python. The defaults of these dataclasses
are the shipped values, so code and tests can use `PreprocessingSettings()` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class PreprocessingConfigError(ValueError):
    """The preprocessing settings file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class WindowPreset:
    """A CT display window in Hounsfield units: `width` and `level` (the window centre)."""

    name: str
    width: float
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


@dataclass(frozen=True)
class CtSettings:
    """How Hounsfield units are windowed: presets, the choice by body part, the three-window option."""

    presets: dict[str, WindowPreset] = field(default_factory=_default_presets)
    body_part_windows: dict[str, str] = field(default_factory=_default_body_parts)
    default_window: str = "soft_tissue"
    window: str | None = None
    channel_windows: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class VolumeSettings:
    """How many representative slices of a volume are analysed, spread over which central fraction."""

    slices: int = 3
    coverage: float = 0.8


@dataclass(frozen=True)
class MultiframeSettings:
    """How many frames of a multi-frame object (cine loop, video) are analysed."""

    max_frames: int = 4


@dataclass(frozen=True)
class MrSettings:
    """The lower and upper percentiles each MR image is scaled between."""

    percentiles: tuple[float, float] = (0.5, 99.5)


@dataclass(frozen=True)
class ProjectionSettings:
    """CR/DX/MG and other greyscale images: the header's window, else scaling between percentiles."""

    use_header_window: bool = True
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)


@dataclass(frozen=True)
class PreprocessingSettings:
    """Everything ModalityPreprocessing can be told; the defaults are the shipped configuration."""

    image_size: int = 224
    padding: str = "mean"
    min_image_side: int = 8
    volume_modalities: tuple[str, ...] = ("CT", "MR", "PT")
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    max_instances: int = 8
    multiframe: MultiframeSettings = field(default_factory=MultiframeSettings)
    ct: CtSettings = field(default_factory=CtSettings)
    mr: MrSettings = field(default_factory=MrSettings)
    projection: ProjectionSettings = field(default_factory=ProjectionSettings)


PADDING_CHOICES = ("mean", "black")


# --------------------------------------------------------------------------- loading


def load_preprocessing_settings(path: Path) -> PreprocessingSettings:
    """Read and validate the preprocessing settings file; errors name the file and the key."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PreprocessingConfigError(f"cannot read preprocessing settings file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PreprocessingConfigError(f"preprocessing settings file {path} is not valid YAML: {exc}") from exc
    if document is None:
        document = {}
    where = f"{path}"
    top = _mapping(document, where, PreprocessingSettings)
    defaults = PreprocessingSettings()

    padding = str(top.get("padding", defaults.padding))
    if padding not in PADDING_CHOICES:
        raise PreprocessingConfigError(f"{where}: padding: must be one of {list(PADDING_CHOICES)}, not {padding!r}")
    settings = PreprocessingSettings(
        image_size=_integer(top, "image_size", defaults.image_size, where, minimum=16),
        padding=padding,
        min_image_side=_integer(top, "min_image_side", defaults.min_image_side, where, minimum=1),
        volume_modalities=_modalities(top, "volume_modalities", defaults.volume_modalities, where),
        volume=_volume(top.get("volume"), f"{where}: volume"),
        max_instances=_integer(top, "max_instances", defaults.max_instances, where, minimum=1),
        multiframe=_multiframe(top.get("multiframe"), f"{where}: multiframe"),
        ct=_ct(top.get("ct"), f"{where}: ct"),
        mr=_mr(top.get("mr"), f"{where}: mr"),
        projection=_projection(top.get("projection"), f"{where}: projection"),
    )
    return settings


def _mapping(raw: Any, where: str, schema: type) -> dict[str, Any]:
    """`raw` as a mapping whose keys are all fields of the dataclass `schema` (None: empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PreprocessingConfigError(f"{where}: expected a mapping, not {type(raw).__name__}")
    known = {f.name for f in fields(schema)}
    for key in raw:
        if key not in known:
            raise PreprocessingConfigError(f"{where}: unknown key {key!r} (known keys: {sorted(known)})")
    return raw


def _integer(raw: dict[str, Any], key: str, default: int, where: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PreprocessingConfigError(f"{where}: {key}: expected a whole number of at least {minimum}, not {value!r}")
    return value


def _number(raw: dict[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PreprocessingConfigError(f"{where}: {key}: expected a number, not {value!r}")
    return float(value)


def _percentiles(raw: dict[str, Any], key: str, default: tuple[float, float], where: str) -> tuple[float, float]:
    value = raw.get(key, list(default))
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
        or not 0 <= value[0] < value[1] <= 100
    ):
        raise PreprocessingConfigError(
            f"{where}: {key}: expected two percentiles [low, high] with 0 <= low < high <= 100, not {value!r}"
        )
    return float(value[0]), float(value[1])


def _modalities(raw: dict[str, Any], key: str, default: tuple[str, ...], where: str) -> tuple[str, ...]:
    value = raw.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PreprocessingConfigError(
            f"{where}: {key}: expected a list of modality codes such as [CT, MR], not {value!r}"
        )
    return tuple(v.strip().upper() for v in value)


def _volume(raw: Any, where: str) -> VolumeSettings:
    raw = _mapping(raw, where, VolumeSettings)
    defaults = VolumeSettings()
    coverage = _number(raw, "coverage", defaults.coverage, where)
    if not 0 < coverage <= 1:
        raise PreprocessingConfigError(f"{where}: coverage: expected a fraction in (0, 1], not {coverage!r}")
    return VolumeSettings(slices=_integer(raw, "slices", defaults.slices, where, minimum=1), coverage=coverage)


def _multiframe(raw: Any, where: str) -> MultiframeSettings:
    raw = _mapping(raw, where, MultiframeSettings)
    return MultiframeSettings(max_frames=_integer(raw, "max_frames", MultiframeSettings().max_frames, where, minimum=1))


def _mr(raw: Any, where: str) -> MrSettings:
    raw = _mapping(raw, where, MrSettings)
    return MrSettings(percentiles=_percentiles(raw, "percentiles", MrSettings().percentiles, where))


def _projection(raw: Any, where: str) -> ProjectionSettings:
    raw = _mapping(raw, where, ProjectionSettings)
    defaults = ProjectionSettings()
    use_header = raw.get("use_header_window", defaults.use_header_window)
    if not isinstance(use_header, bool):
        raise PreprocessingConfigError(f"{where}: use_header_window: expected true or false, not {use_header!r}")
    return ProjectionSettings(
        use_header_window=use_header,
        fallback_percentiles=_percentiles(raw, "fallback_percentiles", defaults.fallback_percentiles, where),
    )


def _ct(raw: Any, where: str) -> CtSettings:
    raw = _mapping(raw, where, CtSettings)
    defaults = CtSettings()

    presets = defaults.presets
    if "presets" in raw:
        raw_presets = raw["presets"]
        if not isinstance(raw_presets, dict) or not raw_presets:
            raise PreprocessingConfigError(f"{where}: presets: expected a mapping of preset name to width and level")
        presets = {}
        for name, value in raw_presets.items():
            pwhere = f"{where}: presets.{name}"
            if not isinstance(value, dict) or set(value) != {"width", "level"}:
                raise PreprocessingConfigError(f"{pwhere}: expected exactly 'width' and 'level'")
            width = _number(value, "width", 0.0, pwhere)
            if width <= 0:
                raise PreprocessingConfigError(f"{pwhere}: width: must be greater than 0, not {width:g}")
            presets[str(name)] = WindowPreset(str(name), width, _number(value, "level", 0.0, pwhere))

    def preset_name(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in presets:
            raise PreprocessingConfigError(f"{where}: {key}: {value!r} is not one of the presets {sorted(presets)}")
        return value

    body_parts = defaults.body_part_windows
    if "body_part_windows" in raw:
        raw_parts = raw["body_part_windows"] or {}
        if not isinstance(raw_parts, dict):
            raise PreprocessingConfigError(
                f"{where}: body_part_windows: expected a mapping of body part to preset name"
            )
        body_parts = {
            str(part).strip().upper(): preset_name(name, f"body_part_windows.{part}")
            for part, name in raw_parts.items()
        }
    else:
        for part, name in body_parts.items():
            preset_name(name, f"body_part_windows.{part} (built-in)")

    window = raw.get("window")
    if window is not None:
        window = preset_name(window, "window")

    channel_windows = raw.get("channel_windows")
    if channel_windows is not None:
        if not isinstance(channel_windows, list) or len(channel_windows) != 3:
            raise PreprocessingConfigError(
                f"{where}: channel_windows: expected three preset names (red, green, blue) or null, "
                f"not {channel_windows!r}"
            )
        channel_windows = tuple(preset_name(n, f"channel_windows[{i}]") for i, n in enumerate(channel_windows))

    return CtSettings(
        presets=presets,
        body_part_windows=body_parts,
        default_window=preset_name(raw.get("default_window", defaults.default_window), "default_window"),
        window=window,
        channel_windows=channel_windows,
    )
