"""De-identified research copies of a study's results (and analysed inputs), per DICOM PS3.15 Annex E.

What is applied, and by what:

- **Basic Application Level Confidentiality Profile** (DCM 113100). The action of every attribute
  the profile lists (remove, empty, replace with a dummy, replace UID, or the "X/Z/D" choices
  that depend on whether the IOD requires the attribute) comes from the Annex E table of the
  DICOM standard release 2026c as packaged by `dicom-anonymizer` (its
  `dicomfields_2026c` module, generated from the standard; only the table is used; the two
  alternative-calendar birth and death dates it lacks are removed as well). The "X/Z/D"
  choices are resolved with the attribute's type in the object's IOD (highdicom's tables of the
  standard): type 1 → dummy value, type 2 → empty, otherwise removed. Private attributes are
  removed (no Retain Safe Private option). Curves and overlays (repeating groups 50xx, 60xx) go as
  whole groups, since Annex E removes their data and a plane without its data is invalid; an
  attribute the standard allows only with a removed one goes with it (Responsible Person Role
  with Responsible Person); an animal patient keeps Responsible Person and Organization, empty,
  as its Patient module requires (Type 2C).
- Replacement values come from **dicognito** (0.19.0), one `Anonymizer` per study: names become
  plausible fake names, IDs fake IDs, addresses fake addresses. Every instance UID (study,
  series, instance, frame of reference, and every reference to them, including those inside the
  SR's content and evidence sequences and the file meta information) is remapped consistently
  within the study by a handler of ours put in front of dicognito's (`_StudyUIDs`: UUID-derived
  ``2.25.`` UIDs; dicognito's own form is rejected by dciodvfy). DICOM's own UIDs (SOP classes,
  transfer syntaxes, coding schemes) are kept, so the copies stay valid.
- **Retain Longitudinal Temporal Information with Modified Dates Option** (DCM 113107): dicognito
  shifts every date and time of the study back by one random offset (62 to 730 days), so
  intervals within the study are kept, and Longitudinal Temporal Information Modified is MODIFIED.
  The patient's birth date is emptied and the birth time removed all the same (Annex E's Z and X).
- **Clean Structured Content Option** (DCM 113104), for SR documents: the profile would remove
  the Content Sequence, which would leave an invalid SR without findings. Instead the line that
  quotes the source's free text is replaced (see below), the other text items are scrubbed by the
  PHIScrubber's `TextScrubber` (knowing the original study's identifiers), and its UIDs, names
  and dates are remapped by dicognito like the rest.

Not applied: the Clean Pixel Data option. Instances whose pixels may show who the patient is
(Burned In Annotation or Recognizable Visual Features YES, or a photograph that declares neither;
the product's captures of such images declare YES) are therefore not exported (one log line each),
and the exported files' references to them are removed; the exported SR says how many and why
(`operators.phi.withheld_instances`). A Segmentation (the product's burn wound map) has no pixels
of its image but is defined on it, so it is left out with an image that is left out (one log
line), and the SR loses its references to both. The product's own SR has no pixels; its clinical-context line,
which quotes the source's free text, is replaced by a sentence saying it is left out. Patient
Identity Removed is YES and De-identification Method (Code Sequence) lists the profile and the
options above in every exported file.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from dicognito.anonymizer import Anonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as annex_e
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from operators.phi.clinical_context import CONTEXT_INTRO
from operators.outputs.dicom_output import write_dataset_atomically
from operators.phi.phi_text import TextScrubber, identifiers_from_headers
from operators.phi.withheld_instances import (
    Withheld,
    left_out_sentence,
    note_left_out,
    pixels_may_identify,
    remove_references,
    segmentation_of_withheld,
)

logger = logging.getLogger("biomedclip_map.deid_export")

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_STRUCTURED_CONTENT = ("113104", "Clean Structured Content Option")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
ANNEX_E_RELEASE = "2026c"

#: De-identification Method (LO, several values of at most 64 characters) written into each copy.
METHOD_TEXT = ("DICOM PS3.15 E.1 Basic Profile (table 2026c)", "dicognito 0.19.0 replacement values")

_STANDARD_UID_ROOT = "1.2.840.10008."
#: UIDs that name coding schemes or resources, not instances: kept as they are.
_KEPT_UID_KEYWORDS = frozenset({"CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
#: Dates of the patient that the Basic Profile's own action governs (not shifted and kept):
#: Patient's Birth Date is emptied (Z) and Patient's Birth Time removed (X), as Annex E says.
_PATIENT_DATES = frozenset({"PatientBirthDate", "PatientBirthTime"})
#: Repeating groups handled whole: curves (50xx) and overlays (60xx), even groups only (odd ones are private).
_REPEATING_GROUPS = (range(0x5000, 0x5020, 2), range(0x6000, 0x6020, 2))
#: Attributes whose presence the standard makes conditional on another attribute having a value
#: (Type 1C/2C "required if ... is present"): removed with it, so the copy stays valid.
#: Responsible Person Role (0010,2298) is 1C on Responsible Person (PS3.3 C.7.1.1); Patient's
#: Alternative Calendar (0010,0035) is 1C on either date in the alternative calendar.
_DEPENDANTS: dict[str, tuple[str, ...]] = {
    "ResponsiblePersonRole": ("ResponsiblePerson",),
    "PatientAlternativeCalendar": ("PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar"),
}
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT", "UR"})
_DUMMY = "REMOVED"


class DeidentificationError(ValueError):
    """A file cannot be de-identified; the message names the study ref and what to check."""


class ExportSettingsError(ValueError):
    """The de-identified export folder is unusable; the message names it and the flag."""


# --------------------------------------------------------------------------- the Annex E table


@functools.lru_cache(maxsize=1)
def _annex_e_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Exact tags and repeating-group masks (curves, overlays) with their Basic Profile actions."""
    groups = (
        ("D_TAGS", "D"), ("Z_TAGS", "Z"), ("X_TAGS", "X"), ("U_TAGS", "U"), ("Z_D_TAGS", "Z/D"),
        ("X_Z_TAGS", "X/Z"), ("X_D_TAGS", "X/D"), ("X_Z_D_TAGS", "X/Z/D"), ("X_Z_U_STAR_TAGS", "X/Z/U*"),
    )
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for name, action in groups:
        for entry in getattr(annex_e, name):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, action))
    return exact, tuple(masked)


#: Identifying attributes the packaged table does not list, with the action applied to them: the
#: patient's birth and death dates in an alternative calendar (PS3.3 C.7.1.1) are removed like
#: any other record of when the patient was born or died (Patient's Alternative Calendar then goes
#: with them, `_DEPENDANTS`).
_SUPPLEMENT: dict[int, str] = {0x00100033: "X", 0x00100034: "X"}


def annex_e_action(tag: int) -> str | None:
    """The Basic Profile action ("X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*") for `tag`, if listed.

    Tags the packaged table lacks take `_SUPPLEMENT`'s action.
    """
    exact, masked = _annex_e_table()
    action = exact.get(tag) or _SUPPLEMENT.get(tag)
    if action is not None:
        return action
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, group_mask, element_mask, masked_action in masked:
        if (group & group_mask) == g and (element & element_mask) == e:
            return masked_action
    return None


@functools.lru_cache(maxsize=64)
def _attribute_types(sop_class_uid: str) -> tuple[dict[tuple[tuple[str, ...], str], str], dict[str, str]]:
    """Types of the IOD's attributes by (sequence path, keyword), and the strictest type by keyword."""
    by_path: dict[tuple[tuple[str, ...], str], str] = {}
    by_keyword: dict[str, str] = {}
    iod = get_sop_class_iod_map().get(sop_class_uid)
    if iod is None:
        return by_path, by_keyword
    attributes = get_module_attribute_map()
    for module in get_iod_module_map()[iod]:
        for attribute in attributes.get(module["key"], []):
            kind = attribute["type"]
            key = (tuple(attribute["path"]), attribute["keyword"])
            by_path[key] = min(by_path.get(key, "3"), kind)
            by_keyword[attribute["keyword"]] = min(by_keyword.get(attribute["keyword"], "3"), kind)
    return by_path, by_keyword


def _resolve(action: str, element: DataElement, path: tuple[str, ...], sop_class_uid: str) -> str:
    """One of X, Z, D, U for an action that depends on the attribute's type in the IOD."""
    if "/" not in action:
        return action
    choices = action.replace("*", "").split("/")
    by_path, by_keyword = _attribute_types(sop_class_uid)
    kind = by_path.get((path, element.keyword)) or (by_keyword.get(element.keyword) if path else None) or "3"
    if kind.startswith("1") and "D" in choices:
        return "D"
    if kind.startswith("1") and "U" in choices:
        return "U"
    if kind.startswith(("1", "2")) and "Z" in choices:
        return "Z"
    return "X" if "X" in choices else choices[-1]


# --------------------------------------------------------------------------- dicognito


class _StudyUIDs(ElementAnonymizer):
    """Remaps instance UIDs to UUID-derived UIDs (``2.25.<128-bit number>``, PS3.5 B.2), consistently.

    One instance per study, keyed by a random secret, so the same original UID gets the same new
    UID in every file of the study and the mapping cannot be recomputed. UIDs defined by DICOM
    itself (SOP classes, transfer syntaxes) and coding-scheme UIDs identify no one and are kept.
    dicognito's own UID handler is bypassed: its ``2.<40 digits>`` form uses a root that
    validators (dciodvfy) reject.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def new_uid(self, uid: str) -> str:
        digest = hmac.new(self._key, uid.strip().encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def _keep(self, keyword: str, value: str) -> bool:
        return keyword in _KEPT_UID_KEYWORDS or keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID" or value.startswith(_STANDARD_UID_ROOT)

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        if data_element.VR != "UI":
            return False
        if not data_element.value:
            return True
        keyword = data_element.keyword or ""
        if isinstance(data_element.value, (list, MultiValue)):
            data_element.value = [v if self._keep(keyword, str(v)) else self.new_uid(str(v)) for v in data_element.value]
        elif not self._keep(keyword, str(data_element.value)):
            data_element.value = self.new_uid(str(data_element.value))
        return True

    def describe_actions(self):
        yield "Replace instance UIDs with consistent 2.25 UUID-derived UIDs; keep standard and coding-scheme UIDs"


def study_anonymizer() -> Anonymizer:
    """A dicognito anonymizer for one study, with this module's UID remapping in front."""
    anonymizer = Anonymizer()
    anonymizer.add_element_handler(_StudyUIDs())
    return anonymizer


# --------------------------------------------------------------------------- one dataset


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


#: Narrative lines of the product's SR that quote the source's free text (the clinical-context line).
_QUOTED_SOURCE_TEXT = (CONTEXT_INTRO,)
#: What a quoted line becomes in the de-identified copy.
QUOTED_TEXT_LEFT_OUT = (
    "De-identified copy: the clinical context quoted from the study's DICOM header is left out of this copy."
)


def clean_structured_content(dataset: Dataset, scrubber: TextScrubber) -> dict[str, int]:
    """Clean every TEXT item inside the Content Sequence; return the scrubber's counts per category.

    A line that quotes the source's free text (the clinical-context line, `_QUOTED_SOURCE_TEXT`)
    is replaced by a sentence saying it is left out: scrubbing removes the identifiers it knows
    of and patterns, not every identifying word someone typed. Every other text (the product's
    own words about the analysis) is scrubbed all the same, for what it may quote.
    """
    counts: dict[str, int] = {}

    def visit(items: Iterable[Dataset]) -> None:
        for item in items:
            if "TextValue" in item and item.TextValue:
                text = str(item.TextValue)
                if text.startswith(_QUOTED_SOURCE_TEXT):
                    item.TextValue = QUOTED_TEXT_LEFT_OUT
                    counts["QUOTED_SOURCE_TEXT"] = counts.get("QUOTED_SOURCE_TEXT", 0) + 1
                else:
                    result = scrubber.scrub(text)
                    item.TextValue = result.text
                    for category, count in result.counts.items():
                        counts[category] = counts.get(category, 0) + count
            if "ContentSequence" in item:
                visit(item.ContentSequence)

    if "ContentSequence" in dataset:
        visit(dataset.ContentSequence)
    return counts


def _repeating_group(tag: int) -> int | None:
    """The curve or overlay group (50xx, 60xx) `tag` belongs to, or None."""
    group = tag >> 16
    return group if any(group in groups for groups in _REPEATING_GROUPS) else None


def _remove_repeating_groups(dataset: Dataset, sop_class_uid: str, path: tuple[str, ...]) -> None:
    """Remove each curve or overlay group whole when the Basic Profile removes any of its elements.

    Annex E removes Overlay Data and Overlay Comments (60xx,3000 / 60xx,4000) and every curve
    element (50xx,xxxx). An overlay plane left without its data is invalid (Overlay Data is Type 1),
    and what remains (description, label, origin) describes data that is gone; so the whole group goes.
    """
    members: dict[int, list[DataElement]] = {}
    for element in dataset:
        group = _repeating_group(int(element.tag))
        if group is not None:
            members.setdefault(group, []).append(element)
    for elements in members.values():
        actions = (annex_e_action(int(e.tag)) for e in elements)
        if any(a is not None and _resolve(a, e, path, sop_class_uid) == "X" for a, e in zip(actions, elements)):
            for element in elements:
                del dataset[element.tag]


def _remove_orphans(dataset: Dataset) -> None:
    """Remove attributes whose condition (another attribute with a value) the profile removed (`_DEPENDANTS`)."""
    for dependant, conditions in _DEPENDANTS.items():
        if dependant in dataset and not any(str(dataset.get(c, "") or "").strip() for c in conditions):
            del dataset[dependant]


def _keep_required_responsible_party(dataset: Dataset) -> None:
    """Leave an animal patient's Responsible Person and Organization present and empty after the profile removed them.

    Annex E removes both (X), but for an animal (the Patient Species is given) the Patient module
    requires them unless the other one has a value (Type 2C, PS3.3 C.7.1.1); empty values satisfy
    that and identify no one.
    """
    if "PatientSpeciesDescription" in dataset or "PatientSpeciesCodeSequence" in dataset:
        for keyword in ("ResponsiblePerson", "ResponsibleOrganization"):
            if keyword not in dataset:
                setattr(dataset, keyword, "")


def _apply_annex_e(dataset: Dataset, sop_class_uid: str, path: tuple[str, ...] = ()) -> None:
    """Apply the Basic Profile's action to every listed attribute, recursively (dates: see module doc).

    Curves and overlays go as whole groups (`_remove_repeating_groups`), and attributes that are
    only allowed with a removed one go with it (`_remove_orphans`).
    """
    _remove_repeating_groups(dataset, sop_class_uid, path)
    for element in list(dataset):
        keyword = element.keyword or ""
        if element.VR == "SQ":
            if keyword != "ContentSequence" or path:  # a SR's content is cleaned, not removed (113104)
                action = annex_e_action(int(element.tag))
                resolved = _resolve(action, element, path, sop_class_uid) if action else None
                if resolved == "X":
                    del dataset[element.tag]
                    continue
                if resolved == "Z":
                    element.value = DicomSequence([])
                    continue
            for item in element.value or []:
                _apply_annex_e(item, sop_class_uid, (*path, keyword))
            continue
        action = annex_e_action(int(element.tag))
        if action is None:
            continue
        if element.VR in _DATE_VRS and keyword not in _PATIENT_DATES:
            continue  # shifted by dicognito and kept (113107)
        resolved = _resolve(action, element, path, sop_class_uid)
        if resolved == "X":
            del dataset[element.tag]
        elif resolved == "Z":
            element.value = "" if element.VR not in ("US", "SS", "UL", "SL", "FL", "FD") else None
        elif resolved == "D" and element.VR in _TEXT_VRS and element.value not in (None, ""):
            element.value = _DUMMY
        # "U", and "D" of names and UIDs: already replaced by dicognito
    _remove_orphans(dataset)


def deidentify_dataset(dataset: Dataset, anonymizer: Anonymizer, scrubber: TextScrubber, where: str) -> Dataset:
    """De-identify `dataset` in place (see the module docstring) and return it.

    Raises DeidentificationError if the instance's pixels may show who the patient is (burned-in
    annotation or recognisable visual features declared, or a photograph that declares neither:
    `operators.phi.withheld_instances.pixels_may_identify`), since this export does not clean pixel data.
    """
    withheld = pixels_may_identify(dataset)
    if withheld is not None:
        raise DeidentificationError(
            f"{where}: {withheld[1]} and this export does not clean pixel data; the instance is not exported"
        )
    sop_class_uid = str(dataset.SOPClassUID)
    options = [BASIC_PROFILE, MODIFIED_DATES]
    if "ContentSequence" in dataset:
        clean_structured_content(dataset, scrubber)
        options.insert(1, CLEAN_STRUCTURED_CONTENT)
    dataset.remove_private_tags()
    anonymizer.anonymize(dataset)
    _apply_annex_e(dataset, sop_class_uid)
    _keep_required_responsible_party(dataset)
    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"  # dates shifted (113107)
    dataset.DeidentificationMethod = list(METHOD_TEXT)
    dataset.DeidentificationMethodCodeSequence = DicomSequence([_code(value, meaning) for value, meaning in options])
    return dataset


# --------------------------------------------------------------------------- one study


@dataclass
class StudyExport:
    """What the export of one study wrote and left out (paths of written copies; reasons)."""

    folder: Path | None = None
    written: list[Path] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def check_export_dir(export_dir: Path, output_dir: Path, input_dir: Path) -> Path:
    """Create the export folder; refuse one inside the DICOM output or input folder (or around them)."""
    export, output, source = (Path(p).resolve() for p in (export_dir, output_dir, input_dir))
    for other, role in ((output, "DICOM output folder (-o), which PACS routing picks up"), (source, "input folder (-i)")):
        if export == other or other in export.parents or export in other.parents:
            raise ExportSettingsError(
                f"the de-identified export folder {export_dir} (--deid-export or BIOMEDCLIP_MAP_DEID_EXPORT_DIR) "
                f"must be outside the {role}"
            )
    try:
        export.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportSettingsError(
            f"the de-identified export folder {export_dir} (--deid-export) cannot be created: {exc.strerror or exc}"
        ) from exc
    return export


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def result_files(study_ref: str, outputs: Sequence[Path], output_dir: Path) -> list[Path]:
    """The DICOM files the writer produced for a study: its outputs, plus any `*<ref>*.dcm` beside them."""
    files = [Path(p) for p in outputs if _is_dicom(Path(p))]
    for candidate in sorted(Path(output_dir).glob(f"*{study_ref}*.dcm")):
        if candidate not in files and _is_dicom(candidate):
            files.append(candidate)
    return files


def _read(
    study_ref: str, kind: str, paths: Sequence[Path], export: StudyExport, *, pixels: bool = True
) -> list[tuple[str, Path, Dataset]]:
    """The readable files of `paths`; each unreadable one is recorded in `export.left_out` by number
    (file names may carry identifiers, so none is quoted)."""
    read: list[tuple[str, Path, Dataset]] = []
    for number, path in enumerate(paths, start=1):
        try:
            read.append((kind, path, pydicom.dcmread(path, stop_before_pixels=not pixels)))
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            export.left_out.append(f"study {study_ref}, {kind} file #{number}: cannot be read ({type(exc).__name__})")
    return read


def export_study(
    study_ref: str,
    results: Sequence[Path],
    inputs: Sequence[Path],
    export_dir: Path,
    *,
    other_inputs: Sequence[Path] = (),
) -> StudyExport:
    """Write de-identified copies of a study's results and inputs into `export_dir/<new study UID>/`.

    All files of the study share one anonymizer, so references between them (the SR's evidence
    and image library) point at the exported inputs' new UIDs. The scrubber for SR text knows the
    identifiers of every original header. An instance whose pixels may show who the patient is
    (`pixels_may_identify`) is left out with one reason, and every exported file loses its
    references to it; an exported SR says how many it lost and why. `other_inputs` are analysed
    inputs that are not exported: their headers are read only to find the ones withheld, so the
    exported SR is the same whether or not the inputs are exported. A file that cannot be exported
    is left out with a reason; the others are still written.
    """
    export = StudyExport()
    originals = _read(study_ref, "result", results, export) + _read(study_ref, "input", inputs, export)
    others = _read(study_ref, "analysed input", other_inputs, export, pixels=False)
    if not originals:
        return export
    scrubber = TextScrubber(identifiers_from_headers(ds for _, _, ds in originals + others))
    withheld: dict[str, Withheld] = {}
    for _, _, dataset in originals + others:
        verdict = pixels_may_identify(dataset)
        if verdict is not None and "SOPInstanceUID" in dataset:
            withheld[str(dataset.SOPInstanceUID)] = verdict[0]
    for _, _, dataset in originals:  # after the images: a Segmentation goes with the image it segments
        if str(dataset.get("SOPInstanceUID", "")) not in withheld and segmentation_of_withheld(dataset, withheld):
            withheld[str(dataset.SOPInstanceUID)] = Withheld.SOURCE_WITHHELD
    anonymizer = study_anonymizer()
    numbers: dict[str, int] = {}
    for kind, path, dataset in originals:
        numbers[kind] = numbers.get(kind, 0) + 1
        where = f"study {study_ref}, {kind} #{numbers[kind]}"
        if withheld.get(str(dataset.get("SOPInstanceUID", ""))) is Withheld.SOURCE_WITHHELD:
            export.left_out.append(
                f"{where}: a Segmentation of an image that is left out of this export; the Segmentation is not exported"
            )
            continue
        if str(dataset.get("SOPInstanceUID", "")) not in withheld:
            found = remove_references(dataset, withheld)
            if found and "ContentSequence" in dataset:
                note_left_out(dataset, left_out_sentence(found))
        try:
            deidentify_dataset(dataset, anonymizer, scrubber, where)
        except DeidentificationError as exc:
            export.left_out.append(str(exc))
            continue
        folder = export_dir / str(dataset.StudyInstanceUID)
        prefix = path.name.split("-", 1)[0] if kind == "result" and "-" in path.name else ("IM" if kind == "input" else "RES")
        name = f"{prefix}-{dataset.SOPInstanceUID}.dcm"
        export.written.append(write_dataset_atomically(dataset, folder, name))
        export.folder = folder
    return export
