"""The MAP on studies that look like what PACS really send (`tests.corpus_realworld`), in one run.

One `python -m app` subprocess over the whole corpus (stderr captured at the file-descriptor
level); then, per study: the outcome, what was analysed, the identity in the outputs, and the
validity of every output (dciodvfy: zero errors, apart from identity values copied verbatim).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from operators.sr.sr_readback import read_findings
from tests.corpus_realworld import NOTHING, REFUSED, REPORTED, build_corpus
from tests.dicom_validation import run_dciodvfy

REPO = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("corpus")
    inp, out, json_dir, audit = root / "in", root / "out", root / "json", root / "audit.jsonl"
    studies = build_corpus(inp)
    before = digest(inp)
    env = {**os.environ, "BIOMEDCLIP_MAP_ALLOW_UNTRAINED": "1", "BIOMEDCLIP_MAP_UID_SALT": "corpus-test-salt"}
    completed = subprocess.run(
        [sys.executable, "-m", "app", "-i", str(inp), "-o", str(out), "-m", str(tiny_model_dir.parent),
         "-w", str(root / "work"), "--backend", "pytorch", "--results-json", str(json_dir), "--audit-log", str(audit)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    outputs: dict[str, list[Path]] = {}
    by_uid = {s.study_uid: name for name, s in studies.items()}
    for path in sorted(out.glob("*.dcm")):
        outputs.setdefault(by_uid[pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID], []).append(path)
    return {"studies": studies, "code": completed.returncode, "log": completed.stderr, "outputs": outputs,
            "inp": inp, "before": before, "audit": audit}


def reports_of(run, name: str) -> list[Path]:
    return [p for p in run["outputs"].get(name, []) if p.name.startswith("SR-")]


def test_the_run_ends_with_exit_code_1_because_of_the_refused_studies_only(corpus_run):
    assert corpus_run["code"] == 1, corpus_run["log"][-3000:]
    assert "Traceback" not in corpus_run["log"], "no study may end in an internal error"
    assert digest(corpus_run["inp"]) == corpus_run["before"], "input files are never changed"
    outcomes = {json.loads(line)["outcome"] for line in corpus_run["audit"].read_text().splitlines()}
    assert outcomes == {REPORTED, NOTHING, REFUSED}


@pytest.mark.parametrize("name", ["mixed-patients", "same-id-other-name"])
def test_a_study_of_two_patients_is_not_reported(corpus_run, name):
    study = corpus_run["studies"][name]
    assert study.outcome == REFUSED
    assert name not in corpus_run["outputs"], "not one output may be filed for a study of two patients"
    refusals = [line for line in corpus_run["log"].splitlines() if "disagree on patient identity" in line]
    assert len(refusals) == 2
    for secret in study.secret_values:
        assert secret not in corpus_run["log"]


def test_every_study_ends_as_expected(corpus_run):
    for name, study in corpus_run["studies"].items():
        reports = reports_of(corpus_run, name)
        if study.outcome == REPORTED:
            assert len(reports) == 1, f"{name}: one SR expected"
        else:
            assert name not in corpus_run["outputs"], f"{name}: no output expected"


def test_only_original_acquisitions_are_analysed(corpus_run):
    for name, study in corpus_run["studies"].items():
        if study.outcome != REPORTED:
            continue
        (report,) = reports_of(corpus_run, name)
        evaluated_series = {
            series.SeriesInstanceUID
            for item in pydicom.dcmread(report).CurrentRequestedProcedureEvidenceSequence
            for series in item.ReferencedSeriesSequence
        }
        assert evaluated_series == study.analysed_series, name
    findings = read_findings(reports_of(corpus_run, "dose-report-beside-ct")[0])
    assert findings.specialist_groups == (), "a dose-report screen save is never taken for a burn photograph"
    log = corpus_run["log"]
    assert "left out of analysis: a derived image (Image Type DERIVED)" in log
    assert "Conversion Type WSD" in log


def test_invalid_header_values_are_normalised_or_left_empty_and_outputs_are_valid(corpus_run):
    for name in ("bad-dates-and-words", "acr-nema-dates"):
        study = corpus_run["studies"][name]
        for path in corpus_run["outputs"][name]:
            ds = pydicom.dcmread(path)
            for keyword, expected in study.notes.items():
                assert str(ds.get(keyword, "")) == expected, f"{name} {path.name} {keyword}"
            if "PatientAge" not in study.notes:
                assert "PatientAge" not in ds, "an age without a unit is ambiguous: left out"
    log = corpus_run["log"]
    assert "StudyDate normalised" in log and "PatientBirthDate left empty" in log and "PatientAge left out" in log
    for secret in corpus_run["studies"]["acr-nema-dates"].secret_values:
        assert secret not in log, "a log line names the attribute, never its value"


def test_identity_values_are_copied_exactly_even_when_over_long(corpus_run):
    study = corpus_run["studies"]["over-long-values"]
    for path in corpus_run["outputs"]["over-long-values"]:
        ds = pydicom.dcmread(path)
        assert ds.PatientID == study.notes["PatientID"] and ds.AccessionNumber == study.notes["AccessionNumber"]
        assert "StudyDescription" not in ds, "free text is not copied"
        assert ds.ReferringPhysicianName == "", "an over-long referring physician (Type 2) is left empty"


@pytest.mark.parametrize("name", ["utf8-undeclared", "latin1-declared", "japanese-iso2022"])
def test_names_decode_to_what_the_source_meant(corpus_run, name):
    expected = corpus_run["studies"][name].notes["PatientName"]
    for path in corpus_run["outputs"][name]:
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == expected, f"{path.name}: {ds.PatientName!r}"


def test_every_output_of_every_study_validates(corpus_run):
    for name, paths in corpus_run["outputs"].items():
        allowed = corpus_run["studies"][name].verbatim_errors
        for path in paths:
            errors = run_dciodvfy(path).errors
            verbatim = [e for e in errors if any(a in e for a in allowed)]
            others = [e for e in errors if e not in verbatim]
            if verbatim:  # dciodvfy adds one summary line for the value errors it listed
                others = [e for e in others if e != "Error - Dicom dataset contains invalid data values for Value Representations"]
            assert others == [], f"{name} {path.name}: {errors}"


def test_nothing_analysable_is_stated_not_failed(corpus_run):
    log = corpus_run["log"]
    assert "smaller than 8 pixels per side" in log
    assert "blank image (all pixels have the same value)" in log
    assert "nothing to analyse" in log


def test_a_multi_frame_secondary_capture_is_referenced_as_a_whole(corpus_run):
    capture = next(p for p in corpus_run["outputs"]["two-frame-sc"] if p.name.startswith("SC-"))
    (reference,) = pydicom.dcmread(capture).SourceImageSequence
    assert "ReferencedFrameNumber" not in reference, "Secondary Capture Image Storage is a single-frame IOD"


def test_a_deidentified_source_gives_outputs_that_say_so(corpus_run):
    for path in corpus_run["outputs"]["deidentified-without-method"]:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod


def test_an_irregular_volume_is_logged_once_and_stated_in_the_report(corpus_run):
    lines = [line for line in corpus_run["log"].splitlines() if "irregular volume" in line]
    assert len(lines) == 1
    assert "duplicate positions" in lines[0] and "gap(s)" in lines[0] and "different thickness" in lines[0]
    narrative = read_findings(reports_of(corpus_run, "irregular-volume")[0]).narrative
    assert any("irregular volume" in line and "gap(s)" in line for line in narrative)


def test_a_study_of_many_series_gets_a_capture_of_sensible_size(corpus_run):
    capture = next(p for p in corpus_run["outputs"]["many-series"] if p.name.startswith("SC-"))
    ds = pydicom.dcmread(capture, stop_before_pixels=True)
    assert ds.Rows <= 1400, ds.Rows
    assert len(read_findings(reports_of(corpus_run, "many-series")[0]).series) == 20, "the SR holds every series"


# --------------------------------------------------------------------------- a study sent again


def test_a_study_sent_again_with_our_results_is_not_reanalysed_and_supersedes_them(tmp_path, tiny_model_dir):
    """MDE and PACS routing send whole studies: the second run must not analyse the first run's SR and SC."""
    from app.cli import map_main
    from tests.corpus_realworld import _ct_series

    inp = tmp_path / "in"
    study = pydicom.uid.generate_uid()
    series = _ct_series(inp / "study", study, BodyPartExamined="HEAD")
    run = lambda out: map_main(  # noqa: E731
        ["-i", str(inp), "-o", str(out), "-m", str(tiny_model_dir.parent), "-w", str(tmp_path / "work"),
         "--allow-untrained", "--backend", "pytorch"]
    )
    assert run(tmp_path / "first") == 0
    first = sorted((tmp_path / "first").glob("*.dcm"))
    assert [p.name[:2] for p in first] == ["SC", "SR"]
    for path in first:  # the PACS now holds them in the study and sends everything again
        (inp / "study" / f"returned-{path.name}").write_bytes(path.read_bytes())

    assert run(tmp_path / "second") == 0
    second = sorted((tmp_path / "second").glob("*.dcm"))
    report = next(p for p in second if p.name.startswith("SR-"))
    written = pydicom.dcmread(report)
    evaluated = {s.SeriesInstanceUID for item in written.CurrentRequestedProcedureEvidenceSequence for s in item.ReferencedSeriesSequence}
    assert evaluated == {series}, "our earlier capture is not analysed"
    findings = read_findings(report)
    assert findings.specialist_groups == () and len(findings.series) == 1
    earlier = pydicom.dcmread(next(p for p in first if p.name.startswith("SR-")), stop_before_pixels=True)
    (predecessors,) = written.PredecessorDocumentsSequence
    assert predecessors.StudyInstanceUID == study
    (named,) = predecessors.ReferencedSeriesSequence
    assert named.SeriesInstanceUID == earlier.SeriesInstanceUID
    assert named.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == earlier.SOPInstanceUID
    assert any("supersedes 1 earlier report" in line for line in findings.narrative)
    for path in second:
        assert run_dciodvfy(path).errors == (), path.name


# --------------------------------------------------------------------------- pydicom's test files


IDENTITY_ATTRIBUTE_NAMES = ("Patient ID", "Patient's Name", "Accession Number", "Study ID", "Issuer of Patient ID")


def test_every_file_of_pydicoms_test_data_in_one_run(tmp_path, tiny_model_dir):
    """Every file pydicom ships, grouped into study folders as a PACS export would: no traceback, inputs
    unchanged, every output valid."""
    import pydicom.data

    source = Path(pydicom.data.__file__).parent / "test_files"
    inp = tmp_path / "in"
    studies: dict[str, str] = {}
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("StudyInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 - an unreadable file goes into the unsorted folder, as a PACS export would hold it
            uid = ""
        folder = studies.setdefault(uid, f"study-{len(studies):02d}") if uid else "unsorted"
        target = inp / folder / "__".join(path.relative_to(source).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        count += 1
    assert count > 80
    before = digest(inp)
    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "BIOMEDCLIP_MAP_ALLOW_UNTRAINED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "app", "-i", str(inp), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir.parent),
         "-w", str(tmp_path / "work"), "--backend", "pytorch", "--audit-log", str(audit)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert "Traceback" not in completed.stderr, completed.stderr[-4000:]
    outcomes = [json.loads(line)["outcome"] for line in audit.read_text().splitlines()]
    assert "failed" not in outcomes, completed.stderr[-4000:]
    assert completed.returncode == (1 if "refused" in outcomes else 0)
    assert outcomes.count(REPORTED) >= 5, "pydicom's CT, MR and colour images give several reports"
    assert digest(inp) == before
    outputs = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(outputs) >= 2 * outcomes.count(REPORTED)
    for path in outputs:
        errors = run_dciodvfy(path).errors
        verbatim = [e for e in errors if any(f"<{name}>" in e or name in e for name in IDENTITY_ATTRIBUTE_NAMES)]
        others = [e for e in errors if e not in verbatim]
        if verbatim:
            others = [e for e in others if e != "Error - Dicom dataset contains invalid data values for Value Representations"]
        assert others == [], f"{path.name}: {errors}"
