"""A later report of a study supersedes the earlier ones: the Predecessor Documents Sequence.

When late instances re-run a study, the new SR lists every SR the node produced for that study
before in its Predecessor Documents Sequence (0040,A360), the SR Document General Module's
attribute for "this document replaces these prior versions" (PS3.3 C.17.2). Viewers and PACS that
follow it show the new report as the current one; the earlier reports stay in the PACS, as the
standard requires of signed-off documents.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from operators.dicom_output import write_dataset_atomically

SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def output_identity(path: Path) -> dict:
    """The identities of a result file (kept on disk with the study, never logged)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "file": path.name,
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
    }


def predecessor_sequence(previous: list[dict], study_instance_uid: str) -> Sequence:
    """Hierarchical SOP Instance Reference Macro items for the earlier SRs of the same study."""
    by_series: dict[str, list[dict]] = defaultdict(list)
    for report in previous:
        if report.get("study_instance_uid") == study_instance_uid:
            by_series[report["series_instance_uid"]].append(report)
    if not by_series:
        return Sequence([])
    study = Dataset()
    study.StudyInstanceUID = study_instance_uid
    series_items = []
    for series_uid, reports in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        references = []
        for report in reports:
            reference = Dataset()
            reference.ReferencedSOPClassUID = report["sop_class_uid"]
            reference.ReferencedSOPInstanceUID = report["sop_instance_uid"]
            references.append(reference)
        series.ReferencedSOPSequence = Sequence(references)
        series_items.append(series)
    study.ReferencedSeriesSequence = Sequence(series_items)
    return Sequence([study])


def mark_as_superseding(sr_path: Path, previous: list[dict]) -> int:
    """Add the earlier SRs of the study to the SR at `sr_path` (rewritten atomically); return how many."""
    ds = pydicom.dcmread(sr_path)
    if not str(ds.SOPClassUID).startswith(SR_SOP_CLASS_PREFIX):
        return 0
    sequence = predecessor_sequence(previous, str(ds.StudyInstanceUID))
    if not len(sequence):
        return 0
    ds.PredecessorDocumentsSequence = sequence
    write_dataset_atomically(ds, sr_path.parent, sr_path.name)
    return sum(len(s.ReferencedSOPSequence) for s in sequence[0].ReferencedSeriesSequence)
