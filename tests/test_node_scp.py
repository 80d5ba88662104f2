"""The DICOM node in-process: receiving, bad input, delivery, superseding reports, TLS, observability.

Each test starts a `DicomNode` (threads) on free loopback ports with the session's warm tiny model,
sends with a pynetdicom SCU, and receives the results with a pynetdicom Storage SCP standing in for
the PACS. Bad input: an association aborted mid-study, a corrupt or truncated data set, a missing
Study Instance UID, a full spool (quota, and a real full file system where mounting is allowed),
and a destination that refuses the SR; each gets a clear log line and the right DIMSE status, and
nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid
from pynetdicom import _config
from pynetdicom.dsutils import encode

from tests.dicom_validation import run_dciodvfy
from tests.fixtures_dicom import image_dataset
from tests.fixtures_node import (
    DicomReceiver,
    destination,
    echo,
    free_port,
    metric_value,
    node_config,
    running_node,
    send_datasets,
    wait_until,
)

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
WAIT_S = 60
CANARIES = {
    "PatientName": "Zebediah^Canaryfeather",
    "PatientID": "CANARY-PID-7731",
    "AccessionNumber": "CANARYACC55",
    "PatientBirthDate": "19230417",
    "AdditionalPatientHistory": "STAT: fell from ladder at 12 Canary Wharf Road",
}


def ct_study(count: int, study_uid: str | None = None, series_uid: str | None = None, **attributes) -> list:
    """`count` small CT slices of one series with fresh UIDs (or the given study/series)."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    return [
        image_dataset(
            modality="CT", study_uid=study_uid, series_uid=series_uid, rows=16, columns=16,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], InstanceNumber=i + 1,
            ImagePositionPatient=[0, 0, float(i)], ImageOrientationPatient=[1, 0, 0, 0, 1, 0], **attributes,
        )
        for i in range(count)
    ]


def reports(pacs: DicomReceiver, study_uid: str) -> list:
    return [d for d in pacs.of_modality("SR") if d.StudyInstanceUID == study_uid]


def wait_reports(pacs: DicomReceiver, study_uid: str, count: int = 1) -> list:
    return wait_until(lambda: (r if len(r := reports(pacs, study_uid)) >= count else None), WAIT_S, f"{count} SR(s) at the PACS")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def pacs():
    receiver = DicomReceiver().start()
    yield receiver
    receiver.stop()


# --------------------------------------------------------------------------- the normal path


def test_study_is_received_analysed_and_sr_and_capture_delivered_into_the_same_study(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(4)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)])
    with running_node(config, node_work) as node:
        assert send_datasets(node.scp.port, study) == [0, 0, 0, 0]
        (sr,) = wait_reports(pacs, study[0].StudyInstanceUID)
        captures = wait_until(lambda: [d for d in pacs.of_modality("OT") if d.StudyInstanceUID == sr.StudyInstanceUID], WAIT_S, "the capture")
        wait_until(lambda: any((tmp_path / "spool" / "delivered").iterdir()), WAIT_S, "the outbox entry to be delivered")
        metrics = node.metrics.registry
        assert metrics.get_sample_value("biomedclip_node_instances_received_total", {"outcome": "stored"}) == 4
        assert metrics.get_sample_value("biomedclip_node_studies_processed_total", {"outcome": "reported"}) == 1
        assert metrics.get_sample_value("biomedclip_node_complete_to_delivered_seconds_count", {"destination": "pacs"}) == 1
    assert sr.PatientID == study[0].PatientID and sr.SeriesInstanceUID != study[0].SeriesInstanceUID
    assert captures[0].PatientID == study[0].PatientID
    spool = tmp_path / "spool"
    assert not list((spool / "incoming").iterdir()) and not list((spool / "queue").iterdir())
    assert not list((spool / "processing").iterdir()) and not list((spool / "outbox").iterdir())
    assert len(list(spool.glob("studies/st-*/instances/*.dcm"))) == 4, "the study's instances are kept for late instances"


# --------------------------------------------------------------------------- bad input


def test_association_aborted_mid_study_keeps_what_was_acknowledged_and_processes_it(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(5)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)])
    with running_node(config, node_work) as node:
        assert send_datasets(node.scp.port, study, abort_after=3) == [0, 0, 0]
        wait_reports(pacs, study[0].StudyInstanceUID)
    assert "was aborted (A-ABORT, lost connection or timeout) after 3 instance(s) stored" in caplog.text
    assert len(list((tmp_path / "spool").glob("studies/st-*/instances/*.dcm"))) == 3


def _raw_file(path: Path, template, body: bytes) -> Path:
    """A DICOM file whose File Meta Information is valid and whose data set is `body` as given."""
    with open(path, "wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(handle, template.file_meta)
        handle.write(body)
    return path


def _send_raw(port: int, files: list[Path]) -> list:
    """Send files without decoding them (pynetdicom's chunked sending), so broken bytes reach the node."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    meta = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="BIOMEDCLIP")
        answers = [assoc.send_c_store(f) for f in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return answers


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # pydicom, reading the random bytes
def test_corrupt_and_truncated_data_sets_are_refused_with_cannot_understand_and_kept(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    template = ct_study(1)[0]
    body = encode(template, False, True)  # the data set as a C-STORE carries it (explicit VR little endian)
    garbage = _raw_file(tmp_path / "garbage.dcm", template, os.urandom(3000))
    truncated = _raw_file(tmp_path / "truncated.dcm", template, body[:-200])
    config = node_config(tmp_path / "spool", node_work)
    with running_node(config, node_work) as node:
        answers = _send_raw(node.scp.port, [garbage, truncated])
        follow_up = send_datasets(node.scp.port, ct_study(1))
    assert [int(a.Status) for a in answers] == [0xC210, 0xC210]
    assert all("cannot be decoded" in a.ErrorComment for a in answers)
    assert follow_up == [0], "the node keeps receiving after refusing broken data"
    kept = sorted((tmp_path / "spool" / "rejected").glob("*.json"))
    assert len(kept) == 2 and all(json.loads(p.read_text())["status"] == "0xC210" for p in kept)
    assert len(list((tmp_path / "spool" / "rejected").glob("*.dcm"))) == 2, "the refused bytes are kept for inspection"
    assert caplog.text.count("refused with status 0xC210") == 2


def test_instance_without_study_instance_uid_is_refused_with_does_not_match_sop_class(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(2)
    del study[1].StudyInstanceUID
    config = node_config(tmp_path / "spool", node_work)
    with running_node(config, node_work) as node:
        assert send_datasets(node.scp.port, study) == [0x0000, 0xA900]
        assert node.metrics.registry.get_sample_value("biomedclip_node_instances_received_total", {"outcome": "refused_no_study_uid"}) == 1
    assert "refused with status 0xA900: the Study Instance UID (0020,000D) is missing" in caplog.text
    assert len(list((tmp_path / "spool" / "rejected").glob("*.dcm"))) == 1


def test_full_spool_quota_answers_out_of_resources_and_loses_nothing_acknowledged(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(6)
    size = len(b"\x00" * 132) + len(encode(study[0], False, True)) + 200  # one instance file, meta included
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)], spool={"max_bytes": int(3.5 * size), "result_reserve_bytes": 0})
    with running_node(config, node_work) as node:
        statuses = send_datasets(node.scp.port, study)
        stored = statuses.count(0)
        assert 0 < stored < 6 and statuses[stored:] == [0xA700] * (6 - stored), statuses
        (sr,) = wait_reports(pacs, study[0].StudyInstanceUID)
    assert "refused with status 0xA700" in caplog.text and "spool.max_bytes" in caplog.text
    kept = list((tmp_path / "spool").glob("studies/st-*/instances/*.dcm"))
    assert len(kept) == stored, "every acknowledged instance was analysed and kept"
    assert all(pydicom.dcmread(p).SOPInstanceUID for p in kept)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")
def test_disk_full_spool_answers_out_of_resources_and_leaves_no_partial_file(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    spool = tmp_path / "small-disk"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(spool)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        study = ct_study(12, Rows=128, Columns=128)  # about 33 kB each: the 400 kB disk fills up
        for ds in study:
            ds.PixelData = os.urandom(128 * 128 * 2)
        config = node_config(spool, node_work, spool={"min_free_bytes": 0, "result_reserve_bytes": 0})
        with running_node(config, node_work) as node:
            statuses = send_datasets(node.scp.port, study)
        stored = statuses.count(0)
        assert 0 < stored < 12 and 0xA700 in statuses, statuses
        assert "is full" in caplog.text and "refused with status 0xA700" in caplog.text
        files = list(spool.glob("incoming/*/instances/*")) + list(spool.glob("queue/*/input/*")) + list(spool.glob("processing/*/input/*")) + list(spool.glob("studies/*/instances/*"))
        assert not list(spool.rglob("*.part")), "no half-written file is left behind"
        assert len({p.name for p in files}) == stored
        for path in files:
            assert len(pydicom.dcmread(path).PixelData) == 128 * 128 * 2, "every acknowledged instance is complete"
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_destination_refusing_the_sr_is_retried_then_set_aside_and_delivered_after_a_fix(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    picky = DicomReceiver(refuse_class_prefix=SR_PREFIX, refuse_status=0xA700).start()
    study = ct_study(3)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(picky)])
    try:
        with running_node(config, node_work) as node:
            send_datasets(node.scp.port, study)
            undeliverable = tmp_path / "spool" / "undeliverable"
            (entry,) = wait_until(lambda: list(undeliverable.iterdir()), WAIT_S, "the results to be set aside")
        assert picky.refused == 3, "refused, retried, refused again: max_rejections is 3"
        assert "refused SR-" in caplog.text and "status 0xA700" in caplog.text
        assert "they are kept in" in caplog.text
        record = json.loads((entry / "sent-pacs.json").read_text())
        assert record["gave_up"] and any(name.startswith("SC-") for name in record["sent"])
        assert (entry / next(f for f in json.loads((entry / "delivery.json").read_text())["files"] if f.startswith("SR-"))).is_file()

        # the administrator fixes the destination and moves the results back: they are delivered
        picky.refuse_class_prefix = None
        os.replace(entry, tmp_path / "spool" / "outbox" / entry.name)
        with running_node(config, node_work):
            (sr,) = wait_reports(picky, study[0].StudyInstanceUID)
        assert sr.StudyInstanceUID == study[0].StudyInstanceUID
    finally:
        picky.stop()


# --------------------------------------------------------------------------- late instances


def test_late_instances_rerun_the_whole_study_and_the_new_sr_supersedes_the_first(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(5)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)])
    with running_node(config, node_work) as node:
        send_datasets(node.scp.port, study[:3])
        (first,) = wait_reports(pacs, study[0].StudyInstanceUID)
        send_datasets(node.scp.port, study[3:])
        both = wait_reports(pacs, study[0].StudyInstanceUID, 2)
    second = next(r for r in both if r.SOPInstanceUID != first.SOPInstanceUID)
    (predecessor,) = second.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == first.StudyInstanceUID
    reference = predecessor.ReferencedSeriesSequence[0]
    assert reference.SeriesInstanceUID == first.SeriesInstanceUID
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert "2 instance(s) plus 3 kept from its earlier run(s)" in caplog.text
    path = tmp_path / "second.dcm"
    second.save_as(path, enforce_file_format=True)
    assert not run_dciodvfy(path).errors
    assert "1 series, 5 instances" in caplog.text, "the new run analysed the whole study"


def test_instances_sent_again_and_our_own_results_start_no_new_run(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    study = ct_study(3)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)])
    with running_node(config, node_work) as node:
        send_datasets(node.scp.port, study)
        (sr,) = wait_reports(pacs, study[0].StudyInstanceUID)
        send_datasets(node.scp.port, study)  # the PACS sends the study again
        results = [r.dataset for r in pacs.received if r.dataset.StudyInstanceUID == sr.StudyInstanceUID]
        assert send_datasets(node.scp.port, results) == [0] * len(results)  # our results come back (auto-routing)
        wait_until(lambda: "received again after it was processed" in caplog.text, WAIT_S, "the resent study to be closed")
        time.sleep(1.0)
        assert node.metrics.registry.get_sample_value("biomedclip_node_instances_received_total", {"outcome": "own_result"}) == len(results)
        assert node.metrics.registry.get_sample_value("biomedclip_node_studies_complete_total") == 1
    assert len(reports(pacs, study[0].StudyInstanceUID)) == 1


# --------------------------------------------------------------------------- priority


def test_urgent_study_is_marked_and_goes_before_routine_studies(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    routine = ct_study(2)
    urgent = ct_study(2, RequestedProcedurePriority="STAT")
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)], quiet_period_s=0.2)
    with running_node(config, node_work) as node:
        node.queue.claim = _paused(node.queue.claim)  # let both studies queue up first
        time.sleep(0.6)  # the worker's claim call in progress (0.5 s) has returned
        send_datasets(node.scp.port, routine)
        send_datasets(node.scp.port, urgent)
        wait_until(lambda: node.queue.depth() == 2, WAIT_S, "both studies to be queued")
        node.queue.claim.release()
        wait_reports(pacs, urgent[0].StudyInstanceUID)
        wait_reports(pacs, routine[0].StudyInstanceUID)
    order = [r.dataset.StudyInstanceUID for r in pacs.received if r.dataset.Modality == "SR"]
    assert order == [urgent[0].StudyInstanceUID, routine[0].StudyInstanceUID]
    assert "(urgent: RequestedProcedurePriority STAT)" in caplog.text


class _paused:
    """Wraps WorkQueue.claim so the worker takes nothing until `release()`."""

    def __init__(self, claim):
        self.claim = claim
        self.gate = threading.Event()

    def __call__(self, timeout: float):
        if not self.gate.wait(timeout):
            return None
        return self.claim(timeout)

    def release(self) -> None:
        self.gate.set()


# --------------------------------------------------------------------------- TLS, observability, DICOMweb


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_associations_work_and_plain_ones_fail(tmp_path, node_work):
    key, cert = tmp_path / "node.key", tmp_path / "node.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    config = node_config(tmp_path / "spool", node_work, dicom={"tls": {"certificate": str(cert), "private_key": str(key)}})
    with running_node(config, node_work) as node:
        context = ssl.create_default_context(cafile=str(cert))
        secure = echo(node.scp.port, tls=(context, "localhost"))
        plain = echo(node.scp.port)
    assert secure == 0x0000, "C-ECHO over TLS"
    assert plain is None, "a plain-TCP association must not be established on the TLS port"


def test_health_readiness_metrics_and_logs_carry_no_patient_data(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.DEBUG)
    study = ct_study(3, **CANARIES)
    config = node_config(tmp_path / "spool", node_work, destinations=[destination(pacs)])
    with running_node(config, node_work) as node:
        port = node.http.port
        send_datasets(node.scp.port, study)
        (sr,) = wait_reports(pacs, study[0].StudyInstanceUID)
        assert http_get(port, "/healthz")[0] == 200
        status, body = http_get(port, "/readyz")
        assert status == 200, body
        _, metrics = http_get(port, "/metrics")
        pacs.stop()
        status, body = http_get(port, "/readyz")
        assert status == 503 and "destination pacs" in json.loads(body)["problems"]
    assert metric_value(metrics, "biomedclip_node_instances_received_total", 'outcome="stored"') == 3
    assert metric_value(metrics, "biomedclip_node_queue_depth") == 0
    assert "biomedclip_node_stage_seconds_bucket" in metrics and "biomedclip_node_delivery_retries_total" in metrics
    uids = {study[0].StudyInstanceUID, study[0].SeriesInstanceUID, sr.SOPInstanceUID, *(d.SOPInstanceUID for d in study)}
    for text, where in ((metrics, "/metrics"), (caplog.text, "the log")):
        for value in [*CANARIES.values(), "Canary", *uids]:
            assert value not in text, f"{value!r} appears in {where}"
    assert "urgent: keyword 'stat' in AdditionalPatientHistory" in caplog.text


class _StowHandler(BaseHTTPRequestHandler):
    """A minimal STOW-RS endpoint: stores the application/dicom parts of a multipart/related POST."""

    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's method name
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # dicomweb-client streams the body
            body = b""
            while (size := int(self.rfile.readline().strip().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        boundary = self.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
        for part in body.split(b"--" + boundary)[1:-1]:
            headers, _, content = part.partition(b"\r\n\r\n")
            if b"application/dicom" in headers:
                type(self).received.append(pydicom.dcmread(BytesIO(content[:-2] if content.endswith(b"\r\n") else content)))
        answer = b'{"00081199": {"vr": "SQ", "Value": []}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def test_results_are_stored_by_stow_rs_to_a_dicomweb_destination(tmp_path, node_work):
    _StowHandler.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _StowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    study = ct_study(3)
    web = {"name": "web", "stow_url": f"http://127.0.0.1:{server.server_port}/dicom-web"}
    config = node_config(tmp_path / "spool", node_work, destinations=[web])
    try:
        with running_node(config, node_work) as node:
            send_datasets(node.scp.port, study)
            wait_until(lambda: any(d.Modality == "SR" for d in _StowHandler.received), WAIT_S, "the SR at the STOW-RS endpoint")
            wait_until(lambda: any((tmp_path / "spool" / "delivered").iterdir()), WAIT_S, "the delivery to finish")
    finally:
        server.shutdown()
    assert {d.Modality for d in _StowHandler.received} == {"SR", "OT"}
    assert all(d.StudyInstanceUID == study[0].StudyInstanceUID for d in _StowHandler.received)
