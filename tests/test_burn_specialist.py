"""The BurnSpecialist in the running MAP: burn photographs and bad input, end to end on CPU.

One MAP run (the real Holoscan graph, the tiny untrained model, the PyTorch backend) over an input
folder holding: the demo's burn sample, a face burn, a greyscale photograph in the burn selection,
an 8 × 8 photograph, an all-black photograph, and a CT study (which must pass through the burn
specialist untouched). Every study must get a valid SR and a valid Secondary Capture, and each bad
photograph a clear outcome in the report instead of a crash.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.cli import EXIT_OK, map_main
from app.sample_studies import build_sample_studies
from operators.sr import coding
from operators.specialists.burn.config import load_burn_config
from operators.sr.sr_readback import read_findings
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_burn import BURN_SCENES, burn_photo_dataset, burn_scene
from tests.fixtures_dicom import write_dataset

DEPTH_CODES = {c.code for c in load_burn_config().depth.classes}


@pytest.fixture(scope="module")
def burn_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("burn-run")
    samples = root / "samples"
    build_sample_studies(samples)
    inp = root / "in"
    shutil.copytree(samples / "burn-photograph", inp / "sample")
    face = burn_scene(BURN_SCENES[1], seed=1).rgb
    studies = {
        "face": burn_photo_dataset(face, body_part="FACE", region=("89545001", "Face"), laterality=None),
        "greyscale": burn_photo_dataset(face.mean(axis=2).astype(np.uint8), body_part="SKIN", region=None),
        "tiny": burn_photo_dataset(face[::60, ::80].copy(), body_part="HAND", region=None),
        # Nearly black (dark noise, no skin); a perfectly uniform image is blank and not analysed at all.
        "black": burn_photo_dataset(
            np.random.default_rng(5).integers(0, 12, (240, 320, 3), dtype=np.uint8), body_part="FOOT", region=None
        ),
    }
    uids = {}
    for name, ds in studies.items():
        write_dataset(inp / name / "photo.dcm", ds)
        uids[ds.StudyInstanceUID] = name
    uids[pydicom.dcmread(samples / "burn-photograph" / "photo-001.dcm", stop_before_pixels=True).StudyInstanceUID] = "sample"
    (inp / "ct").mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), inp / "ct" / "CT_small.dcm")
    uids[pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True).StudyInstanceUID] = "ct"
    out = root / "out"
    code = map_main(
        ["-i", str(inp), "-o", str(out), "-m", str(tiny_model_dir.parent), "-w", str(root / "work"),
         "--allow-untrained", "--backend", "pytorch"]
    )
    outputs: dict[str, dict[str, Path]] = {}
    for path in out.iterdir():
        study = uids[pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID]
        outputs.setdefault(study, {})[path.name.split("-", 1)[0]] = path
    return code, outputs, inp


def burn_group(outputs, study):
    findings = read_findings(outputs[study]["SR"])
    assert len(findings.specialist_groups) == 1, f"{study}: one burn group expected"
    return findings, findings.specialist_groups[0], dict(findings.specialist_groups[0].evaluations)


def test_every_study_gets_a_valid_sr_and_secondary_capture(burn_run):
    code, outputs, _ = burn_run
    assert code == EXIT_OK
    assert sorted(outputs) == ["black", "ct", "face", "greyscale", "sample", "tiny"]
    for study, files in outputs.items():
        # a Segmentation only where the wound map measured skin (not greyscale, too small, no skin or a CT)
        expected = {"SR", "SC", "SEG"} if study in ("face", "sample") else {"SR", "SC"}
        assert set(files) == expected, f"{study}: {files}"
        for path in files.values():
            verdict = run_dciodvfy(path)
            assert verdict.errors == (), f"{path.name}: {verdict.errors}"


def test_the_burn_sample_has_its_burn_group_and_overlay(burn_run):
    _, outputs, _ = burn_run
    findings, group, evaluations = burn_group(outputs, "sample")
    assert group.finding_site == coding.Code("SCT", "14975008", "Forearm")
    assert group.laterality == coding.Code("SCT", "7771000", "Left")
    assert evaluations[coding.BURN_DEPTH] in DEPTH_CODES
    measured = {m.concept: m.value for m in group.measurements}
    assert 5.0 < measured[coding.WOUND_AREA] < 30.0, "the sample's burn covers a visible part of the forearm"
    assert sum(v for c, v in measured.items() if c.value.startswith("P-")) == pytest.approx(100.0, abs=0.05)
    assert measured[coding.TBSA_ESTIMATE] == pytest.approx(3.0 * measured[coding.WOUND_AREA] / 100, abs=0.01)
    assert evaluations[coding.FLAG_REVIEW] == coding.YES
    assert any("UNTRAINED" in line for line in findings.narrative)
    capture = pydicom.dcmread(outputs["sample"]["SC"])
    assert "burn" in capture.SeriesDescription.lower() and "UNTRAINED" in capture.SeriesDescription
    assert capture.Rows > 480 and capture.Columns > 640


def test_a_face_burn_is_a_special_area_and_suggests_referral(burn_run):
    _, outputs, _ = burn_run
    _, group, evaluations = burn_group(outputs, "face")
    assert group.finding_site == coding.Code("SCT", "89545001", "Face")
    assert evaluations[coding.FLAG_SPECIAL_AREA] == coding.YES
    assert evaluations[coding.FLAG_REFERRAL] == coding.YES


@pytest.mark.parametrize(
    "study, reason",
    [
        ("greyscale", "greyscale"),
        ("tiny", "too small"),
        ("black", "no skin detected"),
    ],
)
def test_bad_photographs_get_a_clear_outcome_in_the_report(burn_run, study, reason):
    _, outputs, _ = burn_run
    findings, group, evaluations = burn_group(outputs, study)
    assert evaluations[coding.WOUND_AREA] == coding.NOT_MEASURED
    assert evaluations[coding.TBSA_ESTIMATE] == coding.NOT_ESTIMABLE
    assert any(reason in line for line in findings.narrative), findings.narrative
    assert evaluations[coding.BURN_DEPTH] in DEPTH_CODES, "the depth is still given: it needs no colour"


def test_series_of_other_selections_pass_through_untouched(burn_run):
    _, outputs, _ = burn_run
    findings = read_findings(outputs["ct"]["SR"])
    assert findings.specialist_groups == () and len(findings.series) == 1
    assert "findings" in pydicom.dcmread(outputs["ct"]["SC"], stop_before_pixels=True).SeriesDescription.lower()


def test_orthanc_accepts_and_renders_the_burn_report_and_capture(burn_run, orthanc_factory):
    """A PACS takes the SR and the Secondary Capture into the photograph's study and can display the capture."""
    _, outputs, inp = burn_run
    orthanc = orthanc_factory().start()
    photo = inp / "sample" / "photo-001.dcm"
    orthanc.upload([photo, outputs["sample"]["SR"], outputs["sample"]["SC"]])
    study_uid = pydicom.dcmread(photo, stop_before_pixels=True).StudyInstanceUID
    stored = orthanc.instances_of_study(study_uid)
    assert sorted(tags["Modality"] for tags in stored) == ["OT", "SR", "XC"]
    capture_id = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "OT"}})[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http_port}/instances/{capture_id}/preview", timeout=60) as answer:
        assert answer.read(8) == b"\x89PNG\r\n\x1a\n", "Orthanc decodes and renders the capture"
