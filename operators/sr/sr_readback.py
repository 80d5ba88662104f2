"""Reading the findings back out of a written report, with highdicom's SR reader.

This is the check that a report says what the product meant to write: `read_findings` parses a
Comprehensive 3D SR with `highdicom.sr.srread` and its TID 1500 accessors and returns the same
`ReportFindings` value that `operators.sr.sr_content.report_findings` computes before writing.
"""

from __future__ import annotations

import os
from pathlib import Path

from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    RelationshipTypeValues,
    ValueTypeValues,
    srread,
)
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes

from operators.sr import coding
from operators.messages import FindingGroup, ImageSource, MeasuredValue
from operators.sr.sr_content import (
    LabelProbability,
    REFERENCED_SEGMENTATION_FRAME,
    SOURCE_IMAGE_FOR_SEGMENTATION,
    ReportFindings,
    SegmentFindings,
    SeriesFindings,
)


class ReportReadError(ValueError):
    """A file is not a report this product can read back; the message names the file and why."""


# CODE items of a TID 1501 group that are not the reported finding.
_NOT_FINDINGS = (
    CodedConcept.from_code(codes.SCT.MeasurementMethod),
    CodedConcept.from_code(codes.SCT.FindingSite),
    CodedConcept("276214006", "SCT", "Finding category"),
)


def _texts(item: Dataset, name: CodedConcept) -> list[str]:
    """The values of the TEXT children of `item` named `name`, in document order."""
    return [str(found.TextValue) for found in find_content_items(item, name=name, value_type=ValueTypeValues.TEXT)]


def _series_findings(group: MeasurementsAndQualitativeEvaluations, where: str) -> SeriesFindings:
    """One TID 1501 measurement group as `SeriesFindings`."""
    root = group[0]
    coded = [
        found
        for found in find_content_items(
            root, value_type=ValueTypeValues.CODE, relationship_type=RelationshipTypeValues.CONTAINS
        )
        if CodedConcept.from_dataset(found.ConceptNameCodeSequence[0]) not in _NOT_FINDINGS
    ]
    # a label's present / absent / indeterminate at the site's operating point is valued by one of
    # the decision qualifiers; the one other coded item is the reported finding
    decisions = [found for found in coded if _code_value(found) in coding.DECISION_VALUES]
    coded = [found for found in coded if _code_value(found) not in coding.DECISION_VALUES]
    if len(coded) != 1:
        raise ReportReadError(f"{where}: expected one coded finding in a measurement group, found {len(coded)}")
    finding = coded[0]

    sources: list[ImageSource] = []
    for image in group.source_images:
        sop_class_uid = str(image.referenced_sop_class_uid)
        sop_instance_uid = str(image.referenced_sop_instance_uid)
        frames = image.referenced_frame_numbers
        if frames:
            sources.extend(ImageSource(sop_class_uid, sop_instance_uid, int(n)) for n in frames)
        else:
            sources.append(ImageSource(sop_class_uid, sop_instance_uid, None))

    names = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmName))
    versions = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmVersion))
    if len(names) != 1 or len(versions) != 1:
        raise ReportReadError(f"{where}: a measurement group lacks its algorithm name or version")

    return SeriesFindings(
        tracking_identifier=str(group.tracking_identifier or ""),
        finding=coding.as_code(CodedConcept.from_dataset(finding.ConceptNameCodeSequence[0])),
        top_label=coding.as_code(CodedConcept.from_dataset(finding.ConceptCodeSequence[0])),
        probabilities=tuple(
            LabelProbability(coding.as_code(measurement.name), float(measurement.value))
            for measurement in group.get_measurements()
        ),
        source_images=tuple(sources),
        algorithm_name=names[0],
        algorithm_version=versions[0],
        algorithm_parameters=tuple(_texts(root, CodedConcept.from_code(codes.DCM.AlgorithmParameters))),
        decisions=tuple(
            (coding.as_code(CodedConcept.from_dataset(found.ConceptNameCodeSequence[0])), _code_value(found)) for found in decisions
        ),
    )


def _code_value(item: Dataset):
    """The value of a CODE content item as a plain `Code`."""
    return coding.as_code(CodedConcept.from_dataset(item.ConceptCodeSequence[0]))


def read_report(path_or_dataset: str | os.PathLike | Dataset) -> Comprehensive3DSR:
    """Open a written report (file or dataset) as a highdicom Comprehensive 3D SR."""
    where = "report dataset" if isinstance(path_or_dataset, Dataset) else f"report {Path(path_or_dataset)}"
    try:
        if isinstance(path_or_dataset, Dataset):
            document = Comprehensive3DSR.from_dataset(path_or_dataset)
        else:
            document = srread(path_or_dataset)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ReportReadError(f"{where}: cannot be read as DICOM: {exc}") from exc
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise ReportReadError(f"{where}: is not a structured report this product can read: {exc}") from exc
    if not isinstance(document, Comprehensive3DSR):
        raise ReportReadError(f"{where}: is a {type(document).__name__}, not a Comprehensive 3D SR")
    return document


def read_findings(path_or_dataset: str | os.PathLike | Dataset) -> ReportFindings:
    """The findings a written report holds: measurement groups, evidence and narrative.

    Raises ReportReadError naming the file if it is not a TID 1500 report with the structure
    `operators.sr.sr_content.build_report` writes.
    """
    where = "report dataset" if isinstance(path_or_dataset, Dataset) else f"report {Path(path_or_dataset)}"
    document = read_report(path_or_dataset)
    content = document.content
    if not isinstance(content, MeasurementReport):
        raise ReportReadError(f"{where}: its content is not a TID 1500 Measurement Report")
    root = content[0]
    narrative_containers = find_content_items(
        root, name=coding.QUALITATIVE_EVALUATIONS, value_type=ValueTypeValues.CONTAINER
    )
    narrative = [text for container in narrative_containers for text in _texts(container, coding.COMMENT)]
    groups = content.get_image_measurement_groups()
    return ReportFindings(
        series=tuple(_series_findings(group, where) for group in groups if _is_zero_shot_group(group)),
        evidence=frozenset(
            (str(sop_class_uid), str(sop_instance_uid))
            for _study, _series, sop_instance_uid, sop_class_uid in document.get_evidence()
        ),
        narrative=tuple(narrative),
        specialist_groups=tuple(_specialist_group(group, where) for group in groups if not _is_zero_shot_group(group)),
        segment_groups=tuple(
            _segment_group(group, where)
            for group in content.get_planar_roi_measurement_groups(reference_type=REFERENCED_SEGMENTATION_FRAME)
        ),
    )


def _measured_values(group) -> tuple[MeasuredValue, ...]:
    return tuple(
        MeasuredValue(
            coding.as_code(m.name),
            float(m.value),
            coding.as_code(m.unit),
            coding.as_code(m.method) if m.method is not None else None,
        )
        for m in group.get_measurements()
    )


def _image_reference(root: Dataset, name: CodedConcept, where: str) -> ImageSource:
    """The one IMAGE child of `root` named `name` (SOP class, instance, first frame if any)."""
    found = find_content_items(root, name=name, value_type=ValueTypeValues.IMAGE)
    if len(found) != 1:
        raise ReportReadError(f"{where}: a segment group needs exactly one {name.meaning!r} image reference, found {len(found)}")
    reference = found[0].ReferencedSOPSequence[0]
    frames = reference.get("ReferencedFrameNumber")
    frame = None if frames in (None, "") else int(frames[0] if isinstance(frames, (list, tuple, MultiValue)) else frames)
    return ImageSource(str(reference.ReferencedSOPClassUID), str(reference.ReferencedSOPInstanceUID), frame)


def _segment_group(group: PlanarROIMeasurementsAndQualitativeEvaluations, where: str) -> SegmentFindings:
    """One TID 1410 group that references a segment of a Segmentation, as `SegmentFindings`."""
    root = group[0]
    names = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmName))
    versions = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmVersion))
    if group.finding_type is None or group.finding_category is None or len(names) != 1 or len(versions) != 1:
        raise ReportReadError(
            f"{where}: a segment group needs its finding, finding category and one algorithm name and version"
        )
    return SegmentFindings(
        tracking_identifier=str(group.tracking_identifier or ""),
        tracking_uid=str(group.tracking_uid or ""),
        segmentation=_image_reference(root, REFERENCED_SEGMENTATION_FRAME, where),
        source_image=_image_reference(root, SOURCE_IMAGE_FOR_SEGMENTATION, where),
        category=coding.as_code(group.finding_category),
        property_type=coding.as_code(group.finding_type),
        algorithm_name=names[0],
        algorithm_version=versions[0],
        measurements=_measured_values(group),
    )
def _is_zero_shot_group(group: MeasurementsAndQualitativeEvaluations) -> bool:
    """Whether a measurement group is a zero-shot series group (method 99BMCLIP ZERO-SHOT); others are a specialist's."""
    return group.method == coding.ZERO_SHOT_METHOD


def _specialist_group(group: MeasurementsAndQualitativeEvaluations, where: str) -> FindingGroup:
    """One specialist measurement group as `FindingGroup`."""
    root = group[0]
    names = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmName))
    versions = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmVersion))
    if group.method is None or len(names) != 1 or len(versions) != 1 or not group.source_images:
        raise ReportReadError(
            f"{where}: a specialist measurement group needs a method, one algorithm name and version and a source image"
        )
    sites = group.finding_sites
    site = sites[0] if sites else None
    return FindingGroup(
        tracking_identifier=str(group.tracking_identifier or ""),
        method=coding.as_code(group.method),
        source_images=tuple(
            ImageSource(
                str(image.referenced_sop_class_uid),
                str(image.referenced_sop_instance_uid),
                int(image.referenced_frame_numbers[0]) if image.referenced_frame_numbers else None,
            )
            for image in group.source_images
        ),
        measurements=tuple(
            MeasuredValue(
                coding.as_code(m.name),
                float(m.value),
                coding.as_code(m.unit),
                coding.as_code(m.method) if m.method is not None else None,
            )
            for m in group.get_measurements()
        ),
        evaluations=tuple(
            (coding.as_code(item.name), coding.as_code(item.value)) for item in group.get_qualitative_evaluations()
        ),
        algorithm_name=names[0],
        algorithm_version=versions[0],
        finding_site=coding.as_code(site.value) if site is not None else None,
        laterality=coding.as_code(site.laterality) if site is not None and site.laterality is not None else None,
    )
