"""Reading the findings back out of a written report, with highdicom's SR reader.

This is the check that a report says what the product meant to write: `read_findings` parses a
Comprehensive 3D SR with `highdicom.sr.srread` and its TID 1500 accessors and returns the same
`ReportFindings` value that `operators.sr_content.report_findings` computes before writing.
"""

from __future__ import annotations

import os
from pathlib import Path

from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    RelationshipTypeValues,
    ValueTypeValues,
    srread,
)
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from operators import coding
from operators.messages import ImageSource
from operators.sr_content import (
    BurnGroupFindings,
    BurnMeasurement,
    LabelProbability,
    ReportFindings,
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
    )


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
    `operators.sr_content.build_report` writes.
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
        series=tuple(_series_findings(group, where) for group in groups if not _is_burn_group(group)),
        evidence=frozenset(
            (str(sop_class_uid), str(sop_instance_uid))
            for _study, _series, sop_instance_uid, sop_class_uid in document.get_evidence()
        ),
        narrative=tuple(narrative),
        burn=tuple(_burn_findings(group, where) for group in groups if _is_burn_group(group)),
    )


def _is_burn_group(group: MeasurementsAndQualitativeEvaluations) -> bool:
    """Whether a measurement group is a burn group (method 99BMCLIP BURN-ANALYSIS)."""
    return group.method == coding.BURN_METHOD


def _burn_findings(group: MeasurementsAndQualitativeEvaluations, where: str) -> BurnGroupFindings:
    """One burn measurement group as `BurnGroupFindings`."""
    root = group[0]
    evaluations = tuple(
        (coding.as_code(item.name), coding.as_code(item.value)) for item in group.get_qualitative_evaluations()
    )
    depth = [value for name, value in evaluations if name == coding.BURN_DEPTH]
    names = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmName))
    versions = _texts(root, CodedConcept.from_code(codes.DCM.AlgorithmVersion))
    if len(depth) != 1 or len(names) != 1 or len(versions) != 1 or len(group.source_images) != 1:
        raise ReportReadError(
            f"{where}: a burn measurement group needs one burn depth, one algorithm name and version and one source image"
        )
    image = group.source_images[0]
    frames = image.referenced_frame_numbers
    sites = group.finding_sites
    site = sites[0] if sites else None
    return BurnGroupFindings(
        tracking_identifier=str(group.tracking_identifier or ""),
        source_image=ImageSource(
            str(image.referenced_sop_class_uid), str(image.referenced_sop_instance_uid), int(frames[0]) if frames else None
        ),
        finding_site=coding.as_code(site.value) if site is not None else None,
        laterality=coding.as_code(site.laterality) if site is not None and site.laterality is not None else None,
        depth=depth[0],
        measurements=tuple(
            BurnMeasurement(coding.as_code(m.name), float(m.value), coding.as_code(m.method))
            for m in group.get_measurements()
        ),
        evaluations=evaluations,
        algorithm_name=names[0],
        algorithm_version=versions[0],
    )
