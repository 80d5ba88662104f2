"""`python -m models promote DIR --to validated --report R --by NAME` and what a validated model's SR says.

The validation report is a real `biomedclip-map validate` run (`tests.test_validation`'s module
fixture: 40 synthetic chest radiographs, half with an effusion) of the tiny model. The tiny model
is untrained, and random weights are never promoted, so the model promoted here is a copy of it
whose manifest says `research`: the same weights file and hash, hence exactly the model the
report measured. Its zero-shot figures are at chance, so the minimums that let it through are set
low on purpose (the refusals use realistic ones).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from app.cli import main as app_main
from models.__main__ import main as models_main
from models.manifest import read_manifest, write_manifest
from tests.fixtures_validation import EFFUSION, NORMAL
from tests.test_validation import TASK, validated  # noqa: F401  (the module fixture: one validate run)

LABELS = [NORMAL, EFFUSION]


def _research_copy(source: Path, destination: Path) -> Path:
    """A copy of the model folder with status `research` (same weights, same hash)."""
    from dataclasses import replace

    shutil.copytree(source, destination)
    write_manifest(destination, replace(read_manifest(destination), status="research"))
    return destination


def _config(tmp_path: Path, positives: int = 5, negatives: int = 5, auroc: float = 0.0) -> Path:
    path = tmp_path / "validation.yaml"
    path.write_text(yaml.safe_dump({
        "minimum_positives": positives, "minimum_negatives": negatives, "minimum_auroc_lower_bound": auroc,
        "required_labels": {TASK: LABELS},
    }), encoding="utf-8")
    return path


def _report(validated) -> Path:  # noqa: F811
    return validated["root"] / "report" / "report.json"


def _promote(model: Path, *extra: str) -> int:
    return models_main(["promote", str(model), "--to", "validated", "--by", "AI committee, Dr Example", *extra])


@pytest.fixture()
def research_model(tiny_model_dir, tmp_path) -> Path:
    return _research_copy(tiny_model_dir, tmp_path / "models" / "biomedclip")


@pytest.fixture()
def said(caplog, capsys):
    """What the commands said so far: log records and stderr (the app's commands set up their own logging)."""
    return lambda: caplog.text + capsys.readouterr().err


def _refused(model: Path, said, *extra: str) -> str:
    before = (model / "manifest.json").read_bytes()
    assert _promote(model, *extra) == 2
    assert (model / "manifest.json").read_bytes() == before, "a refused promotion must leave the manifest alone"
    return said()


def test_promote_refuses_without_a_report(research_model, said):
    assert "--report: a model becomes 'validated' only with the validation report" in _refused(research_model, said)


def test_promote_refuses_a_missing_or_foreign_file(research_model, tmp_path, said):
    assert "no validation report there" in _refused(research_model, said, "--report", str(tmp_path / "nothing.json"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"report": "something else"}), encoding="utf-8")
    assert "not a validation report" in _refused(research_model, said, "--report", str(other))


def test_promote_refuses_a_report_of_other_weights(validated, tmp_path, said):  # noqa: F811
    from models.builders import build_tiny

    build_tiny(tmp_path / "seed1", seed=1)
    model = _research_copy(tmp_path / "seed1", tmp_path / "models" / "biomedclip")
    text = _refused(model, said, "--report", str(_report(validated)), "--config", str(_config(tmp_path)))
    assert "a validation of other weights" in text


def test_promote_refuses_random_weights(validated, tiny_model_dir, tmp_path, said):  # noqa: F811
    model = tmp_path / "models" / "biomedclip"
    shutil.copytree(tiny_model_dir, model)
    text = _refused(model, said, "--report", str(_report(validated)), "--config", str(_config(tmp_path)))
    assert "untrained (random weights)" in text


def test_promote_refuses_too_few_cases(validated, research_model, tmp_path, said):  # noqa: F811
    positives = validated["report"]["tasks"][TASK]["per_label"][NORMAL]["positives"]
    config = _config(tmp_path, positives=positives + 1)
    text = _refused(research_model, said, "--report", str(_report(validated)), "--config", str(config))
    assert f"label {NORMAL!r}: too few cases ({positives} positive" in text


def test_promote_refuses_figures_under_the_minimum(validated, research_model, tmp_path, said):  # noqa: F811
    low = validated["report"]["tasks"][TASK]["per_label"][NORMAL]["auroc_ci"][0]
    config = _config(tmp_path, auroc=0.9)
    assert low < 0.9  # the untrained model is at chance
    text = _refused(research_model, said, "--report", str(_report(validated)), "--config", str(config))
    assert f"lower bound {low:.3f} is under the site's minimum 0.900" in text


def test_promote_refuses_other_prompts(validated, research_model, tmp_path, said):  # noqa: F811
    from common.configuration import CONFIG_DIR

    tasks = yaml.safe_load((CONFIG_DIR / "zero_shot_tasks.yaml").read_text(encoding="utf-8"))
    tasks["tasks"][TASK]["labels"][1]["prompt"] += " on the left"
    edited = tmp_path / "tasks.yaml"
    edited.write_text(yaml.safe_dump(tasks), encoding="utf-8")
    text = _refused(research_model, said, "--report", str(_report(validated)), "--config", str(_config(tmp_path)),
                    "--tasks", str(edited))
    assert f"task {TASK} was measured with another prompt set" in text


def test_promote_refuses_operating_points_of_another_report(validated, research_model, tmp_path, said):  # noqa: F811
    site = tmp_path / "site.json"
    assert app_main(["operating-points", "--report", str(_report(validated)), "--method", "youden", "-o", str(site)]) == 0
    document = json.loads(site.read_text(encoding="utf-8"))
    document["validation_report_sha256"] = "0" * 64
    site.write_text(json.dumps(document), encoding="utf-8")
    text = _refused(research_model, said, "--report", str(_report(validated)), "--config", str(_config(tmp_path)),
                    "--operating-points", str(site))
    assert "chosen on another validation report" in text


def test_promote_accepts_a_report_that_meets_the_minimums_and_the_sr_says_so(
    validated, research_model, tmp_path, capsys  # noqa: F811
):
    from operators.sr.sr_content import RESEARCH_NOTICE
    from operators.sr.sr_readback import read_findings
    from tests.dicom_validation import run_dciodvfy
    from tests.test_validation import _map_run

    site = tmp_path / "site.json"
    assert app_main(["operating-points", "--report", str(_report(validated)), "--method", "youden", "-o", str(site)]) == 0

    # Before: a research model says research use.
    code, folder = _map_run(validated, research_model, tmp_path / "before", ("study001",))
    assert code == 0
    (path,) = (folder / "output").glob("SR-*.dcm")
    assert RESEARCH_NOTICE in read_findings(path).narrative

    assert _promote(research_model, "--report", str(_report(validated)), "--config", str(_config(tmp_path)),
                    "--operating-points", str(site)) == 0
    manifest = read_manifest(research_model)
    assert manifest.status == "validated"
    record = manifest.validation
    assert record["validated_by"] == "AI committee, Dr Example"
    assert record["validated_at"].endswith("+00:00")
    assert record["report_sha256"] == hashlib.sha256(_report(validated).read_bytes()).hexdigest()
    assert record["operating_points_sha256"] == hashlib.sha256(site.read_bytes()).hexdigest()
    report = validated["report"]
    assert record["cases"] == report["data_set"]["cases"]
    assert record["report_created"] == report["created"]
    task = record["tasks"][TASK]
    assert task["prompt_set_sha256"] == report["tasks"][TASK]["prompt_set_sha256"]
    for label in LABELS:
        figures = report["tasks"][TASK]["per_label"][label]
        assert task["labels"][label] == {
            "positives": figures["positives"], "negatives": figures["negatives"], "auroc": figures["auroc"],
            "auroc_ci": figures["auroc_ci"],
        }
    assert json.loads(capsys.readouterr().out)["status"] == "validated"

    # After: the SR of the promoted model carries the validation facts and still validates.
    code, folder = _map_run(validated, research_model, tmp_path / "after", ("study001", "study002"),
                            "--operating-points", str(site))
    assert code == 0
    reports = sorted((folder / "output").glob("SR-*.dcm"))
    assert len(reports) == 2
    date = report["created"][:10]
    for path in reports:
        findings = read_findings(path)
        assert RESEARCH_NOTICE not in findings.narrative
        (series,) = findings.series
        parameters = series.algorithm_parameters
        assert "model status validated" in parameters
        assert f"site validation {date}: {report['data_set']['cases']} cases, validation report sha256 {record['report_sha256']}" in parameters
        for label in LABELS:
            f = report["tasks"][TASK]["per_label"][label]
            assert (f"site validation {label}: AUROC {f['auroc']:.3f} (95 % CI {f['auroc_ci'][0]:.3f} to {f['auroc_ci'][1]:.3f}), "
                    f"{f['positives']} positive and {f['negatives']} negative cases") in parameters
        (line,) = [line for line in findings.narrative if "model validated at this site" in line]
        assert f"on {date} on {report['data_set']['cases']} labelled cases of task {TASK}" in line
        assert f"{EFFUSION}: AUROC {report['tasks'][TASK]['per_label'][EFFUSION]['auroc']:.2f}" in line
        result = run_dciodvfy(path)
        assert result.errors == (), result.output


def test_a_manifest_with_a_malformed_validation_record_is_refused(research_model):
    from dataclasses import replace

    from models.directory import open_model_dir
    from models.errors import ManifestError

    with pytest.raises(ManifestError, match="field 'validation' is not a validation record"):
        write_manifest(research_model, replace(read_manifest(research_model), status="validated", validation={"tasks": 3}))
    assert open_model_dir(research_model, allow_untrained=False).identity.validation is None
