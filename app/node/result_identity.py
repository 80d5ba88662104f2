"""The identities of the result files a run of a job produced, typed in memory and JSON on disk.

The outbox (`delivery.json`) and the study archive (`reports.json`) keep them so that a later run
of the study can name the earlier reports in its Predecessor Documents Sequence and the node can
recognise its own results when a PACS sends them back. They are never logged (they are UIDs).
"""

from __future__ import annotations

from dataclasses import dataclass

from operators.messages import DocumentReference, OutputFile

#: SOP Class UIDs of the structured report storage classes start with this.
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


@dataclass(frozen=True)
class ResultIdentity:
    """A result file's name in the outbox and the DICOM identities of what it holds."""

    file: str
    document: DocumentReference

    @property
    def is_report(self) -> bool:
        return self.document.sop_class_uid.startswith(SR_SOP_CLASS_PREFIX)

    @classmethod
    def of(cls, output: OutputFile) -> "ResultIdentity":
        if output.document is None:
            raise ValueError(f"{output.path.name} is not a DICOM result: it has no identities")
        return cls(output.path.name, output.document)

    def to_json(self) -> dict:
        d = self.document
        return {
            "file": self.file,
            "sop_class_uid": d.sop_class_uid,
            "sop_instance_uid": d.sop_instance_uid,
            "series_instance_uid": d.series_instance_uid,
            "study_instance_uid": d.study_instance_uid,
        }

    @classmethod
    def from_json(cls, item: dict) -> "ResultIdentity":
        """Read one stored identity; KeyError names the missing key of a damaged file."""
        return cls(
            str(item.get("file", "")),
            DocumentReference(
                str(item["sop_class_uid"]), str(item["sop_instance_uid"]),
                str(item["series_instance_uid"]), str(item["study_instance_uid"]),
            ),
        )


def identities_from_json(items: list | None) -> list[ResultIdentity]:
    return [ResultIdentity.from_json(item) for item in items or []]
