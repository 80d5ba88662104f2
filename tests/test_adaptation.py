"""`biomedclip-map adapt`: a linear probe per task on the frozen embeddings, validated on held-out studies.

Two separate synthetic sets of 20 chest radiographs (half with a visible effusion,
`tests.fixtures_validation`), one to fit on and one held out, and the tiny untrained model: its
zero-shot prompts know nothing (AUROC near chance), but its random image tower still maps the
two kinds of image to separable embeddings, so a probe fitted on 20 cases separates the held-out
ones. Every figure checked is recomputed here with scikit-learn.

The images are drawn with the nuisance variation (position, size, texture, exposure) scaled to
0.1 of the validation tests' level (`NUISANCE`): at the full level, the random tiny tower's
embedding keeps too little of the effusion for a linear probe (held-out AUROC about 0.6 to 0.8,
fitted on 20 to 400 cases). At this level, though, the two kinds of image differ so much in
the embedding that even the random prompts' scores follow them by accident (zero-shot AUROC
about 0.8 to 0.9 on 100 held-out studies), so zero-shot is near chance only on the validation
tests' set (`tests/test_validation.py`); here the probe must reach 0.9 and beat zero-shot.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from app.cli import main
from tests.fixtures_validation import EFFUSION, NORMAL, write_labelled_studies, write_labels

TASK = "chest_radiograph"
NUISANCE = 0.1


def _validate(root, tiny_model_dir, name, *extra):
    code = main(["validate", "-i", str(root / "held"), "--labels", str(root / "held.csv"), "-o", str(root / name),
                 "-m", str(tiny_model_dir.parent), "-w", str(root / "work"), "--allow-untrained", "--bootstrap", "200", *extra])
    assert code == 0
    return json.loads((root / name / "report.json").read_text(encoding="utf-8"))


def _adapt(root, tiny_model_dir, *extra):
    return main(["adapt", "-i", str(root / "train"), "--labels", str(root / "train.csv"), "-o", str(root / "adapter"),
                 "-m", str(tiny_model_dir.parent), "-w", str(root / "work"), "--allow-untrained", "--name", "test-site",
                 "--version", "2026.12", *extra])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("adaptation")
    write_labels(root / "train.csv", write_labelled_studies(root / "train", 20, seed=1, nuisance=NUISANCE))
    write_labels(root / "held.csv", write_labelled_studies(root / "held", 20, seed=2, nuisance=NUISANCE))
    zero_shot = _validate(root, tiny_model_dir, "zero-shot")
    assert _adapt(root, tiny_model_dir) == 0
    probe = _validate(root, tiny_model_dir, "probe", "--adapter", str(root / "adapter"))
    return {"root": root, "zero_shot": zero_shot, "probe": probe,
            "adapter": json.loads((root / "adapter" / "adapter.json").read_text(encoding="utf-8"))}


def _auroc(report, label):
    cases = [c for c in report["cases"] if c["task"] == TASK]
    truth = np.array([c["label"] == label for c in cases])
    return roc_auc_score(truth, [c["probabilities"][label] for c in cases])


def test_the_probe_separates_held_out_studies_better_than_zero_shot(adapted):
    for label in (NORMAL, EFFUSION):
        zero_shot = adapted["zero_shot"]["tasks"][TASK]["per_label"][label]
        probe = adapted["probe"]["tasks"][TASK]["per_label"][label]
        assert zero_shot["auroc"] == pytest.approx(_auroc(adapted["zero_shot"], label))
        assert probe["auroc"] == pytest.approx(_auroc(adapted["probe"], label))
        assert probe["auroc"] >= 0.9, probe["auroc"]
        assert probe["auroc"] > zero_shot["auroc"], (probe["auroc"], zero_shot["auroc"])
        assert probe["positives"] == 10 and probe["negatives"] == 10
    assert adapted["zero_shot"]["warnings"] and adapted["zero_shot"]["adapter"] is None


def test_adapter_is_versioned_like_a_model_and_named_by_the_report(adapted, tiny_model_dir):
    import hashlib

    from models.manifest import read_manifest

    adapter = adapted["adapter"]
    assert adapter["name"] == "test-site" and adapter["version"] == "2026.12" and adapter["created"]
    assert adapter["base_model"]["sha256"] == read_manifest(tiny_model_dir).weights_sha256
    assert adapter["training_set"]["cases"] == 20
    assert adapter["training_set"]["labels_file_sha256"] == hashlib.sha256((adapted["root"] / "train.csv").read_bytes()).hexdigest()
    assert adapter["tasks"][TASK]["classes"] == [NORMAL, EFFUSION] or set(adapter["tasks"][TASK]["classes"]) == {NORMAL, EFFUSION}
    named = adapted["probe"]["adapter"]
    assert named["sha256"] == hashlib.sha256((adapted["root"] / "adapter" / "adapter.json").read_bytes()).hexdigest()
    assert named["base_sha256"] == adapter["base_model"]["sha256"]
    assert named["training_set_sha256"] == adapter["training_set"]["sha256"]


def test_probe_equals_scikit_learn_on_the_cached_embeddings(adapted):
    from models.adapter import read_adapter

    (cache,) = (adapted["root"] / "work" / "adapter-embeddings").glob("*.npz")
    with np.load(cache) as data:
        x, y = data["embeddings"], data["label_index"]
    assert x.shape[0] == 20
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    reference = LogisticRegression(C=1.0, max_iter=5000).fit(unit, y)
    probe = read_adapter(adapted["root"] / "adapter").probes[TASK]
    ours = probe.probabilities(x)
    for column, index in enumerate(reference.classes_):
        np.testing.assert_allclose(ours[:, index], reference.predict_proba(unit)[:, column], atol=1e-6)
    untrained = [i for i, name in enumerate(probe.labels) if name not in probe.classes]
    assert untrained and not ours[:, untrained].any()


def test_embeddings_are_computed_once(adapted, tiny_model_dir, capsys):
    before = (adapted["root"] / "adapter" / "adapter.json").read_text(encoding="utf-8")
    assert _adapt(adapted["root"], tiny_model_dir) == 0
    assert "read from the cache" in capsys.readouterr().err
    after = json.loads((adapted["root"] / "adapter" / "adapter.json").read_text(encoding="utf-8"))
    assert after["tasks"] == json.loads(before)["tasks"]


def test_a_run_refuses_an_adapter_of_other_weights(adapted, tmp_path, capsys):
    from models.builders import build_tiny

    build_tiny(tmp_path / "models" / "biomedclip", seed=1)
    shutil.copytree(adapted["root"] / "held" / "study000", tmp_path / "input" / "study000")
    code = main(["run", "-i", str(tmp_path / "input"), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "models"),
                 "-w", str(tmp_path / "work"), "--allow-untrained", "--adapter", str(adapted["root"] / "adapter")])
    assert code == 2
    assert "made for model weights sha256" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_the_sr_names_the_adapter_and_passes_dciodvfy(adapted, tiny_model_dir, tmp_path):
    from operators.sr.sr_readback import read_findings
    from tests.dicom_validation import run_dciodvfy

    shutil.copytree(adapted["root"] / "held" / "study001", tmp_path / "input" / "study001")
    code = main(["run", "-i", str(tmp_path / "input"), "-o", str(tmp_path / "out"), "-m", str(tiny_model_dir.parent),
                 "-w", str(tmp_path / "work"), "--allow-untrained", "--adapter", str(adapted["root"] / "adapter")])
    assert code == 0
    (path,) = (tmp_path / "out").glob("SR-*.dcm")
    (series,) = read_findings(path).series
    import hashlib

    sha = hashlib.sha256((adapted["root"] / "adapter" / "adapter.json").read_bytes()).hexdigest()
    assert any(p.startswith(f"site adapter test-site 2026.12 sha256 {sha}: linear probe") for p in series.algorithm_parameters), \
        series.algorithm_parameters
    result = run_dciodvfy(path)
    assert result.errors == (), result.output
    for label in (NORMAL, EFFUSION):  # the figures, for the record (pytest -s)
        print(f"held-out AUROC {label}: zero-shot {adapted['zero_shot']['tasks'][TASK]['per_label'][label]['auroc']:.3f}, "
              f"probe {adapted['probe']['tasks'][TASK]['per_label'][label]['auroc']:.3f}")
