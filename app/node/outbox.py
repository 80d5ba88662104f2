"""The durable outbox: results wait on disk until every destination has acknowledged them.

An entry is `outbox/<job>/` holding the DICOM files a run produced (the SR, the Secondary Capture,
any other `*.dcm`), `delivery.json` (what they are), and one `sent-<destination>.json` per
destination recording which files it acknowledged, how often it refused them and when to try
again. The entry appears with one rename from `tmp/`, so it is complete or absent. After each
acknowledged file its destination's record is rewritten durably, so after a crash only files not
yet recorded are sent again; they are the same files with the same SOP Instance UIDs, which a PACS
stores once. When every destination has everything, the entry moves to `delivered/`; when a
destination refused a file `delivery.max_rejections` times, to `undeliverable/` (files kept).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.node.result_identity import ResultIdentity, identities_from_json
from app.node.durable_files import fsync_directory, move_durably, read_json, write_json_durably
from app.node.spool import SpoolLayout
from app.node.work_queue import URGENT, Job

logger = logging.getLogger("biomedclip_map.node.outbox")

DELIVERY_FILE = "delivery.json"


@dataclass
class DestinationRecord:
    """One destination's progress on one entry (`sent-<destination>.json`)."""

    sent: list[str] = field(default_factory=list)
    rejections: int = 0
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    gave_up: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, document: dict | None) -> "DestinationRecord":
        if not document:
            return cls()
        return cls(**{k: v for k, v in document.items() if k in cls.__dataclass_fields__})


@dataclass
class OutboxEntry:
    """Results of one run waiting for delivery."""

    job_id: str
    study_ref: str
    priority: str
    completed_at: float
    created_at: float
    files: list[str]
    outputs: list[ResultIdentity]
    folder: Path
    records: dict[str, DestinationRecord] = field(default_factory=dict)

    def record(self, destination: str) -> DestinationRecord:
        if destination not in self.records:
            self.records[destination] = DestinationRecord.from_json(read_json(self.folder / f"sent-{destination}.json"))
        return self.records[destination]

    def unsent(self, destination: str) -> list[str]:
        sent = set(self.record(destination).sent)
        return [f for f in self.files if f not in sent]

    @property
    def rank(self) -> tuple[int, float]:
        return (0 if self.priority == URGENT else 1, self.created_at)


class Outbox:
    """`outbox/`, `delivered/` and `undeliverable/`."""

    def __init__(self, layout: SpoolLayout, destinations: list[str]):
        self.layout = layout
        self.destinations = list(destinations)
        self._entries: dict[str, OutboxEntry] = {}
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)

    def depth(self) -> int:
        with self._lock:
            return len(self._entries)

    def committed(self, job_id: str) -> bool:
        """Whether the results of `job_id` reached the outbox (whatever happened to them since)."""
        return any((folder / job_id).is_dir() for folder in (self.layout.outbox, self.layout.delivered, self.layout.undeliverable))

    def outputs_of(self, job_id: str) -> list[ResultIdentity]:
        for folder in (self.layout.outbox, self.layout.delivered, self.layout.undeliverable):
            document = read_json(folder / job_id / DELIVERY_FILE)
            if document:
                return identities_from_json(document.get("outputs"))
        return []

    def commit(self, job: Job, files: list[Path], outputs: list[ResultIdentity]) -> OutboxEntry:
        """Move a run's result files into a new entry with one atomic rename; return the entry."""
        staging = self.layout.tmp / f"{job.job_id}-out"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for path in files:
            os.replace(path, staging / path.name)
        entry = OutboxEntry(
            job_id=job.job_id,
            study_ref=job.study_ref,
            priority=job.priority,
            completed_at=job.completed_at,
            created_at=time.time(),
            files=[p.name for p in files],
            outputs=outputs,
            folder=self.layout.outbox / job.job_id,
        )
        write_json_durably(staging / DELIVERY_FILE, self._document(entry))
        for name in entry.files:
            descriptor = os.open(staging / name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(staging)
        move_durably(staging, entry.folder)
        with self._lock:
            self._entries[entry.job_id] = entry
            self.changed.notify_all()
        return entry

    @staticmethod
    def _document(entry: OutboxEntry) -> dict:
        return {
            "job_id": entry.job_id,
            "study_ref": entry.study_ref,
            "priority": entry.priority,
            "completed_at": entry.completed_at,
            "created_at": entry.created_at,
            "files": entry.files,
            "outputs": [o.to_json() for o in entry.outputs],
        }

    def recover(self) -> int:
        """Load the entries waiting in `outbox/` at start-up; return how many.

        Refusals recorded for an entry start afresh, so moving a folder from `undeliverable/` back
        into `outbox/` and restarting the node retries it.
        """
        for folder in sorted(self.layout.outbox.iterdir()):
            document = read_json(folder / DELIVERY_FILE)
            if not isinstance(document, dict):
                logger.error("start-up: %s has no %s; left in place for inspection", folder, DELIVERY_FILE)
                continue
            entry = OutboxEntry(
                job_id=document["job_id"],
                study_ref=document["study_ref"],
                priority=document.get("priority", "routine"),
                completed_at=float(document.get("completed_at", 0.0)),
                created_at=float(document.get("created_at", 0.0)),
                files=list(document["files"]),
                outputs=identities_from_json(document.get("outputs")),
                folder=folder,
            )
            for destination in self.destinations:
                record = entry.record(destination)
                if record.gave_up:  # moved back by an administrator, or restarted: refusals start afresh
                    record.gave_up, record.rejections, record.next_attempt_at = None, 0, 0.0
                    self.save_record(entry, destination)
            self._entries[entry.job_id] = entry
        for entry in list(self._entries.values()):
            self.finish_if_done(entry)  # every file was acknowledged just before a stop
        return len(self._entries)

    def waiting_for(self, destination: str) -> list[OutboxEntry]:
        """Entries this destination still has to acknowledge, most urgent and oldest first."""
        with self._lock:
            entries = list(self._entries.values())
        return sorted(
            (e for e in entries if e.record(destination).gave_up is None and e.unsent(destination)),
            key=lambda e: e.rank,
        )

    def save_record(self, entry: OutboxEntry, destination: str) -> None:
        write_json_durably(entry.folder / f"sent-{destination}.json", entry.record(destination).to_json())

    def finish_if_done(self, entry: OutboxEntry) -> str | None:
        """Move the entry on once every destination is done with it; return where, or None."""
        with self._lock:
            if entry.job_id not in self._entries:
                return None
            if not self.destinations:
                return None  # results stay in the outbox until a destination is configured
            records = [entry.record(d) for d in self.destinations]
            if any(r.gave_up is None and entry.unsent(d) for d, r in zip(self.destinations, records)):
                return None
            state = "undeliverable" if any(r.gave_up for r in records) else "delivered"
            target = (self.layout.undeliverable if state == "undeliverable" else self.layout.delivered) / entry.job_id
            move_durably(entry.folder, target)
            entry.folder = target
            del self._entries[entry.job_id]
            return state

    def prune(self, retention_s: float) -> int:
        """Remove delivered entries older than the retention (undeliverable ones are kept)."""
        removed = 0
        cutoff = time.time() - retention_s
        for folder in list(self.layout.delivered.iterdir()):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
