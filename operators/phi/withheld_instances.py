"""Instances a de-identified export leaves out because their pixels may show who the patient is.

The export does not clean pixel data (PS3.15 Clean Pixel Data option not applied), so an image
whose pixels may carry identity is not exported at all, and the exported objects that reference
it lose those references:

- **Which instances** (`pixels_may_identify`): those declaring Burned In Annotation or
  Recognizable Visual Features YES, and photographs that declare either as nothing (the same rule
  the product's own captures declare by, `operators.captures.secondary_capture.capture_content_flags`: a
  photograph, or a colour image that may be one, can show a wristband, a chart, a name on a
  whiteboard or a face). A capture made from such a photograph declares YES, so it is withheld
  like its source; a capture of a CT or radiograph declares NO for both and is exported.
- **References** (`remove_references`): SR content items that reference a withheld instance
  (IMAGE, COMPOSITE, WAVEFORM), the Image Library Groups and other containers left empty by that
  (TID 1500's Image Library itself stays, empty), ROI measurement groups (TID 1410/1411: the
  report's groups about the segments of a Segmentation) that lose their segment or source image,
  and flat or hierarchical reference items (Current Requested Procedure Evidence, Pertinent Other
  Evidence, Source Image Sequence and the like), with the series and study items left empty.
- **Segmentations** (`segmentation_of_withheld`) are left out with the image they segment: their
  frames are defined on it (without those references a Segmentation is invalid) and without it
  they show nothing. The product's own Segmentation also declares Recognizable Visual Features as
  its photograph does (a skin segment traces the skin's outline, a face's included) and Burned In
  Annotation NO (masks hold no text).
- **What the report says** (`note_left_out`): one TEXT item in the SR's narrative saying how many
  referenced instances are absent and why, so a reader of the copy knows the evidence is incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from highdicom.sr import ContainerContentItem, ContentSequence, RelationshipTypeValues, TextContentItem
from pydicom.dataset import Dataset

from operators.sr import coding
from operators.captures.secondary_capture import capture_content_flags


class Withheld(str, Enum):
    """Why an instance is withheld from a de-identified export."""

    BURNED_IN = "burned-in annotation"
    RECOGNIZABLE = "recognisable visual features"
    SOURCE_WITHHELD = "a segmented image that is left out"


#: SR value types that reference another instance (PS3.3 C.17.3).
_REFERENCE_VALUE_TYPES = frozenset({"IMAGE", "COMPOSITE", "WAVEFORM"})
#: Items that only group references: they go when pruning leaves them without any.
_GROUPING_SEQUENCES = ("ReferencedSOPSequence", "ReferencedSeriesSequence", "ContentSequence")
#: Segmentation Storage (BINARY/FRACTIONAL) and Label Map Segmentation Storage.
SEGMENTATION_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})
#: ROI measurement groups (TID 1410 planar, TID 1411 volumetric) measure a region or segment of a
#: referenced instance: without that reference they measure nothing, so they go with it.
_ROI_GROUP_TEMPLATES = frozenset({"1410", "1411"})
#: TID 1500 requires its Image Library (DCM 111028) even when it lists no image.
_REQUIRED_CONTAINERS = frozenset({("111028", "DCM")})


def pixels_may_identify(dataset: Dataset) -> tuple[Withheld, str] | None:
    """Whether the pixels of `dataset` may show who the patient is: (category, log-safe reason), or None.

    Objects without pixels (SR documents) are never withheld by this rule.
    """
    if "Rows" not in dataset and "PixelData" not in dataset:
        return None
    burned_in, recognizable = capture_content_flags(dataset)
    declared_burned = str(dataset.get("BurnedInAnnotation", "") or "").strip().upper()
    declared_recognizable = str(dataset.get("RecognizableVisualFeatures", "") or "").strip().upper()
    if burned_in == "YES":
        if declared_burned == "YES":
            return Withheld.BURNED_IN, "BurnedInAnnotation is YES"
        return Withheld.BURNED_IN, "BurnedInAnnotation is not declared by a photograph (taken as YES)"
    if recognizable == "YES":
        if declared_recognizable == "YES":
            return Withheld.RECOGNIZABLE, "RecognizableVisualFeatures is YES"
        return Withheld.RECOGNIZABLE, "RecognizableVisualFeatures is not declared by a photograph (taken as YES)"
    return None


def segmentation_of_withheld(dataset: Dataset, withheld: Mapping[str, Withheld]) -> bool:
    """Whether `dataset` is a Segmentation of an instance that is withheld.

    A Segmentation's frames are defined on its source image (the Referenced Series Sequence and
    the Derivation Image items): without them it is not a valid Segmentation, and without the image
    it segments it shows nothing, so it is left out with its source rather than cut loose from it.
    """
    if str(dataset.get("SOPClassUID", "")) not in SEGMENTATION_CLASSES:
        return False
    referenced = {
        str(instance.get("ReferencedSOPInstanceUID", ""))
        for series in dataset.get("ReferencedSeriesSequence", []) or []
        for instance in series.get("ReferencedInstanceSequence", []) or []
    }
    return bool(referenced & set(withheld))


def _referenced_uids(item: Dataset) -> set[str]:
    uids = {str(item.ReferencedSOPInstanceUID)} if "ReferencedSOPInstanceUID" in item else set()
    if str(item.get("ValueType", "")) in _REFERENCE_VALUE_TYPES:
        uids.update(str(ref.get("ReferencedSOPInstanceUID", "")) for ref in item.get("ReferencedSOPSequence", []) or [])
    return uids


def _concept(item: Dataset) -> tuple[str, str] | None:
    names = item.get("ConceptNameCodeSequence") or []
    return (str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)) if names else None


def _direct_references(item: Dataset) -> int:
    """How many content items directly under `item` reference an instance."""
    return sum(1 for child in item.get("ContentSequence", []) or [] if str(child.get("ValueType", "")) in _REFERENCE_VALUE_TYPES)


def _is_roi_group(item: Dataset) -> bool:
    templates = item.get("ContentTemplateSequence") or []
    return bool(templates) and str(templates[0].get("TemplateIdentifier", "")) in _ROI_GROUP_TEMPLATES


def _emptied(item: Dataset, before: set[str]) -> bool:
    """Whether pruning removed every reference an item existed to group, so the item goes too.

    A series or study item of a reference hierarchy without its references goes; an SR CONTAINER
    without content goes unless its template requires it; any other content item stays (it says
    something of its own) and only loses its empty Content Sequence.
    """
    lost = {keyword for keyword in before if keyword not in item}
    if lost - {"ContentSequence"}:
        return True
    if not lost or str(item.get("ValueType", "")) != "CONTAINER":
        return False
    return _concept(item) not in _REQUIRED_CONTAINERS


def remove_references(dataset: Dataset, withheld: Mapping[str, Withheld]) -> dict[str, Withheld]:
    """Remove from `dataset` (recursively, in place) every reference to a withheld SOP Instance UID.

    Returns the withheld instances `dataset` referenced, by UID. A sequence left with no item is
    removed (every reference sequence concerned is Type 1C or 3 when it has nothing to list).
    """
    found: dict[str, Withheld] = {}
    for element in list(dataset):
        if element.VR != "SQ" or not element.value:
            continue
        kept = []
        for item in element.value:
            hits = {uid: withheld[uid] for uid in _referenced_uids(item) if uid in withheld}
            if hits:
                found.update(hits)
                continue
            before = {keyword for keyword in _GROUPING_SEQUENCES if keyword in item}
            references = _direct_references(item)
            found.update(remove_references(item, withheld))
            lost_roi = _is_roi_group(item) and _direct_references(item) < references
            if not lost_roi and not _emptied(item, before):
                kept.append(item)
        if len(kept) < len(element.value):
            if kept:
                element.value = kept
            else:
                del dataset[element.tag]
    return found


def left_out_sentence(found: Mapping[str, Withheld]) -> str:
    """The narrative line that says how many referenced instances a copy lacks, and why."""
    counts = {reason: sum(1 for r in found.values() if r is reason) for reason in Withheld}
    why = " and ".join(f"{count} because of {reason.value}" for reason, count in counts.items() if count)
    return (
        f"De-identified copy: {len(found)} instance(s) this report refers to are left out of the copy, and the "
        f"references to them removed ({why}): their pixels may show who the patient is and this export does not "
        "clean pixel data."
    )


def note_left_out(report: Dataset, sentence: str) -> None:
    """Add `sentence` as a COMMENT TEXT item to the report's root Qualitative Evaluations container (made if absent)."""
    item = TextContentItem(coding.COMMENT, sentence, RelationshipTypeValues.CONTAINS)
    root = report.get("ContentSequence")
    if root is None:
        report.ContentSequence = ContentSequence([])
        root = report.ContentSequence
    for child in root:
        if str(child.get("ValueType", "")) == "CONTAINER" and _concept(child) == (
            coding.QUALITATIVE_EVALUATIONS.value,
            coding.QUALITATIVE_EVALUATIONS.scheme_designator,
        ):
            if "ContentSequence" not in child:
                child.ContentSequence = ContentSequence([])
            child.ContentSequence.append(item)
            return
    container = ContainerContentItem(name=coding.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContinuityOfContent = "SEPARATE"
    container.ContentSequence = ContentSequence([item])
    root.append(container)
