"""By default no text from the study's free-text attributes reaches any output (SR, SC, JSON results).

The free text here holds nothing a scrubber could recognise as an identifier (plain words, unique
to each attribute), so the only way to keep it out is not to copy it at all. With
`--clinical-context` the site opts in, and the scrubbed line appears.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from app.cli import EXIT_OK, map_main
from app.sample_studies import build_sample_studies

FREE_TEXT = {
    "StudyDescription": "Quillfeather study wording",
    "SeriesDescription": "Marrowlight series wording",
    "ImageComments": "Thistledown comment wording",
    "AdditionalPatientHistory": "Bramblewick history wording",
    "ReasonForTheRequestedProcedure": "Copperkettle reason wording",
    "PatientComments": "Fernhollow patient wording",
    "RequestedProcedureDescription": "Wrenmantle procedure wording",
}


def _with_free_text(source: Path, target: Path) -> None:
    ds = pydicom.dcmread(source)
    for keyword, text in FREE_TEXT.items():
        setattr(ds, keyword, text)
    request = Dataset()
    request.ReasonForTheRequestedProcedure = "Larkspire request wording"
    ds.RequestAttributesSequence = [request]
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


@pytest.fixture(scope="module")
def free_text_input(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("free-text")
    samples = root / "samples"
    build_sample_studies(samples)
    inp = root / "in"
    _with_free_text(samples / "burn-photograph" / "photo-001.dcm", inp / "photo" / "photo.dcm")
    _with_free_text(Path(get_testdata_file("CT_small.dcm")), inp / "ct" / "ct.dcm")
    return inp


def _words() -> list[str]:
    return [text.split()[0] for text in FREE_TEXT.values()] + ["Larkspire"]


def _run(inp: Path, root: Path, model: Path, *extra: str) -> tuple[list[Path], list[Path]]:
    out, json_dir = root / "out", root / "json"
    shutil.rmtree(out, ignore_errors=True)
    code = map_main(["-i", str(inp), "-o", str(out), "-m", str(model.parent), "-w", str(root / "work"),
                     "--allow-untrained", "--backend", "pytorch", "--results-json", str(json_dir), *extra])
    assert code == EXIT_OK
    return sorted(out.glob("*.dcm")), sorted(json_dir.glob("*.json"))


def test_the_default_outputs_hold_no_source_free_text(free_text_input, tiny_model_dir, tmp_path):
    dicom, results = _run(free_text_input, tmp_path, tiny_model_dir)
    kinds = sorted(p.name.split("-")[0] for p in dicom)
    # an SR and a capture per study, the burn photograph's wound map as a Segmentation, and JSON results
    assert kinds == ["SC", "SC", "SEG", "SR", "SR"] and len(results) == 2, kinds
    for path in [*dicom, *results]:
        raw = path.read_bytes()
        leaked = [word for word in _words() if word.encode() in raw or word.upper().encode() in raw]
        assert not leaked, f"{path.name} carries source free text: {leaked}"


def test_a_site_can_turn_the_scrubbed_clinical_context_line_on(free_text_input, tiny_model_dir, tmp_path):
    dicom, _ = _run(free_text_input, tmp_path, tiny_model_dir, "--clinical-context")
    reports = [p for p in dicom if p.name.startswith("SR-")]
    for report in reports:
        assert b"Clinical context" in report.read_bytes() and b"Quillfeather" in report.read_bytes()
