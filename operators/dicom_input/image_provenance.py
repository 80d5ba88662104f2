"""Originals only: which instances are not acquisitions to analyse, and why.

A PACS or MONAI Deploy Express sends whole studies, so a study arrives with everything filed in it:
the product's own earlier results, dose-report screenshots, other products' captures, images with
burned-in text. Analysing those gives nonsense (a head CT report gaining a "burn depth" from our own
overlay image) and, for our own results, a loop. `exclusion_of` looks at one instance's header and
says whether it is such an image:

- **Our own output** (never analysed, whatever a rule says): recognised by what the product writes
  into every output: its manufacturer and model name (equipment), and, where a PACS or
  de-identifier rewrote the equipment, its series descriptions and the notice in Image Comments and
  Derivation Description (content).
- **Derived or secondary images**: Image Type value 1 DERIVED or value 2 SECONDARY; Secondary
  Captures whose Conversion Type says they were made on a workstation (WSD: screen saves, dose
  reports), synthesised (SYN), drawn (DRW) or scanned from a document (SD); images with Burned In
  Annotation YES. The bundled selection rules leave these out unless a rule asks for them
  explicitly, by a condition on the attribute that marks them (`exclusion.attributes`): for example
  ``"ImageType": ["DERIVED"]`` or ``"ConversionType": "WSD"``. Digitised originals (Conversion Type
  DV, DI, DF, SI) are not excluded: a photograph taken through a capture interface is an original.
- **SOP classes that are not standard image storage classes** (private classes): never analysed,
  since their pixel semantics are vendor-defined.

An attribute that is absent never makes an instance excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom._standard_utils import get_sop_class_iod_map
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from common.product import (
    OWN_MANUFACTURERS,
    OWN_MODEL_NAMES,
    OWN_NOTICE_MARKER,
    is_own_series_description,
)

#: Secondary Capture SOP classes (single-frame and the multi-frame variants).
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
#: Conversion Types (0008,0064) of captures that are not digitised acquisitions.
NON_ORIGINAL_CONVERSIONS = {
    "WSD": "made on a workstation (a screen save, e.g. a dose report)",
    "SYN": "a synthetic image",
    "DRW": "a drawing",
    "SD": "a scanned document",
}


@dataclass(frozen=True)
class Exclusion:
    """Why an instance is not analysed, and which attributes a rule must name to ask for it anyway.

    `attributes` empty: no rule can ask for it (our own outputs, private SOP classes).
    """

    reason: str
    attributes: frozenset[str] = frozenset()

    @property
    def never(self) -> bool:
        return not self.attributes


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v).strip().upper() for v in value]
    return [str(v).strip().upper() for v in str(value).split("\\")]


def own_output_reason(header: Dataset) -> str | None:
    """Why `header` is an output of this product (a log-safe sentence), or None."""
    sop_class = UID(str(header.get("SOPClassUID", "") or ""))
    kind = sop_class.name if sop_class.is_valid and sop_class.name != str(sop_class) else "an object"
    if str(header.get("Manufacturer", "") or "").strip() in OWN_MANUFACTURERS or (
        str(header.get("ManufacturerModelName", "") or "").strip() in OWN_MODEL_NAMES
    ):
        return f"an earlier output of this product ({kind}, by its equipment attributes)"
    if is_own_series_description(str(header.get("SeriesDescription", "") or "")):
        return f"an earlier output of this product ({kind}, by its series description)"
    for keyword in ("ImageComments", "DerivationDescription"):
        if OWN_NOTICE_MARKER in str(header.get(keyword, "") or ""):
            return f"an earlier output of this product ({kind}, by its {keyword})"
    return None


def exclusion_of(header: Dataset) -> Exclusion | None:
    """Whether the instance with this header is left out of analysis, and why (None: analyse it)."""
    own = own_output_reason(header)
    if own:
        return Exclusion(own)
    sop_class = str(header.get("SOPClassUID", "") or "").strip()
    if sop_class and sop_class not in get_sop_class_iod_map():
        return Exclusion("its SOP class is not a standard DICOM storage class (a private object), so its pixels cannot be interpreted")
    image_type = _values(header.get("ImageType"))
    if image_type[:1] == ["DERIVED"]:
        return Exclusion("a derived image (Image Type DERIVED)", frozenset({"ImageType"}))
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        return Exclusion("a secondary image (Image Type SECONDARY)", frozenset({"ImageType"}))
    conversion = str(header.get("ConversionType", "") or "").strip().upper()
    if sop_class in SECONDARY_CAPTURE_CLASSES and conversion in NON_ORIGINAL_CONVERSIONS:
        return Exclusion(
            f"a secondary capture {NON_ORIGINAL_CONVERSIONS[conversion]} (Conversion Type {conversion})",
            frozenset({"ConversionType", "SOPClassUID"}),
        )
    if str(header.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return Exclusion("it has burned-in annotation (Burned In Annotation YES)", frozenset({"BurnedInAnnotation"}))
    return None
