"""The durable work queue: complete studies waiting for the model, in priority order.

A job is a folder (`job.json` + `input/`) that lives in exactly one of `queue/`, `processing/` or
`quarantine/`; it moves with one atomic rename. The order in memory is rebuilt from the folders at
start-up: urgent (STAT) jobs first, then by the time the study was complete. A failing job goes
back to the queue after `processing.retry_delay_s`, behind the others, until it has been tried
`processing.max_attempts` times; then it is quarantined with its reason, and never blocks the
other studies.

The attempt is counted in `job.json` before the run starts, so a study that brings the whole
process down (and is found in `processing/` at the next start) is also quarantined in the end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.node.durable_files import move_durably, read_json, write_json_durably
from app.node.spool import SpoolLayout

logger = logging.getLogger("biomedclip_map.node.queue")

JOB_FILE = "job.json"
INPUT = "input"
URGENT = "urgent"
ROUTINE = "routine"


@dataclass
class Job:
    """A complete study waiting for, or in, processing (`job.json`)."""

    job_id: str
    study_ref: str
    priority: str = ROUTINE
    urgent_reason: str | None = None
    completed_at: float = field(default_factory=time.time)
    queued_at: float = field(default_factory=time.time)
    instances: int = 0
    new_instances: int = 0
    supersedes: bool = False
    attempts: int = 0
    last_error: str | None = None
    not_before: float = 0.0
    quarantined: bool = False

    @property
    def rank(self) -> tuple[int, float]:
        return (0 if self.priority == URGENT else 1, self.queued_at)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> "Job":
        known = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_job(folder: Path) -> Job:
    """The job stored in `folder`; ValueError when `job.json` is missing or unreadable."""
    document = read_json(Path(folder) / JOB_FILE)
    if not isinstance(document, dict) or "job_id" not in document:
        raise ValueError(f"{Path(folder) / JOB_FILE} is missing or not a job description")
    return Job.from_json(document)


def write_job(folder: Path, job: Job) -> None:
    write_json_durably(Path(folder) / JOB_FILE, job.to_json())


class WorkQueue:
    """`queue/`, `processing/` and `quarantine/`, with the priority order kept in memory."""

    def __init__(self, layout: SpoolLayout, *, max_attempts: int, retry_delay_s: float):
        self.layout = layout
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self._jobs: dict[str, Job] = {}
        self._processing: dict[str, Job] = {}
        self._changed = threading.Condition()

    # ----------------------------------------------------------------------- state

    def depth(self) -> int:
        """Jobs waiting (not counting the one being processed)."""
        with self._changed:
            return len(self._jobs)

    def queued_job_for(self, ref: str) -> Job | None:
        with self._changed:
            return next((j for j in self._jobs.values() if j.study_ref == ref), None)

    def processing_job_for(self, ref: str) -> Job | None:
        with self._changed:
            return next((j for j in self._processing.values() if j.study_ref == ref), None)

    def busy_refs(self) -> set[str]:
        with self._changed:
            return {j.study_ref for j in (*self._jobs.values(), *self._processing.values())}

    # ----------------------------------------------------------------------- transitions

    def add(self, job: Job) -> None:
        """Make a job that is already in `queue/<job_id>` known to the worker."""
        with self._changed:
            self._jobs[job.job_id] = job
            self._changed.notify_all()

    def merge_into_queued(self, job: Job, instances_dir: Path, urgent_reason: str | None) -> int:
        """Move late instances into a study's job that has not started yet; return how many.

        Returns -1 if the job was claimed meanwhile (the caller then makes a new job).
        """
        with self._changed:
            if job.job_id not in self._jobs:
                return -1
            target = self.layout.queue / job.job_id / INPUT
            names = os.listdir(instances_dir)
            for name in names:
                os.replace(instances_dir / name, target / name)
            job.instances = len(os.listdir(target))
            job.new_instances += len(names)
            if urgent_reason and job.priority != URGENT:
                job.priority, job.urgent_reason = URGENT, urgent_reason
            write_job(self.layout.queue / job.job_id, job)
            return len(names)

    def claim(self, timeout: float) -> Job | None:
        """Take the most urgent eligible job into `processing/` (attempt counted); None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.time()
                eligible = [j for j in self._jobs.values() if j.not_before <= now]
                if eligible:
                    job = min(eligible, key=lambda j: j.rank)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                waits = [j.not_before - now for j in self._jobs.values()]
                self._changed.wait(min([remaining, *waits]) if waits else remaining)
            del self._jobs[job.job_id]
            self._processing[job.job_id] = job
        folder = self.layout.processing / job.job_id
        move_durably(self.layout.queue / job.job_id, folder)
        if job.quarantined:  # an administrator moved a quarantined job back: give it fresh attempts
            job.quarantined, job.attempts = False, 0
        job.attempts += 1
        write_job(folder, job)
        return job

    def done(self, job: Job) -> None:
        """The job's results were committed (or there were none); forget it."""
        with self._changed:
            self._processing.pop(job.job_id, None)

    def quarantine(self, job: Job, reason: str) -> None:
        """Quarantine a job at once, whatever its attempts: running it again cannot help (the reason says why)."""
        job.last_error = reason
        job.quarantined = True
        folder = self.layout.processing / job.job_id
        write_job(folder, job)
        move_durably(folder, self.layout.quarantine / job.job_id)
        with self._changed:
            self._processing.pop(job.job_id, None)

    def failed(self, job: Job, reason: str, *, retry_later: bool = True) -> bool:
        """Record a failed attempt: back to the queue, or quarantined after the last attempt.

        With `retry_later` the job waits `processing.retry_delay_s` and goes behind the jobs
        already waiting; without it (an interrupted run found at start-up) it keeps its place.
        Returns True when the job was quarantined.
        """
        if job.attempts >= self.max_attempts:
            self.quarantine(job, reason)
            return True
        job.last_error = reason
        folder = self.layout.processing / job.job_id
        if retry_later:
            job.not_before = time.time() + self.retry_delay_s
            job.queued_at = time.time()
        write_job(folder, job)
        move_durably(folder, self.layout.queue / job.job_id)
        with self._changed:
            self._processing.pop(job.job_id, None)
            self._jobs[job.job_id] = job
            self._changed.notify_all()
        return False

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ----------------------------------------------------------------------- start-up

    def recover(self, results_committed: Callable[[str], bool]) -> list[tuple[Job, str]]:
        """Rebuild the queue from disk after a stop or a crash.

        Jobs in `queue/` wait again. A job found in `processing/` was interrupted: if its results
        reached the outbox (`results_committed(job_id)`), it only needs finishing (returned with
        "finish"); otherwise it goes back to the queue, or to quarantine if it has used all its
        attempts (returned with "quarantined").
        """
        actions: list[tuple[Job, str]] = []
        for folder in sorted(self.layout.queue.iterdir()):
            try:
                job = read_job(folder)
            except ValueError as exc:
                logger.error("start-up: %s; the folder is left in place for inspection", exc)
                continue
            self._jobs[job.job_id] = job
        for folder in sorted(self.layout.processing.iterdir()):
            try:
                job = read_job(folder)
            except ValueError as exc:
                logger.error("start-up: %s; the folder is left in place for inspection", exc)
                continue
            if results_committed(job.job_id):
                self._processing[job.job_id] = job
                actions.append((job, "finish"))
                continue
            reason = f"processing was interrupted (the node stopped) during attempt {job.attempts}"
            self._processing[job.job_id] = job
            if self.failed(job, reason, retry_later=False):
                actions.append((job, "quarantined"))
            else:
                actions.append((job, "requeued"))
        return actions
