"""Study grouping: a study is complete after a quiet period with no new instance of it.

As in MONAI Deploy's Informatics Gateway, instances are grouped by Study Instance UID and a study
is complete when `spool.quiet_period_s` (default 5 s) passed since its last instance. Closing a
study moves its `incoming/<ref>/instances` folder, with one rename, into a new job in `queue/`.

Late instances (a study that was already processed receives more):

- if the study's job has not started yet, they join it;
- if it is being processed, they wait in `incoming/` until that run has finished;
- otherwise they start a new run of the whole study (the kept instances are linked in), whose SR
  supersedes the earlier one; but only if at least one of them is new (not already analysed) and
  of an analysable SOP class. Instances sent again, or only non-image objects (a report, a key
  object selection), are kept with the study and start no run.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from app.node.durable_files import fsync_directory, move_durably, write_json_durably
from app.node.metrics import NodeMetrics
from app.node.sop_classes import ANALYSABLE_SOP_CLASSES
from app.node.spool import INSTANCES, Spool, utc_stamp
from app.node.study_archive import StudyArchive
from app.node.work_queue import INPUT, JOB_FILE, ROUTINE, URGENT, Job, WorkQueue

logger = logging.getLogger("biomedclip_map.node.grouping")

MAINTENANCE_INTERVAL_S = 30.0


def _sop_class_of(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, struct.error) as exc:
        # an unreadable file is not analysable; the loader says why when the study is run
        logger.debug("a stored instance cannot be read for its SOP class (%s); it does not start a run", type(exc).__name__)
        return ""


class StudyGrouper:
    """Tracks when each incoming study last received an instance and closes it after the quiet period."""

    def __init__(
        self,
        spool: Spool,
        queue: WorkQueue,
        archive: StudyArchive,
        metrics: NodeMetrics,
        *,
        quiet_period_s: float,
        retention_s: float,
        on_maintenance: Callable[[float], int] | None = None,
    ):
        self.spool = spool
        self.queue = queue
        self.archive = archive
        self.metrics = metrics
        self.quiet_period_s = quiet_period_s
        self.retention_s = retention_s
        self.on_maintenance = on_maintenance
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_maintenance = 0.0

    # ----------------------------------------------------------------------- receiving side

    def touch(self, ref: str) -> None:
        """An instance of `ref` was stored now: restart its quiet period."""
        now = time.monotonic()
        with self._lock:
            self._last[ref] = now
            self._first.setdefault(ref, time.time())

    def pending(self) -> int:
        with self._lock:
            return len(self._last)

    def pending_refs(self) -> set[str]:
        """Studies still receiving (quiet period not over)."""
        with self._lock:
            return set(self._last)

    def recover(self, refs: list[str]) -> None:
        """Studies found in `incoming/` at start-up get a full quiet period from now."""
        for ref in refs:
            self.touch(ref)
        if refs:
            logger.info(
                "start-up: %d incoming study(ies) with acknowledged instances; each is complete after a quiet period",
                len(refs),
            )

    # ----------------------------------------------------------------------- closing

    def due(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        with self._lock:
            return [ref for ref, last in self._last.items() if now - last >= self.quiet_period_s]

    def tick(self) -> int:
        """Close every study whose quiet period has passed; return how many were closed."""
        closed = 0
        for ref in self.due():
            try:
                if self.close(ref):
                    closed += 1
            except OSError as exc:
                logger.error("study %s: could not be queued (%s); it stays in incoming/ and is tried again", ref, exc)
        return closed

    def close(self, ref: str) -> bool:
        """Turn the incoming study into a job (or add it to its waiting job); False if deferred."""
        layout = self.spool.layout
        study_dir = layout.incoming_study(ref)
        instances = study_dir / INSTANCES
        with self.spool.lock_for(ref):
            with self._lock:
                last = self._last.get(ref)
                if last is None or time.monotonic() - last < self.quiet_period_s:
                    return False  # an instance arrived meanwhile
            names = sorted(os.listdir(instances)) if instances.is_dir() else []
            if not names:
                shutil.rmtree(study_dir, ignore_errors=True)
                self._forget(ref)
                return False
            urgent_reason = self.spool.urgent_reason(ref)
            if self.queue.processing_job_for(ref) is not None:
                return False  # late instances wait for the running analysis of the same study
            waiting = self.queue.queued_job_for(ref)
            if waiting is not None:
                added = self.queue.merge_into_queued(waiting, instances, urgent_reason)
                if added < 0:
                    return False  # the job was claimed meanwhile: wait for that run to finish
                logger.info("study %s: %d late instance(s) joined its waiting job %s", ref, added, waiting.job_id)
                shutil.rmtree(study_dir, ignore_errors=True)
                self._forget(ref)
                return True
            late = self.archive.has_study(ref)
            if late:
                known = self.archive.instance_names(ref)
                new = [n for n in names if n not in known]
                if not any(_sop_class_of(instances / n) in ANALYSABLE_SOP_CLASSES for n in new):
                    self.archive.absorb(ref, instances)
                    shutil.rmtree(study_dir, ignore_errors=True)
                    self._forget(ref)
                    logger.info(
                        "study %s: %d instance(s) received again after it was processed (%d new, none an analysable "
                        "image); kept with the study, no new run",
                        ref,
                        len(names),
                        len(new),
                    )
                    return True
            job = self._queue_new_job(ref, instances, names, urgent_reason, late)
            shutil.rmtree(study_dir, ignore_errors=True)
            first = self._forget(ref)
        if first is not None:
            self.metrics.stage_seconds.labels(stage="receive").observe(max(0.0, job.completed_at - first - self.quiet_period_s))
        self.metrics.studies_complete.inc()
        logger.info(
            "study %s complete after a %.1f s quiet period: %d instance(s)%s, queued as job %s (%s%s)",
            ref,
            self.quiet_period_s,
            job.new_instances,
            f" plus {job.instances - job.new_instances} kept from its earlier run(s) - a new run that supersedes the earlier report" if late else "",
            job.job_id,
            job.priority,
            f": {job.urgent_reason}" if job.urgent_reason else "",
        )
        self.queue.add(job)
        return True

    def _queue_new_job(self, ref: str, instances: Path, names: list[str], urgent_reason: str | None, late: bool) -> Job:
        layout = self.spool.layout
        job = Job(
            job_id=f"{utc_stamp()}-{ref}",
            study_ref=ref,
            priority=URGENT if urgent_reason else ROUTINE,
            urgent_reason=urgent_reason,
            new_instances=len(names),
            supersedes=late,
        )
        staging = layout.tmp / job.job_id
        staging.mkdir()
        os.rename(instances, staging / INPUT)
        linked = self.archive.link_into(ref, staging / INPUT, set(names)) if late else 0
        job.instances = len(names) + linked
        write_json_durably(staging / JOB_FILE, job.to_json())
        fsync_directory(staging)
        move_durably(staging, layout.queue / job.job_id)
        return job

    def _forget(self, ref: str) -> float | None:
        with self._lock:
            self._last.pop(ref, None)
            return self._first.pop(ref, None)

    # ----------------------------------------------------------------------- thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="study-grouper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = min(0.25, self.quiet_period_s / 4)
        while not self._stop.wait(interval):
            try:
                self.tick()
                if time.monotonic() >= self._next_maintenance:
                    self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
                    self.maintenance()
            except Exception:  # the grouper must keep running; the error is logged with its traceback
                logger.exception("study grouping failed; retrying")

    def maintenance(self) -> None:
        """Re-measure the spool for its quota; remove processed studies and delivered results past their retention."""
        self.spool.quota.rescan()
        removed = self.archive.prune(self.retention_s, self.queue.busy_refs() | set(self._last))
        if removed:
            logger.info("removed %d processed study(ies) older than spool.retention_hours", removed)
        if self.on_maintenance is not None:
            delivered = self.on_maintenance(self.retention_s)
            if delivered:
                logger.info("removed %d delivered result set(s) older than spool.retention_hours", delivered)


def recover_staging(spool: Spool) -> int:
    """At start-up: put instances of a job that was being created back into `incoming/`.

    A crash between moving a study's instances into `tmp/<job>/` and the job's rename into
    `queue/` leaves them there; they return to `incoming/<ref>/instances` (merged with any newer
    instances) and the study is closed again after a quiet period. Returns how many jobs.
    """
    layout = spool.layout
    restored = 0
    for staging in sorted(layout.tmp.iterdir()):
        if not staging.is_dir():
            staging.unlink(missing_ok=True)
            continue
        source = staging / INPUT
        if source.is_dir() and staging.name.count("-st-") == 1:
            ref = "st-" + staging.name.split("-st-", 1)[1]
            target = layout.incoming_study(ref) / INSTANCES
            target.mkdir(parents=True, exist_ok=True)
            for name in os.listdir(source):
                os.replace(source / name, target / name)
            fsync_directory(target)
            restored += 1
        shutil.rmtree(staging, ignore_errors=True)
    if restored:
        logger.info("start-up: %d study(ies) that were being queued went back to incoming/", restored)
    return restored
