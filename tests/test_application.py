"""The whole MAP, end to end on CPU: run contract, outputs, bad input, exit codes.

Runs the real application graph (Holoscan) with the tiny untrained model on the sample studies
built by code, and checks every SR with dciodvfy and highdicom's srread.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from app.log_privacy import path_ref
from app.uid_salt import resolve_uid_salt
from app.cli import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, map_main
from app.sample_studies import build_sample_studies
from operators.sr.sr_readback import read_findings
from operators.outputs.result_json import findings_document
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_dicom import image_dataset, write_dataset

REPO = Path(__file__).resolve().parent.parent
SAMPLE_NAMES = ["burn-photograph", "chest-radiograph", "chest-ct", "brain-mr", "pydicom-ct"]
#: The sample that shows what is left out (pydicom's MR_small.dcm is DERIVED\SECONDARY): no report.
LEFT_OUT_SAMPLE = "pydicom-mr"


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    build_sample_studies(root)
    return root


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    """Shared across runs so the ONNX export and text embeddings are made once per session."""
    return tmp_path_factory.mktemp("work")


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_map(inp: Path, out: Path, models: Path, work: Path, *extra: str) -> int:
    return map_main(["-i", str(inp), "-o", str(out), "-m", str(models), "-w", str(work), *extra])


@pytest.fixture(scope="session")
def sample_run(samples, tiny_model_dir, work_dir, tmp_path_factory):
    """One MAP run over all sample studies (one input folder holding six studies)."""
    out = tmp_path_factory.mktemp("out")
    json_dir = tmp_path_factory.mktemp("json")
    before = tree_digest(samples)
    code = run_map(samples, out, tiny_model_dir.parent, work_dir, "--allow-untrained", "--results-json", str(json_dir))
    return code, out, json_dir, before


def test_every_sample_study_gets_one_sr_and_exit_code_0(sample_run, samples):
    code, out, json_dir, before = sample_run
    assert code == EXIT_OK
    outputs = sorted(out.iterdir())
    assert all(p.suffix == ".dcm" for p in outputs), "output folder must hold only DICOM"
    assert len(list(out.glob("SR-st-*.dcm"))) == len(SAMPLE_NAMES)
    assert len(list(out.glob("SC-st-*.dcm"))) == len(SAMPLE_NAMES), "every analysed study gets a viewable image"
    assert len(list(out.glob("SEG-st-*.dcm"))) == 1, "the burn photograph's wound map is also a Segmentation"
    assert len(outputs) == 2 * len(SAMPLE_NAMES) + 1
    assert tree_digest(samples) == before, "input files must be byte-identical after the run"
    left_out = pydicom.dcmread(next((samples / LEFT_OUT_SAMPLE).iterdir()), stop_before_pixels=True).StudyInstanceUID
    assert left_out not in {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in outputs}


def test_every_sample_sr_validates_with_dciodvfy(sample_run):
    _, out, _, _ = sample_run
    for report in out.iterdir():
        result = run_dciodvfy(report)
        assert not result.errors, f"{report.name}: {result.errors}"


def test_sr_reads_back_into_the_findings_that_were_written(sample_run, samples):
    _, out, json_dir, _ = sample_run
    sources = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID: p for p in samples.rglob("*.dcm")}
    for report_path in out.glob("SR-*.dcm"):
        report = pydicom.dcmread(report_path)
        source = pydicom.dcmread(sources[report.StudyInstanceUID], stop_before_pixels=True)
        assert report.PatientID == source.PatientID and report.PatientName == source.PatientName
        assert report.SeriesInstanceUID != source.SeriesInstanceUID
        assert report.VerificationFlag == "UNVERIFIED"
        written = json.loads((json_dir / f"{report_path.stem[3:]}.json").read_text())
        findings = read_findings(report_path)
        assert findings_document(findings) == written["findings"], "the JSON results are the findings the SR holds"
        assert len(findings.series) == len(written["findings"]["series"]) == 1
        series = findings.series[0]
        assert series.algorithm_name == written["model"]["name"]
        assert series.algorithm_version == written["model"]["version"]
        read_percent = [p.percent for p in series.probabilities]
        assert sum(read_percent) == pytest.approx(100, abs=0.05)
        assert any("AI-generated" in line and "clinician review" in line for line in findings.narrative)
        assert any("UNTRAINED" in line for line in findings.narrative), "an untrained model must be stated in the SR"
        assert written["meaningful"] is False


def test_a_standard_sr_viewer_shows_every_value_with_its_label(sample_run):
    """DCMTK's dsr2html renders each measurement as "<concept>: <value> %" (SEPARATE containers)."""
    _, out, _, _ = sample_run
    for report in sorted(out.glob("SR-*.dcm")):
        html = subprocess.run(["dsr2html", str(report)], capture_output=True, text=True, check=True, timeout=60).stdout
        findings = read_findings(report)
        measurements = [(p.concept.meaning, p.percent) for s in findings.series for p in s.probabilities]
        measurements += [(m.concept.meaning, m.value) for g in findings.specialist_groups for m in g.measurements]
        assert measurements, report.name
        for meaning, percent in measurements:
            shown = re.findall(rf"<b>{re.escape(meaning)}:</b><br>\s*<span[^>]*>([0-9.]+) %</span>", html)
            assert any(abs(float(v) - percent) < 0.006 for v in shown), f"{report.name}: {meaning} {percent} %"


def test_map_contract_through_environment_variables_and_python3_app(samples, tiny_model_dir, work_dir, tmp_path):
    """`python3 app` from the repository root, configured only through HOLOSCAN_* variables."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(samples / "chest-radiograph"),
        "HOLOSCAN_OUTPUT_PATH": str(out),
        "HOLOSCAN_MODEL_PATH": str(tiny_model_dir.parent),
        "HOLOSCAN_WORKDIR": str(work_dir),
        "BIOMEDCLIP_MAP_ALLOW_UNTRAINED": "1",
    }
    result = subprocess.run([sys.executable, "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reports = list(out.glob("SR-*.dcm"))
    assert len(reports) == 1
    assert not run_dciodvfy(reports[0]).errors
    assert "UNTRAINED" in result.stderr


def test_bad_files_are_skipped_with_one_line_each_and_the_study_still_reported(tmp_path, tiny_model_dir, work_dir, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), inp / "good.dcm")
    (inp / "empty.dcm").write_bytes(b"")
    (inp / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    good = (inp / "good.dcm").read_bytes()
    (inp / "truncated.dcm").write_bytes(good[: len(good) - 3000])
    shutil.copyfile(get_testdata_file("rtplan.dcm"), inp / "plan.dcm")
    shutil.copyfile(get_testdata_file("DICOMDIR"), inp / "DICOMDIR")
    (inp / "good.dcm.json").write_text("{}")
    before = tree_digest(inp)

    code = run_map(inp, tmp_path / "out", tiny_model_dir.parent, work_dir, "--allow-untrained")

    log = capsys.readouterr().err
    assert code == EXIT_OK
    assert len(list((tmp_path / "out").glob("SR-*.dcm"))) == 1
    salt = resolve_uid_salt(work_dir)
    for name in ["empty.dcm", "random.dcm", "truncated.dcm", "plan.dcm", "DICOMDIR", "good.dcm.json"]:
        # the log names each file by its salted reference only (app.log_privacy)
        assert f"{name}:" not in log and f"/{name}" not in log
        lines = [line for line in log.splitlines() if path_ref(name, salt) in line and "skip" in line.lower()]
        assert len(lines) == 1, f"expected one skip line naming {name}, got {lines}"
    assert tree_digest(inp) == before


def test_study_with_nothing_selectable_gives_no_sr_and_a_clear_line(tmp_path, tiny_model_dir, work_dir, capsys):
    inp = tmp_path / "in"
    write_dataset(inp / "knee.dcm", image_dataset(modality="DX", BodyPartExamined="KNEE"))
    code = run_map(inp, tmp_path / "out", tiny_model_dir.parent, work_dir, "--allow-untrained")
    assert code == EXIT_OK
    assert list((tmp_path / "out").iterdir()) == []
    err = capsys.readouterr().err
    assert "no series to analyse" in err and "'chest_radiograph': BodyPartExamined does not match" in err


def test_empty_input_folder_is_reported_not_an_error(tmp_path, tiny_model_dir, work_dir, capsys):
    (tmp_path / "in").mkdir()
    code = run_map(tmp_path / "in", tmp_path / "out", tiny_model_dir.parent, work_dir, "--allow-untrained")
    assert code == EXIT_OK
    assert "nothing to analyse" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def _good_and_undecodable_photo(inp: Path) -> None:
    inp.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), inp / "good.dcm")
    broken = image_dataset(modality="XC", rgb=True, rows=32, columns=32, transfer_syntax=JPEGBaseline8Bit)
    broken.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"])
    broken["PixelData"].VR = "OB"
    write_dataset(inp / "photo.dcm", broken)


def test_an_undecodable_image_is_nothing_to_analyse_not_a_failure(tmp_path, tiny_model_dir, work_dir, capsys):
    inp = tmp_path / "in"
    _good_and_undecodable_photo(inp)

    code = run_map(inp, tmp_path / "out", tiny_model_dir.parent, work_dir, "--allow-untrained")

    log = capsys.readouterr().err
    assert code == EXIT_OK, "unusable data is a stated reason, not an internal failure"
    assert len(list((tmp_path / "out").glob("SR-*.dcm"))) == 1, "the good study is reported"
    assert path_ref("photo.dcm", resolve_uid_salt(work_dir)) in log and "could not be decoded" in log
    assert "nothing to analyse" in log and "Traceback" not in log


def test_a_failing_study_does_not_stop_the_others_and_sets_exit_code_1(tmp_path, tiny_model_dir, work_dir, capsys, monkeypatch):
    import operators.sr_writer_operator as writer

    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), inp / "good.dcm")
    write_dataset(inp / "photo.dcm", image_dataset(modality="XC", rgb=True, rows=32, columns=32))
    real = writer.build_study_captures

    def broken_for_photographs(analysis, *args, **kwargs):
        if analysis.series[0].selection.series.modality == "XC":
            raise RuntimeError("internal error injected by the test")
        return real(analysis, *args, **kwargs)

    monkeypatch.setattr(writer, "build_study_captures", broken_for_photographs)
    code = run_map(inp, tmp_path / "out", tiny_model_dir.parent, work_dir, "--allow-untrained")

    log = capsys.readouterr().err
    assert code == EXIT_STUDY_FAILED
    assert len(list((tmp_path / "out").glob("SR-*.dcm"))) == 1, "the good study must still be reported"
    assert "injected by the test" in log and "failed" in log


def test_missing_model_folder_names_the_path_and_flag(tmp_path, samples, work_dir, capsys):
    code = run_map(samples / "pydicom-ct", tmp_path / "out", tmp_path / "no-such-models", work_dir)
    err = capsys.readouterr().err
    assert code == EXIT_CANNOT_START
    assert "no-such-models" in err and "--model" in err


def test_unreadable_model_folder_is_refused(tmp_path, samples, work_dir, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "biomedclip").write_text("not a folder")
    code = run_map(samples / "pydicom-ct", tmp_path / "out", models, work_dir)
    assert code == EXIT_CANNOT_START
    assert "biomedclip" in capsys.readouterr().err


def test_untrained_model_is_refused_without_the_allow_flag(tmp_path, samples, tiny_model_dir, work_dir, capsys, monkeypatch):
    monkeypatch.delenv("BIOMEDCLIP_MAP_ALLOW_UNTRAINED", raising=False)
    code = run_map(samples / "pydicom-ct", tmp_path / "out", tiny_model_dir.parent, work_dir)
    err = capsys.readouterr().err
    assert code == EXIT_CANNOT_START
    assert "--allow-untrained" in err and "BIOMEDCLIP_MAP_ALLOW_UNTRAINED" in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_input_path_pointing_at_nothing_is_refused(tmp_path, tiny_model_dir, work_dir, capsys, monkeypatch):
    monkeypatch.setenv("HOLOSCAN_INPUT_PATH", str(tmp_path / "nowhere"))
    code = map_main(["-o", str(tmp_path / "out"), "-m", str(tiny_model_dir.parent), "-w", str(work_dir), "--allow-untrained"])
    err = capsys.readouterr().err
    assert code == EXIT_CANNOT_START
    assert "nowhere" in err and "HOLOSCAN_INPUT_PATH" in err


def test_second_run_of_a_study_computes_no_text_embeddings(samples, tiny_model_dir, tmp_path):
    """A fresh process (a fresh analyzer) on the same work folder reuses the cached text embeddings."""
    from app.analyzer import open_analyzer
    from app.run import run
    from app.settings import resolve_run_settings
    from engines.text_cache import TEXT_CACHE_SUBDIR

    work = tmp_path / "work"

    def one_run(out: Path):
        settings = resolve_run_settings(
            input_path=samples / "chest-radiograph", output_path=out, models_path=tiny_model_dir, work_dir=work, allow_untrained=True
        )
        analyzer = open_analyzer(settings)
        assert run(settings, analyzer).exit_code == EXIT_OK
        return analyzer.cache.stats

    one_run(tmp_path / "first")
    assert any((work / TEXT_CACHE_SUBDIR).iterdir()), "the first run must leave text embeddings in the work folder"
    second = one_run(tmp_path / "second")
    assert second.texts_embedded == 0
    assert second.disk_hits + second.memory_hits > 0


def test_a_misspelt_selection_name_in_the_tasks_file_stops_the_run_before_any_study(samples, tiny_model_dir, tmp_path, capsys):
    """The selection names join the rules, the tasks and the burn configuration: checked at start-up, exit 2."""
    tasks = (REPO / "app" / "config" / "zero_shot_tasks.yaml").read_text().replace("  chest_radiograph:", "  chest_radiogrpah:")
    misspelt = tmp_path / "tasks.yaml"
    misspelt.write_text(tasks)
    out = tmp_path / "out"
    code = run_map(samples / "chest-radiograph", out, tiny_model_dir.parent, tmp_path / "work", "--allow-untrained",
                   "--tasks", str(misspelt))
    err = capsys.readouterr().err
    assert code == EXIT_CANNOT_START
    assert f"{misspelt}: tasks.chest_radiogrpah: no selection of that name" in err
    assert "did you mean 'chest_radiograph'?" in err
    assert not out.exists() or list(out.iterdir()) == [], "no study was touched"
