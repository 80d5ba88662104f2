"""README command 1's job: the demo builds the samples, runs the MAP on each, prints a summary."""

from __future__ import annotations

from pathlib import Path

from app.demo import run_demo
from tests.dicom_validation import run_dciodvfy


def test_demo_reports_every_sample_study_and_says_the_model_is_untrained(tmp_path: Path, capsys):
    code = run_demo(tmp_path / "demo", tmp_path / "models")
    printed = capsys.readouterr().out

    assert code == 0
    analysed = ["burn-photograph", "chest-radiograph", "chest-ct", "brain-mr", "pydicom-ct"]
    for name in analysed:
        row = next(line for line in printed.splitlines() if line.startswith(name))
        assert "SR-st-" in row, row
    left_out = next(line for line in printed.splitlines() if line.startswith("pydicom-mr"))
    assert "SR-st-" not in left_out and "derived image" in left_out, left_out
    assert "UNTRAINED" in printed and "NOT MEANINGFUL" in printed
    reports = sorted((tmp_path / "demo" / "results").rglob("SR-*.dcm"))
    assert len(reports) == len(analysed)
    assert not run_dciodvfy(reports[0]).errors
    previews = sorted((tmp_path / "demo" / "previews").rglob("SC-*.png"))
    assert len(previews) == len(analysed) and "previews" in printed, "a PNG of each viewable image (Secondary Capture)"
    assert (tmp_path / "models" / "untrained-tiny" / "biomedclip" / "manifest.json").is_file()
