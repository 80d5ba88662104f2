"""The product's local coding scheme (99BMCLIP) and every coded concept the report uses.

DICOM SR names each item by a coded concept. We use DCM, SNOMED CT (SCT) and UCUM codes where
they exist; what has no standard code is defined here, in one local scheme whose designator
starts with "99" as PS3.3 8.1 requires of private schemes. The report declares the scheme in its
Coding Scheme Identification Sequence (name, version, responsible organisation), so a viewer or
a downstream system can tell the codes apart from standard ones.

The 99BMCLIP scheme, version 1
------------------------------
Fixed concepts:

=============  ===========================================================================
Code value     Code meaning
=============  ===========================================================================
ZERO-SHOT      Zero-shot image-text classification (the measurement method of a group)
(labels)       Label codes that the zero-shot task file gives in 99BMCLIP, e.g. BURN-WOUND
BURN-ANALYSIS  Burn photograph analysis (method of a burn measurement group)
BURN-DEPTH     Burn depth (qualitative evaluation; values from app/config/burn.yaml)
BURN-SPT       Superficial partial-thickness burn of skin (no SNOMED CT concept verified)
BURN-DPT       Deep partial-thickness burn of skin (no SNOMED CT concept verified)
COLOUR-MAP     Colour wound map (per-pixel classification in CIELAB)
RULE-OF-NINES  Rule of nines (adult)
LUND-BROWDER   Lund and Browder chart (adult)
SKIN-AREA      Visible skin, percent of image
WOUND-AREA     Wound area, percent of visible skin
REGION-SHARE   Imaged body region, percent of total body surface area
TBSA-EST       Estimated burned total body surface area
NOT-ESTIMABLE  Not estimable from this image
NOT-MEASURED   Not measured
FLAG-SURGICAL  Needs surgical assessment
FLAG-SPECIAL   Burn of a special area
FLAG-REFERRAL  Burn centre referral suggested (ABA criteria)
FLAG-REVIEW    Requires clinician review
WC-MOIST, ...  Wound colour classes without a SNOMED CT concept (app/config/burn.yaml)
=============  ===========================================================================

Derived concepts: for every label code (scheme S, value V, meaning M) the concept
"probability of that label" has code value ``P-<S>-<V>`` and code meaning
``Probability of <M>`` in 99BMCLIP, e.g. ``P-SCT-233604007`` "Probability of Pneumonia".
Likewise, the area of a wound colour class (S, V, M) is ``A-<S>-<V>`` "Area of <M>, percent of
visible skin". Values longer than 16 characters are carried in Long Code Value (PS3.3 8.8), which
highdicom chooses by itself.
"""

from __future__ import annotations

import functools

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from common.codes import Code

LOCAL_SCHEME = "99BMCLIP"
LOCAL_SCHEME_NAME = "biomedclip-map local concepts"
LOCAL_SCHEME_VERSION = "1"
LOCAL_SCHEME_ORGANIZATION = "biomedclip-map project"

#: Prefix of the code value of a derived "Probability of <label>" concept.
PROBABILITY_PREFIX = "P-"

#: Measurement method of every measurement group the product writes.
ZERO_SHOT_METHOD = CodedConcept("ZERO-SHOT", LOCAL_SCHEME, "Zero-shot image-text classification")

#: Unit of the probability measurements: UCUM percent, 0-100.
PERCENT = CodedConcept.from_code(codes.UCUM.Percent)

#: Decimal places kept of a value expressed in percent (0.01 % resolution).
PERCENT_DECIMALS = 2


def stored_percent(probability: float) -> float:
    """A probability (0-1) as the percent value the report stores, rounded to PERCENT_DECIMALS."""
    return round(float(probability) * 100.0, PERCENT_DECIMALS)

#: Derivation of a series-level probability computed as the mean over several images.
MEAN = CodedConcept.from_code(codes.SCT.Mean)

#: The value of a label's qualitative evaluation at the site's operating point (SNOMED CT qualifiers).
PRESENT = Code("SCT", "52101004", "Present")
ABSENT = Code("SCT", "272519000", "Absent")
INDETERMINATE = Code("SCT", "82334004", "Indeterminate")
DECISION_VALUES = (PRESENT, ABSENT, INDETERMINATE)

#: Concept name of the narrative TEXT items (DCM 121106 "Comment").
COMMENT = CodedConcept.from_code(codes.DCM.Comment)

#: Root-level container for narrative evaluations in TID 1500 (UMLS C0034375).
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item that declares 99BMCLIP in a document."""
    return CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME,
        name=LOCAL_SCHEME_NAME,
        version=LOCAL_SCHEME_VERSION,
        responsible_organization=LOCAL_SCHEME_ORGANIZATION,
    )


def coded(code: Code) -> CodedConcept:
    """A task-file code (SCT, DCM, LOINC or 99BMCLIP) as a highdicom coded concept."""
    return CodedConcept(code.value, code.scheme, code.meaning)


def as_code(concept: CodedConcept) -> Code:
    """A highdicom coded concept read from a document, as the task-file `Code` type."""
    return Code(scheme=str(concept.scheme_designator), value=str(concept.value), meaning=str(concept.meaning))


def probability_concept(label: Code) -> Code:
    """The 99BMCLIP concept "Probability of <label>" under which a label's probability is reported."""
    return Code(
        scheme=LOCAL_SCHEME,
        value=f"{PROBABILITY_PREFIX}{label.scheme}-{label.value}",
        meaning=f"Probability of {label.meaning}",
    )


@functools.cache
def _modality_codes() -> dict[str, object]:
    return {getattr(codes.cid33, keyword).value: getattr(codes.cid33, keyword) for keyword in codes.cid33.dir()}


def coded_modality(modality: str) -> CodedConcept:
    """The DCM code of a DICOM Modality value (CID 33), or DCM "OT" Other if it has none.

    CID 33 covers every defined term of the Modality attribute; a source without a usable
    Modality is described as "Other" rather than refused, because the modality only describes
    the image in the report's image library.
    """
    by_value = _modality_codes()
    return CodedConcept.from_code(by_value.get(modality.strip().upper()) or by_value["OT"])


_PROJECTION_RADIOGRAPHY = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG"})


def procedure_reported(modality: str) -> CodedConcept:
    """The TID 1500 "Procedure reported" for a source modality, from CID 100.

    CID 100 has an "unspecified body region" procedure for CT, MR, PET, NM and X-ray; other
    modalities (photographs, ultrasound, secondary capture) are reported as SCT 363679005
    "Imaging procedure".
    """
    key = modality.strip().upper()
    if key == "CT":
        code = codes.cid100.CTUnspecifiedBodyRegion
    elif key == "MR":
        code = codes.cid100.MRIUnspecifiedBodyRegion
    elif key == "PT":
        code = codes.cid100.PETUnspecifiedBodyRegion
    elif key == "NM":
        code = codes.cid100.NMUnspecifiedBodyRegion
    elif key in _PROJECTION_RADIOGRAPHY:
        code = codes.cid100.XRUnspecifiedBodyRegion
    else:
        code = codes.cid100.ImagingProcedure
    return CodedConcept.from_code(code)


# --------------------------------------------------------------------------- burn specialist

#: Measurement method of a burn measurement group (one per analysed burn photograph).
BURN_METHOD = CodedConcept("BURN-ANALYSIS", LOCAL_SCHEME, "Burn photograph analysis")
#: Method of the wound areas: per-pixel colour classification (operators/wound_colour.py).
COLOUR_WOUND_MAP = CodedConcept("COLOUR-MAP", LOCAL_SCHEME, "Colour wound map (CIELAB)")
#: Methods of the %TBSA estimate, by the rule the region's share comes from.
RULE_OF_NINES = CodedConcept("RULE-OF-NINES", LOCAL_SCHEME, "Rule of nines (adult)")
LUND_BROWDER = CodedConcept("LUND-BROWDER", LOCAL_SCHEME, "Lund and Browder chart (adult)")

BURN_DEPTH = Code(LOCAL_SCHEME, "BURN-DEPTH", "Burn depth")
SKIN_AREA = Code(LOCAL_SCHEME, "SKIN-AREA", "Visible skin, percent of image")
WOUND_AREA = Code(LOCAL_SCHEME, "WOUND-AREA", "Wound area, percent of visible skin")
REGION_SHARE = Code(LOCAL_SCHEME, "REGION-SHARE", "Imaged body region, percent of total body surface area")
TBSA_ESTIMATE = Code(LOCAL_SCHEME, "TBSA-EST", "Estimated burned total body surface area")
NOT_ESTIMABLE = Code(LOCAL_SCHEME, "NOT-ESTIMABLE", "Not estimable from this image")
NOT_MEASURED = Code(LOCAL_SCHEME, "NOT-MEASURED", "Not measured")

FLAG_SURGICAL = Code(LOCAL_SCHEME, "FLAG-SURGICAL", "Needs surgical assessment")
FLAG_SPECIAL_AREA = Code(LOCAL_SCHEME, "FLAG-SPECIAL", "Burn of a special area")
FLAG_REFERRAL = Code(LOCAL_SCHEME, "FLAG-REFERRAL", "Burn centre referral suggested (ABA criteria)")
FLAG_REVIEW = Code(LOCAL_SCHEME, "FLAG-REVIEW", "Requires clinician review")

#: Values of the flags (SNOMED CT qualifier values).
YES = Code("SCT", "373066001", "Yes")
NO = Code("SCT", "373067005", "No")
UNKNOWN = Code("SCT", "261665006", "Unknown")

#: Segmented Property Categories (CID 7150) and the skin type (CID 7151/7166), and the algorithm
#: family of per-pixel colour classification (CID 7162), for the wound map's Segmentation.
ANATOMICAL_STRUCTURE = Code("SCT", "91723000", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("SCT", "49755003", "Morphologically Abnormal Structure")
SKIN = Code("SCT", "39937001", "Skin")
MULTISPECTRAL_PROCESSING = Code("DCM", "123108", "Multispectral Processing")

#: Laterality of a finding site (SNOMED CT), by the DICOM Laterality value.
LATERALITY = {"L": Code("SCT", "7771000", "Left"), "R": Code("SCT", "24028007", "Right")}

#: Prefix of the code value of a derived "Area of <wound class>" concept.
AREA_PREFIX = "A-"


def area_concept(wound_class: Code) -> Code:
    """The 99BMCLIP concept "Area of <class>, percent of visible skin" of a wound colour class."""
    return Code(
        scheme=LOCAL_SCHEME,
        value=f"{AREA_PREFIX}{wound_class.scheme}-{wound_class.value}",
        meaning=f"Area of {wound_class.meaning}, percent of visible skin",
    )


def tbsa_method(rule: str) -> CodedConcept:
    """The coded method of a %TBSA estimate whose region share comes from `rule` (burn.yaml words)."""
    return LUND_BROWDER if "lund" in rule.lower() else RULE_OF_NINES
