"""The burn specialist's configuration (`app/config/burn.yaml`), read and checked into typed values.

Everything a site may want to tune without touching Python lives in that file: the depth classes
(prompts, clinical descriptions, codes), the colour thresholds of the wound map, the body-region
shares used for the %TBSA estimate and the thresholds of the clinical flags. Every key is checked
by the schema below (pydantic, through `common.configuration`); an error names the file and the
dotted key, so a PACS administrator can correct it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from common.codes import Code
from common.configuration import CONFIG_DIR, ConfigModel, ConfigurationError, explain, load_config_file
from common.zero_shot_tasks import Label, ZeroShotTask

#: The bundled configuration.
DEFAULT_BURN_CONFIG = CONFIG_DIR / "burn.yaml"

#: The wound classes the colour analysis knows, each with its own rule (operators/wound_colour.py).
WOUND_CLASS_KEYS = ("charred", "eschar_white", "eschar_brown", "moist", "erythema")

_FINDING = Code("DCM", "121071", "Finding")


class BurnConfigError(ConfigurationError):
    """The burn configuration is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class DepthClass:
    """One burn-depth class: its key, display name and code (prompts live in the depth task)."""

    key: str
    name: str
    code: Code


@dataclass(frozen=True)
class DepthSettings:
    """The zero-shot depth task and which of its classes feed the flags."""

    task: ZeroShotTask
    classes: tuple[DepthClass, ...]
    surgical_classes: tuple[str, ...]
    partial_thickness_classes: tuple[str, ...]
    full_thickness_class: str
    no_burn_class: str

    def index(self, key: str) -> int:
        """Position of class `key` in the task's label order."""
        return [c.key for c in self.classes].index(key)


@dataclass(frozen=True)
class FlagSettings:
    surgical_assessment_threshold: float
    referral_partial_thickness_tbsa_percent: float
    referral_depth_probability: float


@dataclass(frozen=True)
class WoundClass:
    """A wound colour class: key, display name, code, overlay colour and its rule's thresholds."""

    key: str
    name: str
    code: Code
    colour: tuple[int, int, int]
    thresholds: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.thresholds[name]


@dataclass(frozen=True)
class ColourSettings:
    """Thresholds and sizes of the wound-map colour analysis (see burn.yaml for their meaning)."""

    analysis_max_side: int
    display_max_side: int
    min_side: int
    max_megapixels: float
    blur_sigma: float
    mode_filter_fraction: float
    illumination_sigma_fraction: float
    min_skin_fraction: float
    min_component_fraction: float
    skin: dict[str, float]
    white_material: dict[str, float]
    contact: dict[str, float]
    classes: tuple[WoundClass, ...]
    #: The published skin colours (CIELAB) the skin window `skin` is derived from.
    published_skin_lab: tuple[tuple[float, float, float], ...] = ()
    #: Chromatic radius (a*, b*) around the patient's skin reference that is still this patient's skin.
    skin_cluster_radius: float = 12.0
    #: Above this chroma a colour is dyed fabric, not tissue, and never wound.
    textile_chroma_min: float = 55.0
    #: Declining: the least visible skin, the cast of the brightest near-white surfaces that is too
    #: strong, and the share of the largest wound's outline on the frame that means "mostly outside".
    decline: dict[str, float] = None  # type: ignore[assignment]

    def wound_class(self, key: str) -> WoundClass:
        return next(c for c in self.classes if c.key == key)


@dataclass(frozen=True)
class BodyRegion:
    """A body region of the %TBSA table: share of total body surface (None: no share), rule, special area."""

    key: str
    name: str
    share: float | None
    rule: str
    special: str  # "yes", "no" or "possible"
    special_reason: str
    codes: tuple[str, ...]
    body_parts: tuple[str, ...]


@dataclass(frozen=True)
class TbsaSettings:
    adult_min_age_years: float
    regions: tuple[BodyRegion, ...]

    def by_code(self, value: str) -> BodyRegion | None:
        return next((r for r in self.regions if value in r.codes), None)

    def by_body_part(self, term: str) -> BodyRegion | None:
        key = term.strip().upper()
        return next((r for r in self.regions if key in r.body_parts), None)


@dataclass(frozen=True)
class BurnConfig:
    """The whole burn specialist configuration."""

    source: Path
    selections: tuple[str, ...]
    depth: DepthSettings
    flags: FlagSettings
    colour: ColourSettings
    tbsa: TbsaSettings


# --------------------------------------------------------------------------- the file's schema
#
# The file is checked by pydantic schema models (`common.configuration`: unknown keys are errors,
# every problem is listed with its dotted key), then turned into the typed values above.

Fraction = Annotated[float, Field(ge=0, le=1)]
Percent = Annotated[float, Field(ge=0, le=100)]
Strings = tuple[Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)], ...]


class CodeEntry(ConfigModel):
    scheme: str
    value: str
    meaning: str

    def code(self) -> Code:
        return Code(self.scheme, self.value, self.meaning)


class DepthClassEntry(ConfigModel):
    key: str
    name: str
    prompt: str
    code: CodeEntry
    descriptions: Strings = ()


class DepthEntry(ConfigModel):
    title: str = "Burn depth"
    templates: Annotated[Strings, Field(min_length=1)]
    classes: Annotated[tuple[DepthClassEntry, ...], Field(min_length=2)]
    surgical_classes: Strings
    partial_thickness_classes: Strings
    full_thickness_class: str
    no_burn_class: str

    @field_validator("templates")
    @classmethod
    def _templates_hold_a_slot(cls, templates: tuple[str, ...]) -> tuple[str, ...]:
        if any("{}" not in t for t in templates):
            raise ValueError("give at least one template, each containing '{}'")
        return templates

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: tuple[DepthClassEntry, ...]) -> tuple[DepthClassEntry, ...]:
        if len({c.key for c in classes}) != len(classes) or len({c.code for c in classes}) != len(classes):
            raise ValueError("class keys and codes must be unique")
        return classes

    @field_validator("surgical_classes", "partial_thickness_classes", "full_thickness_class", "no_burn_class")
    @classmethod
    def _known_classes(cls, value: str | tuple[str, ...], info: ValidationInfo) -> str | tuple[str, ...]:
        if "classes" not in info.data:  # the classes themselves are wrong; that error is reported
            return value
        keys = [c.key for c in info.data["classes"]]
        for key in (value,) if isinstance(value, str) else value:
            if key not in keys:
                raise ValueError(f"{key!r} is not one of the class keys {keys}")
        return value


class FlagsEntry(ConfigModel):
    surgical_assessment_threshold: Fraction
    referral_partial_thickness_tbsa_percent: Percent
    referral_depth_probability: Fraction


def _thresholds(*names: str) -> type[ConfigModel]:
    """A schema of exactly these numeric thresholds."""
    return create_model("Thresholds", __base__=ConfigModel, **{name: (float, ...) for name in names})


_CLASS_THRESHOLDS = {
    "charred": ("lightness_max", "darker_than_skin", "chroma_max"),
    "eschar_white": ("lightness_min", "chroma_max", "chroma_ratio_to_skin"),
    "eschar_brown": ("darker_than_skin", "hue_min", "hue_max", "chroma_min"),
    "moist": ("redder_than_skin", "hue_max"),
    "erythema": ("redder_than_skin", "hue_min", "hue_below_skin"),
}
_CLASS_SCHEMAS = {key: _thresholds(*names) for key, names in _CLASS_THRESHOLDS.items()}
WhiteMaterialThresholds = _thresholds("lightness_min", "chroma_max")
ContactThresholds = _thresholds("ring_px", "min_skin_ratio", "min_skin_ratio_eschar")
DeclineThresholds = _thresholds("min_visible_skin_fraction", "extreme_cast_chroma", "off_frame_outline_ratio")
Channel = Annotated[int, Field(ge=0, le=255)]


def _hex_colour(value: object) -> object:
    """'#a07e56' → (160, 126, 86); anything else is left to the schema to refuse."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) != 6:
            raise ValueError(f"{value!r} is not an sRGB colour written as six hex digits")
        return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))
    return value


class PublishedSkinEntry(ConfigModel):
    """Published skin colours and the margins that turn them into the skin window (see burn.yaml)."""

    srgb: Annotated[tuple[Annotated[tuple[Channel, Channel, Channel], BeforeValidator(_hex_colour)], ...], Field(min_length=2)]
    lab: tuple[tuple[float, float, float], ...] = ()
    hue_margin: Annotated[float, Field(ge=0, le=90)]
    chroma_margin: Annotated[float, Field(ge=0, le=50)]
    chroma_floor: Annotated[float, Field(ge=0, le=20)]
    lightness_margin: Annotated[float, Field(ge=0, le=50)]


class WoundClassEntry(BaseModel):
    """A wound class: key, name, code, overlay colour and, beside them, its rule's thresholds."""

    model_config = ConfigDict(extra="allow", frozen=True)
    key: Literal["charred", "eschar_white", "eschar_brown", "moist", "erythema"]
    name: str
    code: CodeEntry
    colour: tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)]]

    @model_validator(mode="after")
    def _thresholds_of_its_rule(self) -> WoundClassEntry:
        try:
            _CLASS_SCHEMAS[self.key].model_validate(self.model_extra or {})
        except ValidationError as exc:
            raise ValueError(f"thresholds of the {self.key!r} rule: " + "; ".join(explain(exc))) from None
        return self

    def thresholds(self) -> dict[str, float]:
        return {name: float(value) for name, value in (self.model_extra or {}).items()}


class ColourEntry(ConfigModel):
    analysis_max_side: Annotated[int, Field(ge=64, le=8192)]
    display_max_side: Annotated[int, Field(ge=256, le=8192)]
    min_side: Annotated[int, Field(ge=8, le=4096)]
    max_megapixels: Annotated[float, Field(ge=1, le=10000)]
    blur_sigma: Annotated[float, Field(ge=0, le=10)]
    mode_filter_fraction: Annotated[float, Field(ge=0, le=0.1)]
    illumination_sigma_fraction: Annotated[float, Field(ge=0.001, le=1)]
    min_skin_fraction: Fraction
    min_component_fraction: Fraction
    skin: PublishedSkinEntry
    skin_cluster_radius: Annotated[float, Field(gt=0, le=100)]
    textile_chroma_min: Annotated[float, Field(gt=0, le=150)]
    white_material: WhiteMaterialThresholds
    contact: ContactThresholds
    decline: DeclineThresholds
    classes: tuple[WoundClassEntry, ...]

    @field_validator("classes")
    @classmethod
    def _each_class_once(cls, classes: tuple[WoundClassEntry, ...]) -> tuple[WoundClassEntry, ...]:
        if sorted(c.key for c in classes) != sorted(WOUND_CLASS_KEYS):
            raise ValueError(f"list each wound class exactly once: {list(WOUND_CLASS_KEYS)}")
        return classes


def _special(value: object) -> object:
    """YAML 1.1 reads an unquoted yes / no as a boolean; the file means the word."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value.lower() if isinstance(value, str) else value


class RegionEntry(ConfigModel):
    key: str
    name: str
    special: Annotated[Literal["yes", "no", "possible"], BeforeValidator(_special)]
    special_reason: str = ""
    share: Percent | None = None
    rule: str = ""
    codes: Strings
    body_parts: Strings

    @model_validator(mode="after")
    def _a_share_names_its_rule(self) -> RegionEntry:
        if self.share is not None and not self.rule.strip():
            raise ValueError("rule: a region with a share must say which rule the share comes from")
        return self


class TbsaEntry(ConfigModel):
    adult_min_age_years: Annotated[float, Field(ge=0, le=120)]
    regions: Annotated[tuple[RegionEntry, ...], Field(min_length=1)]


class BurnFile(ConfigModel):
    """The whole of `burn.yaml`."""

    selections: Strings
    depth: DepthEntry
    flags: FlagsEntry
    colour: ColourEntry
    tbsa: TbsaEntry


# --------------------------------------------------------------------------- typed values


def _depth(entry: DepthEntry) -> DepthSettings:
    classes = tuple(DepthClass(c.key, c.name, c.code.code()) for c in entry.classes)
    labels = tuple(Label(c.name, c.prompt, c.code.code(), tuple(c.descriptions)) for c in entry.classes)
    no_burn = next(c for c in classes if c.key == entry.no_burn_class)
    task = ZeroShotTask(
        name="burn_depth", title=entry.title, finding=_FINDING, labels=labels,
        templates=tuple(entry.templates), normal_label=no_burn.name,
    )
    return DepthSettings(
        task=task,
        classes=classes,
        surgical_classes=tuple(entry.surgical_classes),
        partial_thickness_classes=tuple(entry.partial_thickness_classes),
        full_thickness_class=entry.full_thickness_class,
        no_burn_class=entry.no_burn_class,
    )


def _srgb_to_lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIELAB (D65) of an 8-bit sRGB colour, by the same conversion (OpenCV) the wound map uses."""
    import cv2
    import numpy as np

    pixel = np.array([[rgb]], np.float32) / 255.0
    lab = cv2.cvtColor(pixel, cv2.COLOR_RGB2Lab)[0, 0]
    return (float(lab[0]), float(lab[1]), float(lab[2]))


def skin_window(entry: PublishedSkinEntry) -> tuple[dict[str, float], tuple[tuple[float, float, float], ...]]:
    """The skin window (hue, chroma, lightness limits) spanned by the published skin colours plus margins.

    The limits are the extremes of the published colours widened by the configured margins (for
    capture casts and the variation within a person's skin), with a* bounded too (skin is never as
    red as exposed dermis); the chroma floor keeps colourless
    material (gauze, sheets, black backgrounds) out. Returns the window and the colours in CIELAB.
    """
    import math

    points = tuple(_srgb_to_lab(c) for c in entry.srgb) + tuple(tuple(float(v) for v in p) for p in entry.lab)
    hues = [math.degrees(math.atan2(b, a)) for _, a, b in points]
    chromas = [math.hypot(a, b) for _, a, b in points]
    lightness = [p[0] for p in points]
    window = {
        "hue_min": min(hues) - entry.hue_margin,
        "hue_max": max(hues) + entry.hue_margin,
        "chroma_min": max(entry.chroma_floor, min(chromas) - entry.chroma_margin),
        "chroma_max": max(chromas) + entry.chroma_margin,
        "lightness_min": max(0.0, min(lightness) - entry.lightness_margin),
        "lightness_max": min(100.0, max(lightness) + entry.lightness_margin),
        "a_max": max(p[1] for p in points) + entry.chroma_margin,
    }
    return window, points  # type: ignore[return-value]


def _colour(entry: ColourEntry) -> ColourSettings:
    window, published = skin_window(entry.skin)
    return ColourSettings(
        analysis_max_side=entry.analysis_max_side,
        display_max_side=entry.display_max_side,
        min_side=entry.min_side,
        max_megapixels=entry.max_megapixels,
        blur_sigma=entry.blur_sigma,
        mode_filter_fraction=entry.mode_filter_fraction,
        illumination_sigma_fraction=entry.illumination_sigma_fraction,
        min_skin_fraction=entry.min_skin_fraction,
        min_component_fraction=entry.min_component_fraction,
        skin=window,
        white_material={k: float(v) for k, v in entry.white_material.model_dump().items()},
        contact={k: float(v) for k, v in entry.contact.model_dump().items()},
        classes=tuple(
            WoundClass(c.key, c.name, c.code.code(), tuple(c.colour), c.thresholds()) for c in entry.classes
        ),
        published_skin_lab=published,
        skin_cluster_radius=entry.skin_cluster_radius,
        textile_chroma_min=entry.textile_chroma_min,
        decline={k: float(v) for k, v in entry.decline.model_dump().items()},
    )


def _tbsa(entry: TbsaEntry) -> TbsaSettings:
    return TbsaSettings(
        adult_min_age_years=entry.adult_min_age_years,
        regions=tuple(
            BodyRegion(
                key=r.key, name=r.name, share=r.share, rule=r.rule, special=r.special, special_reason=r.special_reason,
                codes=tuple(r.codes), body_parts=tuple(p.upper() for p in r.body_parts),
            )
            for r in entry.regions
        ),
    )


def load_burn_config(path: Path = DEFAULT_BURN_CONFIG) -> BurnConfig:
    """Read and check the burn configuration; BurnConfigError names the file and the key."""
    path = Path(path)
    document = load_config_file(path, BurnFile, error=BurnConfigError, what="burn configuration")
    return BurnConfig(
        source=path,
        selections=tuple(document.selections),
        depth=_depth(document.depth),
        flags=FlagSettings(**document.flags.model_dump()),
        colour=_colour(document.colour),
        tbsa=_tbsa(document.tbsa),
    )
