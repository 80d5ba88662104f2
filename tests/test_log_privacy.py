"""PHI-free logging: paths below the input folder and the spool are logged as salted references only."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from app.log_privacy import LogRedactor, PHISafeFormatter, locate, path_ref
from operators.messages import SeriesHeader, StudyHeader

REPO = Path(__file__).resolve().parent.parent
SALT = "salt-for-tests-0123456789"
PATIENT_FOLDER = "Kowalczyk-Brennan Theodora 1955-02-14"
LEAKS = ("Kowalczyk", "Brennan", "Theodora", "1955", "02-14", "19550214", "IM0001", "scans of")


def redactor_for(root: Path) -> LogRedactor:
    redactor = LogRedactor()
    redactor.start_run(root, SALT)
    return redactor


def refs_in(text: str) -> list[str]:
    return re.findall(r"p-[0-9a-f]{12}", text)


def test_a_path_with_spaces_becomes_one_reference_before_any_study_is_known(tmp_path):
    root = tmp_path / "in"
    target = root / PATIENT_FOLDER / "IM0001.dcm"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    out = redactor_for(root).redact(f"Skipped {target}: has no pixel data (RT Plan Storage), nothing to analyse")
    for leaked in (*LEAKS, str(root)):
        assert leaked not in out, (leaked, out)
    assert out == f"Skipped <input>/{path_ref(f'{PATIENT_FOLDER}/IM0001.dcm', SALT)}.dcm: has no pixel data (RT Plan Storage), nothing to analyse"


def test_folder_alone_and_removed_files_are_referenced_too(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    redactor = redactor_for(root)
    # the folder does not exist (any more): the path runs to where a path certainly ends
    out = redactor.redact(f"cannot read {root}/{PATIENT_FOLDER}/ ('{root}/Smith, John 1904-12-31/a b.dcm')")
    for leaked in (*LEAKS, "Smith", "John", "1904", str(root)):
        assert leaked not in out, (leaked, out)
    assert out.count("<input>/p-") == 2
    assert redactor.redact(f"No analysable DICOM instance found under {root} (3 files skipped)") == (
        "No analysable DICOM instance found under <input> (3 files skipped)"
    )


def test_two_paths_in_one_line_are_told_apart_by_what_exists(tmp_path):
    root = tmp_path / "in"
    (root / "Ulbright Kessandra").mkdir(parents=True)
    first, second = root / "Ulbright Kessandra" / "a.dcm", root / "Ulbright Kessandra" / "b.dcm"
    first.write_bytes(b"")
    second.write_bytes(b"")
    out = redactor_for(root).redact(f"{second}, second copy of the SOP instance already read from {first}")
    assert "Ulbright" not in out and "Kessandra" not in out
    assert refs_in(out) == [path_ref("Ulbright Kessandra/b.dcm", SALT), path_ref("Ulbright Kessandra/a.dcm", SALT)]
    assert ", second copy of the SOP instance already read from <input>/" in out


def test_one_reference_per_path_stable_within_a_salt(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    line = f"Skipped {root}/x/IM1.dcm: empty"
    assert redactor_for(root).redact(line) == redactor_for(root).redact(line)
    other = LogRedactor()
    other.start_run(root, "another-site-salt-000")
    assert other.redact(line) != redactor_for(root).redact(line)
    assert path_ref("x/IM1.dcm", SALT) != path_ref("x/IM2.dcm", SALT) != path_ref("x", SALT)
    assert path_ref("x\\IM1.dcm", SALT) == path_ref("x/IM1.dcm", SALT)


def test_a_relative_input_folder_does_not_replace_ordinary_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("in/x.dcm").write_bytes(b"")
    redactor = redactor_for(Path("in"))
    assert redactor.redact("found in 3 files; in/x.dcm skipped") == f"found in 3 files; <input>/{path_ref('x.dcm', SALT)}.dcm skipped"


def test_spool_paths_are_referenced_and_the_run_input_below_it_too(tmp_path):
    spool = tmp_path / "spool"
    job_input = spool / "processing" / "job-1" / "input"
    job_input.mkdir(parents=True)
    redactor = LogRedactor()
    redactor.add_root(spool, "<spool>", SALT)
    redactor.start_run(job_input, SALT)
    out = redactor.redact(f"kept in {spool}/rejected/{PATIENT_FOLDER}.dcm; skipped {job_input}/{PATIENT_FOLDER}/1.dcm: empty")
    for leaked in LEAKS:
        assert leaked not in out, (leaked, out)
    assert f"<spool>/{path_ref('rejected/' + PATIENT_FOLDER + '.dcm', SALT)}.dcm" in out
    assert f"<input>/{path_ref(PATIENT_FOLDER + '/1.dcm', SALT)}.dcm" in out


def test_uids_identifiers_and_patterns_are_a_second_layer(tmp_path):
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = "Zqfamily^Zqgiven", "ZQ7788123", "1.2.826.0.1.3680043.10.99.1"
    redactor = redactor_for(tmp_path / "in")
    redactor.register_studies([StudyHeader(study_instance_uid=ds.StudyInstanceUID, ref="st-x", header=ds, series=[SeriesHeader("1.2.3.4.5.6", ds)])])
    out = redactor.redact(
        "ValueError: patient Zqgiven Zqfamily ZQ7788123 born 1923-04-17, call +44 20 7946 0958, study "
        "1.2.826.0.1.3680043.10.99.1, class 1.2.840.10008.5.1.4.1.1.2"
    )
    for leaked in ("Zqfamily", "Zqgiven", "ZQ7788123", "1923", "7946", "1.2.826.0.1.3680043.10.99"):
        assert leaked not in out, (leaked, out)
    assert "1.2.840.10008.5.1.4.1.1.2" in out, "standard UIDs stay readable"
    from operators.dicom_input.study_refs import study_ref

    assert "uid-" + study_ref("1.2.826.0.1.3680043.10.99.1", SALT)[3:] in out


def test_formatter_redacts_exception_text_and_locate_finds_the_file(tmp_path):
    root = tmp_path / "in"
    folder = root / PATIENT_FOLDER
    folder.mkdir(parents=True)
    target = folder / "IM0001.dcm"
    target.write_bytes(b"x")
    formatter = PHISafeFormatter("%(message)s", redactor=redactor_for(root))
    try:
        raise ValueError(f"{target}: cannot decode")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s in %s", (str(target), str(folder)), sys.exc_info())
    text = formatter.format(record)
    assert "Traceback" in text and not any(leaked in text for leaked in LEAKS), text
    found = locate(root, refs_in(text), SALT)
    assert found[path_ref(f"{PATIENT_FOLDER}/IM0001.dcm", SALT)] == [target]
    assert found[path_ref(PATIENT_FOLDER, SALT)] == [folder]


# --------------------------------------------------------------------------- the CLI, seen from outside


def _patient_folder_with_files_that_cannot_be_analysed(root: Path) -> Path:
    """A folder named after the patient (spaces, birth date) holding only files the scan skips."""
    folder = root / PATIENT_FOLDER
    (folder / "scans of Theodora").mkdir(parents=True)
    plan = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    plan.PatientName, plan.PatientBirthDate, plan.PatientID = "Kowalczyk-Brennan^Theodora", "19550214", "KB-551214"
    plan.save_as(folder / "IM0001.dcm")  # no pixel data
    (folder / "IM0002.dcm").write_bytes(b"")  # empty
    (folder / "scans of Theodora" / "IM0003.dcm").write_bytes(os.urandom(2048))  # not DICOM
    shutil.copyfile(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    return folder


def test_cli_writes_nothing_of_a_patient_named_folder_to_stderr_and_locate_maps_back(tmp_path, tiny_model_dir):
    root = tmp_path / "in"
    folder = _patient_folder_with_files_that_cannot_be_analysed(root)
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "BIOMEDCLIP_MAP_UID_SALT"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "app", "-i", str(root), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir.parent),
         "-w", str(work), "--allow-untrained", "-l", "DEBUG"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "Skipped" in line]
    assert len(skipped) == 4, result.stderr
    for leaked in (*LEAKS, str(root), "KB-551214"):
        assert leaked not in result.stderr, (leaked, result.stderr)
    refs = sorted({ref for line in skipped for ref in refs_in(line)})
    assert len(refs) == 4
    located = subprocess.run(
        [sys.executable, "-m", "app.log_privacy", "locate", "--input", str(root), "-w", str(work), *refs],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert located.returncode == 0, located.stderr
    paths = {Path(line.split("\t")[1]) for line in located.stdout.splitlines()}
    assert paths == {folder / "IM0001.dcm", folder / "IM0002.dcm", folder / "scans of Theodora" / "IM0003.dcm", folder / "DICOMDIR"}


def test_locate_says_which_reference_it_cannot_find(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    monkeypatch.setenv("BIOMEDCLIP_MAP_UID_SALT", SALT)
    from app.log_privacy import main

    assert main(["locate", "--input", str(tmp_path / "in"), "<input>/p-000000000000.dcm"]) == 1
    assert main(["locate", "--input", str(tmp_path / "nowhere"), "p-000000000000"]) == 2


def test_configured_servers_stay_readable_and_other_addresses_do_not():
    """A line saying which Triton server or PACS could not be reached must name it; nothing else."""
    from app.log_privacy import LogRedactor

    redactor = LogRedactor()
    redactor.start_run("/nowhere", "salt")
    before = redactor.redact("cannot reach 127.0.0.1:35427")
    redactor.keep_endpoints("127.0.0.1:35427", None)
    after = redactor.redact("cannot reach 127.0.0.1:35427 (http://127.0.0.1:35427/v2/health); patient's phone 10.1.2.3:80")
    assert "127.0.0.1:35427" not in before
    assert "cannot reach 127.0.0.1:35427 (http://127.0.0.1:35427/v2/health)" in after
    assert "10.1.2.3" not in after
