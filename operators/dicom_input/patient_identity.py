"""Whether every instance of a study belongs to the same patient (identity first).

A report is filed under the patient of the study it is written into. When a Study Instance UID
holds instances of two patients (a mis-filed or merged study, a wrong worklist entry), any report
would be filed under one of them while describing, or showing, the other's images. Such a study is
not reported at all; a person must correct it at the PACS first.

**The rule** (what a PACS treats as one patient), applied to every instance of the study that was
read, images and non-images alike:

1. **Patient ID** (0010,0020) is the same in every instance, compared exactly (leading and
   trailing spaces, which DICOM uses as padding, aside; an empty Patient ID is a value like any
   other, so empty and non-empty disagree).
2. **Issuer of Patient ID** (0010,0021), where two instances both give one, is the same. An absent
   issuer agrees with any issuer: many devices never fill it in.
3. **Patient's Name** (0010,0010), where two instances both give one, names the same person: the
   alphabetic component groups are compared if both have one (else the ideographic, else the
   phonetic), ignoring case, the spaces around components and empty trailing components
   (`DOE^JOHN` = `Doe^John^^^`).
4. **Patient's Birth Date** (0010,0030), where two instances both give a valid date, is the same
   date (`1955-02-14` and `19550214` are the same date).

Names and birth dates are checked only where both are present because many objects (secondary
captures, reports from other systems) legitimately leave Type 2 attributes empty. The reason given
for a refusal names the attribute that disagrees and how many distinct values it has, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from operators.outputs.output_identity import normalise_date


@dataclass(frozen=True)
class PatientIdentity:
    """The identity attributes of one instance, in the comparable forms the rule uses."""

    patient_id: str
    issuer: str
    name_groups: tuple[str, str, str]
    birth_date: str


def _name_group(group: str) -> str:
    components = [c.strip().casefold() for c in group.split("^")]
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def identity_of(header: Dataset) -> PatientIdentity:
    """The comparable identity of one instance's header."""
    raw_name = str(header.get("PatientName", "") or "")
    groups = (raw_name.split("=") + ["", "", ""])[:3]
    birth, _reason = normalise_date(str(header.get("PatientBirthDate", "") or ""))
    return PatientIdentity(
        patient_id=str(header.get("PatientID", "") or "").strip(),
        issuer=str(header.get("IssuerOfPatientID", "") or "").strip(),
        name_groups=tuple(_name_group(g) for g in groups),  # type: ignore[arg-type]
        birth_date=birth,
    )


def _names_agree(a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
    for left, right in zip(a, b):
        if left and right:
            return left == right
    return True  # no group present in both


def _distinct(values: list[str]) -> int:
    return len(set(values))


def identity_conflict(identities: list[PatientIdentity]) -> str | None:
    """Why these instances are not one patient (a PHI-free sentence), or None when they are."""
    if len(identities) < 2:
        return None
    ids = [i.patient_id for i in identities]
    if _distinct(ids) > 1:
        return f"Patient ID differs between instances ({_distinct(ids)} distinct values among {len(ids)} instances)"
    issuers = [i.issuer for i in identities if i.issuer]
    if _distinct(issuers) > 1:
        return f"Issuer of Patient ID differs between instances ({_distinct(issuers)} distinct values)"
    names = sorted({i.name_groups for i in identities if any(i.name_groups)})
    for index, left in enumerate(names):
        if any(not _names_agree(left, right) for right in names[index + 1 :]):
            return f"Patient's Name differs between instances with the same Patient ID ({len(names)} distinct names)"
    births = [i.birth_date for i in identities if i.birth_date]
    if _distinct(births) > 1:
        return f"Patient's Birth Date differs between instances with the same Patient ID ({_distinct(births)} distinct dates)"
    return None
