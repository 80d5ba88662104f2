"""Body region, %TBSA estimate and clinical flags of the burn specialist, on header variations.

Each special area (face, hand, foot, genitalia/perineum, major joints) from AnatomicRegionSequence
and from BodyPartExamined, an unknown region, no anatomy at all; the adult-only rule; the flag
thresholds; and the configuration file's error messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from operators.sr import coding
from operators.specialists.burn.config import BurnConfigError, load_burn_config
from operators.specialists.burn.flags import NOT_ASSESSED, burn_flags
from operators.specialists.burn.findings import FlagValue, TbsaEstimate
from operators.specialists.burn.tbsa import NOT_ESTIMABLE, estimate_tbsa, imaged_region

CONFIG = load_burn_config()
KEYS = [c.key for c in CONFIG.depth.classes]


def header(*, region: tuple[str, str] | None = None, body_part: str | None = None, **attributes) -> Dataset:
    ds = Dataset()
    if region:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = region[0], "SCT", region[1]
        ds.AnatomicRegionSequence = [item]
    if body_part:
        ds.BodyPartExamined = body_part
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def probabilities(**values: float) -> np.ndarray:
    """Depth probabilities by class key; the rest of the mass is spread over the other classes."""
    p = np.zeros(len(KEYS), np.float32)
    for key, value in values.items():
        p[KEYS.index(key)] = value
    rest = [i for i, k in enumerate(KEYS) if k not in values]
    p[rest] = (1.0 - p.sum()) / len(rest)
    return p


def flags_for(ds: Dataset, p: np.ndarray, wound_percent: float | None = 20.0):
    region = imaged_region(ds, CONFIG.tbsa)
    tbsa = estimate_tbsa(region, wound_percent, ds, CONFIG.tbsa)
    return {f.concept: f for f in burn_flags(p, CONFIG.depth, CONFIG.flags, region, tbsa)}, region, tbsa


SPECIAL_BY_CODE = [
    ("89545001", "Face", "face"),
    ("85562004", "Hand", "hand"),
    ("7569003", "Finger", "hand"),
    ("56459004", "Foot", "foot"),
    ("38864007", "Perineum", "genitalia / perineum"),
    ("20233005", "Scrotum", "genitalia / perineum"),
    ("72696002", "Knee", "major joint"),
    ("16953009", "Elbow joint", "major joint"),
    ("16982005", "Shoulder", "major joint"),
    ("74670003", "Wrist joint", "major joint"),
    ("24136001", "Hip joint", "major joint"),
    ("70258002", "Ankle joint", "major joint"),
]


@pytest.mark.parametrize("code, meaning, reason", SPECIAL_BY_CODE)
def test_each_special_area_from_anatomic_region_sequence(code, meaning, reason):
    flags, region, _ = flags_for(header(region=(code, meaning)), probabilities(superficial=0.6))
    special = flags[coding.FLAG_SPECIAL_AREA]
    assert special.value is FlagValue.YES
    assert reason in special.inputs and "AnatomicRegionSequence" in special.inputs
    assert region.site == coding.Code("SCT", code, meaning)
    referral = flags[coding.FLAG_REFERRAL]
    assert referral.value is FlagValue.YES and "burn of a special area" in referral.inputs


@pytest.mark.parametrize("term, site", [("FACE", "89545001"), ("HAND", "85562004"), ("FOOT", "56459004"), ("KNEE", "72696002"), ("PERINEUM", "38864007")])
def test_special_areas_from_body_part_examined_get_their_annex_l_code(term, site):
    flags, region, _ = flags_for(header(body_part=term), probabilities(superficial=0.6))
    assert flags[coding.FLAG_SPECIAL_AREA].value is FlagValue.YES
    assert region.source == "BodyPartExamined" and region.site.value == site and region.site.scheme == "SCT"


def test_a_region_that_is_not_special_and_its_tbsa_estimate():
    ds = header(region=("14975008", "Forearm"), body_part="ARM", Laterality="L", PatientAge="045Y")
    flags, region, tbsa = flags_for(ds, probabilities(superficial=0.6), wound_percent=20.0)
    assert region.name == "forearm" and region.laterality == "L" and region.source == "AnatomicRegionSequence"
    assert flags[coding.FLAG_SPECIAL_AREA].value is FlagValue.NO
    assert tbsa.percent == pytest.approx(3.0 * 0.20)
    assert "Lund and Browder" in tbsa.method and "estimate" in tbsa.method
    assert flags[coding.FLAG_REFERRAL].value is FlagValue.NO


def test_a_region_that_may_include_a_special_area_is_unknown():
    flags, region, tbsa = flags_for(header(body_part="UPPERLIMB"), probabilities(superficial=0.6))
    assert flags[coding.FLAG_SPECIAL_AREA].value is FlagValue.UNKNOWN
    assert "may include the hand" in flags[coding.FLAG_SPECIAL_AREA].inputs
    assert tbsa.percent == pytest.approx(9.0 * 0.20) and "rule of nines" in tbsa.method
    assert flags[coding.FLAG_REFERRAL].value is FlagValue.UNKNOWN


def test_arm_without_annex_l_code_maps_to_the_upper_limb():
    _, region, _ = flags_for(header(body_part="ARM"), probabilities())
    assert region.name == "upper limb" and region.site == coding.Code("SCT", "53120007", "Upper limb")


def test_no_anatomy_in_the_header():
    flags, region, tbsa = flags_for(header(), probabilities(superficial=0.6))
    assert region is None
    assert tbsa.percent is None and tbsa.method.startswith(NOT_ESTIMABLE) and "BodyPartExamined" in tbsa.method
    assert flags[coding.FLAG_SPECIAL_AREA].value is FlagValue.UNKNOWN
    assert flags[coding.FLAG_REFERRAL].value is FlagValue.UNKNOWN


def test_skin_as_body_part_is_no_region():
    _, region, tbsa = flags_for(header(body_part="SKIN"), probabilities())
    assert region is None and tbsa.percent is None


def test_an_unknown_coded_region_is_the_finding_site_but_has_no_share():
    flags, region, tbsa = flags_for(header(region=("81745001", "Eye")), probabilities(superficial=0.6))
    assert region.site == coding.Code("SCT", "81745001", "Eye")
    assert region.share_percent is None and tbsa.percent is None and NOT_ESTIMABLE in tbsa.method
    assert flags[coding.FLAG_SPECIAL_AREA].value is FlagValue.UNKNOWN


def test_anatomic_region_sequence_wins_over_body_part_examined():
    _, region, _ = flags_for(header(region=("85562004", "Hand"), body_part="CHEST"), probabilities())
    assert region.name == "hand"


def test_a_joint_has_no_share_so_no_tbsa():
    _, _, tbsa = flags_for(header(body_part="KNEE"), probabilities())
    assert tbsa.percent is None and "no share" in tbsa.method


@pytest.mark.parametrize("attributes", [{"PatientAge": "008Y"}, {"PatientBirthDate": "20200101", "StudyDate": "20260101"}])
def test_the_adult_rule_is_not_applied_to_children(attributes):
    _, _, tbsa = flags_for(header(body_part="FOREARM", **attributes), probabilities())
    assert tbsa.percent is None and "younger than 16" in tbsa.method


def test_no_tbsa_without_a_measured_wound_area():
    _, _, tbsa = flags_for(header(body_part="FOREARM"), probabilities(), wound_percent=None)
    assert tbsa.percent is None and "could not be measured" in tbsa.method


def test_unknown_age_assumes_an_adult_and_says_so():
    _, _, tbsa = flags_for(header(body_part="FOREARM"), probabilities())
    assert tbsa.percent is not None and "adult is assumed" in tbsa.method


def test_surgical_assessment_threshold():
    threshold = CONFIG.flags.surgical_assessment_threshold
    at = probabilities(deep_partial=threshold / 2, full_thickness=threshold / 2)
    below = probabilities(deep_partial=threshold / 2 - 0.01, full_thickness=threshold / 2)
    flag_at = flags_for(header(body_part="FOREARM"), at)[0][coding.FLAG_SURGICAL]
    flag_below = flags_for(header(body_part="FOREARM"), below)[0][coding.FLAG_SURGICAL]
    assert flag_at.value is FlagValue.YES and "at or above" in flag_at.inputs
    assert flag_below.value is FlagValue.NO and "P(deep partial-thickness)" in flag_below.inputs


def test_referral_for_a_full_thickness_burn_anywhere():
    flags, _, _ = flags_for(header(body_part="BACK"), probabilities(full_thickness=0.7))
    assert flags[coding.FLAG_REFERRAL].value is FlagValue.YES
    assert "met: full-thickness burn" in flags[coding.FLAG_REFERRAL].inputs


def test_referral_for_partial_thickness_over_ten_percent_tbsa():
    big = flags_for(header(body_part="BACK"), probabilities(superficial_partial=0.7), wound_percent=80.0)[0]
    small = flags_for(header(body_part="BACK"), probabilities(superficial_partial=0.7), wound_percent=20.0)[0]
    unknown = flags_for(header(), probabilities(superficial_partial=0.7))[0]
    assert big[coding.FLAG_REFERRAL].value is FlagValue.YES and "14.40 % TBSA" in big[coding.FLAG_REFERRAL].inputs
    assert small[coding.FLAG_REFERRAL].value is FlagValue.NO
    assert unknown[coding.FLAG_REFERRAL].value is FlagValue.UNKNOWN


def test_every_flag_states_its_inputs_and_review_is_always_required():
    for ds in (header(), header(body_part="FACE"), header(region=("14975008", "Forearm"))):
        flags, _, _ = flags_for(ds, probabilities())
        assert len(flags) == 4 and all(flag.inputs for flag in flags.values())
        assert flags[coding.FLAG_REVIEW].value is FlagValue.YES
        assert NOT_ASSESSED in flags[coding.FLAG_REFERRAL].inputs


# --------------------------------------------------------------------------- configuration


def write_config(tmp_path: Path, old: str, new: str) -> Path:
    text = Path(CONFIG.source).read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "burn.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_the_bundled_configuration_has_verified_snomed_depth_codes():
    codes = {c.key: c.code for c in CONFIG.depth.classes}
    assert codes["superficial"] == coding.Code("SCT", "403190006", "Epidermal burn of skin")
    assert codes["full_thickness"] == coding.Code("SCT", "403192003", "Full thickness burn of skin")
    assert {codes["superficial_partial"].scheme, codes["deep_partial"].scheme} == {"99BMCLIP"}
    assert all(len(CONFIG.depth.task.prompts_for(label)) > len(CONFIG.depth.task.templates) for label in CONFIG.depth.task.labels)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("surgical_assessment_threshold: 0.5", "surgical_assessment_threshold: 1.5", "flags.surgical_assessment_threshold"),
        ("  referral_depth_probability: 0.5\n", "", "flags.referral_depth_probability: required setting is missing"),
        ("  min_side: 32\n", "  min_side: 32\n  min_sides: 3\n", "colour.min_sides: unknown setting"),
        ('special: "no", codes: ["14975008"]', 'special: maybe, codes: ["14975008"]', "regions[7].special"),
        ("surgical_classes: [deep_partial, full_thickness]", "surgical_classes: [deep, full_thickness]", "depth.surgical_classes"),
        ("    - key: moist\n", "    - key: wet\n", "classes[3].key"),
        ("      hue_below_skin: 8\n", "", "colour.classes[4]: thresholds of the 'erythema' rule: hue_below_skin: required setting is missing"),
        ("      hue_below_skin: 8\n", "      hue_below_skin: lots\n", "colour.classes[4]: thresholds of the 'erythema' rule: hue_below_skin:"),
    ],
)
def test_configuration_errors_name_the_file_and_the_key(tmp_path, old, new, message):
    path = write_config(tmp_path, old, new)
    with pytest.raises(BurnConfigError) as error:
        load_burn_config(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_configuration_file_is_named(tmp_path):
    with pytest.raises(BurnConfigError, match="cannot read burn configuration"):
        load_burn_config(tmp_path / "nowhere.yaml")


def test_flags_only_accept_the_tbsa_estimate_type():
    """A TbsaEstimate without a value is the 'not estimable' case the flags handle."""
    p = probabilities(superficial_partial=0.9)
    region = imaged_region(header(body_part="BACK"), CONFIG.tbsa)
    flags = burn_flags(p, CONFIG.depth, CONFIG.flags, region, TbsaEstimate(None, f"{NOT_ESTIMABLE}: test"))
    assert flags[2].value is FlagValue.UNKNOWN and NOT_ESTIMABLE in flags[2].inputs
