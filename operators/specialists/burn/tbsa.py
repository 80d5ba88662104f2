"""The imaged body region of a burn photograph, and the %TBSA estimate it allows.

A single photograph cannot show the whole body, so the burned share of the total body surface
area (%TBSA) is estimated only where the header says which region is shown:

    %TBSA ≈ share of the region (rule of nines, adult; Lund and Browder for sub-regions)
            × wound area as a fraction of the visible skin of the photograph.

The region is read from AnatomicRegionSequence (a SNOMED CT code) first, then from
BodyPartExamined (a DICOM defined term, mapped to SNOMED CT by PS3.16 Annex L). The region table,
with shares, the rule each share comes from and whether the region is a special area, is
configuration (`tbsa.regions` in app/config/burn.yaml). Everything else gives "not estimable from
this image", with the reason.
"""

from __future__ import annotations

import functools
from datetime import date

from highdicom._standard_utils import get_anatomic_region_map
from pydicom.dataset import Dataset

from operators.specialists.burn.config import BodyRegion, TbsaSettings
from operators.specialists.burn.findings import FlagValue, ImagedRegion, TbsaEstimate
from common.codes import Code

NOT_ESTIMABLE = "not estimable from this image"

_SNOMED_SCHEMES = ("SCT", "SRT")


@functools.cache
def _annex_l() -> dict[str, Code]:
    """PS3.16 Annex L: BodyPartExamined defined term → SNOMED CT code.

    highdicom ships the table (pinned version); its accessor is internal to highdicom, so it is
    wrapped here.
    """
    return {term: Code("SCT", str(concept.value), str(concept.meaning)) for term, (concept, _) in get_anatomic_region_map().items()}


@functools.cache
def _meanings() -> dict[str, str]:
    return {code.value: code.meaning for code in _annex_l().values()}


def _site_code(value: str, fallback_meaning: str) -> Code:
    return Code("SCT", value, _meanings().get(value, fallback_meaning))


def _laterality(header: Dataset) -> str:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(header.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return ""


def _from_table(region: BodyRegion, site: Code, laterality: str, source: str) -> ImagedRegion:
    return ImagedRegion(
        name=region.name,
        site=site,
        laterality=laterality,
        source=source,
        share_percent=region.share,
        share_rule=region.rule,
        special=FlagValue.YES if region.special == "yes" else FlagValue.NO if region.special == "no" else FlagValue.UNKNOWN,
        special_reason=region.special_reason,
    )


def _unlisted(site: Code, laterality: str, source: str) -> ImagedRegion:
    return ImagedRegion(
        name=site.meaning.lower(),
        site=site,
        laterality=laterality,
        source=source,
        share_percent=None,
        share_rule="",
        special=FlagValue.UNKNOWN,
        special_reason="the region is not in the burn configuration's region table",
    )


def imaged_region(header: Dataset, settings: TbsaSettings) -> ImagedRegion | None:
    """The region the photograph shows, from its header; None when the header names none.

    AnatomicRegionSequence (first SNOMED CT item) wins over BodyPartExamined. A coded region that
    the configured table does not list is still returned (as the finding site), with no share and
    an unknown special-area status.
    """
    laterality = _laterality(header)
    unlisted: ImagedRegion | None = None
    for item in header.get("AnatomicRegionSequence", None) or []:
        scheme = str(item.get("CodingSchemeDesignator", "") or "").strip().upper()
        value = str(item.get("CodeValue", "") or "").strip()
        if scheme not in _SNOMED_SCHEMES or not value:
            continue
        meaning = str(item.get("CodeMeaning", "") or "").strip() or value
        site = Code("SCT", value, meaning)
        region = settings.by_code(value)
        if region is not None:
            return _from_table(region, site, laterality, "AnatomicRegionSequence")
        unlisted = unlisted or _unlisted(site, laterality, "AnatomicRegionSequence")
    term = str(header.get("BodyPartExamined", "") or "").strip().upper()
    if term:
        region = settings.by_body_part(term)
        if region is not None:
            mapped = _annex_l().get(term)
            site = mapped if mapped is not None else _site_code(region.codes[0], region.name)
            return _from_table(region, site, laterality, "BodyPartExamined")
        if unlisted is None and term in _annex_l():
            unlisted = _unlisted(_annex_l()[term], laterality, "BodyPartExamined")
    return unlisted


def _age_in_years(header: Dataset) -> float | None:
    """The patient's age at the study from PatientAge (nnnD/W/M/Y), else birth and study dates; None if unknown."""
    age = str(header.get("PatientAge", "") or "").strip().upper()
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[age[3]]
        return int(age[:3]) / per_year
    birth = str(header.get("PatientBirthDate", "") or "").strip()
    when = str(header.get("StudyDate", "") or header.get("ContentDate", "") or "").strip()
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        seen = date(int(when[:4]), int(when[4:6]), int(when[6:8]))
    except (ValueError, IndexError):
        return None
    return (seen - born).days / 365.25


def estimate_tbsa(
    region: ImagedRegion | None,
    wound_percent_of_skin: float | None,
    header: Dataset,
    settings: TbsaSettings,
    not_measured_reason: str = "",
) -> TbsaEstimate:
    """%TBSA ≈ region share × wound fraction of the visible skin, or why it is not estimable.

    Not estimable when the header names no region, the region has no share in the table, the wound
    area could not be measured, or the patient is younger than the adult rule allows.
    """
    if region is None:
        return TbsaEstimate(
            None, f"{NOT_ESTIMABLE}: the header names no body region (BodyPartExamined, AnatomicRegionSequence)"
        )
    if region.share_percent is None:
        return TbsaEstimate(
            None, f"{NOT_ESTIMABLE}: no share of the total body surface is defined for the {region.name} region"
        )
    if wound_percent_of_skin is None:
        why = f" ({not_measured_reason})" if not_measured_reason else ""
        return TbsaEstimate(None, f"{NOT_ESTIMABLE}: the wound area could not be measured{why}")
    age = _age_in_years(header)
    if age is not None and age < settings.adult_min_age_years:
        return TbsaEstimate(
            None,
            f"{NOT_ESTIMABLE}: the adult rule of nines does not apply to a patient younger than "
            f"{settings.adult_min_age_years:g} years",
        )
    percent = region.share_percent * wound_percent_of_skin / 100.0
    assumption = "" if age is not None else "; the patient's age is not in the header, an adult is assumed"
    return TbsaEstimate(
        percent,
        f"estimate: {region.name} {region.share_percent:g} % of the body surface ({region.share_rule}) × "
        f"wound {wound_percent_of_skin:.1f} % of the visible skin = {percent:.2f} % TBSA; assumes the photograph "
        f"shows the whole {region.name} region and its visible skin is representative of it{assumption}",
    )
