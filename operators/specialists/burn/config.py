"""The burn specialist's configuration (`app/config/burn.yaml`), read and checked into typed values.

Everything a site may want to tune without touching Python lives in that file: the depth classes
(prompts, clinical descriptions, codes), the colour thresholds of the wound map, the body-region
shares used for the %TBSA estimate and the thresholds of the clinical flags. Every key is checked
here; an error names the file and the key, so a PACS administrator can correct it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.codes import Code
from common.configuration import CONFIG_DIR, ConfigurationError
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


# --------------------------------------------------------------------------- reading


def _mapping(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise BurnConfigError(f"{where}: expected a mapping")
    return raw


def _keys(raw: dict, where: str, required: set[str], optional: set[str] = frozenset()) -> None:
    missing = required - raw.keys()
    unknown = raw.keys() - required - optional
    if missing:
        raise BurnConfigError(f"{where}: missing key(s) {sorted(missing)}")
    if unknown:
        raise BurnConfigError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(required | optional)})")


def _number(raw: object, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise BurnConfigError(f"{where}: expected a number, got {raw!r}")
    value = float(raw)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BurnConfigError(f"{where}: {value:g} is outside {low:g}..{high:g}")
    return value


def _code(raw: object, where: str) -> Code:
    item = _mapping(raw, where)
    _keys(item, where, {"scheme", "value", "meaning"})
    return Code(str(item["scheme"]), str(item["value"]), str(item["meaning"]))


def _strings(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, (str, int)) for v in raw):
        raise BurnConfigError(f"{where}: expected a list of strings")
    return tuple(str(v) for v in raw)


def _thresholds(raw: dict, where: str, names: set[str]) -> dict[str, float]:
    _keys(raw, where, names)
    return {name: _number(raw[name], f"{where}.{name}") for name in names}


def _depth(raw: object, where: str) -> DepthSettings:
    item = _mapping(raw, where)
    _keys(
        item,
        where,
        {"templates", "classes", "surgical_classes", "partial_thickness_classes", "full_thickness_class", "no_burn_class"},
        {"title"},
    )
    templates = _strings(item["templates"], f"{where}.templates")
    if not templates or any("{}" not in t for t in templates):
        raise BurnConfigError(f"{where}.templates: give at least one template, each containing '{{}}'")
    if not isinstance(item["classes"], list) or len(item["classes"]) < 2:
        raise BurnConfigError(f"{where}.classes: at least two depth classes are needed")
    classes, labels = [], []
    for i, raw_class in enumerate(item["classes"]):
        cwhere = f"{where}.classes[{i}]"
        entry = _mapping(raw_class, cwhere)
        _keys(entry, cwhere, {"key", "name", "prompt", "code"}, {"descriptions"})
        code = _code(entry["code"], f"{cwhere}.code")
        descriptions = _strings(entry.get("descriptions", []), f"{cwhere}.descriptions")
        classes.append(DepthClass(str(entry["key"]), str(entry["name"]), code))
        labels.append(Label(str(entry["name"]), str(entry["prompt"]), code, descriptions))
    keys = [c.key for c in classes]
    if len(set(keys)) != len(keys) or len({c.code for c in classes}) != len(classes):
        raise BurnConfigError(f"{where}.classes: class keys and codes must be unique")

    def known(value: object, key: str) -> str:
        if str(value) not in keys:
            raise BurnConfigError(f"{where}.{key}: {value!r} is not one of the class keys {keys}")
        return str(value)

    no_burn = known(item["no_burn_class"], "no_burn_class")
    task = ZeroShotTask(
        name="burn_depth",
        title=str(item.get("title", "Burn depth")),
        finding=_FINDING,
        labels=tuple(labels),
        templates=templates,
        normal_label=classes[keys.index(no_burn)].name,
    )
    return DepthSettings(
        task=task,
        classes=tuple(classes),
        surgical_classes=tuple(known(k, "surgical_classes") for k in _strings(item["surgical_classes"], f"{where}.surgical_classes")),
        partial_thickness_classes=tuple(
            known(k, "partial_thickness_classes")
            for k in _strings(item["partial_thickness_classes"], f"{where}.partial_thickness_classes")
        ),
        full_thickness_class=known(item["full_thickness_class"], "full_thickness_class"),
        no_burn_class=no_burn,
    )


_CLASS_THRESHOLDS = {
    "charred": {"lightness_max", "darker_than_skin", "chroma_max"},
    "eschar_white": {"lightness_min", "chroma_max", "chroma_ratio_to_skin"},
    "eschar_brown": {"darker_than_skin", "hue_min", "hue_max", "chroma_min"},
    "moist": {"redder_than_skin", "hue_max"},
    "erythema": {"redder_than_skin", "hue_min", "hue_below_skin"},
}


def _colour(raw: object, where: str) -> ColourSettings:
    item = _mapping(raw, where)
    scalars = {
        "analysis_max_side": (64, 8192),
        "display_max_side": (256, 8192),
        "min_side": (8, 4096),
        "max_megapixels": (1, 10000),
        "blur_sigma": (0, 10),
        "mode_filter_fraction": (0, 0.1),
        "illumination_sigma_fraction": (0.001, 1),
        "min_skin_fraction": (0, 1),
        "min_component_fraction": (0, 1),
    }
    _keys(item, where, set(scalars) | {"skin", "white_material", "contact", "classes"})
    values = {k: _number(item[k], f"{where}.{k}", lo, hi) for k, (lo, hi) in scalars.items()}
    if not isinstance(item["classes"], list):
        raise BurnConfigError(f"{where}.classes: expected a list of wound classes")
    classes = []
    for i, raw_class in enumerate(item["classes"]):
        cwhere = f"{where}.classes[{i}]"
        entry = _mapping(raw_class, cwhere)
        key = str(entry.get("key", ""))
        if key not in _CLASS_THRESHOLDS:
            raise BurnConfigError(f"{cwhere}.key: {key!r} is not a known wound class {list(WOUND_CLASS_KEYS)}")
        names = _CLASS_THRESHOLDS[key]
        _keys(entry, cwhere, {"key", "name", "code", "colour"} | names)
        colour = entry["colour"]
        if not isinstance(colour, list) or len(colour) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in colour):
            raise BurnConfigError(f"{cwhere}.colour: expected [R, G, B] with integers 0-255")
        classes.append(
            WoundClass(
                key=key,
                name=str(entry["name"]),
                code=_code(entry["code"], f"{cwhere}.code"),
                colour=(colour[0], colour[1], colour[2]),
                thresholds={n: _number(entry[n], f"{cwhere}.{n}") for n in names},
            )
        )
    if sorted(c.key for c in classes) != sorted(WOUND_CLASS_KEYS):
        raise BurnConfigError(f"{where}.classes: list each wound class exactly once: {list(WOUND_CLASS_KEYS)}")
    return ColourSettings(
        analysis_max_side=int(values["analysis_max_side"]),
        display_max_side=int(values["display_max_side"]),
        min_side=int(values["min_side"]),
        max_megapixels=values["max_megapixels"],
        blur_sigma=values["blur_sigma"],
        mode_filter_fraction=values["mode_filter_fraction"],
        illumination_sigma_fraction=values["illumination_sigma_fraction"],
        min_skin_fraction=values["min_skin_fraction"],
        min_component_fraction=values["min_component_fraction"],
        skin=_thresholds(
            _mapping(item["skin"], f"{where}.skin"),
            f"{where}.skin",
            {"hue_min", "hue_max", "chroma_min", "chroma_max", "lightness_min", "lightness_max"},
        ),
        white_material=_thresholds(
            _mapping(item["white_material"], f"{where}.white_material"), f"{where}.white_material", {"lightness_min", "chroma_max"}
        ),
        contact=_thresholds(
            _mapping(item["contact"], f"{where}.contact"), f"{where}.contact", {"ring_px", "min_skin_ratio", "min_skin_to_border"}
        ),
        classes=tuple(classes),
    )


def _tbsa(raw: object, where: str) -> TbsaSettings:
    item = _mapping(raw, where)
    _keys(item, where, {"adult_min_age_years", "regions"})
    if not isinstance(item["regions"], list) or not item["regions"]:
        raise BurnConfigError(f"{where}.regions: expected a list of body regions")
    regions = []
    for i, raw_region in enumerate(item["regions"]):
        rwhere = f"{where}.regions[{i}]"
        entry = _mapping(raw_region, rwhere)
        _keys(entry, rwhere, {"key", "name", "special", "codes", "body_parts"}, {"share", "rule", "special_reason"})
        raw_special = entry["special"]
        # YAML 1.1 reads an unquoted yes / no as a boolean.
        special = ("yes" if raw_special else "no") if isinstance(raw_special, bool) else str(raw_special).lower()
        if special not in {"yes", "no", "possible"}:
            raise BurnConfigError(f"{rwhere}.special: expected yes, no or possible, got {entry['special']!r}")
        share = entry.get("share")
        if share is not None:
            share = _number(share, f"{rwhere}.share", 0, 100)
            if not str(entry.get("rule", "")).strip():
                raise BurnConfigError(f"{rwhere}.rule: a region with a share must say which rule the share comes from")
        regions.append(
            BodyRegion(
                key=str(entry["key"]),
                name=str(entry["name"]),
                share=share,
                rule=str(entry.get("rule", "")),
                special=special,
                special_reason=str(entry.get("special_reason", "")),
                codes=_strings(entry["codes"], f"{rwhere}.codes"),
                body_parts=tuple(p.upper() for p in _strings(entry["body_parts"], f"{rwhere}.body_parts")),
            )
        )
    return TbsaSettings(adult_min_age_years=_number(item["adult_min_age_years"], f"{where}.adult_min_age_years", 0, 120), regions=tuple(regions))


def load_burn_config(path: Path = DEFAULT_BURN_CONFIG) -> BurnConfig:
    """Read and check the burn configuration; BurnConfigError names the file and the key."""
    path = Path(path)
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BurnConfigError(f"cannot read burn configuration {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise BurnConfigError(f"burn configuration {path} is not valid YAML: {exc}") from exc
    where = str(path)
    document = _mapping(document, where)
    _keys(document, where, {"selections", "depth", "flags", "colour", "tbsa"})
    flags = _mapping(document["flags"], f"{where}: flags")
    _keys(
        flags,
        f"{where}: flags",
        {"surgical_assessment_threshold", "referral_partial_thickness_tbsa_percent", "referral_depth_probability"},
    )
    return BurnConfig(
        source=path,
        selections=_strings(document["selections"], f"{where}: selections"),
        depth=_depth(document["depth"], f"{where}: depth"),
        flags=FlagSettings(
            surgical_assessment_threshold=_number(
                flags["surgical_assessment_threshold"], f"{where}: flags.surgical_assessment_threshold", 0, 1
            ),
            referral_partial_thickness_tbsa_percent=_number(
                flags["referral_partial_thickness_tbsa_percent"], f"{where}: flags.referral_partial_thickness_tbsa_percent", 0, 100
            ),
            referral_depth_probability=_number(
                flags["referral_depth_probability"], f"{where}: flags.referral_depth_probability", 0, 1
            ),
        ),
        colour=_colour(document["colour"], f"{where}: colour"),
        tbsa=_tbsa(document["tbsa"], f"{where}: tbsa"),
    )
