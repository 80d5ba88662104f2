"""The DICOM node under hostile connections: no lock-out, per-address limits, safe logs.

Every test runs a `DicomNode` in-process on loopback and talks to it over real sockets: DCMTK's
`storescu` as the allowed sender, pynetdicom for associations, and raw sockets for connections
that never associate. Linux routes all of 127.0.0.0/8 to the loopback interface, so the hostile
side binds 127.0.0.2 as its source address and the allowed sender uses 127.0.0.1: two "hosts".
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from tests.fixtures_dicom import image_dataset
from tests.fixtures_node import echo, node_config, running_node, wait_until

HOSTILE_ADDRESS = "127.0.0.2"
ALLOWED_WITHIN_S = 2.0


def write_instances(folder: Path, count: int) -> list[Path]:
    """`count` small CT files of one new study, as a sender would have them on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for index in range(count):
        ds = image_dataset(modality="CT", study_uid=study, series_uid=series, rows=16, columns=16, InstanceNumber=index + 1)
        path = folder / f"{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, files: list[Path], *, calling: str = "TESTSCU") -> tuple[int, float, str]:
    """Send with DCMTK's storescu in one association; (exit status, seconds, output)."""
    started = time.monotonic()
    done = subprocess.run(
        ["storescu", "-aet", calling, "-aec", "BIOMEDCLIP", "-to", "10", "-ta", "10", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def association_request(*, calling: bytes = b"TESTSCU", called: bytes = b"BIOMEDCLIP", max_pdu: int = 16384) -> bytes:
    """The bytes of an A-ASSOCIATE-RQ (Verification), with AE titles and maximum PDU length as given, valid or not."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "PLACEHOLDER"
    primitive.called_ae_title = "PLACEHOLDER"
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.9999.1"
    primitive.user_information = [length, implementation]
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    data = bytearray(pdu.encode())
    data[10:26] = called.ljust(16)[:16]  # PS3.8 9.3.2: called AE title at offset 10, calling at 26
    data[26:42] = calling.ljust(16)[:16]
    at = data.find(b"\x51\x00\x00\x04")  # the Maximum Length sub-item
    data[at + 4 : at + 8] = struct.pack(">I", max_pdu)
    return bytes(data)


def raw_exchange(port: int, data: bytes, *, source: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """Send `data` on a new connection and return the first PDU bytes answered (b'' if closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        return sock.recv(64)


FLOOD_SCRIPT = r"""
import signal, socket, struct, sys, time
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(True))
port, width, hold, until = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), time.monotonic() + float(sys.argv[4])
rounds = opened = 0
while not stop and time.monotonic() < until:
    sockets = []
    for _ in range(width):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=1, source_address=(sys.argv[5], 0)))
            opened += 1
        except OSError:
            pass
    time.sleep(hold)
    for sock in sockets[::2]:
        sock.close()  # half are closed with a FIN
    for sock in sockets[1::2]:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # half are dropped with a reset
    rounds += 1
print(rounds, opened)
"""


class ConnectionFlood:
    """A child process (another "host", HOSTILE_ADDRESS) that keeps opening `width` connections which
    never associate, holding them `hold_s`, then abandoning them, for at most `duration_s`."""

    def __init__(self, port: int, width: int = 50, hold_s: float = 0.3, duration_s: float = 60.0):
        self.args = [str(port), str(width), str(hold_s), str(duration_s), HOSTILE_ADDRESS]
        self.rounds = self.opened = 0
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "ConnectionFlood":
        self._process = subprocess.Popen([sys.executable, "-c", FLOOD_SCRIPT, *self.args], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        self._process.send_signal(signal.SIGINT)
        out, _ = self._process.communicate(timeout=30)
        numbers = out.split()
        if len(numbers) == 2:
            self.rounds, self.opened = int(numbers[0]), int(numbers[1])


@pytest.mark.skipif(shutil.which("storescu") is None, reason="storescu (DCMTK) is not installed")
def test_allowed_sender_always_gets_in_while_50_connections_keep_being_opened_and_abandoned(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    files = write_instances(tmp_path / "study", 3)
    config = node_config(tmp_path / "spool", node_work, quiet_period_s=60)
    with running_node(config, node_work) as node:
        baseline_threads = threading.active_count()
        most_threads = baseline_threads
        timings = []
        with ConnectionFlood(node.scp.port) as flood:
            time.sleep(0.5)
            for _ in range(8):
                status, seconds, output = storescu(node.scp.port, files)
                assert status == 0, output
                timings.append(seconds)
                assert echo(node.scp.port) == 0x0000
                most_threads = max(most_threads, threading.active_count())
                time.sleep(0.3)
        stored = node.metrics.registry.get_sample_value("biomedclip_node_instances_received_total", {"outcome": "stored"})
    rounds, opened = flood.rounds, flood.opened
    assert rounds >= 3 and opened >= 150, f"the flood ran ({rounds} rounds, {opened} connections)"
    assert max(timings) < ALLOWED_WITHIN_S, f"storescu took {max(timings):.2f} s during the flood: {timings}"
    assert stored == 3 * len(timings)
    # pending connections are capped per address: threads stay bounded (3 per connection at most)
    assert most_threads - baseline_threads <= 3 * (4 + 2), f"threads grew from {baseline_threads} to {most_threads}"
    assert "connection from 127.0.0.2 closed at once" in caplog.text


def test_connection_that_sends_nothing_or_a_partial_pdu_is_closed_after_the_acse_timeout(tmp_path, node_work):
    config = node_config(tmp_path / "spool", node_work, dicom={"acse_timeout_s": 1.0})
    with running_node(config, node_work) as node:
        for data in (b"", b"\x01\x00\x00", association_request()[:20]):
            started = time.monotonic()
            answer = raw_exchange(node.scp.port, data) if data else None
            if not data:
                with socket.create_connection(("127.0.0.1", node.scp.port), timeout=10) as sock:
                    answer = sock.recv(64)
            waited = time.monotonic() - started
            assert answer == b"" or answer[:1] == b"\x07", f"closed (or aborted), not answered: {answer!r}"
            assert 0.8 < waited < 3.0, f"{data!r}: closed after {waited:.2f} s, dicom.acse_timeout_s is 1"
        wait_until(lambda: node.scp.admission.pending() == 0, 3, "the closed connections to be forgotten")


def test_associations_are_limited_per_address_and_in_all(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    config = node_config(tmp_path / "spool", node_work, dicom={"max_associations": 3, "max_associations_per_address": 2})
    with running_node(config, node_work) as node:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        held = [ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP") for _ in range(2)]
        third_same = ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP")
        other = ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP", bind_address=(HOSTILE_ADDRESS, 0))
        over_total = ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP", bind_address=("127.0.0.3", 0))
        try:
            assert all(a.is_established for a in held)
            assert third_same.is_rejected and other.is_established and over_total.is_rejected
            rejection = third_same.acceptor.primitive
            assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
        finally:
            for assoc in [*held, other]:
                assoc.release()
        assert echo(node.scp.port) == 0x0000, "slots are freed when associations are released"
    assert "dicom.max_associations_per_address (2) associations from 127.0.0.1 are already open" in caplog.text
    assert "dicom.max_associations (3) associations are already open" in caplog.text


def test_unknown_calling_ae_is_rejected_before_any_slot_is_counted(tmp_path, node_work):
    config = node_config(tmp_path / "spool", node_work, dicom={"max_associations": 1, "max_associations_per_address": 1})
    with running_node(config, node_work) as node:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        allowed = ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP")
        try:
            stranger = AE(ae_title="STRANGER")
            stranger.add_requested_context(Verification)
            refused = stranger.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP")
            assert refused.is_rejected
            rejection = refused.acceptor.primitive
            assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
        finally:
            allowed.release()


def test_control_characters_from_the_network_are_escaped_in_one_line_and_absurd_pdu_sizes_rejected(tmp_path, node_work, caplog):
    caplog.set_level(logging.DEBUG)
    config = node_config(tmp_path / "spool", node_work, dicom={"acse_timeout_s": 1.0})
    with running_node(config, node_work) as node:
        forged = raw_exchange(node.scp.port, association_request(calling=b"EVIL\nFAKE\x1b[0m"))
        answers = [raw_exchange(node.scp.port, association_request(max_pdu=size)) for size in (1, 6, 4095)]
        fine = raw_exchange(node.scp.port, association_request(max_pdu=4096))
        assert echo(node.scp.port) == 0x0000
    assert forged[:1] in (b"\x03", b"\x07", b""), "no association for an invalid calling AE title"
    for answer in answers:
        assert answer[:1] == b"\x03" and answer[7:10] == b"\x01\x01\x01", f"A-ASSOCIATE-RJ permanent, expected: {answer!r}"
    assert fine[:1] == b"\x02", "a 4096-byte PDU is accepted"
    records = [r for r in caplog.records if r.levelno >= logging.DEBUG]
    for record in records:
        text = record.getMessage()
        assert "\n" not in text and "\x1b" not in text, f"raw control characters logged: {text!r}"
        assert record.exc_info is None, f"a traceback was logged for a protocol error: {text!r}"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("pynetdicom") and r.levelno > logging.DEBUG]
    assert caplog.text.count("maximum PDU length of") == 3
