"""Canary test: every PHI attribute of the input holds a unique canary; none may come out anywhere.

One MAP run (`app.cli.map_main`, in-process) over a multi-study input folder:

- the five demo sample studies, each with its patient, study and free-text attributes replaced
  by canaries of its own;
- a CT study (pydicom's CT_small) whose every PHI attribute holds a canary: names (patient, other,
  birth, mother's birth, referring / performing / reading physicians, operators), IDs (patient,
  other IDs in a nested sequence, issuer, accession, study ID, requested procedure ID), dates,
  address, phone numbers, institution name and address, free text (descriptions, history, reason
  for the request in the Request Attributes Sequence, image and patient comments) that mentions
  the identifiers, a private element, and UIDs; its file is named by its SOP Instance UID inside
  a folder named after the patient, next to a non-DICOM file that the loader skips.

No canary may appear in the log (stderr, file-descriptor level), the audit log, the JSON
results, the SR text items, or anywhere (raw bytes and decoded values, nested sequences and
private elements included) in the de-identified export, which must also validate with dciodvfy.
The free text of the clinical-context line is real text with identifiers in it, so the SR's
narrative must keep the clinical words and lose the identifiers.
"""

from __future__ import annotations

import json
import re

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.cli import EXIT_OK, map_main
from app.sample_studies import build_sample_studies
from tests.dicom_validation import run_dciodvfy

UID_ROOT = "1.2.826.0.1.3680043.10.543"


def canaries(tag: str) -> dict[str, str]:
    """The canary values of one study; `tag` (letters) makes them unique to the study."""
    t = tag.upper()
    return {
        "family": f"Zqfam{tag}", "given": f"Zqgiv{tag}", "middle": f"Zqmid{tag}", "other_name": f"Zqoth{tag}",
        "birth_name": f"Zqbirth{tag}", "mother": f"Zqmoth{tag}", "referring": f"Zqref{tag}", "performing": f"Zqperf{tag}",
        "reader": f"Zqread{tag}", "operator": f"Zqoper{tag}", "pid": f"ZQPID{t}7731", "other_pid": f"ZQOPID{t}5521",
        "issuer": f"ZQISSUER{t}", "accession": f"ZQACC{t}9912", "study_id": f"ZQSID{t}", "request_id": f"ZQREQ{t}44",
        "street": f"Zqstreet{tag}", "city": f"Zqcity{tag}", "institution": f"Zqinst{tag}", "inst_street": f"Zqinstrd{tag}",
        "comment": f"ZQPATCOMMENT{t}", "private": f"ZQPRIVATE{t}", "email_user": f"zqmail{tag.lower()}",
    }


def apply_canaries(ds: Dataset, tag: str, number: int) -> dict[str, str]:
    """Put study `tag`'s canaries into `ds`; return every string that must never come out."""
    c = canaries(tag)
    birth = f"19{20 + number:02d}0417"
    phone = f"(312) 555-{1700 + number:04d}"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = f"{c['family']}^{c['given']}^{c['middle']}"
    ds.OtherPatientNames = f"{c['other_name']}^{c['given']}"
    ds.PatientBirthName = f"{c['birth_name']}^{c['given']}"
    ds.PatientMotherBirthName = f"{c['mother']}^Zqmum"
    ds.PatientID = c["pid"]
    ds.IssuerOfPatientID = c["issuer"]
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = c["other_pid"], c["issuer"]
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = birth
    ds.PatientAddress = f"{40 + number} {c['street']} Street, {c['city']}"
    ds.PatientTelephoneNumbers = phone
    ds.PatientComments = f"{c['comment']} prefers morning appointments"
    ds.AccessionNumber = c["accession"]
    ds.StudyID = c["study_id"]
    ds.ReferringPhysicianName = f"{c['referring']}^Zqdoc"
    ds.PerformingPhysicianName = f"{c['performing']}^Zqtech"
    ds.NameOfPhysiciansReadingStudy = f"{c['reader']}^Zqrad"
    ds.OperatorsName = f"{c['operator']}^Zqop"
    ds.InstitutionName = f"{c['institution']} Hospital"
    ds.InstitutionAddress = f"9 {c['inst_street']} Road, {c['city']}"
    ds.StudyDescription = f"Chest imaging for {c['given']} {c['family']}"
    ds.SeriesDescription = f"Axial series of {c['family'].upper()}, {c['given'].upper()}"
    ds.AdditionalPatientHistory = (
        f"Chronic cough. Seen by Dr {c['referring']} on 03/04/2021; MRN {c['pid']}; phone {phone}; "
        f"lives at {40 + number} {c['street']} Street; e-mail {c['email_user']}@example.org"
    )
    ds.ImageComments = f"Patient {c['family']} {c['given']}, DOB {birth[6:]}/{birth[4:6]}/{birth[:4]}, acc {c['accession']}"
    request = Dataset()
    request.ReasonForTheRequestedProcedure = f"Suspected pneumonia in {c['given']} {c['family']}"
    request.RequestedProcedureID = c["request_id"]
    request.RequestedProcedureDescription = f"CT chest, requested by Dr {c['referring']}"
    ds.RequestAttributesSequence = Sequence([request])
    block = ds.private_block(0x0011, "ZQ CANARY VENDOR", create=True)
    block.add_new(0x01, "LO", c["private"])
    block.add_new(0x02, "PN", ds.PatientName)
    forbidden = set(c.values()) | {
        birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}", f"{birth[6:]}/{birth[4:6]}/{birth[:4]}", phone, "555-" + phone[-4:],
        f"{c['email_user']}@example.org", c["family"].upper(), c["given"].upper(),
    }
    return forbidden


def new_uids(ds: Dataset, number: int, series_uids: dict[str, str]) -> set[str]:
    """Replace the instance UIDs with canary UIDs (consistent per series); return them."""
    study = f"{UID_ROOT}.{number}.1"
    series = series_uids.setdefault(f"{number}/{ds.SeriesInstanceUID}", f"{UID_ROOT}.{number}.2.{len(series_uids) + 1}")
    sop = f"{UID_ROOT}.{number}.3.{abs(hash(str(ds.SOPInstanceUID))) % 10**9}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    used = {study, series, sop}
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = f"{UID_ROOT}.{number}.4"
        used.add(ds.FrameOfReferenceUID)
    return used


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("canary")
    samples = root / "samples"
    build_sample_studies(samples)
    inp = root / "in"
    forbidden: set[str] = set()
    uids: set[str] = set()
    series_uids: dict[str, str] = {}
    for number, study_dir in enumerate(sorted(p for p in samples.iterdir() if p.is_dir()), start=1):
        tag = "abcdefgh"[number - 1] * 2
        for path in sorted(study_dir.rglob("*.dcm")):
            ds = pydicom.dcmread(path)
            forbidden |= apply_canaries(ds, tag, number)
            uids |= new_uids(ds, number, series_uids)
            target = inp / f"demo-{number}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
    # the fully loaded CT study: file named by its SOP Instance UID, folder named after the patient
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    forbidden |= apply_canaries(ct, "zz", 9)
    uids |= new_uids(ct, 9, series_uids)
    folder = inp / f"{canaries('zz')['family']}_{canaries('zz')['given']}"
    folder.mkdir(parents=True)
    ct.save_as(folder / f"{ct.SOPInstanceUID}.dcm", enforce_file_format=True)
    (folder / f"{ct.SOPInstanceUID}.txt").write_text("not DICOM")
    (inp / f"{canaries('zz')['pid']}.notes").write_text("not DICOM either")

    out, json_dir, deid, audit, work = (root / n for n in ("out", "json", "deid", "audit/trail.jsonl", "work"))
    return {
        "inp": inp, "out": out, "json": json_dir, "deid": deid, "audit": audit, "work": work,
        "forbidden": forbidden, "uids": uids, "model": tiny_model_dir,
    }


@pytest.fixture(scope="module")
def canary_result(canary_run, request):
    """Runs the MAP once (capturing file-descriptor-level stderr) and returns the log text."""
    r = canary_run
    capture = request.getfixturevalue("_fd_capture")
    code = map_main([
        "-i", str(r["inp"]), "-o", str(r["out"]), "-m", str(r["model"].parent), "-w", str(r["work"]),
        "--allow-untrained", "--results-json", str(r["json"]), "--audit-log", str(r["audit"]),
        "--deid-export", str(r["deid"]), "--deid-include-inputs", "--clinical-context", "-l", "DEBUG",
    ])
    log = capture()
    return code, log


@pytest.fixture(scope="module")
def _fd_capture():
    """Module-scoped capture of fd 2 (Python's and native libraries' stderr) into a file."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    original_stream = sys.stderr
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)

    def read() -> str:
        sys.stderr.flush()
        sink.seek(0)
        return sink.read().decode("utf-8", "replace")

    yield read
    import logging

    captured_stream = sys.stderr
    captured_stream.flush()
    os.dup2(saved, 2)
    os.close(saved)
    sys.stderr = original_stream
    for handler in logging.getLogger().handlers:  # the run's log handler wrote to the captured stream
        if isinstance(handler, logging.StreamHandler) and handler.stream is captured_stream:
            handler.setStream(original_stream)


def assert_no_canary(text: str, forbidden: set[str], where: str) -> None:
    folded = text.casefold()
    leaked = sorted(value for value in forbidden if value and value.casefold() in folded)
    assert not leaked, f"{where} contains canaries: {leaked}"


def text_items(dataset: Dataset) -> list[str]:
    texts = []
    for item in dataset.get("ContentSequence", []):
        if "TextValue" in item:
            texts.append(str(item.TextValue))
        texts.extend(text_items(item))
    return texts


def decoded_values(dataset: Dataset) -> list[str]:
    values = []
    for element in dataset.iterall():
        if element.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
            values.append(str(element.value))
    values.extend(str(e.value) for e in dataset.file_meta)
    return values


def test_the_run_reports_every_study(canary_result, canary_run):
    code, log = canary_result
    assert code == EXIT_OK, log[-3000:]
    reports = sorted(canary_run["out"].glob("SR-*.dcm"))
    assert len(reports) == 6
    assert "Skipped <input>/p-" in log, "the skipped file in the patient-named folder must be logged by reference"


def test_no_canary_in_the_log(canary_result, canary_run):
    _, log = canary_result
    assert "<input>/" in log and "study st-" in log  # the log does say what happened
    assert_no_canary(log, canary_run["forbidden"] | canary_run["uids"], "the log")
    assert str(canary_run["inp"]) not in log


def test_no_canary_in_the_audit_log(canary_result, canary_run):
    lines = canary_run["audit"].read_text().splitlines()
    assert len(lines) == 7, "one line per study, reported or not"
    records = [json.loads(line) for line in lines]
    assert sorted(r["outcome"] for r in records) == ["nothing_selected"] + ["reported"] * 6  # the derived MR sample
    assert all(r["study"].startswith("st-") and r["model"]["sha256"] and r["backend"] for r in records)
    assert sum(r["redactions"].get("NAME", 0) for r in records) >= 6, "the scrubber's redactions are counted"
    exported = sorted(r["deidentified"] for r in records if r["outcome"] == "reported")
    # Every reported study exports its SR; a burn photograph (no Burned In Annotation declared) and its
    # capture are left out of the export, so that study exports its SR alone.
    assert exported[0] >= 1 and sum(n >= 2 for n in exported) >= 5, exported
    assert_no_canary(canary_run["audit"].read_text(), canary_run["forbidden"] | canary_run["uids"], "the audit log")


def test_no_canary_in_the_json_results(canary_result, canary_run):
    texts = [p.read_text() for p in canary_run["json"].glob("*.json")]
    assert len(texts) == 6
    assert_no_canary("\n".join(texts), canary_run["forbidden"] | canary_run["uids"], "the JSON results")


def test_sr_text_items_carry_scrubbed_clinical_context_and_no_canary(canary_result, canary_run):
    for report in canary_run["out"].glob("SR-*.dcm"):
        texts = text_items(pydicom.dcmread(report))
        context = [t for t in texts if t.startswith("Clinical context")]
        assert context, f"{report.name}: no clinical-context line"
        assert "[NAME]" in context[0] and "Chest imaging for" in context[0]
        assert_no_canary("\n".join(texts), canary_run["forbidden"] | canary_run["uids"], f"{report.name} text items")


def test_deidentified_export_is_valid_and_canary_free(canary_result, canary_run):
    files = sorted(canary_run["deid"].rglob("*.dcm"))
    kinds = {f.name.split("-", 1)[0] for f in files}
    assert {"SR", "SC", "IM"} <= kinds, kinds
    assert len({f.parent for f in files}) == 6, "one folder per study"
    forbidden = canary_run["forbidden"] | canary_run["uids"]
    for path in files:
        raw = path.read_bytes()
        leaked = [v for v in forbidden if v.encode("utf-8") in raw or v.upper().encode("utf-8") in raw]
        assert not leaked, f"{path.name}: raw bytes contain {leaked}"
        ds = pydicom.dcmread(path)
        assert_no_canary("\n".join(decoded_values(ds)), forbidden, path.name)
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(element.tag.is_private for element in ds.iterall())
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert codes[0] == "113100" and "113107" in codes
        report = run_dciodvfy(path)
        assert not report.errors, f"{path.name}: {report.errors}"


def test_export_keeps_references_consistent_within_each_study(canary_result, canary_run):
    for folder in {f.parent for f in canary_run["deid"].rglob("*.dcm")}:
        exported = {pydicom.dcmread(p).SOPInstanceUID for p in folder.glob("IM-*.dcm")}
        report = pydicom.dcmread(next(folder.glob("SR-*.dcm")))
        assert report.StudyInstanceUID == folder.name
        referenced = {
            item.ReferencedSOPInstanceUID
            for study in report.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert referenced == exported, "the SR's evidence must point at the exported inputs' new UIDs"
        if not exported:  # the burn photograph declares no Burned In Annotation: withheld, and the SR says so
            assert any(re.match(r"De-identified copy: \d+ instance\(s\)", t) for t in text_items(report)), text_items(report)
        assert 113104 in {int(i.CodeValue) for i in report.DeidentificationMethodCodeSequence}
        assert all(str(pydicom.dcmread(p).StudyInstanceUID) == folder.name for p in folder.glob("*.dcm"))


def test_outputs_keep_the_identity_the_report_files_under(canary_result, canary_run):
    report = pydicom.dcmread(next(canary_run["out"].glob("SR-*.dcm")))
    assert str(report.PatientName).startswith("Zqfam"), "the SR must still file to the right patient"
    assert list(canary_run["out"].glob("*.json")) == [], "JSON results stay out of the DICOM output folder"
