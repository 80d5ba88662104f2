"""A later report of a study supersedes the earlier ones: the Predecessor Documents Sequence.

When late instances re-run a study, the new SR lists every SR the node produced for that study
before in its Predecessor Documents Sequence (0040,A360), the SR Document General Module's
attribute for "this document replaces these prior versions" (PS3.3 C.17.2). Viewers and PACS that
follow it show the new report as the current one; the earlier reports stay in the PACS, as the
standard requires of signed-off documents.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from app.node.result_identity import SR_SOP_CLASS_PREFIX
from operators.outputs.dicom_output import write_dataset_atomically
from operators.messages import DocumentReference
from operators.sr.sr_content import predecessor_documents

def _references(sequence) -> list[DocumentReference]:
    """The documents an existing Predecessor Documents Sequence names."""
    found = []
    for study in sequence or []:
        for series in study.get("ReferencedSeriesSequence", []) or []:
            for sop in series.get("ReferencedSOPSequence", []) or []:
                found.append(
                    DocumentReference(
                        str(sop.ReferencedSOPClassUID), str(sop.ReferencedSOPInstanceUID),
                        str(series.SeriesInstanceUID), str(study.StudyInstanceUID),
                    )
                )
    return found


def mark_as_superseding(sr_path: Path, previous: list[DocumentReference]) -> int:
    """Add the node's earlier SRs of the study to the SR at `sr_path` (rewritten atomically); return how many.

    Predecessors the SR already names (earlier reports that came with the study's input) are kept;
    each document is named once.
    """
    ds = pydicom.dcmread(sr_path)
    if not str(ds.SOPClassUID).startswith(SR_SOP_CLASS_PREFIX):
        return 0
    study_uid = str(ds.StudyInstanceUID)
    earlier = [r for r in previous if r.study_instance_uid == study_uid and r.sop_class_uid.startswith(SR_SOP_CLASS_PREFIX)]
    if not earlier:
        return 0
    named = _references(ds.get("PredecessorDocumentsSequence"))
    ds.PredecessorDocumentsSequence = predecessor_documents(list(dict.fromkeys([*named, *earlier])))
    write_dataset_atomically(ds, sr_path.parent, sr_path.name)
    return len(earlier)
