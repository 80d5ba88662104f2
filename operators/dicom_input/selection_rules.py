"""Series selection by the MONAI Deploy SDK's selection-rules JSON (the SeriesSelector's logic).

A rules file is the SDK's format, unchanged::

    {"selections": [{"name": "ct", "conditions": {"Modality": "(?i)^CT$", "ImageType": ["!LOCALIZER"]}}]}

The matching semantics are those of the SDK's `DICOMSeriesSelectorOperator._select_series`
(monai-deploy-app-sdk 3.x), re-implemented here because importing `monai.deploy.operators` pulls in
MONAI core and torch (about 9.5 s and 1 GB resident) for a few dozen lines of matching.
`tests/test_selection_rules.py` runs the SDK's own operator on the same rules and series to prove
the selections are the same. For each condition ``key: value`` of a selection, evaluated in order:

- A condition whose value is empty (``null``, ``""``, ``0``, ``[]``) is ignored.
- The attribute is read by DICOM keyword from the series' header (its first instance), which
  holds what the SDK's `DICOMStudy`/`DICOMSeries` properties hold and what it falls back to at
  instance level. The SDK's derived properties ``row_pixel_spacing``, ``col_pixel_spacing``,
  ``row_direction_cosine`` and ``col_direction_cosine`` are supported too. An absent or empty
  attribute (including the value 0, as in the SDK) means no match.
- Text attribute: case-insensitive equality, else case-insensitive regular expression *search*
  (anchor with ``^...$`` to match the whole value).
- Number attribute: ``5`` exact; ``[min, max]`` inclusive range; ``[val, ">"]`` with ``>``,
  ``>=``, ``<``, ``<=``, ``!=``; a string is a regular expression that must match the whole
  value as written in the DICOM file.
- Multi-valued attribute (ImageType, ...): a list of terms, each of which must occur in the
  values (``"!TERM"``: must not occur), or one such term as a string. Terms are matched as
  case-insensitive substrings of the values' text, as in the SDK (``"AX"`` matches ``AXIAL``).
- ``ImageOrientationPatient``: ``"Axial"``, ``"Coronal"`` or ``"Sagittal"``, the plane whose
  normal is closest to the slice normal.

Where the SDK raises for data it cannot handle, this module decides instead (each is logged):

- One selection entry may share its name with others: they are alternatives ("OR"). A series is
  selected at most once: by the first entry, in file order, that matches it; a later entry,
  whatever its name, does not select it again, so no series is analysed twice. Selections come
  out grouped by name (in order of first appearance), series in study order within a name.
- A text attribute against a list condition is treated as a one-value list (the SDK fails:
  ImageType with a single value is common in the wild).
- ``ImageOrientationPatient`` in a series without a supported PatientPosition, or with a
  malformed orientation, does not match (the SDK raises and stops the whole selection).
- Person names and dates are matched as text (the SDK raises for them).
- A condition that only excludes terms (``"ImageType": ["!LOCALIZER"]``) holds when the attribute
  is absent: an absent optional attribute never excludes a series (the SDK fails the condition).
- Originals only: series that are not original acquisitions (derived and secondary images, screen
  saves, burned-in annotation; `operators.dicom_input.image_provenance`) are left out unless a rule asks for
  them by a condition on the attribute that marks them; the product's own earlier outputs and
  private SOP classes are always left out.
- Every series that is not selected is described once (`StudySelection.not_selected`, logged by
  the SeriesSelector), with its exclusion or, per selection, the attribute of the first condition
  that failed (never the attribute's value).

And, stricter than the SDK, a rules file is checked when it is loaded, so that a mistake is
reported at start-up rather than silently selecting nothing: every selection needs a non-empty
``name``; only ``name`` and ``conditions`` are allowed in a selection; condition keys must be
DICOM keywords (or the SDK's derived properties); duplicate keys, booleans and objects as
values, invalid regular expressions, numbers against text attributes, malformed numeric
conditions against single-valued numeric attributes and unknown orientations are errors that
name the file, the selection's index and name, and the key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName

from common.configuration import ConfigurationError
from operators.dicom_input.image_provenance import Exclusion, exclusion_of
from operators.messages import SelectedSeries, SeriesHeader, StudyHeader, StudySelection

log = logging.getLogger("biomedclip_map.selector")

Term = str | int | float
Condition = Term | list[Term] | None
AttributeValue = str | int | float | list[str] | list[float]

RELATIONAL_OPERATORS = (">", ">=", "<", "<=", "!=")
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
SUPPORTED_PATIENT_POSITIONS = ("HFP", "HFS", "HFDL", "HFDR", "FFP", "FFS", "FFDL", "FFDR")
# Series properties the SDK computes from the header rather than reading by keyword.
DERIVED_PROPERTIES = ("row_pixel_spacing", "col_pixel_spacing", "row_direction_cosine", "col_direction_cosine")
# SDK properties that are empty until a volume is built, hence never match at selection time.
VOLUME_PROPERTIES = ("depth_pixel_spacing", "depth_direction_cosine", "dicom_affine_transform", "nifti_affine_transform")
NUMERIC_VRS = {"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
SELECTION_KEYS = ("name", "conditions")


class SelectionRulesError(ConfigurationError):
    """The selection rules are malformed or cannot apply; the message names file, selection and key."""


@dataclass(frozen=True)
class SelectionRule:
    """One entry of ``selections``: its position in the file (0-based), its name and conditions."""

    index: int
    name: str
    conditions: tuple[tuple[str, Condition], ...]

    def where(self, source: str, key: str | None = None) -> str:
        """Say where this rule (and key) is, for error messages: file, selection index and name."""
        place = f"{source}: selections[{self.index}] ('{self.name}')"
        return f"{place}, condition '{key}'" if key else place


@dataclass(frozen=True)
class SelectionRules:
    """A validated rules file; `source` names it in messages."""

    source: str
    rules: tuple[SelectionRule, ...]

    @property
    def names(self) -> list[str]:
        """Selection names in order of first appearance."""
        return list(dict.fromkeys(rule.name for rule in self.rules))


# --------------------------------------------------------------------------- loading and validation


def load_selection_rules(path: Path) -> SelectionRules:
    """Read and validate a selection-rules JSON file (see the module docstring for what is checked)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SelectionRulesError(f"{path}: cannot read the selection rules file: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise SelectionRulesError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    except _DuplicateKey as exc:
        raise SelectionRulesError(f"{path}: key '{exc.key}' appears twice in the same object") from exc
    return parse_selection_rules(data, source=str(path))


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def parse_selection_rules(data: object, *, source: str) -> SelectionRules:
    """Validate rules already parsed from JSON (e.g. the SDK's ``rules`` string); `source` names them."""
    if not isinstance(data, dict) or "selections" not in data:
        raise SelectionRulesError(f'{source}: expected a JSON object with a "selections" list')
    selections = data["selections"]
    if not isinstance(selections, list) or not selections:
        raise SelectionRulesError(f'{source}: "selections" must be a non-empty list of selections')
    rules = []
    for index, selection in enumerate(selections):
        if not isinstance(selection, dict):
            raise SelectionRulesError(f"{source}: selections[{index}] must be an object with a name and conditions")
        unknown = sorted(set(selection) - set(SELECTION_KEYS))
        if unknown:
            raise SelectionRulesError(
                f"{source}: selections[{index}] has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"a selection holds only {' and '.join(map(repr, SELECTION_KEYS))}"
            )
        name = selection.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SelectionRulesError(f'{source}: selections[{index}] needs a non-empty "name"')
        conditions = selection.get("conditions", {})
        if not isinstance(conditions, dict):
            raise SelectionRulesError(
                f'{source}: selections[{index}] (\'{name.strip()}\'): "conditions" must be an object of '
                "DICOM keyword → value"
            )
        rule = SelectionRule(index=index, name=name.strip(), conditions=tuple(conditions.items()))
        for key, condition in rule.conditions:
            _validate_condition(rule, source, key, condition)
        if not conditions:
            log.warning("%s has no conditions; like the SDK, it selects nothing", rule.where(source))
        rules.append(rule)
    return SelectionRules(source=source, rules=tuple(rules))


def _validate_condition(rule: SelectionRule, source: str, key: str, condition: object) -> None:
    """Reject a condition that can never work; the error names file, selection and key."""
    where = rule.where(source, key)
    if key in VOLUME_PROPERTIES:
        raise SelectionRulesError(
            f"{where}: this SDK property is only known after the volume is built, so it never matches at selection"
        )
    if key not in DERIVED_PROPERTIES and tag_for_keyword(key) is None:
        raise SelectionRulesError(f"{where}: not a DICOM attribute keyword (check the spelling, e.g. 'Modality')")
    if condition is None:
        return
    if isinstance(condition, bool) or not isinstance(condition, str | int | float | list):
        raise SelectionRulesError(
            f"{where}: the value must be text, a number or a list of them, not {type(condition).__name__}"
        )
    if isinstance(condition, list):
        for term in condition:
            if isinstance(term, bool) or not isinstance(term, str | int | float):
                raise SelectionRulesError(f"{where}: list items must be text or numbers, not {term!r}")
    if key == "ImageOrientationPatient":
        if condition and (not isinstance(condition, str) or condition.strip().capitalize() not in ORIENTATIONS):
            raise SelectionRulesError(f"{where}: must be one of {', '.join(ORIENTATIONS)}, not {condition!r}")
        return
    if isinstance(condition, str) and condition:
        try:
            re.compile(condition)
        except re.error as exc:
            raise SelectionRulesError(f"{where}: {condition!r} is not a valid regular expression ({exc})") from exc
    vr, vm = _dictionary_vr_vm(key)
    if vr in TEXT_VRS and vm == "1" and isinstance(condition, int | float) and condition:
        raise SelectionRulesError(f"{where}: the attribute is text; write the value {condition!r} in quotes")
    if vr in NUMERIC_VRS and vm == "1" and isinstance(condition, list) and condition:
        _check_numeric_list(condition, where)


def _dictionary_vr_vm(key: str) -> tuple[str | None, str | None]:
    if key in ("row_pixel_spacing", "col_pixel_spacing"):
        return "DS", "1"
    if key in DERIVED_PROPERTIES:
        return "DS", "3"
    return dictionary_VR(key), dictionary_VM(key)


def _check_numeric_list(condition: list, where: str) -> None:
    """A list against a single number must be ``[min, max]`` or ``[value, operator]``."""
    if len(condition) == 2 and isinstance(condition[1], str):
        if condition[1] not in RELATIONAL_OPERATORS:
            raise SelectionRulesError(
                f"{where}: unsupported operator {condition[1]!r}; use one of {', '.join(RELATIONAL_OPERATORS)}"
            )
        try:
            float(condition[0])
        except (TypeError, ValueError):
            raise SelectionRulesError(f"{where}: {condition[0]!r} is not a number") from None
        return
    if len(condition) == 2 and all(isinstance(v, int | float) for v in condition):
        return
    raise SelectionRulesError(
        f"{where}: a numeric condition list must be [min, max] or [value, operator], not {condition!r}"
    )


# --------------------------------------------------------------------------- attribute values


def series_attribute(series: SeriesHeader, key: str) -> AttributeValue | None:
    """The value a rule sees for `key`, as the SDK would see it, or None when absent or empty.

    Single values: text as `str` (person names and dates included), numbers as pydicom gives them
    (`DSfloat`/`IS` keep the text written in the file for regular-expression matching). Multiple
    values: a list of `str`. Series Number is an `int`, as the SDK's property is.
    """
    header = series.header
    if key in DERIVED_PROPERTIES:
        value = _derived_property(series, key)
    else:
        element = header.data_element(key) if key in header else None
        value = None if element is None else _element_value(element, key)
    if not value:  # the SDK treats every falsy value (absent, empty, 0) as missing
        return None
    return value


def _element_value(element: DataElement, key: str) -> AttributeValue | None:
    value = element.value
    if value is None or element.VM == 0:
        return None
    if isinstance(value, DicomSequence) or element.VR == "SQ":
        raise _UnmatchableAttribute(f"'{key}' is a sequence; rules match single- or multi-valued attributes only")
    if isinstance(value, bytes | bytearray):
        raise _UnmatchableAttribute(f"'{key}' holds binary data; rules cannot match it")
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    if key == "SeriesNumber":
        return int(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, PersonName):
        return str(value)
    return str(value)


def _derived_property(series: SeriesHeader, key: str) -> AttributeValue | None:
    """The SDK's `DICOMSeries` properties computed from the header (pixel spacing, cosines)."""
    header = series.header
    if key in ("row_pixel_spacing", "col_pixel_spacing"):
        spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
        if not spacing or len(spacing) < 2:
            return None
        return spacing[0] if key == "row_pixel_spacing" else spacing[1]
    orientation = header.get("ImageOrientationPatient")
    if not orientation:
        return None
    cosines = [0.0] * 6
    for index, v in enumerate(list(orientation)[:6]):
        cosines[index] = float(v)
    return cosines[0:3] if key == "row_direction_cosine" else cosines[3:6]


class _UnmatchableAttribute(Exception):
    """An attribute of a series that no condition can match (sequence, binary)."""


# --------------------------------------------------------------------------- matching


def condition_matches(key: str, condition: Condition, value: AttributeValue, series: SeriesHeader) -> bool:
    """Whether one condition holds for an attribute value that is present (SDK semantics).

    Raises `ValueError` (with a message, no file context) for a condition that cannot apply to
    this kind of value, e.g. a relational operator against text.
    """
    if key == "ImageOrientationPatient":
        return _orientation_matches(str(condition), series)
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int | float):
        return numeric_condition_matches(condition, value)
    if isinstance(value, str):
        if isinstance(condition, list):
            return terms_match(condition, [value])
        if isinstance(condition, int | float):
            raise ValueError(f"the attribute is text; write the number {condition!r} in quotes")
        if value.casefold() == condition.casefold():
            return True
        return re.search(condition, value, re.IGNORECASE) is not None
    return terms_match(condition, value)


def terms_match(condition: Term | list[Term], values: Sequence[object]) -> bool:
    """Multi-valued matching: every term occurs (``!term``: does not occur) in the values' text."""
    text = str(list(values)).lower()
    if isinstance(condition, list):
        terms = {str(term).lower() for term in condition}
        include = {t for t in terms if not t.startswith("!")}
        exclude = {t[1:] for t in terms if t.startswith("!")}
        return all(t in text for t in include) and all(t not in text for t in exclude)
    term = str(condition).lower()
    return term[1:] not in text if term.startswith("!") else term in text


def numeric_condition_matches(condition: Condition, value: int | float) -> bool:
    """Number matching: exact, ``[min, max]``, ``[val, op]`` or a full-match regular expression."""
    if isinstance(condition, list):
        if len(condition) == 2 and isinstance(condition[1], str):
            try:
                bound = float(condition[0])
            except (TypeError, ValueError):
                raise ValueError(f"{condition[0]!r} is not a number") from None
            operator = condition[1]
            if operator == ">":
                return value > bound
            if operator == ">=":
                return value >= bound
            if operator == "<":
                return value < bound
            if operator == "<=":
                return value <= bound
            if operator == "!=":
                return value != bound
            raise ValueError(f"unsupported operator {operator!r}; use one of {', '.join(RELATIONAL_OPERATORS)}")
        if len(condition) == 2 and all(isinstance(v, int | float) for v in condition):
            return condition[0] <= value <= condition[1]
        raise ValueError(f"a numeric condition list must be [min, max] or [value, operator], not {condition!r}")
    if isinstance(condition, str):
        return re.fullmatch(condition, str(value)) is not None
    return condition == value


class _OrientationUnknown(Exception):
    """The series' orientation cannot be computed (the message says why, without values)."""


def _orientation_matches(condition: str, series: SeriesHeader) -> bool:
    """Axial/Coronal/Sagittal: the patient axis closest to the slice normal (SDK's computation)."""
    position = str(series.header.get("PatientPosition", "") or "")
    if not position:
        raise _OrientationUnknown("the series has no PatientPosition")
    if position not in SUPPORTED_PATIENT_POSITIONS:
        raise _OrientationUnknown(f"PatientPosition {position} is not one of {', '.join(SUPPORTED_PATIENT_POSITIONS)}")
    try:
        iop = [float(v) for v in series.header.ImageOrientationPatient]
    except (TypeError, ValueError) as exc:
        raise _OrientationUnknown("ImageOrientationPatient is not numeric") from exc
    if len(iop) != 6:
        raise _OrientationUnknown(f"ImageOrientationPatient has {len(iop)} values instead of 6")
    row, column = np.array(iop[:3]), np.array(iop[3:])
    if np.linalg.norm(row) == 0 or np.linalg.norm(column) == 0:
        raise _OrientationUnknown("ImageOrientationPatient has a zero direction cosine")
    normal = np.cross(row / np.linalg.norm(row), column / np.linalg.norm(column))
    if np.linalg.norm(normal) == 0:
        raise _OrientationUnknown("ImageOrientationPatient's row and column cosines are parallel")
    computed = ("Sagittal", "Coronal", "Axial")[int(np.argmax(np.abs(normal)))]
    return computed == condition.strip().lower().capitalize()


def _describe(series: SeriesHeader, study: StudyHeader) -> str:
    """A log-safe name for a series: position in the study, number and modality (no UIDs, no text)."""
    number = series.header.get("SeriesNumber", "?")
    index = study.series.index(series) + 1
    return f"series #{index} (number {number}, {series.modality or 'no modality'}, {len(series.instances)} instances)"


def _exclusion_only(condition: Condition) -> bool:
    """Whether a condition only excludes terms (``"!LOCALIZER"``, ``["!LOCALIZER", "!SCOUT"]``)."""
    terms = condition if isinstance(condition, list) else [condition]
    return bool(terms) and all(isinstance(t, str) and t.startswith("!") for t in terms)


def rule_mismatch(rule: SelectionRule, series: SeriesHeader, study: StudyHeader, source: str) -> str | None:
    """Why `rule` does not select `series` (the first condition that fails, in file order), or None.

    The reason names the condition's attribute and whether it was absent or did not match, never
    the series' value (values can hold patient data). A condition that only excludes terms holds
    when the attribute is absent: there is nothing to exclude (the SDK would fail it, which made
    CT and MR series without Image Type unselectable by ``"ImageType": ["!LOCALIZER"]``).
    """
    if not rule.conditions:
        return "the selection has no conditions"
    for key, condition in rule.conditions:
        if not condition:  # the SDK ignores empty conditions
            continue
        try:
            value = series_attribute(series, key)
        except _UnmatchableAttribute as exc:
            raise SelectionRulesError(f"{rule.where(source, key)}: {exc}") from exc
        if value is None:
            if _exclusion_only(condition):
                continue
            return f"{key} is absent"
        try:
            matched = condition_matches(key, condition, value, series)
        except _OrientationUnknown as exc:
            log.warning(
                "Study %s, %s: orientation unknown (%s); %s does not match",
                study.ref, _describe(series, study), exc, rule.where(source, key),
            )
            return f"{key}: orientation unknown"
        except (ValueError, re.error) as exc:
            raise SelectionRulesError(f"{rule.where(source, key)}: {exc}") from exc
        if not matched:
            return f"{key} does not match"
    return None


def rule_matches(rule: SelectionRule, series: SeriesHeader, study: StudyHeader, source: str) -> bool:
    """Whether every condition of `rule` holds for `series` (conditions in file order, as the SDK)."""
    return rule_mismatch(rule, series, study, source) is None


def rule_asks_for(rule: SelectionRule, exclusion: Exclusion) -> bool:
    """Whether `rule` explicitly asks for images left out for `exclusion`'s reason.

    It does when one of its conditions names an attribute that marks such images (Image Type for
    derived images, Conversion Type or SOP Class UID for secondary captures, Burned In Annotation)
    with a value that is not only an exclusion. Our own outputs can never be asked for.
    """
    return any(
        key in exclusion.attributes and condition and not _exclusion_only(condition)
        for key, condition in rule.conditions
    )


def select_series(
    study: StudyHeader, rules: SelectionRules, *, all_matched: bool = True, originals_only: bool = True
) -> StudySelection:
    """Select the series of `study` that the rules name (see the module docstring for semantics).

    `all_matched` (default) selects every matching series per selection name; False keeps the
    first only, in study order (the SDK's default). A series is selected once, under the name of
    the first entry in file order that matches it. Series that are not original acquisitions
    (`operators.dicom_input.image_provenance`) are left out unless a rule asks for them explicitly; our own
    earlier outputs always are (`originals_only=False` turns this policy off and leaves the SDK's
    matching alone, for comparisons with the SDK). `not_selected` holds a log-safe sentence for every
    series that is not selected: its exclusion or, per selection name, the condition that failed.

    Raises `SelectionRulesError` when a condition cannot apply to a series' attribute (e.g. a
    sequence attribute), naming the file, the selection and the key.
    """
    chosen: dict[str, list[SeriesHeader]] = {name: [] for name in rules.names}
    taken: set[str] = set()
    exclusions = {
        series.series_instance_uid: exclusion_of(series.header) if originals_only else None for series in study.series
    }
    why_not: dict[str, dict[str, str]] = {series.series_instance_uid: {} for series in study.series}
    for rule in rules.rules:
        if not all_matched and chosen[rule.name]:
            continue
        for series in study.series:
            uid = series.series_instance_uid
            if uid in taken:
                continue
            exclusion = exclusions[uid]
            if exclusion is not None and (exclusion.never or not rule_asks_for(rule, exclusion)):
                continue
            mismatch = rule_mismatch(rule, series, study, rules.source)
            if mismatch is None:
                chosen[rule.name].append(series)
                taken.add(uid)
                if not all_matched:
                    break
            else:
                why_not[uid].setdefault(rule.name, mismatch)
    order = {series.series_instance_uid: i for i, series in enumerate(study.series)}
    selected = [
        SelectedSeries(selection_name=name, series=series)
        for name, picked in chosen.items()
        for series in sorted(picked, key=lambda s: order[s.series_instance_uid])
    ]
    for name, picked in chosen.items():
        if picked:
            log.info(
                "Study %s: selection '%s' picked %s",
                study.ref, name, "; ".join(_describe(series, study) for series in picked),
            )
    not_selected: list[str] = []
    for series in study.series:
        uid = series.series_instance_uid
        if uid in taken:
            continue
        exclusion = exclusions[uid]
        if exclusion is not None:
            why = f"left out of analysis: {exclusion.reason}"
        else:
            failed = "; ".join(f"'{name}': {reason}" for name, reason in why_not[uid].items()) or "no selection applies"
            why = f"not selected ({failed})"
        not_selected.append(f"{_describe(series, study)}: {why}")
    return StudySelection(study=study, selected=selected, not_selected=not_selected)
