"""The node's on-disk state machine without the network: every state a crash can leave behind is
recovered to the next one, with nothing lost and nothing done twice; plus priority rules and the
superseding SR's Predecessor Documents Sequence."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from app.node.durable_files import write_file_durably
from app.node.grouping import StudyGrouper, recover_staging
from app.node.metrics import NodeMetrics
from app.node.outbox import Outbox
from app.node.priority import UrgencyRules, urgency_reason
from app.node.result_identity import ResultIdentity
from app.node.spool import (
    INSTANCES,
    Spool,
    SpoolError,
    SpoolFullError,
    SpoolLayout,
    SpoolQuota,
)
from app.node.study_archive import StudyArchive
from app.node.superseding import mark_as_superseding
from app.node.work_queue import INPUT, URGENT, Job, WorkQueue, read_job, write_job
from operators.messages import DocumentReference
from operators.sr_writer_operator import document_of
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_dicom import image_dataset

RULES = UrgencyRules.from_settings(["STAT", "HIGH"], ["STAT", "urgent", "emergency"])


@pytest.fixture
def layout(tmp_path) -> SpoolLayout:
    spool = SpoolLayout(tmp_path / "spool")
    spool.create()
    return spool


def make_spool(layout: SpoolLayout, max_bytes: int | None = None) -> Spool:
    return Spool(layout, SpoolQuota(layout.root, max_bytes=max_bytes, min_free_bytes=0))


def stored_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


# --------------------------------------------------------------------------- receiving


def test_an_instance_is_written_whole_under_its_final_name_only(layout):
    spool = make_spool(layout)
    stored = spool.store_instance("st-aaaaaaaaaaaa", "in-000000000001.dcm", [b"head", memoryview(b"body")], urgent_reason="C-STORE Priority HIGH")
    assert stored.first_of_study and stored.path.read_bytes() == b"headbody"
    assert stored_names(stored.path.parent) == {"in-000000000001.dcm"}
    assert spool.urgent_reason("st-aaaaaaaaaaaa") == "C-STORE Priority HIGH"
    assert not list(layout.root.rglob("*.part"))
    assert not spool.store_instance("st-aaaaaaaaaaaa", "in-000000000002.dcm", [b"x"], urgent_reason=None).first_of_study


def test_a_full_disk_while_writing_is_a_spool_full_error_and_leaves_nothing(layout, monkeypatch):
    spool = make_spool(layout)

    def full_disk(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(SpoolFullError, match="is full"):
        spool.store_instance("st-aaaaaaaaaaaa", "in-000000000001.dcm", [b"data"], urgent_reason=None)
    assert not [p for p in layout.incoming.rglob("*") if p.is_file()]


def test_the_quota_refuses_what_would_pass_max_bytes_and_names_the_setting(layout):
    spool = make_spool(layout, max_bytes=10)
    spool.store_instance("st-aaaaaaaaaaaa", "in-1.dcm", [b"12345678"], urgent_reason=None)
    with pytest.raises(SpoolFullError, match="spool.max_bytes"):
        spool.store_instance("st-aaaaaaaaaaaa", "in-2.dcm", [b"12345678"], urgent_reason=None)
    assert spool.quota.rescan() == 8


def test_an_unwritable_spool_is_a_spool_error_naming_the_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    with pytest.raises(SpoolError, match="spool.path"):
        SpoolLayout(root / "spool").create()


def test_write_file_durably_replaces_atomically(tmp_path):
    target = tmp_path / "a.json"
    write_file_durably(target, [b"one"])
    write_file_durably(target, [b"two"])
    assert target.read_bytes() == b"two" and stored_names(tmp_path) == {"a.json"}


# --------------------------------------------------------------------------- recovery


def test_start_up_drops_unacknowledged_parts_and_returns_incoming_studies(layout):
    spool = make_spool(layout)
    spool.store_instance("st-aaaaaaaaaaaa", "in-1.dcm", [b"whole"], urgent_reason=None)
    (layout.incoming / "st-aaaaaaaaaaaa" / ".in-2.dcm.1234.part").write_bytes(b"half")
    (layout.incoming / "st-bbbbbbbbbbbb").mkdir()  # a folder created just before a crash
    assert spool.recover_incoming() == ["st-aaaaaaaaaaaa"]
    assert not list(layout.root.rglob("*.part")) and not (layout.incoming / "st-bbbbbbbbbbbb").exists()


def test_a_job_caught_between_states_goes_back_and_uncommitted_results_are_dropped(layout):
    spool = make_spool(layout)
    spool.store_instance("st-aaaaaaaaaaaa", "in-1.dcm", [b"new"], urgent_reason=None)
    staging = layout.tmp / "20260101T000000000000-st-aaaaaaaaaaaa"
    (staging / INPUT).mkdir(parents=True)
    (staging / INPUT / "in-0.dcm").write_bytes(b"older")
    uncommitted = layout.tmp / "20260101T000000000001-st-cccccccccccc-out"  # results being committed to the outbox
    uncommitted.mkdir()
    (uncommitted / "SR-st-cccccccccccc.dcm").write_bytes(b"half a commit")
    assert recover_staging(spool) == 1
    assert stored_names(layout.incoming / "st-aaaaaaaaaaaa" / INSTANCES) == {"in-0.dcm", "in-1.dcm"}
    assert not list(layout.tmp.iterdir())


def _job_in(layout: SpoolLayout, state: Path, ref: str = "st-aaaaaaaaaaaa", **fields) -> Job:
    job = Job(job_id=f"20260101T000000{len(list(state.iterdir())):06d}-{ref}", study_ref=ref, **fields)
    (state / job.job_id / INPUT).mkdir(parents=True)
    (state / job.job_id / INPUT / "in-1.dcm").write_bytes(b"instance")
    write_job(state / job.job_id, job)
    return job


def test_interrupted_processing_runs_again_finishes_or_is_quarantined(layout):
    rerun = _job_in(layout, layout.processing, "st-aaaaaaaaaaaa", attempts=1)
    committed = _job_in(layout, layout.processing, "st-bbbbbbbbbbbb", attempts=1)
    exhausted = _job_in(layout, layout.processing, "st-cccccccccccc", attempts=3)
    waiting = _job_in(layout, layout.queue, "st-dddddddddddd")
    (layout.outbox / committed.job_id).mkdir()
    queue = WorkQueue(layout, max_attempts=3, retry_delay_s=30)
    actions = {job.study_ref: action for job, action in queue.recover(lambda job_id: (layout.outbox / job_id).is_dir())}
    assert actions == {"st-aaaaaaaaaaaa": "requeued", "st-bbbbbbbbbbbb": "finish", "st-cccccccccccc": "quarantined"}
    assert stored_names(layout.queue) == {rerun.job_id, waiting.job_id}
    assert stored_names(layout.processing) == {committed.job_id}
    quarantined = read_job(layout.quarantine / exhausted.job_id)
    assert quarantined.quarantined and "interrupted" in quarantined.last_error
    assert (layout.quarantine / exhausted.job_id / INPUT / "in-1.dcm").read_bytes() == b"instance"
    first = queue.claim(timeout=0)
    assert first.job_id == rerun.job_id, "an interrupted job keeps its place in the queue"
    assert first.attempts == 2 and read_job(layout.processing / rerun.job_id).attempts == 2, "the attempt is counted before the run"


def test_urgent_jobs_are_claimed_first_and_failures_retry_then_quarantine(layout):
    queue = WorkQueue(layout, max_attempts=2, retry_delay_s=0)
    routine = _job_in(layout, layout.queue, "st-aaaaaaaaaaaa")
    time.sleep(0.01)
    urgent = _job_in(layout, layout.queue, "st-bbbbbbbbbbbb", priority=URGENT)
    queue.recover(lambda _job_id: False)
    assert queue.claim(timeout=0).job_id == urgent.job_id
    job = queue.claim(timeout=0)
    assert job.job_id == routine.job_id
    assert queue.failed(job, "model error") is False and read_job(layout.queue / job.job_id).last_error == "model error"
    job = queue.claim(timeout=0)
    assert job.attempts == 2 and queue.failed(job, "model error again") is True
    assert read_job(layout.quarantine / job.job_id).last_error == "model error again"
    assert queue.claim(timeout=0) is None


def test_a_quarantined_job_moved_back_gets_fresh_attempts(layout):
    job = _job_in(layout, layout.queue, attempts=3, quarantined=True)
    queue = WorkQueue(layout, max_attempts=3, retry_delay_s=0)
    queue.recover(lambda _job_id: False)
    claimed = queue.claim(timeout=0)
    assert claimed.job_id == job.job_id and claimed.attempts == 1 and not claimed.quarantined


def test_results_enter_the_outbox_whole_and_refusals_restart_after_a_restart(layout, tmp_path):
    produced = tmp_path / "output"
    produced.mkdir()
    (produced / "SR-st-aaaaaaaaaaaa.dcm").write_bytes(b"sr")
    (produced / "SC-st-aaaaaaaaaaaa-1.dcm").write_bytes(b"sc")
    job = Job(job_id="20260101T000000000000-st-aaaaaaaaaaaa", study_ref="st-aaaaaaaaaaaa")
    outbox = Outbox(layout, ["pacs", "web"])
    report = ResultIdentity("SR-st-aaaaaaaaaaaa.dcm", DocumentReference("1.2.840.10008.5.1.4.1.1.88.34", "1.2.3", "1.2.4", "1.2.5"))
    entry = outbox.commit(job, sorted(produced.iterdir()), [report])
    assert outbox.committed(job.job_id) and not list(produced.iterdir()) and not list(layout.tmp.iterdir())
    record = entry.record("pacs")
    record.sent = ["SC-st-aaaaaaaaaaaa-1.dcm"]
    record.gave_up, record.rejections = "refused SR-st-aaaaaaaaaaaa.dcm", 5
    outbox.save_record(entry, "pacs")
    assert outbox.finish_if_done(entry) is None, "the web destination has not had them yet"

    restarted = Outbox(layout, ["pacs", "web"])
    assert restarted.recover() == 1
    again = restarted.waiting_for("pacs")[0]
    assert again.unsent("pacs") == ["SR-st-aaaaaaaaaaaa.dcm"] and again.record("pacs").gave_up is None
    assert again.unsent("web") == ["SC-st-aaaaaaaaaaaa-1.dcm", "SR-st-aaaaaaaaaaaa.dcm"]
    for destination in ("pacs", "web"):
        again.record(destination).sent = list(again.files)
        restarted.save_record(again, destination)
    assert restarted.finish_if_done(again) == "delivered"
    assert (layout.delivered / job.job_id / "SR-st-aaaaaaaaaaaa.dcm").read_bytes() == b"sr"
    assert restarted.outputs_of(job.job_id) == [report], "the identities survive the restart, typed"


# --------------------------------------------------------------------------- grouping


def _write_instance(spool: Spool, ref: str, ds) -> str:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    name = f"in-{ds.SOPInstanceUID[-12:]}.dcm"
    spool.store_instance(ref, name, [buffer.getvalue()], urgent_reason=None)
    return name


def test_quiet_period_closes_a_study_and_late_instances_follow_the_rules(layout):
    spool = make_spool(layout)
    queue = WorkQueue(layout, max_attempts=3, retry_delay_s=0)
    archive = StudyArchive(layout.studies)
    grouper = StudyGrouper(spool, queue, archive, NodeMetrics(), quiet_period_s=0.05, retention_s=3600)
    ref, study_uid = "st-aaaaaaaaaaaa", generate_uid()
    first = [_write_instance(spool, ref, image_dataset(study_uid=study_uid)) for _ in range(2)]
    grouper.touch(ref)
    assert grouper.tick() == 0, "not before the quiet period"
    time.sleep(0.06)
    assert grouper.tick() == 1
    job = queue.claim(timeout=0)
    assert job.instances == 2 and not job.supersedes

    # late instances while the study is processed wait in incoming/
    late = _write_instance(spool, ref, image_dataset(study_uid=study_uid))
    grouper.touch(ref)
    time.sleep(0.06)
    assert grouper.tick() == 0 and (layout.incoming / ref / INSTANCES / late).is_file()

    # the run finishes: its instances are kept; the late instance starts a run of the whole study
    archive.absorb(ref, layout.processing / job.job_id / INPUT)
    archive.record_run(ref, job.job_id, "reported", [])
    queue.done(job)
    assert grouper.tick() == 1
    rerun = queue.claim(timeout=0)
    assert rerun.supersedes and rerun.instances == 3 and rerun.new_instances == 1
    assert stored_names(layout.processing / rerun.job_id / INPUT) == {*first, late}

    # the same instances again, or a non-image object, start no run
    archive.absorb(ref, layout.processing / rerun.job_id / INPUT)
    queue.done(rerun)
    _write_instance(spool, ref, pydicom.dcmread(layout.studies / ref / INSTANCES / late))
    report = image_dataset(study_uid=study_uid)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    _write_instance(spool, ref, report)
    grouper.touch(ref)
    time.sleep(0.06)
    assert grouper.tick() == 1 and queue.depth() == 0
    assert len(archive.instance_names(ref)) == 4


# --------------------------------------------------------------------------- priority


@pytest.mark.parametrize(
    ("attributes", "dimse", "expected"),
    [
        ({}, 0x0001, "C-STORE Priority HIGH"),
        ({"RequestedProcedurePriority": "STAT"}, 2, "RequestedProcedurePriority STAT"),
        ({"ReportingPriority": "high"}, 2, "ReportingPriority HIGH"),
        ({"AdditionalPatientHistory": "Fall, urgent CT requested"}, 2, "keyword 'urgent' in AdditionalPatientHistory"),
        ({"ReasonForTheRequestedProcedure": "EMERGENCY trauma"}, 2, "keyword 'emergency' in ReasonForTheRequestedProcedure"),
        ({"AdditionalPatientHistory": "status post surgery; urgently needed? no"}, 2, None),
        ({"RequestedProcedurePriority": "ROUTINE"}, 0, None),
    ],
)
def test_urgency_comes_from_priority_attributes_or_keywords(attributes, dimse, expected):
    assert urgency_reason(image_dataset(**attributes), dimse, RULES) == expected


def test_urgency_inside_the_request_attributes_sequence():
    item = pydicom.Dataset()
    item.RequestedProcedurePriority = "STAT"
    ds = image_dataset(RequestAttributesSequence=[item])
    assert urgency_reason(ds, 2, RULES) == "RequestAttributesSequence > RequestedProcedurePriority STAT"


# --------------------------------------------------------------------------- superseding


def test_superseding_sr_names_its_predecessor_and_stays_valid(tmp_path, tiny_model_dir):
    from app.cli import map_main
    from app.sample_studies import build_sample_studies

    chest = next(s for s in build_sample_studies(tmp_path / "samples") if s.name == "chest-radiograph")
    reports = []
    for run in ("first", "second"):
        out = tmp_path / run
        argv = ["-i", str(chest.path), "-o", str(out), "-m", str(tiny_model_dir.parent), "-w", str(tmp_path / "work"), "--allow-untrained"]
        assert map_main(argv) == 0
        reports.append(next(out.glob("SR-*.dcm")))
    previous = [document_of(pydicom.dcmread(reports[0], stop_before_pixels=True))]
    assert mark_as_superseding(reports[1], previous) == 1
    ds = pydicom.dcmread(reports[1])
    reference = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == previous[0].sop_instance_uid
    assert not run_dciodvfy(reports[1]).errors
    other_study = dataclasses.replace(previous[0], study_instance_uid="1.2.3")
    assert mark_as_superseding(reports[1], [other_study]) == 0, "only SRs of the same study"


def test_own_results_are_recognised_after_a_restart(layout):
    archive = StudyArchive(layout.studies)
    report = DocumentReference("1.2.840.10008.5.1.4.1.1.88.34", "1.2.3.4", "1.2.3.5", "1.2.3.6")
    archive.record_run("st-aaaaaaaaaaaa", "job-1", "reported", [ResultIdentity("SR-x.dcm", report)])
    reloaded = StudyArchive(layout.studies)
    reloaded.load()
    assert reloaded.is_own_output("1.2.3.4") and not reloaded.is_own_output("1.2.3.5")
    assert json.loads((layout.studies / "st-aaaaaaaaaaaa" / "reports.json").read_text())["runs"][0]["job_id"] == "job-1"


def test_results_acknowledged_just_before_a_stop_are_finished_at_start_up(layout, tmp_path):
    produced = tmp_path / "output"
    produced.mkdir()
    (produced / "SR-st-aaaaaaaaaaaa.dcm").write_bytes(b"sr")
    job = Job(job_id="20260101T000000000000-st-aaaaaaaaaaaa", study_ref="st-aaaaaaaaaaaa")
    outbox = Outbox(layout, ["pacs"])
    entry = outbox.commit(job, [produced / "SR-st-aaaaaaaaaaaa.dcm"], [])
    entry.record("pacs").sent = ["SR-st-aaaaaaaaaaaa.dcm"]
    outbox.save_record(entry, "pacs")  # the node stops here, before moving the entry on
    assert Outbox(layout, ["pacs"]).recover() == 0
    assert (layout.delivered / job.job_id).is_dir() and not list(layout.outbox.iterdir())


def test_maintenance_removes_processed_studies_and_delivered_results_past_retention(layout):
    spool = make_spool(layout)
    queue = WorkQueue(layout, max_attempts=3, retry_delay_s=0)
    archive = StudyArchive(layout.studies)
    outbox = Outbox(layout, ["pacs"])
    old, fresh = "st-aaaaaaaaaaaa", "st-bbbbbbbbbbbb"
    for ref in (old, fresh):
        archive.record_run(ref, f"job-{ref}", "reported", [])
        (layout.delivered / f"job-{ref}").mkdir()
    past = time.time() - 7200
    os.utime(layout.studies / old / "reports.json", (past, past))
    os.utime(layout.delivered / f"job-{old}", (past, past))
    grouper = StudyGrouper(spool, queue, archive, NodeMetrics(), quiet_period_s=1, retention_s=3600, on_maintenance=outbox.prune)
    grouper.maintenance()
    assert stored_names(layout.studies) == {fresh}
    assert stored_names(layout.delivered) == {f"job-{fresh}"}
