"""Prometheus metrics of the DICOM node (prometheus-client), in a registry of its own.

Label values are fixed words (an outcome, a stage) or the administrator's destination names, never
anything taken from a DICOM object, so the metrics carry no patient data and no UIDs.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "biomedclip_node"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STAGES = ("store", "receive", "queue_wait", "processing", "delivery")


class NodeMetrics:
    """Every metric the node exposes on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances_received = Counter(
            f"{PREFIX}_instances_received", "C-STORE requests by outcome", ["outcome"], registry=r
        )
        self.associations = Counter(f"{PREFIX}_associations", "Association requests by result", ["result"], registry=r)
        self.studies_complete = Counter(f"{PREFIX}_studies_complete", "Studies complete after the quiet period", registry=r)
        self.studies_processed = Counter(
            f"{PREFIX}_studies_processed", "Studies analysed, by outcome", ["outcome"], registry=r
        )
        self.studies_failed = Counter(f"{PREFIX}_studies_failed", "Failed processing attempts", registry=r)
        self.studies_quarantined = Counter(f"{PREFIX}_studies_quarantined", "Studies quarantined after their last attempt", registry=r)
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_seconds",
            "Latency per stage: store (one instance, fsync included), receive (first to last instance), "
            "queue_wait, processing (the application graph), delivery (results committed to delivered)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.complete_to_delivered = Histogram(
            f"{PREFIX}_complete_to_delivered_seconds",
            "From study complete (quiet period over) to its results acknowledged by a destination",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.deliveries = Counter(
            f"{PREFIX}_deliveries", "Delivery attempts per destination by outcome", ["destination", "outcome"], registry=r
        )
        self.delivery_retries = Counter(
            f"{PREFIX}_delivery_retries", "Deliveries that will be retried, per destination", ["destination"], registry=r
        )
        self.model_loaded = Gauge(f"{PREFIX}_model_loaded", "1 when the model is loaded and warm", registry=r)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for outcome in ("reported", "nothing_selected"):
            self.studies_processed.labels(outcome=outcome)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when `/metrics` is scraped (queue depth, spool size, ...)."""
        Gauge(f"{PREFIX}_{name}", documentation, registry=self.registry).set_function(read)
