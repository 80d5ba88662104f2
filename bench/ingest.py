"""Benchmark: how fast the DICOM node takes in a study, against DCMTK's storescp, and how long a
warm node takes from "study complete" to "SR delivered".

Ingest. One study of 400 CT instances (512 x 512, 16-bit, explicit VR little endian; every file
has the same pixel bytes and its own header) is sent by DCMTK's `storescu` in one association,
alternately to `storescp` (DCMTK's Storage SCP, writing files without fsync) and to
`biomedclip-map serve` (which writes, fdatasync's, renames and flushes the folder of every
instance before answering), both on this machine, both with TCP_NODELAY=1. Each trial's rate is
instances / wall time of the `storescu` run; the median of the trials is reported, with the ratio
node / storescp (target >= 0.5). The node's quiet period is set long, so that no analysis runs
during the trials. For comparison, two more figures explain where the node's time goes: a bare
pynetdicom Storage SCP writing without fsync (pynetdicom's own protocol cost), and the cost of one
durable write of an instance file on this disk, alone (it bounds what any receiver that syncs each
instance before answering can reach).

Latency. A second node (quiet period 0.5 s) receives one-photograph studies (the sample burn
photograph with fresh UIDs) one after another and delivers to a Storage SCP run by this script.
"Study complete" to "SR delivered" is read from the node's own histogram
(`biomedclip_node_complete_to_delivered_seconds`, one observation per study); the first study is a
warm-up and not counted. The model is the full-size BiomedCLIP architecture with random weights
(`--model full`, built once into `.work/bench/models`), or the tiny test model (`--model tiny`).

The JSON output has timings, counts and sizes only: no UIDs, no patient data.

Usage: ``python bench/ingest.py [--instances 400] [--trials 3] [--model full|tiny] [--no-latency] [--out bench/results/ingest.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "ingest.json"
MODEL_CACHE = REPO_ROOT / ".work" / "bench" / "models"
TARGET_RATIO = 0.5
ROWS = COLUMNS = 512
NODE_AE = "BIOMEDCLIP"
SENDER_AE = "BENCHSCU"
ENV = dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_study(folder: Path, count: int) -> int:
    """`count` CT slices of one series into `folder`; returns the size of one file in bytes."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    pixels = (np.random.default_rng(0).normal(40, 300, (ROWS, COLUMNS)).astype(np.int16)).tobytes()
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "Bench^Synthetic", "BENCH-0001", "20260101", "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(index)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels
        ds.save_as(folder / f"CT{index:04d}.dcm", enforce_file_format=True)
    return (folder / "CT0000.dcm").stat().st_size


def durable_write_ms(folder: Path, size: int, count: int = 50) -> float:
    """Mean cost of the node's durable write (temp file, fdatasync, rename, folder fsync) of one file."""
    from app.node.durable_files import write_file_durably

    folder.mkdir(parents=True)
    data = os.urandom(size)
    started = time.perf_counter()
    for index in range(count):
        write_file_durably(folder / f"f{index}.dcm", [data])
    return (time.perf_counter() - started) / count * 1000


class PlainPynetdicomSCP:
    """For comparison only: a bare pynetdicom Storage SCP that writes each data set without fsync.

    It shows how much of the node's time is pynetdicom's own protocol handling (it has the node's
    socket settings: TCP_NODELAY, the same maximum PDU) and how much is the durable write.
    """

    def __init__(self, folder: Path):
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        from app.node.destinations import set_tcp_nodelay

        folder.mkdir(parents=True)
        self.port = free_port()
        ae = AE(ae_title="PLAINSCP")
        ae.supported_contexts = AllStoragePresentationContexts
        ae.maximum_pdu_size = 262144
        counter = iter(range(10**9))

        def on_store(event):
            with open(folder / f"{next(counter)}.dcm", "wb") as handle:
                handle.write(event.encoded_dataset())
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_C_STORE, on_store)],
        )

    def stop(self) -> None:
        self.server.shutdown()


def send_with_storescu(port: int, called: str, files: list[Path]) -> float:
    """Wall time of one storescu association sending every file; raises if it fails."""
    started = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aet", SENDER_AE, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, env=ENV,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {result.stdout[-500:]}{result.stderr[-500:]}")
    return seconds


class NodeProcess:
    """`biomedclip-map serve` as a child process with a configuration written here."""

    def __init__(self, root: Path, models: Path, work: Path, *, quiet_period_s: float, destinations: list[dict]):
        self.port, self.http_port = free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "dicom": {"ae_title": NODE_AE, "port": self.port, "allow_calling_aes": [SENDER_AE]},
            "spool": {"path": str(root / "spool"), "quiet_period_s": quiet_period_s, "min_free_bytes": "64MiB"},
            "processing": {"models": str(models), "allow_untrained": True, "work_dir": str(work)},
            "destinations": destinations,
            "http": {"port": self.http_port},
            "log_level": "WARNING",
        }
        self.config_path = root / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = root / "node.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> float:
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--config", str(self.config_path)],
                cwd=REPO_ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT,
            )
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the node did not start in time")

    def histogram(self, name: str) -> tuple[float, float]:
        """(sum, count) of a histogram on /metrics, over all its label values."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith(f"{name}_sum"):
                total += float(line.split()[-1])
            elif line.startswith(f"{name}_count"):
                count += float(line.split()[-1])
        return total, count

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def bench_ingest(root: Path, instances: int, trials: int, models: Path, work: Path) -> dict:
    study = root / "study"
    size = write_study(study, instances)
    files = sorted(study.glob("*.dcm"))
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the file cache
    received = root / "storescp"
    received.mkdir()
    scp_port = free_port()
    storescp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(received), str(scp_port)], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = NodeProcess(root / "node", models, work, quiet_period_s=3600, destinations=[])
    startup = node.start()
    plain = PlainPynetdicomSCP(root / "plain")
    time.sleep(0.5)
    storescp_s, node_s, plain_s = [], [], []
    try:
        send_with_storescu(scp_port, "STORESCP", files[:10])  # warm-up of every receiver
        send_with_storescu(node.port, NODE_AE, files[:10])
        send_with_storescu(plain.port, "PLAINSCP", files[:10])
        for _ in range(trials):
            storescp_s.append(send_with_storescu(scp_port, "STORESCP", files))
            node_s.append(send_with_storescu(node.port, NODE_AE, files))
            plain_s.append(send_with_storescu(plain.port, "PLAINSCP", files))
        stored = len(list((root / "node" / "spool" / "incoming").glob("*/instances/*.dcm")))
    finally:
        node.stop()
        plain.stop()
        storescp.terminate()
        storescp.wait(timeout=30)
    if stored != instances:
        raise RuntimeError(f"the node holds {stored} instances, expected {instances}")
    scp_rate = instances / statistics.median(storescp_s)
    node_rate = instances / statistics.median(node_s)
    durable_ms = durable_write_ms(root / "fsync-probe", size)
    return {
        "study": {"instances": instances, "rows": ROWS, "columns": COLUMNS, "bytes_per_file": size,
                  "megabytes": round(size * instances / 1e6, 1)},
        "storescp": {"trials_s": [round(s, 3) for s in storescp_s], "instances_per_s": round(scp_rate, 1)},
        "node": {"trials_s": [round(s, 3) for s in node_s], "instances_per_s": round(node_rate, 1),
                 "startup_s": round(startup, 2)},
        "ratio_node_to_storescp": round(node_rate / scp_rate, 3),
        "target_ratio": TARGET_RATIO,
        "target_met": node_rate / scp_rate >= TARGET_RATIO,
        "for_comparison": {
            "pynetdicom_scp_without_fsync": {
                "trials_s": [round(x, 3) for x in plain_s],
                "instances_per_s": round(instances / statistics.median(plain_s), 1),
                "ratio_to_storescp": round(instances / statistics.median(plain_s) / scp_rate, 3),
            },
            "durable_write_ms_per_file": round(durable_ms, 2),
            "durable_writes_per_s_alone": round(1000 / durable_ms, 1),
            "durable_writes_alone_ratio_to_storescp": round(1000 / durable_ms / scp_rate, 3),
        },
    }


def photograph_study(template: pydicom.Dataset) -> pydicom.Dataset:
    """The sample photograph as a new study (fresh UIDs)."""
    ds = template.copy()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def bench_latency(root: Path, models: Path, work: Path, studies: int) -> dict:
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from app.sample_studies import build_sample_studies

    samples = build_sample_studies(root / "samples")
    photo = pydicom.dcmread(next(next(s for s in samples if s.name == "burn-photograph").path.glob("*.dcm")))
    arrived = threading.Event()

    def on_store(event):
        if str(event.request.AffectedSOPClassUID).startswith("1.2.840.10008.5.1.4.1.1.88."):
            arrived.set()
        return 0x0000

    pacs_ae = AE(ae_title="BENCHPACS")
    pacs_ae.supported_contexts = AllStoragePresentationContexts
    pacs_port = free_port()
    pacs = pacs_ae.start_server(("127.0.0.1", pacs_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    quiet = 0.5
    node = NodeProcess(root / "latency-node", models, work, quiet_period_s=quiet,
                       destinations=[{"name": "pacs", "ae_title": "BENCHPACS", "host": "127.0.0.1", "port": pacs_port}])
    startup = node.start()
    latencies, end_to_end = [], []
    try:
        sender = AE(ae_title=SENDER_AE)
        sender.add_requested_context(photo.SOPClassUID, [photo.file_meta.TransferSyntaxUID])
        for index in range(studies + 1):
            before = node.histogram("biomedclip_node_complete_to_delivered_seconds")
            arrived.clear()
            assoc = sender.associate("127.0.0.1", node.port, ae_title=NODE_AE)
            status = assoc.send_c_store(photograph_study(photo))
            assoc.release()
            sent = time.perf_counter()
            if int(status.Status) != 0:
                raise RuntimeError(f"the node answered 0x{int(status.Status):04X}")
            if not arrived.wait(600):
                raise RuntimeError("no SR arrived within 10 minutes")
            received = time.perf_counter() - sent
            deadline = time.time() + 30
            while (after := node.histogram("biomedclip_node_complete_to_delivered_seconds"))[1] <= before[1]:
                if time.time() > deadline:
                    raise RuntimeError("the node did not record the delivery")
                time.sleep(0.05)
            if index > 0:  # the first study warms the caches; it is not counted
                latencies.append(after[0] - before[0])
                end_to_end.append(received)
    finally:
        node.stop()
        pacs.shutdown()
    return {
        "studies_measured": studies,
        "quiet_period_s": quiet,
        "node_startup_s": round(startup, 2),
        "complete_to_sr_delivered_s": {
            "median": round(statistics.median(latencies), 3), "min": round(min(latencies), 3), "max": round(max(latencies), 3),
            "samples": [round(x, 3) for x in latencies],
        },
        "last_instance_acknowledged_to_sr_received_s": {
            "median": round(statistics.median(end_to_end), 3),
            "note": "includes the quiet period",
        },
    }


def cpu_model() -> str:
    """`lscpu`'s model name (the figures depend on it), or the platform's processor string."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in listing.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def model_folder(kind: str, scratch: Path) -> Path:
    """The models folder (holding biomedclip/) for the latency run; built once and cached."""
    from models.builders import build_random, build_tiny
    from models.errors import ManifestError
    from models.manifest import read_manifest

    folder = (MODEL_CACHE / kind) if kind == "full" else (scratch / "tiny-models")
    try:
        read_manifest(folder / "biomedclip")
    except ManifestError:
        print(f"building the {kind} random-weight model into {folder} (once)", file=sys.stderr)
        (build_random if kind == "full" else build_tiny)(folder / "biomedclip")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--latency-studies", type=int, default=5)
    parser.add_argument("--model", choices=("full", "tiny"), default="full", help="model of the latency run")
    parser.add_argument("--no-latency", action="store_true", help="only the ingest comparison (no model run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for tool in ("storescp", "storescu"):
        if shutil.which(tool) is None:
            print(f"{tool} (DCMTK) is not installed: apt-get install dcmtk", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        root = Path(scratch)
        work = MODEL_CACHE.parent / f"work-{args.model}"
        tiny = model_folder("tiny", root)
        ingest = bench_ingest(root / "ingest", args.instances, args.trials, tiny, root / "ingest-work")
        print(json.dumps(ingest, indent=1), file=sys.stderr)
        latency = None if args.no_latency else bench_latency(root / "latency", model_folder(args.model, root), work, args.latency_studies)
    result = {
        "benchmark": "ingest",
        "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "ingest": ingest,
    }
    if latency is not None:
        result["latency"] = {"model": f"{args.model} (random weights)", **latency}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
