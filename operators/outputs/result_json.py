"""Machine-readable results (JSON) for integrations, written only where the configuration says.

The JSON is a serialisation of the same findings the SR holds (`operators.sr.sr_content.ReportFindings`:
the zero-shot series groups, every specialist's groups, the segments of the study's Segmentations
and the narrative), so that an integration
reading the JSON and a viewer reading the SR see the same values; `findings_document` of a report
read back with `operators.sr.sr_readback.read_findings` equals the JSON's `findings`.

The DICOM output folder holds only DICOM (MONAI Deploy Express exports it as DICOM), so JSON goes
to its own folder. Studies are named by their salted reference; no patient or study identifiers
are written, and no UIDs: source images are counted (the SR named in `report` references them).
"""

from __future__ import annotations

from pathlib import Path

from common.atomic_files import Durability, write_json_atomically
from common.codes import Code
from operators.messages import FindingGroup, ImageSource, StudyAnalysis
from operators.sr.sr_content import ReportFindings, SegmentFindings, SeriesFindings


def _code(code: Code | None) -> dict | None:
    return None if code is None else {"scheme": code.scheme, "value": code.value, "meaning": code.meaning}


def _images(sources: tuple[ImageSource, ...]) -> dict:
    """The source images of a group without their UIDs: how many instances, and the frames referenced."""
    return {
        "instances": len({s.sop_instance_uid for s in sources}),
        "frames": sorted(s.frame for s in sources if s.frame is not None),
    }


def _series_group(group: SeriesFindings) -> dict:
    return {
        "tracking_identifier": group.tracking_identifier,
        "finding": _code(group.finding),
        "top_label": _code(group.top_label),
        "probabilities": [{"concept": _code(p.concept), "percent": p.percent} for p in group.probabilities],
        "decisions": [{"concept": _code(label), "value": _code(value)} for label, value in group.decisions],
        "source_images": _images(group.source_images),
        "algorithm": {
            "name": group.algorithm_name,
            "version": group.algorithm_version,
            "parameters": list(group.algorithm_parameters),
        },
    }


def _specialist_group(group: FindingGroup) -> dict:
    return {
        "tracking_identifier": group.tracking_identifier,
        "method": _code(group.method),
        "finding_site": _code(group.finding_site),
        "laterality": _code(group.laterality),
        "measurements": [
            {"concept": _code(m.concept), "value": m.value, "unit": _code(m.unit), "method": _code(m.method)}
            for m in group.measurements
        ],
        "evaluations": [{"concept": _code(name), "value": _code(value)} for name, value in group.evaluations],
        "source_images": _images(group.source_images),
        "algorithm": {"name": group.algorithm_name, "version": group.algorithm_version},
    }


def _segment_group(group: SegmentFindings) -> dict:
    """A segment of a Segmentation the report references, without UIDs (the frame names the segment)."""
    return {
        "tracking_identifier": group.tracking_identifier,
        "segmentation_frame": group.segmentation.frame,
        "category": _code(group.category),
        "property_type": _code(group.property_type),
        "measurements": [
            {"concept": _code(m.concept), "value": m.value, "unit": _code(m.unit), "method": _code(m.method)}
            for m in group.measurements
        ],
        "algorithm": {"name": group.algorithm_name, "version": group.algorithm_version},
    }


def findings_document(findings: ReportFindings) -> dict:
    """What a report says (series groups, specialist groups, segment groups, narrative) as plain JSON values."""
    return {
        "series": [_series_group(group) for group in findings.series],
        "specialist_groups": [_specialist_group(group) for group in findings.specialist_groups],
        "segments": [_segment_group(group) for group in findings.segment_groups],
        "narrative": list(findings.narrative),
    }


def analysis_document(analysis: StudyAnalysis, report_name: str, findings: ReportFindings) -> dict:
    """One study's results: what was run and whether it is complete, and the report's findings."""
    return {
        "study": analysis.study.ref,
        "report": report_name,
        "model": {
            "name": analysis.model.name,
            "version": analysis.model.version,
            "sha256": analysis.model.sha256,
            "status": analysis.model.status,
        },
        "backend": analysis.backend,
        "complete": analysis.left_out == 0,
        "ai_generated": True,
        "requires_clinician_review": True,
        "meaningful": not analysis.model.untrained,
        "findings": findings_document(findings),
    }


def write_result_json(analysis: StudyAnalysis, findings: ReportFindings, directory: Path, report_name: str) -> Path:
    """Write `<study ref>.json` atomically into `directory` and return its path."""
    return write_json_atomically(
        directory / f"{analysis.study.ref}.json",
        analysis_document(analysis, report_name, findings),
        durability=Durability.FILE_AND_FOLDER,
    )
