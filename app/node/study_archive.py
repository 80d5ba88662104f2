"""Processed studies, kept for a while so that late instances re-run the whole study.

`studies/<ref>/instances/` holds every instance of the study analysed so far; `studies/<ref>/
reports.json` lists each run and the identities (SOP Class / Instance, Series UIDs) of the
results it produced. A later run of the same study links the kept instances into its input (so it
analyses the whole study, not only the late instances) and its SR names the earlier SRs in its
Predecessor Documents Sequence. The node also recognises its own results coming back from a PACS
(by SOP Instance UID) and never analyses them.

Everything here is kept for `spool.retention_hours` after the study's last run, then removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from app.node.durable_files import fsync_directory, read_json, write_json_durably
from app.node.spool import INSTANCES
from app.node.result_identity import ResultIdentity, identities_from_json
from operators.messages import DocumentReference

logger = logging.getLogger("biomedclip_map.node.archive")
REPORTS_FILE = "reports.json"


class StudyArchive:
    """The `studies/` folder of the spool."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._own_outputs: set[str] = set()

    def load(self) -> int:
        """Read every kept study's report identities (to recognise our own results); return the count."""
        count = 0
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            for run in self._runs(folder.name):
                self._own_outputs.update(o.document.sop_instance_uid for o in identities_from_json(run.get("outputs")))
            count += 1
        return count

    def _folder(self, ref: str) -> Path:
        return self.root / ref

    def _runs(self, ref: str) -> list[dict]:
        document = read_json(self._folder(ref) / REPORTS_FILE, {"runs": []})
        return list(document.get("runs", []))

    def has_study(self, ref: str) -> bool:
        return (self._folder(ref) / INSTANCES).is_dir()

    def instance_names(self, ref: str) -> set[str]:
        folder = self._folder(ref) / INSTANCES
        return set(os.listdir(folder)) if folder.is_dir() else set()

    def is_own_output(self, sop_instance_uid: str) -> bool:
        """Whether the node itself produced this instance (a result coming back from a PACS)."""
        return sop_instance_uid in self._own_outputs

    def previous_reports(self, ref: str) -> list[DocumentReference]:
        """The SRs earlier runs of this study produced (for the Predecessor Documents Sequence)."""
        return [
            output.document
            for run in self._runs(ref)
            for output in identities_from_json(run.get("outputs"))
            if output.is_report
        ]

    def link_into(self, ref: str, input_dir: Path, skip: set[str]) -> int:
        """Hard-link (copy where links are impossible) kept instances into a new run's input."""
        folder = self._folder(ref) / INSTANCES
        linked = 0
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            if name in skip:
                continue
            target = input_dir / name
            try:
                os.link(folder / name, target)
            except FileExistsError:
                continue
            except OSError:
                shutil.copy2(folder / name, target)
            linked += 1
        if linked:
            fsync_directory(input_dir)
        return linked

    def absorb(self, ref: str, input_dir: Path) -> None:
        """Move a finished run's input instances into the study's kept instances (replacing)."""
        folder = self._folder(ref) / INSTANCES
        folder.mkdir(parents=True, exist_ok=True)
        moved = False
        for name in os.listdir(input_dir) if Path(input_dir).is_dir() else []:
            os.replace(Path(input_dir) / name, folder / name)
            moved = True
        if moved:
            fsync_directory(folder)
        fsync_directory(folder.parent)
        fsync_directory(self.root)

    def record_run(self, ref: str, job_id: str, outcome: str, outputs: list[ResultIdentity]) -> None:
        """Add a run (idempotent by job id) and its results' identities to `reports.json`."""
        with self._lock:
            runs = [r for r in self._runs(ref) if r.get("job_id") != job_id]
            runs.append(
                {"job_id": job_id, "outcome": outcome, "finished_at": time.time(), "outputs": [o.to_json() for o in outputs]}
            )
            self._folder(ref).mkdir(parents=True, exist_ok=True)
            write_json_durably(self._folder(ref) / REPORTS_FILE, {"runs": runs})
            self._own_outputs.update(o.document.sop_instance_uid for o in outputs)

    def prune(self, retention_s: float, busy_refs: set[str]) -> int:
        """Remove studies whose last run is older than the retention; return how many."""
        removed = 0
        cutoff = time.time() - retention_s
        for folder in list(self.root.iterdir()) if self.root.is_dir() else []:
            if folder.name in busy_refs:
                continue
            marker = folder / REPORTS_FILE
            try:
                last = marker.stat().st_mtime
            except FileNotFoundError:
                last = folder.stat().st_mtime
            if last < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
