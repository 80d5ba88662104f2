"""The patient and study attributes that every output of a study carries, made conformant.

A report must file into the same study of the same patient as the images it describes, and it
must be valid DICOM that every PACS accepts, whatever the source headers look like. Real headers
break the standard in predictable ways: dates written `2024-03-15`, times `10:15:00`, ages without
a unit, `Female` for F, names longer than their VR allows, words such as `unknown` in a date. So the
outputs do not copy the source's Patient and Study modules wholesale; `report_identity` builds them
from an allow-list, attribute by attribute:

- **Verbatim** (exactly as received, even when the value breaks its VR's length or character rules):
  Patient ID, Issuer of Patient ID, Patient's Name, Accession Number, Study ID, Study Instance UID.
  A PACS files an incoming object by these; changing a single character could file the report
  under another patient, or beside the study instead of in it.
- **Normalised where the intended value is unambiguous**, else left empty (these are Type 2, so an
  empty value is conformant): Patient's Birth Date and Study Date (year-first dates with `-`, `.` or
  `/` become `YYYYMMDD`), Study Time (`HH:MM[:SS[.ffffff]]` becomes `HHMM[SS[.ffffff]]`), Patient's
  Sex (`Male`/`Female`/`Other` become M/F/O; `U`/`unknown` become empty), Referring Physician's Name
  (left empty when it breaks the PN rules).
- **Optional, kept only when valid or unambiguous** (Type 3, left out otherwise): Patient's Age
  (`54Y`, `54 years` become `054Y`; a bare `54` has no unit and is left out), and Patient Identity
  Removed with its De-identification Method, which the standard requires together.
- **Never copied**: free text (descriptions, comments, histories), other patient attributes, and the
  Clinical Trial modules: they are not needed to file the report and could carry PHI or be invalid.

Every change is recorded as a `HeaderFix` naming the attribute and why (never its value), which the
writer logs once per study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import pydicom.config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName, validate_value

#: Attributes a PACS files an object by: copied exactly as received.
VERBATIM = ("PatientName", "PatientID", "IssuerOfPatientID", "StudyInstanceUID", "StudyID", "AccessionNumber")
#: Type 2 attributes of the Patient and General Study modules: present in every output, maybe empty.
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass(frozen=True)
class HeaderFix:
    """One source attribute that the outputs could not carry as it was: what was done and why."""

    keyword: str
    action: str  # "normalised", "left empty" or "left out"
    reason: str

    def describe(self) -> str:
        """A log-safe sentence (no value): '<keyword> <action>: <reason>'."""
        return f"{self.keyword} {self.action}: {self.reason}"


@dataclass(frozen=True)
class ReportIdentity:
    """The conformant patient/study attributes of a study's outputs, and what was changed to get them."""

    dataset: Dataset
    fixes: tuple[HeaderFix, ...]

    def value(self, keyword: str) -> object:
        """The value of an attribute (None when absent), for constructors that take values."""
        element = self.dataset.get(keyword)
        return None if element is None else element

    def apply_to(self, target: Dataset) -> None:
        """Set every attribute of this identity on `target` (an output being built), exactly."""
        for element in self.dataset:
            target.add(_element(element.tag, element.VR, element.value))


def _element(tag: int, vr: str, value: object) -> DataElement:
    """A data element set without pydicom's value validation (values were checked here already)."""
    return DataElement(tag, vr, value, validation_mode=pydicom.config.IGNORE)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _valid(vr: str, value: object) -> bool:
    try:
        validate_value(vr, value, pydicom.config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------- value normalisers


_YEAR_FIRST = re.compile(r"^(\d{4})[-./ ](\d{1,2})[-./ ](\d{1,2})$")
_DA = re.compile(r"^\d{8}$")
_DT_PREFIX = re.compile(r"^(\d{8})\d{2,6}(\.\d{1,6})?([+-]\d{4})?$")


def _calendar(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return None


def normalise_date(raw: str) -> tuple[str, str | None]:
    """A DA value and, if it had to change, why: ('20240315', None), ('20240315', 'reason') or ('', 'reason')."""
    text = raw.strip()
    if not text:
        return "", None
    if _DA.match(text) and _calendar(int(text[:4]), int(text[4:6]), int(text[6:])):
        return text, None
    match = _YEAR_FIRST.match(text)
    if match:
        fixed = _calendar(*(int(g) for g in match.groups()))
        if fixed:
            return fixed, "a year-first date with separators, written as YYYYMMDD"
    match = _DT_PREFIX.match(text)
    if match and _calendar(int(text[:4]), int(text[4:6]), int(text[6:8])):
        return match.group(1), "a date and time where a date belongs; the date part is kept"
    return "", "not a valid DICOM date (YYYYMMDD) and no unambiguous date could be read from it"


_TM_COLONS = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d|60)(\.\d{1,6})?)?$")


def normalise_time(raw: str) -> tuple[str, str | None]:
    """A TM value and, if it had to change, why (see `normalise_date`)."""
    text = raw.strip()
    if not text:
        return "", None
    if _valid("TM", text):
        return text, None
    match = _TM_COLONS.match(text)
    if match:
        hours, minutes, seconds, fraction = match.groups()
        fixed = f"{int(hours):02d}{minutes}{seconds or ''}{fraction or ''}"
        return fixed, "a time written with colons, written as HHMMSS"
    return "", "not a valid DICOM time (HHMMSS) and no unambiguous time could be read from it"


_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
_SEX_UNKNOWN = {"U", "UNKNOWN", "UNK", "NOT KNOWN"}


def normalise_sex(raw: str) -> tuple[str, str | None]:
    """M, F, O or '' and, if it had to change, why."""
    text = raw.strip().upper()
    if text in ("M", "F", "O", ""):
        return text, None
    if text in _SEX:
        return _SEX[text], "written as a word; the DICOM code M, F or O is used"
    if text in _SEX_UNKNOWN:
        return "", "says the sex is unknown, which DICOM writes as an empty value"
    return "", "not one of DICOM's values M, F or O"


_AGE_UNITS = {"D": "D", "DAY": "D", "DAYS": "D", "W": "W", "WK": "W", "WKS": "W", "WEEK": "W", "WEEKS": "W",
              "M": "M", "MO": "M", "MOS": "M", "MONTH": "M", "MONTHS": "M",
              "Y": "Y", "YR": "Y", "YRS": "Y", "YEAR": "Y", "YEARS": "Y"}
_AGE = re.compile(r"^(\d{1,3})\s*([A-Za-z]+)$")


def normalise_age(raw: str) -> tuple[str, str | None]:
    """An AS value ('054Y'), or '' when it cannot be kept, and, if it changed, why."""
    text = raw.strip()
    if not text:
        return "", None
    if _valid("AS", text):
        return text, None
    match = _AGE.match(text)
    if match and match.group(2).upper() in _AGE_UNITS:
        return f"{int(match.group(1)):03d}{_AGE_UNITS[match.group(2).upper()]}", "written as DICOM's nnnU form"
    if text.isdigit():
        return "", "has no unit (days, weeks, months or years), so the age is ambiguous"
    return "", "not a valid DICOM age (nnnD, nnnW, nnnM or nnnY)"


def _person_name_problem(value: object) -> str | None:
    """Why a PN value breaks its VR (at most 3 groups of 5 components, 64 characters a group), or None."""
    text = _text(value)
    if any(ord(c) < 0x20 and c != "\x1b" for c in text):
        return "holds control characters"
    groups = text.split("=")
    if len(groups) > 3:
        return "has more than three component groups"
    for group in groups:
        if len(group) > 64:
            return "is longer than the 64 characters a person name component group may hold"
        if len(group.split("^")) > 5:
            return "has more than five name components"
    return None


# --------------------------------------------------------------------------- the identity


def report_identity(header: Dataset) -> ReportIdentity:
    """The patient and study attributes the outputs of the study with this header carry.

    `header` is the study header (a source instance's header, pixels not read). Never raises for
    invalid values: they are normalised or left empty, and each change is listed in `fixes`.
    """
    identity = Dataset()
    fixes: list[HeaderFix] = []

    def put(keyword: str, value: object) -> None:
        identity.add(_element(tag_for_keyword(keyword), dictionary_VR(keyword), value))

    for keyword in VERBATIM:
        element = header.get(keyword)
        if element is None:
            if keyword in TYPE2:
                put(keyword, "")
            continue
        value = header[keyword].value
        put(keyword, "" if value is None else value)

    for keyword, normalise in (("PatientBirthDate", normalise_date), ("StudyDate", normalise_date),
                               ("StudyTime", normalise_time), ("PatientSex", normalise_sex)):
        fixed, reason = normalise(_text(header.get(keyword)))
        put(keyword, fixed)
        if reason:
            fixes.append(HeaderFix(keyword, "normalised" if fixed else "left empty", reason))

    referring = header.get("ReferringPhysicianName")
    problem = _person_name_problem(referring) if referring not in (None, "") else None
    put("ReferringPhysicianName", "" if referring in (None, "") or problem else PersonName(_text(referring)))
    if problem:
        fixes.append(HeaderFix("ReferringPhysicianName", "left empty", problem))

    if header.get("PatientAge") not in (None, ""):
        age, reason = normalise_age(_text(header.get("PatientAge")))
        if age:
            put("PatientAge", age)
        if reason:
            fixes.append(HeaderFix("PatientAge", "normalised" if age else "left out", reason))

    removed = _text(header.get("PatientIdentityRemoved")).strip().upper()
    if removed in ("YES", "NO"):
        put("PatientIdentityRemoved", removed)
        if removed == "YES":
            _copy_deidentification_method(header, identity, fixes)
    elif removed:
        fixes.append(HeaderFix("PatientIdentityRemoved", "left out", "not YES or NO"))
    return ReportIdentity(identity, tuple(fixes))


def _copy_deidentification_method(header: Dataset, identity: Dataset, fixes: list[HeaderFix]) -> None:
    """De-identification Method (LO) and/or its code sequence, required when Patient Identity Removed is YES."""
    method = _text(header.get("DeidentificationMethod")).strip()
    codes = header.get("DeidentificationMethodCodeSequence")
    kept_codes = []
    for item in codes or []:
        if all(str(item.get(k, "") or "").strip() for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")):
            code = Dataset()
            code.CodeValue = str(item.CodeValue)
            code.CodingSchemeDesignator = str(item.CodingSchemeDesignator)
            code.CodeMeaning = str(item.CodeMeaning)[:64]
            kept_codes.append(code)
    if method and _valid("LO", method):
        identity.add(_element(tag_for_keyword("DeidentificationMethod"), "LO", method))
    if kept_codes:
        identity.DeidentificationMethodCodeSequence = kept_codes
    if not kept_codes and not (method and _valid("LO", method)):
        identity.add(_element(tag_for_keyword("DeidentificationMethod"), "LO", "not stated by the source"))
        fixes.append(
            HeaderFix("DeidentificationMethod", "normalised", "the source is marked de-identified but does not say how")
        )
