"""The DICOM node as one object: recovery at start-up, the threads, and processing of each job.

Threads: pynetdicom's listener (one thread per association) writes instances into the spool; the
grouper closes studies after their quiet period into the work queue; one worker runs the
application graph per job with the warm model and commits results to the outbox; one delivery
thread per destination drains the outbox; the observability endpoint answers on loopback.

Start-up recovers whatever a crash (`kill -9`, power loss) left, before accepting anything:
half-written instances are dropped (they were never acknowledged), instances of a job being
created go back to `incoming/`, jobs found in `processing/` either only need finishing (their
results reached the outbox) or run again (the interrupted attempt counts), and the outbox is
loaded for delivery. Each state change is one atomic rename, so every study ends with exactly one
committed result set, delivered at least once to each destination, under the same SOP Instance
UIDs (which a PACS stores once).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from app.log_privacy import LOG_REDACTOR, SPOOL_PLACEHOLDER
from app.node.config import NodeConfig
from app.node.delivery import DeliveryWorker
from app.node.destinations import DestinationUnreachable, make_destination
from app.node.eviction import SpoolEvictor
from app.node.grouping import StudyGrouper, recover_staging
from app.node.http_endpoint import ObservabilityEndpoint
from app.node.metrics import NodeMetrics
from app.node.outbox import Outbox
from app.node.priority import UrgencyRules
from app.node.result_identity import ResultIdentity
from app.node.runner import JobResult, ModelUnavailable, StudyRunner, node_configuration, open_analyzer
from common.configuration import ConfigurationError
from app.node.scp import StorageSCP
from app.node.spool import Spool, SpoolError, SpoolFullError, SpoolLayout, SpoolQuota
from app.node.study_archive import StudyArchive
from app.node.superseding import mark_as_superseding
from app.node.work_queue import INPUT, Job, WorkQueue
from app.uid_salt import UidSaltError
from operators.messages import OutcomeStatus
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer

logger = logging.getLogger("biomedclip_map.node")


class NodeStartError(RuntimeError):
    """The node cannot start; the message names the setting, path or port to fix."""


class DicomNode:
    """`biomedclip-map serve`."""

    def __init__(self, config: NodeConfig, *, analyzer: ZeroShotAnalyzer | None = None):
        """Build every part of the node (nothing listens or runs yet); NodeStartError names what to fix."""
        c = self.config = config
        self.analyzer = analyzer
        self.metrics = NodeMetrics()
        self.layout = SpoolLayout(Path(c.spool.path))
        self.destination_names = [d.name for d in c.destinations]
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="study-worker", daemon=True)
        self._reachability: dict[str, tuple[float, str | None]] = {}
        self._reachability_lock = threading.Lock()
        self._recovered: list[tuple[Job, str]] = []
        self.started = False
        try:
            self.layout.create()
            self.salt = c.uid_salt
            # every path below the spool is logged as a salted reference (`<spool>/p-...`)
            LOG_REDACTOR.add_root(self.layout.root, SPOOL_PLACEHOLDER, self.salt)
            # the configured destinations are infrastructure: delivery lines must name them
            LOG_REDACTOR.keep_endpoints(
                *(d.stow_url if d.is_dicomweb else f"{d.host}:{d.port}" for d in c.destinations),
                f"{c.dicom.bind}:{c.dicom.port}",
            )
            self.quota = SpoolQuota(
                self.layout.root, max_bytes=c.spool.max_bytes, min_free_bytes=c.spool.min_free_bytes,
                reserve_per_study=c.spool.result_reserve_bytes, open_studies=self._open_studies,
            )
        except (SpoolError, UidSaltError) as exc:
            raise NodeStartError(str(exc)) from exc
        self.spool = Spool(self.layout, self.quota)
        self.archive = StudyArchive(self.layout.studies)
        self.queue = WorkQueue(self.layout, max_attempts=c.processing.max_attempts, retry_delay_s=c.processing.retry_delay_s)
        self.outbox = Outbox(self.layout, self.destination_names)
        self.grouper = StudyGrouper(
            self.spool, self.queue, self.archive, self.metrics,
            quiet_period_s=c.spool.quiet_period_s, retention_s=c.spool.retention_hours * 3600,
            on_maintenance=self.outbox.prune,
        )
        self.evictor = SpoolEvictor(self.layout, self.quota, busy_refs=self._busy_refs)
        self.spool.make_room = self.evictor.make_room
        self.deliveries = [
            DeliveryWorker(
                make_destination(d, c.dicom.ae_title, tcp_nodelay=c.dicom.tcp_nodelay), d.describe(), self.outbox, c.delivery, self.metrics
            )
            for d in c.destinations
        ]
        self.http = ObservabilityEndpoint(c.http.bind, c.http.port, self.metrics, self.readiness)
        self.scp = StorageSCP(
            c.dicom, self.spool, self.grouper, self.archive, self.metrics,
            salt=self.salt,
            urgency=UrgencyRules.from_settings(c.processing.urgent_priority_values, c.processing.urgent_keywords),
        )
        self.runner: StudyRunner | None = None

    def _busy_refs(self) -> set[str]:
        """Studies being received, queued or analysed (their kept instances must stay)."""
        return self.queue.busy_refs() | self.grouper.pending_refs()

    def _open_studies(self) -> int:
        """Acknowledged studies whose results are not written yet (each has space reserved for them)."""
        grouper, queue = getattr(self, "grouper", None), getattr(self, "queue", None)
        return (grouper.pending() if grouper else 0) + (len(queue.busy_refs()) if queue else 0)

    # ----------------------------------------------------------------------- start / stop

    def start(self) -> None:
        """Recover the spool, open the model, then start listening; NodeStartError on failure."""
        c = self.config
        try:
            configuration = node_configuration(c)
        except ConfigurationError as exc:
            raise NodeStartError(str(exc)) from exc
        self.archive.load()
        self._recover()
        if self.analyzer is None:
            scratch = self.layout.tmp / "model-check"
            scratch.mkdir(exist_ok=True)
            try:
                self.analyzer = open_analyzer(c, scratch, configuration)
            except ModelUnavailable as exc:
                raise NodeStartError(str(exc)) from exc
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        self.metrics.model_loaded.set(1)
        self.runner = StudyRunner(c, self.analyzer, configuration)
        for job, action in self._recovered:
            if action == "finish":
                self._finalize(job, "reported", self.outbox.outputs_of(job.job_id))
                logger.info("start-up: study %s: results of job %s were already committed; finished", job.study_ref, job.job_id)
            elif action == "quarantined":
                self._log_quarantine(job)
            else:
                logger.info("start-up: study %s: job %s was interrupted during processing; it runs again", job.study_ref, job.job_id)

        self.metrics.gauge("queue_depth", "Complete studies waiting for processing", self.queue.depth)
        self.metrics.gauge("incoming_studies", "Studies still receiving (quiet period not over)", self.grouper.pending)
        self.metrics.gauge("outbox_depth", "Result sets waiting for delivery", self.outbox.depth)
        self.metrics.gauge("spool_bytes", "Bytes held in the spool", self.quota.usage)
        try:
            self.scp.start()
            self.http.start()
        except OSError as exc:
            self.scp.stop()
            raise NodeStartError(exc.strerror or str(exc)) from exc
        self.grouper.start()
        for worker in self.deliveries:
            worker.start()
        self._worker.start()
        if not c.destinations:
            logger.warning("no destinations configured: results stay in %s until one is added", self.layout.outbox)
        else:
            logger.info("results go to: %s", "; ".join(d.describe() for d in c.destinations))
        self.started = True
        logger.info("node ready (spool %s, quiet period %.1f s)", self.layout.root, c.spool.quiet_period_s)

    def _recover(self) -> None:
        recover_staging(self.spool)
        incoming = self.spool.recover_incoming()
        waiting = self.outbox.recover()
        self._recovered = self.queue.recover(self.outbox.committed)
        self.grouper.recover(incoming)
        if waiting:
            logger.info("start-up: %d result set(s) in the outbox wait for delivery", waiting)
        if self.queue.depth():
            logger.info("start-up: %d complete study(ies) wait in the queue", self.queue.depth())

    def stop(self, timeout: float = 60.0) -> None:
        """Stop listening, let the current study finish (up to `timeout`), stop the other threads."""
        self._stop.set()
        self.scp.stop()
        self.grouper.stop()
        self.queue.wake()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)
            if self._worker.is_alive():
                logger.warning("stopping while a study is still being processed; it runs again at the next start")
        for worker in self.deliveries:
            worker.stop()
        self.http.stop()
        logger.info("node stopped")

    # ----------------------------------------------------------------------- processing

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim(timeout=0.5)
            if job is None:
                continue
            try:
                self.process(job)
            except Exception:  # a bug in the node must not stop the worker; logged with traceback
                logger.exception("study %s: job %s could not be handled; it stays in %s", job.study_ref, job.job_id, self.layout.processing)

    def process(self, job: Job) -> None:
        """Run one claimed job and move it to its next state."""
        folder = self.layout.processing / job.job_id
        if job.attempts == 1:
            self.metrics.stage_seconds.labels(stage="queue_wait").observe(max(0.0, time.time() - job.completed_at))
        logger.info(
            "study %s: processing job %s (attempt %d of %d, %d instance(s), %s)",
            job.study_ref, job.job_id, job.attempts, self.config.processing.max_attempts, job.instances, job.priority,
        )
        started = time.perf_counter()
        try:
            result = self.runner.run(folder)
        except Exception as exc:  # the run itself broke; counted as a failed attempt, logged with its traceback
            logger.exception("study %s: the run raised", job.study_ref)
            result = JobResult(OutcomeStatus.FAILED, f"{type(exc).__name__}: {exc}")
        self.metrics.stage_seconds.labels(stage="processing").observe(time.perf_counter() - started)
        if result.status is OutcomeStatus.REPORTED:
            try:
                self._commit(job, result)
            except (OSError, ValueError) as exc:
                logger.exception("study %s: results could not be committed to the outbox", job.study_ref)
                self._failed(job, f"results could not be committed: {exc}")
            return
        if result.status is OutcomeStatus.REFUSED:
            self.metrics.studies_failed.inc()
            self.queue.quarantine(job, result.reason)
            self._log_quarantine(job)
            return
        if result.status is OutcomeStatus.NOTHING_SELECTED:
            self.metrics.studies_processed.labels(outcome="nothing_selected").inc()
            self._finalize(job, OutcomeStatus.NOTHING_SELECTED.value, [])
            logger.info("study %s: nothing to analyse (%s); no results to send", job.study_ref, result.reason)
            return
        self._failed(job, result.reason)

    def _commit(self, job: Job, result: JobResult) -> None:
        superseded = 0
        if job.supersedes:
            previous = self.archive.previous_reports(job.study_ref)
            for path in result.files:
                superseded += mark_as_superseding(path, previous)
        outputs = [ResultIdentity.of(output) for output in result.outputs]
        entry = self.outbox.commit(job, result.files, outputs)
        self.metrics.studies_processed.labels(outcome="reported").inc()
        self._finalize(job, OutcomeStatus.REPORTED.value, outputs)
        logger.info(
            "study %s: results %s queued for delivery%s",
            job.study_ref, ", ".join(entry.files), f" (supersedes {superseded} earlier report(s))" if superseded else "",
        )

    def _finalize(self, job: Job, outcome: str, outputs: list[ResultIdentity]) -> None:
        """Keep the study's instances and result identities for late instances; forget the job."""
        folder = self.layout.processing / job.job_id
        self.archive.absorb(job.study_ref, folder / INPUT)
        self.archive.record_run(job.study_ref, job.job_id, outcome, outputs)
        shutil.rmtree(folder, ignore_errors=True)
        self.queue.done(job)

    def _failed(self, job: Job, reason: str) -> None:
        self.metrics.studies_failed.inc()
        if self.queue.failed(job, reason):
            self._log_quarantine(job)
            return
        logger.warning(
            "study %s: attempt %d of %d failed (%s); it runs again in %.0f s, after the other waiting studies",
            job.study_ref, job.attempts, self.config.processing.max_attempts, reason, self.config.processing.retry_delay_s,
        )

    def _log_quarantine(self, job: Job) -> None:
        self.metrics.studies_quarantined.inc()
        logger.error(
            "study %s: quarantined after %d attempt(s): %s. Its instances and the reason are in %s; move that folder "
            "into %s to try again",
            job.study_ref, job.attempts, job.last_error, self.layout.quarantine / job.job_id, self.layout.queue,
        )

    # ----------------------------------------------------------------------- readiness

    def readiness(self) -> dict[str, str]:
        """{check: problem} for each failing readiness check (empty when ready)."""
        problems: dict[str, str] = {}
        if not self.started:
            problems["model"] = "the model is not loaded yet"
        if not self.layout.writable():
            problems["spool"] = f"refusing new instances: {self.layout.root} is not writable"
        else:
            try:
                self.spool.ensure_room(self.quota.last_instance_bytes)
            except (SpoolFullError, SpoolError) as exc:
                problems["spool"] = f"refusing new instances: {exc}"
        for worker in self.deliveries:
            problem = self._reachable(worker)
            if problem:
                problems[f"destination {worker.name}"] = problem
        return problems

    def _reachable(self, worker: DeliveryWorker) -> str | None:
        now = time.monotonic()
        with self._reachability_lock:
            cached = self._reachability.get(worker.name)
            if cached and now - cached[0] < self.config.delivery.reachability_cache_s:
                return cached[1]
        try:
            worker.destination.echo()
            problem = None
        except DestinationUnreachable as exc:
            problem = str(exc)
        except Exception as exc:  # e.g. a TLS error: reported, not raised, so /readyz always answers
            problem = f"{type(exc).__name__}: {exc}"
        with self._reachability_lock:
            self._reachability[worker.name] = (time.monotonic(), problem)
        if problem is None:
            worker.destination_answered("it answers the readiness check's C-ECHO again")
        return problem

    def request_stop(self) -> None:
        """Ask `serve` to stop (from a signal handler): the main thread then calls `stop()`."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop()` was called (or the timeout passed); return whether it was."""
        return self._stop.wait(timeout)
