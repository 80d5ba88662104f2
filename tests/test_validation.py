"""Site validation (`biomedclip-map validate`) end to end: tiny untrained model, labelled synthetic studies.

The studies are chest radiographs of two kinds with a visible difference (`tests.fixtures_validation`);
the untrained model cannot tell them apart, and the report must say so. Every figure of
report.json is recomputed here with scikit-learn from the test's own ground truth; the report
must hold no name, ID or UID of the inputs; a bad labels file ends the command with code 2 naming
the file, line and column.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score, roc_auc_score

from app.cli import main
from app.uid_salt import installation_salt
from app.validation.cases import age_band, subgroups_of
from app.validation.command import ProgressLine
from app.validation.labels import CaseLevel, LabelsFileError, read_labels
from common.configuration import CONFIG_DIR
from common.zero_shot_tasks import load_tasks
from models.directory import open_model_dir
from operators.dicom_input.study_refs import study_ref, uid_ref
from tests.fixtures_validation import EFFUSION, NORMAL, write_labelled_studies, write_labels

TASK = "chest_radiograph"
BOOTSTRAP, SEED = 300, 7
MISSING_UID = "1.2.826.0.1.3680043.99.424242"


@pytest.fixture(scope="module")
def validated(tmp_path_factory, tiny_model_dir):
    """One `validate` run over 40 labelled studies (plus one labelled study that is not in the input)."""
    root = tmp_path_factory.mktemp("validation")
    studies = write_labelled_studies(root / "input", 40)
    labels = write_labels(root / "labels.csv", studies)
    with labels.open("a", encoding="utf-8") as handle:
        handle.write(f"{MISSING_UID},,{TASK},{NORMAL}\n")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main([
            "validate", "-i", str(root / "input"), "--labels", str(labels), "-o", str(root / "report"),
            "-m", str(tiny_model_dir.parent), "-w", str(root / "work"), "--allow-untrained",
            "--bootstrap", str(BOOTSTRAP), "--seed", str(SEED),
        ])
    return {
        "root": root, "studies": studies, "labels": labels, "code": code, "stderr": stderr.getvalue(),
        "report": json.loads((root / "report" / "report.json").read_text(encoding="utf-8")),
        "salt": installation_salt(root / "work"),
    }


def _truth_and_scores(validated):
    """Per case of the report, the test's own true label index and the report's probabilities."""
    salt, task = validated["salt"], load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml").tasks[TASK]
    truth_by_ref = {}
    for index, study in enumerate(validated["studies"]):
        ref = uid_ref(study.sop_uid, salt, prefix="in") if index % 3 == 0 else study_ref(study.study_uid, salt)
        truth_by_ref[ref] = task.label_names.index(study.label)
    cases = validated["report"]["cases"]
    assert sorted(c["case"] for c in cases) == sorted(truth_by_ref)
    truth = np.array([truth_by_ref[c["case"]] for c in cases])
    scores = np.array([[c["probabilities"][name] for name in task.label_names] for c in cases])
    return task.label_names, truth, scores, cases


def test_validate_writes_the_report_and_shows_progress(validated):
    folder = validated["root"] / "report"
    assert validated["code"] == 0
    assert {p.name for p in folder.iterdir()} == {
        "report.json", "report.html", f"{TASK}-roc.png", f"{TASK}-reliability.png", f"{TASK}-confusion.png",
    }
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "validate: analysing: 40/40 studies done" in validated["stderr"]
    assert "validate: reading images: 1/40 studies, about" in validated["stderr"]
    assert not list((validated["root"] / "report").glob("*.dcm"))  # no SR: validation writes no DICOM


def _defined(value: float):
    """scikit-learn's value to compare with the report's: None where it is undefined (a zero denominator)."""
    return None if np.isnan(value) else pytest.approx(value)


def test_every_figure_equals_scikit_learn(validated):
    names, truth, scores, _ = _truth_and_scores(validated)
    task = validated["report"]["tasks"][TASK]
    predicted = scores.argmax(axis=1)
    assert task["cases"] == 40
    assert task["class_counts"] == {name: int(np.sum(truth == i)) for i, name in enumerate(names)}
    assert task["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert task["confusion_matrix"]["rows_true_columns_predicted"] == confusion_matrix(truth, predicted, labels=range(len(names))).tolist()
    measured = 0
    for i, name in enumerate(names):
        figures, positive, chosen = task["per_label"][name], truth == i, predicted == i
        assert (figures["positives"], figures["negatives"]) == (int(positive.sum()), int((~positive).sum()))
        if positive.any():
            measured += 1
            assert figures["auroc"] == pytest.approx(roc_auc_score(positive, scores[:, i]))
            rng, values = np.random.default_rng(SEED), []
            for _ in range(BOOTSTRAP):
                pick = rng.integers(0, len(truth), len(truth))
                if positive[pick].any() and not positive[pick].all():
                    values.append(roc_auc_score(positive[pick], scores[pick, i]))
            assert figures["auroc_ci"] == pytest.approx(list(np.percentile(values, [2.5, 97.5])))
            assert figures["bootstrap_used"] == len(values)
            assert figures["sensitivity"] == _defined(recall_score(positive, chosen, zero_division=np.nan))
            assert figures["specificity"] == _defined(recall_score(~positive, ~chosen, zero_division=np.nan))
            assert figures["ppv"] == _defined(precision_score(positive, chosen, zero_division=np.nan))
            assert figures["npv"] == _defined(precision_score(~positive, ~chosen, zero_division=np.nan))
        else:
            assert figures["auroc"] is None and "no positive case" in figures["note"]
        observed, mean_predicted = calibration_curve(positive, scores[:, i], n_bins=10)
        counts, _ = np.histogram(scores[:, i], bins=np.linspace(0, 1, 11))
        counts = counts[counts > 0]
        assert figures["ece"] == pytest.approx(float(np.sum(counts / len(truth) * np.abs(observed - mean_predicted))))
        assert figures["reliability"]["observed"] == pytest.approx(observed.tolist())
    assert measured == 2


def test_subgroup_figures_equal_scikit_learn(validated):
    names, truth, scores, cases = _truth_and_scores(validated)
    subgroups = validated["report"]["tasks"][TASK]["subgroups"]
    assert set(subgroups) == {"manufacturer", "model", "body part", "sex", "age band"}
    assert set(subgroups["manufacturer"]) == {"Acme Imaging", "Borealis Medical"}
    assert set(subgroups["age band"]) == {"18-39", "65+"}
    effusion = names.index(EFFUSION)
    for group, values in subgroups.items():
        for value, figures in values.items():
            chosen = np.array([c["subgroups"][group] == value for c in cases])
            assert figures["cases"] == int(chosen.sum())
            positive = truth[chosen] == effusion
            label = figures["per_label"][EFFUSION]
            if positive.any() and not positive.all():
                assert label["auroc"] == pytest.approx(roc_auc_score(positive, scores[chosen, effusion]))


def test_untrained_model_comes_out_near_chance_and_the_report_says_so(validated):
    report = validated["report"]
    task = report["tasks"][TASK]
    for name in (NORMAL, EFFUSION):
        low, high = task["per_label"][name]["auroc_ci"]
        assert low <= 0.5 <= high
        assert "no evidence the model separates" in task["per_label"][name]["verdict"]
    assert task["summary"].startswith("No evidence the model separates these classes")
    assert any("UNTRAINED" in warning for warning in report["warnings"])
    page = (validated["root"] / "report" / "report.html").read_text(encoding="utf-8")
    assert "No evidence the model separates these classes" in page and "UNTRAINED" in page


def test_report_names_model_prompts_and_data_set(validated, tiny_model_dir):
    report, studies = validated["report"], validated["studies"]
    identity = open_model_dir(tiny_model_dir, allow_untrained=True).identity
    assert report["model"] == {"name": identity.name, "version": identity.version, "sha256": identity.sha256, "status": "untrained"}
    task = load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml").tasks[TASK]
    assert report["tasks"][TASK]["prompt_set_sha256"] == task.prompt_set_sha256
    data = report["data_set"]
    assert data["labels_file_sha256"] == hashlib.sha256(validated["labels"].read_bytes()).hexdigest()
    uids = "\n".join(sorted(s.sop_uid for s in studies))
    assert data["instance_uids_sha256"] == hashlib.sha256(uids.encode("ascii")).hexdigest()
    assert (data["cases"], data["cases_labelled"], data["instances"], data["studies_analysed"]) == (40, 41, 40, 40)
    assert data["unmatched"] == [{"line": 42, "task": TASK, "reason": data["unmatched"][0]["reason"]}]


def test_report_holds_no_patient_identifier_or_uid(validated):
    folder = validated["root"] / "report"
    texts = [(folder / name).read_text(encoding="utf-8") for name in ("report.json", "report.html")]
    blobs = [png.read_bytes() for png in folder.glob("*.png")]
    for study in validated["studies"]:
        for secret in (study.study_uid, study.sop_uid, study.patient_id, study.patient_name, study.patient_name.split("^")[1]):
            assert all(secret not in text for text in texts), secret
            assert all(secret.encode() not in blob for blob in blobs), secret
    assert all(MISSING_UID not in text for text in texts)
    assert all("1.2.826.0.1.3680043" not in text for text in texts)  # pydicom's UID root: no UID at all


def test_report_html_is_self_contained(validated):
    page = (validated["root"] / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page and 'src="' not in page.replace('src="data:image/png', "")


def test_validation_measures_what_the_map_reports(validated, tiny_model_dir, tmp_path):
    """The probabilities of the report are those the MAP writes (results JSON) for the same studies."""
    source = validated["root"] / "input"
    for name in ("study001", "study002", "study004"):  # study-level cases (every third one is by instance)
        shutil.copytree(source / name, tmp_path / "input" / name)
    shutil.copytree(validated["root"] / "work", tmp_path / "work")  # the same salt, so the same study refs
    code = main([
        "run", "-i", str(tmp_path / "input"), "-o", str(tmp_path / "output"), "-m", str(tiny_model_dir.parent),
        "-w", str(tmp_path / "work"), "--allow-untrained", "--results-json", str(tmp_path / "json"),
    ])
    assert code == 0
    cases = {c["case"]: c for c in validated["report"]["cases"]}
    for path in (tmp_path / "json").glob("*.json"):
        written = json.loads(path.read_text(encoding="utf-8"))
        (series,) = written["findings"]["series"]
        expected = cases[written["study"]]["probabilities"]
        got = {p["concept"]["meaning"].lower(): p["percent"] for p in series["probabilities"]}
        assert len(got) == len(expected)
        for (name, probability), percent in zip(expected.items(), [p["percent"] for p in series["probabilities"]]):
            assert percent == pytest.approx(100 * probability, abs=0.01), name
    assert len(list((tmp_path / "json").glob("*.json"))) == 3


BAD_LABELS = [
    ("StudyInstanceUID,task,label\n1.2.3,chest_radiograph,normal chest radiograph\n1.2.4,chest_radiograph,broken rib\n", "line 3, column 'label'"),
    ("StudyInstanceUID,task,label\n1.2.3,chest_radiogrpah,pneumonia\n", "line 2, column 'task'"),
    ("StudyInstanceUID,SOPInstanceUID,task,label\n1.2.3,1.2.3.4,chest_radiograph,pneumonia\n", "line 2: give exactly one"),
    ("StudyInstanceUID,task,label\nPatient Smith,chest_radiograph,pneumonia\n", "line 2, column 'StudyInstanceUID'"),
    ("StudyInstanceUID,task,diagnosis\n1.2.3,chest_radiograph,pneumonia\n", "line 1, column 3: unknown column 'diagnosis'"),
    ("StudyInstanceUID,task\n", "line 1: the header lacks the column(s) label"),
    ("StudyInstanceUID,task,label\n# comment\n1.2.3,chest_radiograph,pneumonia\n1.2.3,chest_radiograph,cardiomegaly\n", "line 4: this study is already labelled"),
    ("StudyInstanceUID,task,label\n1.2.3,chest_radiograph\n", "line 2: 2 value(s)"),
    ("StudyInstanceUID,task,label\n", "line 1: the labels file has a header but no case"),
]


@pytest.mark.parametrize(("content", "where"), BAD_LABELS)
def test_bad_labels_file_exits_2_naming_file_line_and_column(content, where, tmp_path, tiny_model_dir, capsys):
    labels = tmp_path / "site-labels.csv"
    labels.write_text(content, encoding="utf-8")
    (tmp_path / "input").mkdir()
    code = main(["validate", "-i", str(tmp_path / "input"), "--labels", str(labels), "-o", str(tmp_path / "report"),
                 "-m", str(tiny_model_dir.parent), "-w", str(tmp_path / "work"), "--allow-untrained"])
    assert code == 2
    assert f"{labels}, {where}" in capsys.readouterr().err
    assert not (tmp_path / "report" / "report.json").exists()


def test_labels_accept_any_case_and_a_skin_type_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("SOPInstanceUID,task,label,skin_type\n1.2.3.4,burn_photograph,  Burn Wound ,V\n", encoding="utf-8")
    (case,) = read_labels(path, load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml")).cases
    assert (case.level, case.label, case.label_index, case.skin_type) == (CaseLevel.INSTANCE, "burn wound", 0, "V")
    from pydicom.dataset import Dataset

    header = Dataset()
    header.Manufacturer, header.PatientSex, header.PatientBirthDate, header.StudyDate = "Acme", "F", "19600615", "20260101"
    assert subgroups_of(header, case) == {
        "manufacturer": "Acme", "model": "unknown", "body part": "unknown", "sex": "F", "age band": "65+", "skin type": "V",
    }
    with pytest.raises(LabelsFileError, match="not UTF-8"):
        path.write_bytes(b"StudyInstanceUID,task,label\n1.2.3,ct,caf\xe9\n")
        read_labels(path, load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml"))


@pytest.mark.parametrize(("age", "birth", "band"), [("017Y", "", "0-17"), ("040Y", "", "40-64"), ("006M", "", "0-17"),
                                                      ("", "19860102", "18-39"), ("", "19860101", "40-64"), ("", "", "unknown")])
def test_age_band(age, birth, band):
    from pydicom.dataset import Dataset

    header = Dataset()
    header.PatientAge, header.PatientBirthDate, header.StudyDate = age, birth, "20260101"
    assert age_band(header) == band


def test_prompt_set_hash_follows_every_text_embedded():
    tasks = load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml").tasks
    task = tasks[TASK]
    from dataclasses import replace

    assert replace(task, templates=task.templates[:-1]).prompt_set_sha256 != task.prompt_set_sha256
    assert replace(task, title="another title").prompt_set_sha256 == task.prompt_set_sha256
    assert len({t.prompt_set_sha256 for t in tasks.values()}) == len(tasks)


def test_progress_line_throttles_when_not_a_terminal():
    now = [0.0]
    stream = io.StringIO()
    progress = ProgressLine(stream, clock=lambda: now[0])
    progress("inference", 0, 10)
    for done in range(1, 11):
        now[0] += 2.0
        progress("inference", done, 10)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "validate: analysing: 1/10 studies, about 18 s left"
    assert lines[-1] == "validate: analysing: 10/10 studies done in 20 s"
    assert 3 <= len(lines) <= 5


# --------------------------------------------------------------------------- operating points


def _sens_spec(positive: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    called = scores >= threshold
    return recall_score(positive, called), recall_score(~positive, ~called)


@pytest.mark.parametrize("method", ["youden", "sensitivity:0.8", "specificity:0.7"])
def test_operating_points_follow_the_method(validated, method, tmp_path):
    names, truth, scores, _ = _truth_and_scores(validated)
    site = tmp_path / "site-operating-points.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", method, "-o", str(site)]) == 0
    document = json.loads(site.read_text(encoding="utf-8"))
    assert document["model"]["sha256"] == validated["report"]["model"]["sha256"]
    assert document["validation_report_sha256"] == hashlib.sha256((validated["root"] / "report" / "report.json").read_bytes()).hexdigest()
    task = document["tasks"][TASK]
    assert task["prompt_set_sha256"] == validated["report"]["tasks"][TASK]["prompt_set_sha256"]
    assert set(task["labels"]) == {NORMAL, EFFUSION}
    assert set(task["not_set"]) == set(names) - {NORMAL, EFFUSION}
    for name in (NORMAL, EFFUSION):
        i = names.index(name)
        positive, point = truth == i, task["labels"][name]
        candidates = np.unique(scores[:, i])  # every distinct probability, brute force
        sens_spec = {t: _sens_spec(positive, scores[:, i], t) for t in candidates}
        assert (point["sensitivity"], point["specificity"]) == pytest.approx(sens_spec[point["threshold"]])
        if method == "youden":
            assert sum(sens_spec[point["threshold"]]) == pytest.approx(max(a + b for a, b in sens_spec.values()))
        elif method.startswith("sensitivity"):
            assert point["threshold"] == max(t for t, (a, _) in sens_spec.items() if a >= 0.8)
        else:
            assert point["threshold"] == min(t for t, (_, b) in sens_spec.items() if b >= 0.7)


def test_operating_points_are_refused_for_other_weights_or_prompts(validated, tmp_path):
    from dataclasses import replace

    from common.operating_points import Decision, OperatingPointsError, check_operating_points

    site = tmp_path / "site.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", "youden", "--band", "0.01", "-o", str(site)]) == 0
    tasks = load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml").tasks
    prompts = {name: task.prompt_set_sha256 for name, task in tasks.items()}
    model = validated["report"]["model"]["sha256"]
    points = check_operating_points(site, model, prompts).for_task(TASK)
    threshold = points[EFFUSION].threshold
    assert points[EFFUSION].method == "Youden's J"
    assert points[EFFUSION].decide(threshold + 0.02, top1_margin=0.5) is Decision.PRESENT
    assert points[EFFUSION].decide(threshold - 0.02, top1_margin=0.5) is Decision.ABSENT
    assert points[EFFUSION].decide(threshold + 0.005, top1_margin=0.5) is Decision.INDETERMINATE
    with pytest.raises(OperatingPointsError, match="made for model weights sha256 .* but this run's model"):
        check_operating_points(site, "0" * 64, prompts)
    changed = dict(prompts, **{TASK: replace(tasks[TASK], templates=("an X-ray of {}",)).prompt_set_sha256})
    with pytest.raises(OperatingPointsError, match=f"tasks.{TASK}: made for another prompt set"):
        check_operating_points(site, model, changed)
    with pytest.raises(OperatingPointsError, match=f"tasks.{TASK}: this run has no task"):
        check_operating_points(site, model, {"ct": prompts["ct"]})
    document = json.loads(site.read_text(encoding="utf-8"))
    document["tasks"][TASK]["labels"][EFFUSION]["threshold"] = 1.5
    site.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(OperatingPointsError, match="threshold"):
        check_operating_points(site, model, prompts)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--method", "youdens"], "expected 'youden', 'sensitivity:T' or 'specificity:T'"),
    (["--method", "sensitivity:1.2"], "must be a number between 0 and 1"),
    (["--method", "youden", "--band", "0.7"], "--band must be in"),
])
def test_operating_points_command_refuses_bad_arguments(validated, arguments, message, tmp_path, capsys):
    code = main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"), *arguments,
                 "-o", str(tmp_path / "site.json")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "site.json").exists()


def test_operating_points_need_a_validation_report(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text('{"study": "st-0"}', encoding="utf-8")
    assert main(["operating-points", "--report", str(other), "--method", "youden", "-o", str(tmp_path / "s.json")]) == 2
    assert f"{other}: not a validation report" in capsys.readouterr().err


def _map_run(validated, tiny_model_dir, tmp_path, names=("study001", "study002", "study004"), *extra: str) -> tuple[int, Path]:
    """The MAP (`run`) on a few of the labelled studies, with the validation's salt; exit code and folder."""
    for name in names:
        shutil.copytree(validated["root"] / "input" / name, tmp_path / "input" / name)
    shutil.copytree(validated["root"] / "work", tmp_path / "work", dirs_exist_ok=True)
    code = main([
        "run", "-i", str(tmp_path / "input"), "-o", str(tmp_path / "output"), "-m", str(tiny_model_dir.parent),
        "-w", str(tmp_path / "work"), "--allow-untrained", "--results-json", str(tmp_path / "json"), *extra,
    ])
    return code, tmp_path


@pytest.mark.parametrize("band", [0.0, 0.4])
def test_sr_reports_present_absent_indeterminate_at_the_site_operating_points(validated, tiny_model_dir, tmp_path, band):
    from operators.outputs.result_json import findings_document
    from operators.sr import coding
    from operators.sr.sr_readback import read_findings
    from tests.dicom_validation import run_dciodvfy

    site = tmp_path / "site.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", "youden", "--band", str(band), "-o", str(site)]) == 0
    points = json.loads(site.read_text(encoding="utf-8"))["tasks"][TASK]["labels"]
    code, folder = _map_run(validated, tiny_model_dir, tmp_path, ("study001", "study002", "study004"), "--operating-points", str(site))
    assert code == 0
    cases = {c["case"]: c for c in validated["report"]["cases"]}
    reports = sorted((folder / "output").glob("SR-*.dcm"))
    assert len(reports) == 3
    for path in reports:
        findings = read_findings(path)
        (series,) = findings.series
        probabilities = cases[path.stem.removeprefix("SR-")]["probabilities"]
        expected = []
        for name in (NORMAL, EFFUSION):
            p, t = probabilities[name], points[name]["threshold"]
            value = coding.INDETERMINATE if abs(p - t) < band else coding.PRESENT if p >= t else coding.ABSENT
            expected.append((value, f"operating point {name}: threshold {100 * t:.2f} %, Youden's J"))
        assert [value for _, value in series.decisions] == [value for value, _ in expected]
        assert [label.meaning for label, _ in series.decisions] == ["Normal", "Pleural effusion"]
        for _, words in expected:
            assert any(parameter.startswith(words) for parameter in series.algorithm_parameters), series.algorithm_parameters
        assert any("at the site's validated operating points" in line and "Youden's J" in line for line in findings.narrative)
        assert not any("No site-validated threshold exists" in line for line in findings.narrative)
        written = json.loads((folder / "json" / f"{path.stem.removeprefix('SR-')}.json").read_text(encoding="utf-8"))
        assert written["findings"] == findings_document(findings)
        report = run_dciodvfy(path)
        assert report.errors == (), report.output
    if band == 0.4:
        assert all(value == coding.INDETERMINATE for path in reports for _, value in read_findings(path).series[0].decisions)


def test_sr_without_operating_points_says_no_site_validated_threshold(validated, tiny_model_dir, tmp_path):
    from operators.sr.sr_content import NO_OPERATING_POINTS_NOTICE
    from operators.sr.sr_readback import read_findings

    code, folder = _map_run(validated, tiny_model_dir, tmp_path, ("study001",))
    assert code == 0
    (path,) = (folder / "output").glob("SR-*.dcm")
    findings = read_findings(path)
    assert NO_OPERATING_POINTS_NOTICE in findings.narrative
    assert findings.series[0].decisions == ()


def test_a_run_refuses_operating_points_of_other_weights_or_prompts(validated, tiny_model_dir, tmp_path, capsys):
    site = tmp_path / "site.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", "youden", "-o", str(site)]) == 0
    document = json.loads(site.read_text(encoding="utf-8"))
    document["model"]["sha256"] = "f" * 64
    other_weights = tmp_path / "other-weights.json"
    other_weights.write_text(json.dumps(document), encoding="utf-8")
    capsys.readouterr()
    code, folder = _map_run(validated, tiny_model_dir, tmp_path, ("study001",), "--operating-points", str(other_weights))
    assert code == 2
    assert f"{other_weights}: made for model weights sha256 ffffffffffff" in capsys.readouterr().err
    assert not list((folder / "output").glob("*.dcm"))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text((CONFIG_DIR / "zero_shot_tasks.yaml").read_text(encoding="utf-8").replace("a normal chest X-ray", "a clear chest X-ray"), encoding="utf-8")
    code = main(["run", "-i", str(folder / "input"), "-o", str(folder / "output"), "-m", str(tiny_model_dir.parent),
                 "-w", str(folder / "work"), "--allow-untrained", "--tasks", str(tasks), "--operating-points", str(site)])
    assert code == 2
    assert f"tasks.{TASK}: made for another prompt set" in capsys.readouterr().err


def test_progress_covers_the_measuring(validated):
    # all cases, then manufacturer 2, model 2, body part 1, sex 2, age band 2
    assert "validate: measuring chest_radiograph: 10/10 case sets (all, then each subgroup) done in" in validated["stderr"]


def test_validate_ignores_the_operating_points_a_map_host_configures(validated, tiny_model_dir, tmp_path, monkeypatch):
    """A new model is validated before it has operating points: the MAP's site file must not block it."""
    stale = tmp_path / "stale-site.json"
    stale.write_text('{"kind": "biomedclip-map operating points"}', encoding="utf-8")
    monkeypatch.setenv("BIOMEDCLIP_MAP_OPERATING_POINTS", str(stale))
    for name in ("study001", "study002"):
        shutil.copytree(validated["root"] / "input" / name, tmp_path / "input" / name)
    labels = write_labels(tmp_path / "labels.csv", validated["studies"][1:3], by_instance_every=0)
    code = main(["validate", "-i", str(tmp_path / "input"), "--labels", str(labels), "-o", str(tmp_path / "report"),
                 "-m", str(tiny_model_dir.parent), "-w", str(tmp_path / "work"), "--allow-untrained", "--bootstrap", "20"])
    assert code == 0
    assert json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))["data_set"]["cases"] == 2


def test_the_dicom_node_checks_its_operating_points_when_it_opens_the_model(validated, tiny_model_dir, tmp_path):
    import yaml

    from app.node.config import load_node_config
    from app.node.runner import ModelUnavailable, node_configuration, open_analyzer

    site = tmp_path / "site.json"
    assert main(["operating-points", "--report", str(validated["root"] / "report" / "report.json"),
                 "--method", "youden", "-o", str(site)]) == 0
    document = json.loads(site.read_text(encoding="utf-8"))
    document["model"]["sha256"] = "e" * 64
    (tmp_path / "other-weights.json").write_text(json.dumps(document), encoding="utf-8")

    def config(points: str):
        path = tmp_path / f"node-{points}.yaml"
        path.write_text(yaml.safe_dump({"spool": {"path": "spool"}, "processing": {
            "models": str(tiny_model_dir.parent), "allow_untrained": True, "operating_points": points}}), encoding="utf-8")
        return load_node_config(path)

    (tmp_path / "scratch").mkdir()
    good = config("site.json")
    assert good.processing.operating_points == site  # relative to the configuration file
    assert open_analyzer(good, tmp_path / "scratch", node_configuration(good)) is not None
    bad = config("other-weights.json")
    with pytest.raises(ModelUnavailable, match=r"made for model weights sha256 eeeeeeeeeeee.*processing\.operating_points"):
        open_analyzer(bad, tmp_path / "scratch", node_configuration(bad))


@pytest.mark.parametrize(("probability", "margin", "expected"), [
    (0.90, 0.30, "present"), (0.10, 0.30, "absent"), (0.52, 0.30, "indeterminate"), (0.48, 0.30, "indeterminate"),
    (0.90, 0.05, "indeterminate"), (0.56, 0.30, "present"), (0.44, 0.30, "absent"),
])
def test_decision_rule_band_and_top1_margin(probability, margin, expected):
    from common.operating_points import OperatingPoint

    point = OperatingPoint(threshold=0.5, method="Youden's J", band=0.05, min_top1_margin=0.1)
    assert point.decide(probability, top1_margin=margin).value == expected
