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
=============  ===========================================================================

Derived concepts: for every label code (scheme S, value V, meaning M) the concept
"probability of that label" has code value ``P-<S>-<V>`` and code meaning
``Probability of <M>`` in 99BMCLIP, e.g. ``P-SCT-233604007`` "Probability of Pneumonia".
Values longer than 16 characters are carried in Long Code Value (PS3.3 8.8), which highdicom
chooses by itself.
"""

from __future__ import annotations

import functools

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from operators.tasks import Code

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

#: Derivation of a series-level probability computed as the mean over several images.
MEAN = CodedConcept.from_code(codes.SCT.Mean)

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
