"""The DICOM node with a full spool: it frees itself, says why it refuses, and finishes what it acknowledged.

A node runs in-process on loopback with a pynetdicom Storage SCP as the PACS; instances are sent
with pynetdicom. The quota case lowers `spool.max_bytes` on the running node to what its spool
holds; the disk case mounts a small tmpfs (root only) so that the disk itself fills.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from pydicom.uid import generate_uid

from tests.fixtures_dicom import image_dataset
from tests.fixtures_node import DicomReceiver, destination, node_config, running_node, send_datasets, wait_until

WAIT_S = 60


def ct_study(count: int, size: int = 64) -> list:
    """`count` CT slices of one new study with random pixels (`size` x `size`, 16 bit)."""
    study, series = generate_uid(), generate_uid()
    slices = []
    for index in range(count):
        ds = image_dataset(
            modality="CT", study_uid=study, series_uid=series, rows=size, columns=size, InstanceNumber=index + 1,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], ImagePositionPatient=[0, 0, float(index)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        )
        ds.PixelData = os.urandom(size * size * 2)
        slices.append(ds)
    return slices


def srs_of(pacs: DicomReceiver, study: list) -> list:
    return [d for d in pacs.of_modality("SR") if d.StudyInstanceUID == study[0].StudyInstanceUID]


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def pacs():
    receiver = DicomReceiver().start()
    yield receiver
    receiver.stop()


def _deliver(node, pacs, study) -> None:
    assert send_datasets(node.scp.port, study) == [0] * len(study)
    wait_until(lambda: srs_of(pacs, study), WAIT_S, "the study's SR at the PACS")
    wait_until(lambda: node.outbox.depth() == 0 and node.queue.depth() == 0 and not node.grouper.pending(), WAIT_S, "delivery")


def test_full_quota_removes_processed_studies_and_delivered_results_oldest_first_instead_of_refusing(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    spool = tmp_path / "spool"
    config = node_config(spool, node_work, destinations=[destination(pacs)], spool={"result_reserve_bytes": 0})
    with running_node(config, node_work) as node:
        first, second, third = ct_study(4), ct_study(4), ct_study(4)
        _deliver(node, pacs, first)
        first_kept = {p.name for p in (spool / "studies").iterdir()}
        _deliver(node, pacs, second)
        assert len(list((spool / "studies").iterdir())) == 2 and len(list((spool / "delivered").iterdir())) == 2
        node.quota.max_bytes = node.quota.rescan() + 4096  # the spool is now full of processed studies
        statuses = send_datasets(node.scp.port, third)
        wait_until(lambda: srs_of(pacs, third), WAIT_S, "the third study's SR at the PACS")
        kept = {p.name for p in (spool / "studies").iterdir()}
    assert statuses == [0] * 4, "instances are accepted once processed studies make room"
    assert first_kept.isdisjoint(kept), "the oldest processed study was removed first"
    assert "spool under pressure: removed" in caplog.text and "oldest first" in caplog.text
    assert "refused with status 0xA700" not in caplog.text


def test_refusal_says_what_holds_the_space_readyz_reports_it_and_receiving_resumes_after(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    spool = tmp_path / "spool"
    config = node_config(spool, node_work, quiet_period_s=60, spool={"result_reserve_bytes": 0})
    with running_node(config, node_work) as node:
        waiting = ct_study(3)
        assert send_datasets(node.scp.port, waiting) == [0, 0, 0]  # received, not processed (long quiet period)
        node.quota.max_bytes = node.quota.rescan() + 1024
        refused = send_datasets(node.scp.port, ct_study(2))
        status, body = readyz(node.http.port)
        node.quota.max_bytes = None  # the administrator raises the quota
        resumed = send_datasets(node.scp.port, ct_study(2))
        after, _ = readyz(node.http.port)
    assert refused == [0xA700, 0xA700]
    assert status == 503 and body["problems"]["spool"].startswith("refusing new instances: ")
    assert "spool.max_bytes" in body["problems"]["spool"] and "being received, queued or analysed" in body["problems"]["spool"]
    assert "nothing more can be removed" in caplog.text and "wait for studies to be processed" not in caplog.text
    assert resumed == [0, 0] and after == 200


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")
def test_full_disk_keeps_room_for_the_results_of_every_acknowledged_study(tmp_path, node_work, pacs, caplog):
    caplog.set_level(logging.INFO)
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        config = node_config(
            disk, node_work, destinations=[destination(pacs)], quiet_period_s=1.0,
            spool={"min_free_bytes": 0, "result_reserve_bytes": "2300KiB"},  # the results of one study take 2.0 MB
        )
        studies = [ct_study(40, size=128) for _ in range(4)]  # about 33 kB each, 1.3 MB per study
        with running_node(config, node_work) as node:
            answers = [send_datasets(node.scp.port, study) for study in studies]
            acknowledged = [study for study, statuses in zip(studies, answers) if 0 in statuses]
            for study in acknowledged:
                wait_until(lambda study=study: srs_of(pacs, study), WAIT_S, "an SR for every acknowledged study")
            quarantined = list((disk / "quarantine").iterdir())
        flat = [s for statuses in answers for s in statuses]
        assert 0xA700 in flat and flat.count(0) > 0, answers
        assert not quarantined, "no acknowledged study lost its result to the full disk"
        assert "is full" in caplog.text and "spool.result_reserve_bytes" in caplog.text
        assert not list(disk.rglob("*.part")), "nothing half-written is left"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
