"""Test helpers for the DICOM node: configurations, the node in-process or as a child process,
a pynetdicom sender and a pynetdicom receiver standing in for a PACS.

`node_work` (session) is a work folder shared by every node of the test session: the tiny model's
ONNX export, the cached text embeddings and the installation salt are made once in it, and the
analyzer opened on it is handed to in-process nodes so they start in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class NodeWork:
    """The session's shared node work folder and the analyzer opened on it."""

    path: Path
    models: Path
    analyzer: object


@pytest.fixture(scope="session")
def node_work(tiny_model_dir, tmp_path_factory) -> NodeWork:
    """One work folder for every node of the session, warmed once (ONNX export, salt, text cache)."""
    from app.analyzer import open_analyzer
    from app.settings import resolve_run_settings

    work = tmp_path_factory.mktemp("node-work")
    scratch = tmp_path_factory.mktemp("node-scratch")
    settings = resolve_run_settings(
        input_path=scratch, output_path=scratch / "out", models_path=tiny_model_dir.parent, work_dir=work, allow_untrained=True
    )
    return NodeWork(work, tiny_model_dir.parent, open_analyzer(settings))


def node_config(
    spool_path: Path,
    work: NodeWork,
    *,
    port: int | None = None,
    http_port: int | None = None,
    destinations: list[dict] | None = None,
    calling: list[str] | None = None,
    quiet_period_s: float = 0.4,
    **sections: dict,
) -> dict:
    """A node configuration (as the YAML mapping) for tests: short quiet period and retries."""
    config = {
        "dicom": {"ae_title": "BIOMEDCLIP", "port": port or free_port(), "allow_calling_aes": calling or ["TESTSCU", "ORTHANC"]},
        "spool": {"path": str(spool_path), "quiet_period_s": quiet_period_s, "min_free_bytes": "1MiB"},
        "processing": {
            "models": str(work.models),
            "allow_untrained": True,
            "work_dir": str(work.path),
            "retry_delay_s": 0.2,
        },
        "destinations": destinations or [],
        "delivery": {"retry_initial_s": 0.2, "retry_max_s": 1.0, "max_rejections": 3, "reachability_cache_s": 0},
        "http": {"port": http_port or free_port()},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_node(config: dict, work: NodeWork) -> Iterator:
    """A `DicomNode` in this process (threads), stopped on exit."""
    from app.node.config import NodeConfig
    from app.node.service import DicomNode

    node = DicomNode(NodeConfig.model_validate(config), analyzer=work.analyzer)
    node.start()
    try:
        yield node
    finally:
        node.stop(timeout=30)


class NodeProcess:
    """`biomedclip-map serve --config FILE` as a child process (so that it can be killed with -9)."""

    def __init__(self, config_path: Path, http_port: int, log_path: Path):
        self.config_path = config_path
        self.http_port = http_port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "NodeProcess":
        env = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--config", str(self.config_path)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: self.healthy() or self.process.poll() is not None, timeout, "the node to start")
        if self.process.poll() is not None:
            pytest.fail(f"the node exited with {self.process.returncode}:\n{self.log()}")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            return response.read().decode("utf-8")

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


# --------------------------------------------------------------------------- sending


def send_datasets(
    port: int,
    datasets: Iterable[Dataset | Path],
    *,
    calling: str = "TESTSCU",
    called: str = "BIOMEDCLIP",
    abort_after: int | None = None,
    priority: int = 2,
) -> list[int]:
    """C-STORE each dataset (or file) in one association; the statuses (-1: no answer).

    With `abort_after`, the association is aborted (A-ABORT) after that many C-STOREs.
    """
    items = list(datasets)
    ae = AE(ae_title=calling)
    classes = set()
    for item in items:
        ds = pydicom.dcmread(item, stop_before_pixels=True) if isinstance(item, Path) else item
        classes.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    for sop_class, syntax in sorted(classes):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"association with the node on port {port} failed"
    statuses = []
    for index, item in enumerate(items):
        if abort_after is not None and index == abort_after:
            assoc.abort()
            return statuses
        status = assoc.send_c_store(item, priority=priority)
        statuses.append(int(status.Status) if status and "Status" in status else -1)
    assoc.release()
    return statuses


def echo(port: int, *, calling: str = "TESTSCU", called: str = "BIOMEDCLIP", tls: tuple | None = None) -> int | None:
    """C-ECHO in a new association; the status, or None when no association was established."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if status and "Status" in status else -1


# --------------------------------------------------------------------------- receiving


@dataclass
class Received:
    calling_ae: str
    dataset: Dataset
    at: float


@dataclass
class DicomReceiver:
    """A Storage SCP standing in for a PACS: keeps what it stores; can refuse a SOP class."""

    ae_title: str = "TESTPACS"
    port: int = 0
    refuse_class_prefix: str | None = None
    refuse_status: int = 0xA700
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    server: object = None

    def start(self) -> "DicomReceiver":
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self.port = self.port or free_port()
        lock = threading.Lock()

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            if self.refuse_class_prefix and str(ds.SOPClassUID).startswith(self.refuse_class_prefix):
                with lock:
                    self.refused += 1
                return self.refuse_status
            with lock:
                self.received.append(Received(event.assoc.requestor.ae_title, ds, time.time()))
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def of_modality(self, modality: str) -> list[Dataset]:
        return [r.dataset for r in self.received if r.dataset.Modality == modality]


@pytest.fixture
def receiver() -> Iterator[DicomReceiver]:
    """A started `DicomReceiver` (stopped after the test)."""
    pacs = DicomReceiver().start()
    yield pacs
    pacs.stop()


def destination(pacs: DicomReceiver, name: str = "pacs") -> dict:
    return {"name": name, "ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}
