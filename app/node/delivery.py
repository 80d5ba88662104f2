"""Delivery workers: one thread per destination drains the outbox, with retries and backoff.

A destination that cannot be reached is retried after `delivery.retry_initial_s`, doubling up to
`delivery.retry_max_s`, for as long as it takes; results wait on disk meanwhile. Meanwhile it is
probed every `delivery.retry_initial_s` (and by /readyz), and the moment it answers, the waiting
results go. A destination that
refuses a result (failure status) is retried on the same schedule per result, and after
`delivery.max_rejections` refusals the result is set aside in `undeliverable/` with the reason.
Urgent studies' results go first.
"""

from __future__ import annotations

import logging
import threading
import time

from app.node.config import DeliverySettings
from app.node.destinations import DestinationRefused, DestinationUnreachable, DicomWebDestination, DimseDestination
from app.node.metrics import NodeMetrics
from app.node.outbox import Outbox, OutboxEntry

logger = logging.getLogger("biomedclip_map.node.delivery")


def backoff_s(failures: int, settings: DeliverySettings) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1-based)."""
    return min(settings.retry_initial_s * (2 ** max(0, failures - 1)), settings.retry_max_s)


class DeliveryWorker:
    """Sends the outbox's results to one destination."""

    def __init__(
        self,
        destination: DimseDestination | DicomWebDestination,
        description: str,
        outbox: Outbox,
        settings: DeliverySettings,
        metrics: NodeMetrics,
    ):
        self.destination = destination
        self.name = destination.name
        self.description = description
        self.outbox = outbox
        self.settings = settings
        self.metrics = metrics
        self.down_failures = 0
        self.down_until = 0.0
        self.next_probe_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"delivery-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.outbox.changed:
            self.outbox.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.destination.timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bug must not stop deliveries for good; it is logged with its traceback
                logger.exception("delivery to %s failed unexpectedly; retrying", self.description)
                self._stop.wait(self.settings.retry_initial_s)

    def step(self) -> None:
        """Deliver the most urgent due entry, or wait until one is due (or the outbox changes).

        While the destination is down, it is probed with a C-ECHO (a TCP connection for DICOMweb)
        every `delivery.retry_initial_s`, so results go as soon as it answers again rather than at
        the end of a backoff that may have grown to `delivery.retry_max_s`.
        """
        now = time.time()
        if now < self.down_until:
            if now >= self.next_probe_at:
                self.next_probe_at = now + self.settings.retry_initial_s
                if self._answers():
                    self.destination_answered("it answers again")
                    return
            with self.outbox.changed:
                self.outbox.changed.wait(max(0.0, min(self.down_until - now, self.next_probe_at - now, 1.0)))
            return
        entries = self.outbox.waiting_for(self.name)
        due = [e for e in entries if e.record(self.name).next_attempt_at <= now]
        if not due:
            waits = [e.record(self.name).next_attempt_at - now for e in entries]
            with self.outbox.changed:
                if not self._stop.is_set():
                    self.outbox.changed.wait(min([1.0, *waits]))
            return
        self.deliver(due[0])

    def _answers(self) -> bool:
        """Whether the destination answers a C-ECHO now (a TCP connection for DICOMweb)."""
        try:
            self.destination.echo()
            return True
        except DestinationUnreachable:
            return False
        except (OSError, ValueError, RuntimeError) as exc:  # e.g. a TLS error: still down for delivery
            logger.debug("probe of %s failed: %s: %s", self.description, type(exc).__name__, exc)
            return False

    def destination_answered(self, how: str) -> None:
        """The destination answered (this worker's probe, or the readiness check): send what waits now."""
        if self.down_until <= time.time():
            return
        self.down_until = 0.0
        logger.info(
            "destination %s: %s; %d result set(s) waiting are sent now", self.description, how,
            len(self.outbox.waiting_for(self.name)),
        )
        with self.outbox.changed:
            self.outbox.changed.notify_all()

    def deliver(self, entry: OutboxEntry) -> None:
        """Send the entry's files this destination has not acknowledged yet."""
        record = entry.record(self.name)
        names = entry.unsent(self.name)
        record.attempts += 1

        def acknowledged(name: str) -> None:
            record.sent.append(name)
            self.outbox.save_record(entry, self.name)

        try:
            self.destination.send(entry.folder, names, acknowledged)
        except DestinationUnreachable as exc:
            self.down_failures += 1
            delay = backoff_s(self.down_failures, self.settings)
            self.down_until = time.time() + delay
            self.next_probe_at = time.time() + min(delay, self.settings.retry_initial_s)
            record.last_error = str(exc)
            self.outbox.save_record(entry, self.name)
            self.metrics.deliveries.labels(destination=self.name, outcome="unreachable").inc()
            self.metrics.delivery_retries.labels(destination=self.name).inc()
            waiting = len(self.outbox.waiting_for(self.name))
            logger.warning(
                "destination %s unreachable: %s; %d result set(s) wait in the outbox, next try in %.1f s",
                self.description, exc, waiting, delay,
            )
            return
        except (DestinationRefused, OSError, ValueError) as exc:
            self._refused(entry, record, exc)
            return
        if self.down_failures:
            logger.info("destination %s is reachable again", self.description)
        self.down_failures = 0
        self.down_until = 0.0
        record.last_error = None
        self.outbox.save_record(entry, self.name)
        self.metrics.deliveries.labels(destination=self.name, outcome="delivered").inc()
        self.metrics.complete_to_delivered.labels(destination=self.name).observe(max(0.0, time.time() - entry.completed_at))
        logger.info("study %s: %s delivered to %s", entry.study_ref, ", ".join(names), self.description)
        if self.outbox.finish_if_done(entry) == "delivered":
            self.metrics.stage_seconds.labels(stage="delivery").observe(max(0.0, time.time() - entry.created_at))

    def _refused(self, entry: OutboxEntry, record, exc: Exception) -> None:
        record.rejections += 1
        record.last_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DestinationRefused) else str(exc)
        self.metrics.deliveries.labels(destination=self.name, outcome="refused").inc()
        if record.rejections >= self.settings.max_rejections:
            record.gave_up = record.last_error
            self.outbox.save_record(entry, self.name)
            state = self.outbox.finish_if_done(entry)
            logger.error(
                "study %s: %s refused the results %d times (%s); they are kept in %s - fix the destination, then move "
                "the folder back into outbox/ and restart the node",
                entry.study_ref, self.description, record.rejections, record.last_error,
                entry.folder if state else f"the outbox (other destinations pending: {entry.folder})",
            )
            return
        delay = backoff_s(record.rejections, self.settings)
        record.next_attempt_at = time.time() + delay
        self.outbox.save_record(entry, self.name)
        self.metrics.delivery_retries.labels(destination=self.name).inc()
        logger.warning(
            "study %s: %s refused the results (%s); refusal %d of %d, next try in %.1f s",
            entry.study_ref, self.description, record.last_error, record.rejections, self.settings.max_rejections, delay,
        )
