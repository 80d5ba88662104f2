"""Specialists behind one protocol: a new one is one package and one line of registration.

A test-only toy specialist (`tests.toy_specialist`) is registered with one line; the run then
shows its coded finding in the SR, in the SR's read-back, on the Secondary Capture and in the JSON
results, although none of those modules knows it. The burn specialist goes the same way
(`operators.specialists.registry`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
import pytest

from app.cli import EXIT_OK, map_main
from app.configuration import load_product_configuration
from app.sample_studies import build_sample_studies
from common.configuration import CONFIG_DIR, ConfigurationError
from operators.sr import coding
from operators.captures.findings_capture import findings_panel, representative_image
from operators.messages import FindingSummary, SpecialistFindings
from operators.outputs.result_json import findings_document
from operators.specialists import registry
from operators.sr.sr_readback import read_findings
from tests.dicom_validation import run_dciodvfy
from tests.test_sr_content import CT_TASK, _analysis
from tests.toy_specialist import NARRATIVE, TOY, TOY_COUNT, TOY_FINDING, TOY_METHOD


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    build_sample_studies(root)
    return root / "chest-ct"


def run_once(study: Path, models: Path, root: Path) -> tuple[int, Path, Path]:
    out, json_dir = root / "out", root / "json"
    code = map_main(
        ["-i", str(study), "-o", str(out), "-m", str(models), "-w", str(root / "work"), "--allow-untrained",
         "--backend", "pytorch", "--results-json", str(json_dir)]
    )
    return code, out, json_dir


@pytest.fixture(scope="module")
def runs(ct_study, tiny_model_dir, tmp_path_factory):
    """The CT sample run twice: as shipped, and with the toy specialist registered."""
    plain = run_once(ct_study, tiny_model_dir.parent, tmp_path_factory.mktemp("plain"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "SPECIALISTS", [*registry.SPECIALISTS, TOY])  # the one line of registration
        toy = run_once(ct_study, tiny_model_dir.parent, tmp_path_factory.mktemp("toy"))
    return plain, toy


def test_the_toy_finding_is_in_the_sr_and_its_read_back(runs):
    _, (code, out, _) = runs
    assert code == EXIT_OK
    (report,) = out.glob("SR-*.dcm")
    assert run_dciodvfy(report).errors == ()
    findings = read_findings(report)
    (group,) = findings.specialist_groups
    assert group.method == TOY_METHOD
    assert dict(group.evaluations) == {TOY_FINDING: coding.YES}
    (count,) = group.measurements
    assert count.concept == TOY_COUNT and count.value >= 1 and count.unit.value == "{images}"
    assert group.source_images[0].sop_instance_uid in {uid for _cls, uid in findings.evidence}
    assert NARRATIVE in findings.narrative
    assert len(findings.series) == 1, "the zero-shot series group is still there"


def test_the_toy_finding_is_in_the_json_which_equals_the_sr(runs):
    _, (_, out, json_dir) = runs
    (report,) = out.glob("SR-*.dcm")
    (result,) = json_dir.glob("*.json")
    written = json.loads(result.read_text())
    assert written["findings"] == findings_document(read_findings(report))
    (group,) = written["findings"]["specialist_groups"]
    assert group["evaluations"] == [
        {"concept": {"scheme": "99BMCLIP", "value": "TOY-FINDING", "meaning": "Toy finding present"},
         "value": {"scheme": "SCT", "value": "373066001", "meaning": "Yes"}}
    ]


def test_the_toy_finding_is_on_the_secondary_capture(runs, ct_study, tiny_model_dir):
    (_, plain_out, _), (_, toy_out, _) = runs
    (plain,) = plain_out.glob("SC-*.dcm")
    (toy,) = toy_out.glob("SC-*.dcm")
    assert run_dciodvfy(toy).errors == ()
    plain_pixels, toy_pixels = pydicom.dcmread(plain).pixel_array, pydicom.dcmread(toy).pixel_array
    assert plain_pixels.shape != toy_pixels.shape or (plain_pixels != toy_pixels).any(), "the capture must show the finding"


def test_the_findings_panel_lists_specialist_summaries():
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.2, 0.5, 0.3])
    analysis.specialists.append(SpecialistFindings("toy", (), (), (FindingSummary("ct", "toy finding present"),)))
    series, _image = representative_image(analysis)
    texts = [line.text for line in findings_panel(analysis, series)]
    assert "ct: toy finding present" in texts


def test_a_specialist_selection_that_does_not_exist_stops_the_run_at_start(tmp_path, monkeypatch):
    bad = tmp_path / "toy.yaml"
    bad.write_text("selections: [c_t]\n")
    monkeypatch.setattr(registry, "SPECIALISTS", [*registry.SPECIALISTS, TOY])
    with pytest.raises(ConfigurationError, match=r"toy\.yaml: selections\[0\]: 'c_t' is not a selection.*did you mean 'ct'"):
        load_product_configuration(
            selection_rules=CONFIG_DIR / "selection_rules.json", tasks=CONFIG_DIR / "zero_shot_tasks.yaml",
            preprocessing=CONFIG_DIR / "preprocessing.yaml", specialist_files={"toy": bad},
        )


def test_an_unknown_specialist_file_is_refused():
    with pytest.raises(ConfigurationError, match="no specialist named toy"):
        load_product_configuration(
            selection_rules=CONFIG_DIR / "selection_rules.json", tasks=CONFIG_DIR / "zero_shot_tasks.yaml",
            preprocessing=CONFIG_DIR / "preprocessing.yaml", specialist_files={"toy": Path("toy.yaml")},
        )
