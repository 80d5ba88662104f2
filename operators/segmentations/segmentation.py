"""Building, and reading back, the DICOM Segmentation of one specialist label map.

Built with highdicom's `Segmentation` as **BINARY** Segmentation Storage (1.2.840.10008.5.1.4.1.1.66.4):
every viewer that shows DICOM SEG reads it, whereas the newer Label Map Segmentation class is not
yet shown by all. One frame per segment, empty segments included (`omit_empty_frames=False`), so
segment *n* is frame *n* and the report can reference every segment by frame.

- **Geometry**: the source image's own Rows × Columns. A label map computed on a reduced copy is
  resampled nearest-neighbour by pixel centres (`resample_labels`): source pixel (r, c) takes the
  label at (⌊(r + ½)·h / Rows⌋, ⌊(c + ½)·w / Columns⌋) of the h × w map. No pixel of the source
  image is copied.
- **Identity**: highdicom copies patient and study attributes from its source dataset, so it is
  given a minimal one (the photograph's UIDs and size plus the conformant identity of
  `operators.outputs.output_identity`), as the SR is: no free text or invalid value of the source
  reaches the Segmentation. Same study, a new series (number 9003) of this application.
- **Segments**: label, Segmented Property Category and Type, algorithm (type AUTOMATIC, name,
  version, family), recommended display colour (CIE L*a*b*), a Tracking ID (the finding group's
  tracking identifier and the segment number) and a Tracking UID that the report's segment group
  carries too.
- **Content flags**: Burned In Annotation NO (masks carry no text). Recognizable Visual Features
  follows the source (`capture_content_flags`): a skin segment traces the outline of the skin in
  the photograph, which for a face may be recognisable, so a Segmentation of a photograph that
  declares nothing declares YES and leaves a de-identified export with its photograph.
- Only single-frame source images: a frame of a multi-frame image gets no Segmentation
  (`SegmentationNotWritten`, logged by the writer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.seg import Segmentation, SegmentAlgorithmTypeValues, SegmentDescription, segread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from common.product import UNTRAINED_SUFFIX
from operators.captures.secondary_capture import AI_COMMENT, UNTRAINED_COMMENT, capture_content_flags, patient_orientation
from operators.dicom_input.dicom_read import analysed_instance_header
from operators.messages import ImageSource, SpecialistSegmentation, StudyAnalysis
from operators.outputs.dicom_output import write_dataset_atomically
from operators.outputs.output_identity import ReportIdentity, report_identity
from operators.sr import coding
from operators.sr.sr_content import DeviceIdentity, SegmentationEvidence, SegmentFindings

logger = logging.getLogger("biomedclip_map.segmentation")

#: Series number of the Segmentations (the SR uses 9001, the captures 9002).
SEGMENTATION_SERIES_NUMBER = 9003
#: Tracking ID is LO: at most 64 characters.
_LO_MAX = 64


class SegmentationBuildError(ValueError):
    """A Segmentation cannot be built; the message names the study reference and why."""


class SegmentationNotWritten(ValueError):
    """A label map that this product does not write as a Segmentation (the message says why)."""


@dataclass(frozen=True)
class SegmentationInput:
    """A specialist's label map with the header of its source image (read again, without pixels)."""

    segmentation: SpecialistSegmentation
    source_header: Dataset


def resample_labels(labels: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`labels` (h, w) at `rows` × `columns`, nearest-neighbour by pixel centres (see the module docstring)."""
    height, width = labels.shape
    row_index = np.minimum(((np.arange(rows) + 0.5) * (height / rows)).astype(np.intp), height - 1)
    column_index = np.minimum(((np.arange(columns) + 0.5) * (width / columns)).astype(np.intp), width - 1)
    return labels[row_index[:, None], column_index[None, :]]


def _check_labels(found: SpecialistSegmentation, rows: int, columns: int, where: str) -> None:
    """SegmentationBuildError unless the label map is a 2-D integer map of the source's aspect ratio."""
    labels = found.labels
    if labels.ndim != 2 or labels.dtype.kind not in "ui" or labels.size == 0:
        raise SegmentationBuildError(f"{where}: the label map must be a 2-D integer array; got {labels.dtype} {labels.shape}")
    if not found.segments:
        raise SegmentationBuildError(f"{where}: the label map names no segment")
    if int(labels.min()) < 0 or int(labels.max()) > len(found.segments):
        raise SegmentationBuildError(
            f"{where}: the label map holds values outside 0..{len(found.segments)}, the segments it describes"
        )
    height, width = labels.shape
    if height > rows or width > columns or abs(height * columns - width * rows) > (rows + columns) / 2 + 1:
        raise SegmentationBuildError(
            f"{where}: a {width} x {height} label map is not a reduced copy of the {columns} x {rows} source image"
        )


def _carrier(source: Dataset, identity: ReportIdentity, study_uid: str) -> Dataset:
    """The minimal source dataset highdicom derives the Segmentation from (see the module docstring)."""
    carrier = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Rows", "Columns"):
        setattr(carrier, keyword, source[keyword].value)
    identity.apply_to(carrier)
    carrier.StudyInstanceUID = study_uid
    return carrier


def tracking_id(tracking_identifier: str, number: int) -> str:
    """The Tracking ID of segment `number` of the finding group `tracking_identifier` (≤ 64 characters)."""
    suffix = f", segment {number}"
    return tracking_identifier[: _LO_MAX - len(suffix)] + suffix


def build_segmentation(
    item: SegmentationInput,
    *,
    study_ref: str,
    identity: ReportIdentity,
    device: DeviceIdentity,
    series_instance_uid: str,
    instance_number: int,
    untrained: bool,
) -> SegmentationEvidence:
    """The Segmentation of one label map, built in memory, and the report's groups about its segments.

    Raises SegmentationNotWritten for a frame of a multi-frame image, SegmentationBuildError
    (naming the study reference) when the label map does not fit its source image or highdicom
    refuses the content.
    """
    found, source = item.segmentation, item.source_header
    where = f"study {study_ref}, segmentation {found.tracking_identifier!r}"
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        raise SegmentationNotWritten(
            f"{where}: its source is a frame of a multi-frame image; Segmentations are written for single-frame images only"
        )
    rows, columns = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    study_uid = str(source.get("StudyInstanceUID", "") or "")
    if not rows or not columns or not study_uid:
        raise SegmentationBuildError(f"{where}: the source image's header lacks Rows, Columns or StudyInstanceUID")
    _check_labels(found, rows, columns, where)
    full = resample_labels(found.labels, rows, columns)
    masks = np.stack([full == number for number in range(1, len(found.segments) + 1)], axis=-1)[None].astype(np.uint8)
    del full
    tracking_uids = [generate_uid() for _ in found.segments]
    descriptions = [
        SegmentDescription(
            segment_number=number,
            segment_label=segment.label[:_LO_MAX],
            segmented_property_category=coding.coded(segment.category),
            segmented_property_type=coding.coded(segment.property_type),
            algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=segment.algorithm_name, family=coding.coded(segment.algorithm_family), version=segment.algorithm_version
            ),
            tracking_uid=uid,
            tracking_id=tracking_id(found.tracking_identifier, number),
            display_color=hd.color.CIELabColor.from_rgb(*segment.display_colour),
        )
        for number, (segment, uid) in enumerate(zip(found.segments, tracking_uids), start=1)
    ]
    comment = AI_COMMENT.format(app=device.observer_name) + (UNTRAINED_COMMENT if untrained else "")
    try:
        segmentation = Segmentation(
            source_images=[_carrier(source, identity, study_uid)],
            pixel_array=masks,
            segmentation_type="BINARY",
            segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid,
            series_number=SEGMENTATION_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer=device.manufacturer,
            manufacturer_model_name=device.model_name,
            software_versions=device.software_version,
            # Type 1 in Enhanced General Equipment: the installation's UID where no serial number is set.
            device_serial_number=device.serial_number or device.device_uid,
            content_label=found.content_label,
            content_description=(found.series_description + (UNTRAINED_SUFFIX if untrained else ""))[:_LO_MAX],
            series_description=found.series_description + (UNTRAINED_SUFFIX if untrained else ""),
            omit_empty_frames=False,
        )
    except (ValueError, TypeError) as exc:
        raise SegmentationBuildError(f"{where}: the Segmentation cannot be built: {exc}") from exc
    identity.apply_to(segmentation)
    segmentation.SpecificCharacterSet = "ISO_IR 192"
    segmentation.PatientOrientation = patient_orientation(source)
    segmentation.BurnedInAnnotation = "NO"
    segmentation.RecognizableVisualFeatures = capture_content_flags(source)[1]
    segmentation.ImageComments = comment
    if any(code.scheme == coding.LOCAL_SCHEME for s in found.segments for code in (s.category, s.property_type, s.algorithm_family)):
        segmentation.CodingSchemeIdentificationSequence = [coding.coding_scheme_identification()]
    reference = ImageSource(str(segmentation.SOPClassUID), str(segmentation.SOPInstanceUID), None)
    groups = tuple(
        SegmentFindings(
            tracking_identifier=tracking_id(found.tracking_identifier, number),
            tracking_uid=uid,
            segmentation=ImageSource(reference.sop_class_uid, reference.sop_instance_uid, number),
            source_image=ImageSource(str(source.SOPClassUID), str(source.SOPInstanceUID), None),
            category=segment.category,
            property_type=segment.property_type,
            algorithm_name=segment.algorithm_name,
            algorithm_version=segment.algorithm_version,
            measurements=segment.measurements,
        )
        for number, (segment, uid) in enumerate(zip(found.segments, tracking_uids), start=1)
    )
    return SegmentationEvidence(segmentation, groups)


def _source_header(analysis: StudyAnalysis, source: ImageSource) -> Dataset:
    """The header of the analysed instance a label map was made from (read again, without pixels)."""
    return analysed_instance_header(analysis, source, SegmentationBuildError, "a specialist's segmentation")


def build_study_segmentations(
    analysis: StudyAnalysis, device: DeviceIdentity, identity: ReportIdentity | None = None
) -> list[SegmentationEvidence]:
    """Every Segmentation of the study (one per specialist label map), built in memory, in one new series.

    A label map that is not written (`SegmentationNotWritten`) gets one log line naming the study
    reference and why; any other problem raises SegmentationBuildError.
    """
    identity = identity or report_identity(analysis.study.header)
    series_uid = generate_uid()
    built: list[SegmentationEvidence] = []
    for found in (s for specialist in analysis.specialists for s in specialist.segmentations):
        item = SegmentationInput(found, _source_header(analysis, found.source))
        try:
            built.append(
                build_segmentation(
                    item, study_ref=analysis.study.ref, identity=identity, device=device,
                    series_instance_uid=series_uid, instance_number=len(built) + 1, untrained=analysis.model.untrained,
                )
            )
        except SegmentationNotWritten as exc:
            logger.warning("%s", exc)
    return built


def segmentation_filename(study_ref: str, number: int) -> str:
    """`SEG-<study ref>-<n>.dcm`: the file name of the n-th Segmentation of a study (no identifiers)."""
    return f"SEG-{study_ref}-{number}.dcm"


def write_study_segmentations(built: Sequence[SegmentationEvidence], output_dir: Path, study_ref: str) -> list[Path]:
    """Write each Segmentation atomically into `output_dir`; return the paths in order."""
    return [
        write_dataset_atomically(item.dataset, output_dir, segmentation_filename(study_ref, number))
        for number, item in enumerate(built, start=1)
    ]


def read_segment_masks(path: Path) -> dict[int, np.ndarray]:
    """The boolean mask of every segment of a written Segmentation of one single-frame image, by segment number."""
    segmentation = segread(path)
    numbers = [int(item.SegmentNumber) for item in segmentation.SegmentSequence]
    source = str(segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
    pixels = segmentation.get_pixels_by_source_instance([source], segment_numbers=numbers, combine_segments=False)
    return {number: pixels[0, ..., index].astype(bool) for index, number in enumerate(numbers)}

