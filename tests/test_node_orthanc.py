"""The DICOM node with a real PACS: Orthanc (Debian's package) on loopback ports, driven by REST.

1. Orthanc sends a study to the node; the SR and the Secondary Capture come back into the same study.
2. Orthanc is down while the study is processed; once it is back, the results are delivered.
3. The node is killed with SIGKILL while receiving, while processing, and with results waiting in
   its outbox; after each restart exactly one SR of the study arrives.
4. An unknown calling AE title is rejected; a C-ECHO from Orthanc works.
5. Four associations storing four studies at once all complete, and each study gets its SR.
6. A study of two patients is quarantined at once with its reason, and nothing is reported.
7. The whole study routed back (our SR and SC with it) starts no new run.

The node runs as a child process (`biomedclip-map serve --config FILE`) with the tiny untrained
model and a 0.4 s quiet period.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.fixtures_dicom import write_series
from tests.fixtures_node import (
    NodeProcess,
    free_port,
    metric_value,
    node_config,
    send_datasets,
    wait_until,
    write_config,
)
from tests.orthanc import NOT_INSTALLED, Orthanc, settle, wait_for_instances

pytestmark = pytest.mark.skipif(shutil.which("Orthanc") is None, reason=NOT_INSTALLED)

SR_WAIT_S = 60
NODE_AE = "BIOMEDCLIP"


def make_study(folder: Path, slices: int) -> tuple[str, list[Path]]:
    """A small synthetic CT study with fresh UIDs; (Study Instance UID, files)."""
    study_uid = generate_uid()
    files = write_series(folder, slices, study_uid=study_uid, rows=16, columns=16, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    return study_uid, files


class Site:
    """An Orthanc and a node that know each other."""

    def __init__(self, root: Path, work):
        self.root = root
        self.node_port = free_port()
        self.http_port = free_port()
        self.orthanc = Orthanc(root / "orthanc", modalities={"biomedclip": (NODE_AE, "127.0.0.1", self.node_port)})
        config = node_config(
            root / "spool",
            work,
            port=self.node_port,
            http_port=self.http_port,
            destinations=[{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": self.orthanc.dicom_port}],
        )
        self.config_path = write_config(root / "node.yaml", config)
        self.spool = root / "spool"
        self.node = NodeProcess(self.config_path, self.http_port, root / "node.log")

    def restart_node(self) -> None:
        self.node = NodeProcess(self.config_path, self.http_port, self.root / "node.log").start()

    def close(self) -> None:
        self.node.stop()
        self.orthanc.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory, node_work):
    """One Orthanc and one node process shared by the tests that do not kill the node."""
    root = tmp_path_factory.mktemp("site")
    shared = Site(root, node_work)
    shared.orthanc.start()
    shared.node.start()
    yield shared
    shared.close()


def test_orthanc_study_comes_back_with_sr_and_secondary_capture_in_the_same_study(site, tmp_path):
    study_uid, files = make_study(tmp_path / "study", 4)
    orthanc_study = site.orthanc.upload(files)

    site.orthanc.store_to("biomedclip", [orthanc_study])

    reports = wait_for_instances(site.orthanc, study_uid, "SR", 1, SR_WAIT_S)
    captures = wait_for_instances(site.orthanc, study_uid, "OT", 1, SR_WAIT_S)
    source = site.orthanc.of_modality(study_uid, "CT")[0]
    assert len(reports) == 1
    for result in (reports[0], captures[0]):
        assert result["StudyInstanceUID"] == study_uid
        assert result["PatientID"] == source["PatientID"]
        assert result["SeriesInstanceUID"] != source["SeriesInstanceUID"], "results go into a new series"
    assert reports[0]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.34", "a Comprehensive 3D SR"


def test_results_wait_while_orthanc_is_down_and_are_delivered_when_it_returns(site, tmp_path):
    study_uid, files = make_study(tmp_path / "study", 3)
    orthanc_study = site.orthanc.upload(files)
    unreachable_before = metric_value(site.node.metrics(), "biomedclip_node_deliveries_total", 'destination="orthanc",outcome="unreachable"')

    site.orthanc.store_to("biomedclip", [orthanc_study])
    site.orthanc.kill()
    try:
        wait_until(
            lambda: metric_value(site.node.metrics(), "biomedclip_node_deliveries_total", 'destination="orthanc",outcome="unreachable"')
            > unreachable_before,
            SR_WAIT_S,
            "the node to find Orthanc down",
        )
        waiting = list((site.spool / "outbox").iterdir())
        assert waiting, "the results wait in the outbox on disk"
        assert any(p.name.startswith("SR-") for entry in waiting for p in entry.iterdir())
    finally:
        site.orthanc.start()

    reports = wait_for_instances(site.orthanc, study_uid, "SR", 1, SR_WAIT_S)
    assert len(reports) == 1
    # the line is written just after the send returns, so it may follow the SR's arrival by a moment
    wait_until(lambda: "is reachable again" in site.node.log(), 10, "the node to log that Orthanc is reachable again")


def test_unknown_calling_ae_is_rejected_and_c_echo_works(site):
    assert site.orthanc.echo("biomedclip"), "C-ECHO from Orthanc (an allowed AE) must succeed"

    if shutil.which("echoscu") is None:
        pytest.skip("echoscu (DCMTK) is not installed")
    result = subprocess.run(
        ["echoscu", "-aet", "INTRUDER", "-aec", NODE_AE, "127.0.0.1", str(site.node_port)],
        capture_output=True, text=True, env=dict(os.environ, TCP_NODELAY="1"), timeout=30,
    )
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
    assert "association from AE 'INTRUDER'" in site.node.log()
    assert "rejected: calling AE title not in dicom.allow_calling_aes" in site.node.log()


def test_four_associations_storing_four_studies_at_once_all_complete(site, tmp_path):
    if shutil.which("storescu") is None:
        pytest.skip("storescu (DCMTK) is not installed")
    studies = [make_study(tmp_path / f"study{i}", 12) for i in range(4)]
    env = dict(os.environ, TCP_NODELAY="1")
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", "TESTSCU", "-aec", NODE_AE, "127.0.0.1", str(site.node_port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        for _uid, files in studies
    ]
    outputs = [s.communicate(timeout=60)[0].decode(errors="replace") for s in senders]
    assert [s.returncode for s in senders] == [0, 0, 0, 0], outputs

    for study_uid, _files in studies:
        assert len(wait_for_instances(site.orthanc, study_uid, "SR", 1, SR_WAIT_S)) == 1
    log = site.node.log()
    assert log.count("released: 12 instance(s) stored") >= 4


def test_kill_9_while_receiving_while_processing_and_before_delivery_yields_exactly_one_sr(tmp_path, node_work):
    site = Site(tmp_path, node_work)
    site.orthanc.start()
    site.node.start()
    incoming = site.spool / "incoming"
    try:
        # (a) killed in the middle of an association: what was acknowledged is processed after restart
        receiving_uid, files = make_study(tmp_path / "receiving", 150)
        site.orthanc.store_to("biomedclip", [site.orthanc.upload(files)], synchronous=False)
        wait_until(lambda: sum(1 for _ in incoming.glob("*/instances/*.dcm")) >= 20, 60, "the node to receive 20 instances")
        site.node.kill9()
        acknowledged = sum(1 for _ in incoming.glob("*/instances/*.dcm"))
        assert 20 <= acknowledged < 150, "the node was killed in the middle of the association"
        site.restart_node()
        assert len(wait_for_instances(site.orthanc, receiving_uid, "SR", 1, SR_WAIT_S)) == 1

        # (b) killed while the application graph runs on the study
        processing_uid, files = make_study(tmp_path / "processing", 30)
        site.orthanc.store_to("biomedclip", [site.orthanc.upload(files)])
        wait_until(lambda: any((site.spool / "processing").iterdir()), 60, "the study to be in processing", interval=0.005)
        site.node.kill9()
        site.restart_node()
        assert len(wait_for_instances(site.orthanc, processing_uid, "SR", 1, SR_WAIT_S)) == 1
        log = site.node.log()
        assert "was interrupted during processing; it runs again" in log or "were already committed; finished" in log

        # (c) killed with results committed but not delivered (Orthanc down)
        outbox_uid, files = make_study(tmp_path / "outbox", 3)
        site.orthanc.store_to("biomedclip", [site.orthanc.upload(files)])
        site.orthanc.kill()
        wait_until(lambda: any((site.spool / "outbox").iterdir()), 60, "the results to be in the outbox")
        site.node.kill9()
        site.orthanc.start()
        site.restart_node()
        assert len(wait_for_instances(site.orthanc, outbox_uid, "SR", 1, SR_WAIT_S)) == 1

        settle(2.0)  # nothing more may arrive: each study has exactly one SR
        for study_uid in (receiving_uid, processing_uid, outbox_uid):
            assert len(site.orthanc.of_modality(study_uid, "SR")) == 1
        assert not list((site.spool / "quarantine").iterdir())
    finally:
        site.close()


def test_a_study_of_two_patients_is_quarantined_at_once_with_its_reason(site, tmp_path):
    """A mis-filed study (one Study Instance UID, two patients) is never reported: quarantined, no retries."""
    study_uid = generate_uid()
    files = write_series(tmp_path / "a", 2, study_uid=study_uid, rows=16, columns=16, PatientID="PAT-A",
                         PatientName="Alpha^Ann", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    files += write_series(tmp_path / "b", 2, study_uid=study_uid, rows=16, columns=16, PatientID="PAT-B",
                          PatientName="Beta^Bo", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], SeriesNumber=2)
    before = metric_value(site.node.metrics(), "biomedclip_node_studies_quarantined_total")

    assert send_datasets(site.node_port, files, calling="ORTHANC") == [0, 0, 0, 0]

    wait_until(
        lambda: metric_value(site.node.metrics(), "biomedclip_node_studies_quarantined_total") > before,
        SR_WAIT_S, "the mixed-patient study to be quarantined",
    )
    jobs = [json.loads((job / "job.json").read_text()) for job in (site.spool / "quarantine").iterdir()]
    mixed = [job for job in jobs if "disagree on patient identity" in job["last_error"]]
    assert len(mixed) == 1 and mixed[0]["attempts"] == 1, "quarantined at the first attempt: a re-run cannot help"
    assert site.orthanc.of_modality(study_uid, "SR") == [], "no report may be filed for either patient"
    log = site.node.log()
    assert "PAT-A" not in log and "Alpha" not in log and study_uid not in log


def test_a_whole_study_sent_back_with_our_results_starts_no_run(site, tmp_path):
    """Orthanc routes the whole study again (our SR and SC included): acknowledged, nothing analysed again."""
    study_uid, files = make_study(tmp_path / "study", 3)
    orthanc_study = site.orthanc.upload(files)
    site.orthanc.store_to("biomedclip", [orthanc_study])
    wait_for_instances(site.orthanc, study_uid, "SR", 1, SR_WAIT_S)
    wait_for_instances(site.orthanc, study_uid, "OT", 1, SR_WAIT_S)
    metrics = site.node.metrics()
    own_before = metric_value(metrics, "biomedclip_node_instances_received_total", 'outcome="own_result"')
    processed_before = metric_value(metrics, "biomedclip_node_studies_processed_total", 'outcome="reported"')

    site.orthanc.store_to("biomedclip", [orthanc_study])  # CT slices, our SR and our SC
    wait_until(
        lambda: metric_value(site.node.metrics(), "biomedclip_node_instances_received_total", 'outcome="own_result"')
        >= own_before + 2,
        SR_WAIT_S, "the node to acknowledge its own results",
    )
    settle(3.0)  # several quiet periods: a run would have started by now
    assert metric_value(site.node.metrics(), "biomedclip_node_studies_processed_total", 'outcome="reported"') == processed_before
    assert len(site.orthanc.of_modality(study_uid, "SR")) == 1
