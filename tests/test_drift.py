"""`biomedclip-map drift`: recent audit records against the validation report.

The reference is `tests.test_validation`'s validation report (40 synthetic chest radiographs,
tiny untrained model). The recent results are real MAP runs writing the audit log: a new set of
studies drawn from the same population (quiet), and a set from a shifted population, the same
generator with its nuisance variation (exposure, texture, geometry) cut to a tenth, the way a new
scanner or protocol changes images (flagged). The PSI is checked against its formula here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from tests.fixtures_validation import write_labelled_studies
from tests.test_validation import TASK, validated  # noqa: F401  (the module fixture: one validate run)


def _audited_run(tmp_path, tiny_model_dir, nuisance, seed, *extra, count=30):
    write_labelled_studies(tmp_path / "input", count, seed=seed, nuisance=nuisance)
    audit = tmp_path / "audit.jsonl"
    assert main(["run", "-i", str(tmp_path / "input"), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir.parent),
                 "-w", str(tmp_path / "work"), "--allow-untrained", "--audit-log", str(audit), *extra]) == 0
    return audit


def _drift(validated, audit, *extra):  # noqa: F811
    return main(["drift", "--report", str(validated["root"] / "report" / "report.json"), "--audit-log", str(audit), *extra])


def test_audit_records_carry_the_task_summary_without_identifiers(validated, tiny_model_dir, tmp_path):  # noqa: F811
    audit = _audited_run(tmp_path, tiny_model_dir, 1.0, 11)
    records = [json.loads(line) for line in audit.read_text(encoding="ascii").splitlines()]
    assert len(records) == 30
    for record in records:
        (summary,) = record["tasks"]
        assert summary["task"] == TASK
        assert summary["label"] == max(summary["probabilities"], key=summary["probabilities"].get)
        assert sum(summary["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert summary["decisions"] == {}
    text = audit.read_text(encoding="ascii")
    assert "Testpatient" not in text and "VAL-PID" not in text and "1.2.826" not in text


def test_drift_is_quiet_on_the_same_population(validated, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    audit = _audited_run(tmp_path, tiny_model_dir, 1.0, 11, count=60)
    assert _drift(validated, audit) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("drift: no sign the model's behaviour has moved (60 recent results"), line
    print(line)


def test_drift_flags_a_shifted_population(validated, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    site = tmp_path / "site.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", "youden", "--band", "0.001", "-o", str(site)]) == 0
    audit = _audited_run(tmp_path, tiny_model_dir, 0.1, 12, "--operating-points", str(site))
    assert _drift(validated, audit, "--operating-points", str(site)) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("drift: the model's behaviour has MOVED since its validation (30 recent results): "), line
    assert "PSI" in line
    print(line)


def test_drift_needs_records_of_the_validated_weights(validated, tmp_path, caplog):  # noqa: F811
    audit = tmp_path / "audit.jsonl"
    audit.write_text(json.dumps({"model": {"sha256": "0" * 64}, "tasks": [{"task": TASK}]}) + "\n", encoding="ascii")
    assert _drift(validated, audit) == 2


def test_psi_follows_its_formula():
    from app.validation.drift import population_stability_index

    rng = np.random.default_rng(0)
    reference, recent = rng.uniform(0, 1, 1000), rng.uniform(0.3, 1, 500)
    edges = np.quantile(reference, np.linspace(0, 1, 11))
    ref = np.histogram(reference, edges)[0] + 0.5
    new = np.histogram(np.clip(recent, edges[0], edges[-1]), edges)[0] + 0.5
    ref, new = ref / ref.sum(), new / new.sum()
    assert population_stability_index(reference, recent) == pytest.approx(np.sum((new - ref) * np.log(new / ref)), rel=1e-2)
    assert population_stability_index(reference, rng.uniform(0, 1, 500)) < 0.1
