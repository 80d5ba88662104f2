"""The validation report: `report.json`, the PNG figures and one self-contained `report.html`.

The report names what was measured so that it can be tied to exactly one configuration: the
model (name, version, weights SHA-256, status), each task's prompt set (SHA-256 of every text
embedded for it), and the data set (number of cases, SHA-256 of the labels file and of the
sorted SOP Instance UIDs analysed). It never holds a patient identifier or a UID: cases are the
salted references of the logs, unmatched cases are named by their line in the labels file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app import APP_NAME, __version__
from app.validation.cases import CaseSet, ScoredCase
from app.validation.labels import LabelSet
from app.validation.metrics import OPERATING_POINT, LabelMetrics, MetricSettings, TaskMetrics, task_metrics
from common.atomic_files import Durability, write_atomically, write_json_atomically
from common.model_identity import ModelIdentity
from common.zero_shot_tasks import ZeroShotTask

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
UNTRAINED_WARNING = (
    "The model is UNTRAINED (random weights): these figures measure nothing but chance and must not be used "
    "to decide anything about patients."
)
#: Fields of a label's figures repeated per subgroup (the curves stay in the task's section).
SUBGROUP_FIELDS = ("label", "positives", "negatives", "auroc", "auroc_ci", "bootstrap_used", "sensitivity",
                   "specificity", "ppv", "npv", "ece", "verdict", "note")


@dataclass
class TaskResult:
    """One task's figures, overall and per subgroup value, and its figure files once drawn."""

    task: ZeroShotTask
    metrics: TaskMetrics
    subgroups: dict[str, dict[str, TaskMetrics]]
    figures: dict[str, Path] = field(default_factory=dict)


@dataclass
class ValidationResult:
    """Everything a validation measured, ready to be written."""

    model: ModelIdentity
    backend: str
    labels: LabelSet
    cases: CaseSet
    settings: MetricSettings
    tasks: dict[str, TaskResult]
    studies_analysed: int
    studies_not_analysed: int
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _arrays(cases: list[ScoredCase]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([c.label_index for c in cases], dtype=int), np.vstack([c.probabilities for c in cases])


def measure_task(
    task: ZeroShotTask, cases: list[ScoredCase], settings: MetricSettings, progress: Callable[[str, int, int], None] | None = None
) -> TaskResult:
    """The task's figures over all its cases and for each subgroup value the headers (or labels) give.

    `progress` is told (stage, done, total) as each set of cases (all, then each subgroup value) is
    measured: the bootstrap makes this take a while on a large data set.
    """
    truth, probabilities = _arrays(cases)
    groups = {name: sorted({case.subgroups.get(name, "unknown") for case in cases})
              for name in dict.fromkeys(key for case in cases for key in case.subgroups)}
    stage, total = f"measuring {task.name}", 1 + sum(len(values) for values in groups.values())
    tell = progress or (lambda *_: None)
    tell(stage, 0, total)
    overall = task_metrics(task.label_names, truth, probabilities, settings)
    done = 1
    tell(stage, done, total)
    subgroups: dict[str, dict[str, TaskMetrics]] = {}
    for name, values in groups.items():
        subgroups[name] = {}
        for value in values:
            chosen = [i for i, case in enumerate(cases) if case.subgroups.get(name, "unknown") == value]
            subgroups[name][value] = task_metrics(task.label_names, truth[chosen], probabilities[chosen], settings)
            done += 1
            tell(stage, done, total)
    return TaskResult(task, overall, subgroups)


def _label_json(metrics: LabelMetrics, *, full: bool) -> dict[str, Any]:
    data = asdict(metrics)
    return data if full else {key: data[key] for key in SUBGROUP_FIELDS}


def _task_json(metrics: TaskMetrics, *, full: bool) -> dict[str, Any]:
    return {
        "cases": metrics.cases,
        "class_counts": metrics.class_counts,
        "accuracy": metrics.accuracy,
        "confusion_matrix": {"labels": metrics.labels, "rows_true_columns_predicted": metrics.confusion},
        "per_label": {m.label: _label_json(m, full=full) for m in metrics.per_label},
    }


def task_summary(result: TaskResult) -> str:
    """One sentence on what the task's figures show, for the top of its section."""
    measured = [m for m in result.metrics.per_label if m.auroc_ci is not None]
    if not measured:
        return "No label of this task has both positive and negative cases: nothing can be concluded."
    chance = [m.label for m in measured if m.auroc_ci[0] <= 0.5 <= m.auroc_ci[1]]
    if len(chance) == len(measured):
        return ("No evidence the model separates these classes: for every measured label the AUROC 95 % "
                "interval includes 0.5 (chance).")
    if chance:
        return f"The AUROC 95 % interval includes 0.5 (chance) for: {', '.join(chance)}; see each label below."
    return "For every measured label the AUROC 95 % interval excludes 0.5; see each label's direction below."


def report_document(result: ValidationResult) -> dict[str, Any]:
    """The JSON report (see the module docstring); figure paths are relative to the report folder."""
    return {
        "report": f"{APP_NAME} site validation",
        "product": {"name": APP_NAME, "version": __version__},
        "created": result.created,
        "model": {"name": result.model.name, "version": result.model.version, "sha256": result.model.sha256,
                  "status": result.model.status},
        "adapter": asdict(result.model.adapter) if result.model.adapter is not None else None,
        "backend": result.backend,
        "warnings": [UNTRAINED_WARNING] if result.model.untrained else [],
        "data_set": {
            "cases": len(result.cases.scored),
            "cases_labelled": len(result.labels.cases),
            "labels_file_sha256": result.labels.sha256,
            "instances": result.cases.instance_count,
            "instance_uids_sha256": result.cases.instance_uids_sha256,
            "studies_analysed": result.studies_analysed,
            "studies_not_analysed": result.studies_not_analysed,
            "unmatched": [asdict(case) for case in result.cases.unmatched],
        },
        "method": {
            "operating_point": OPERATING_POINT,
            "bootstrap_resamples": result.settings.bootstrap,
            "bootstrap_seed": result.settings.seed,
            "confidence": 0.95,
            "calibration_bins": result.settings.calibration_bins,
            "calibration_strategy": "uniform",
            "metrics": "scikit-learn: roc_auc_score, roc_curve, confusion_matrix, accuracy_score, calibration_curve",
        },
        "tasks": {
            name: {
                "title": task.task.title,
                "labels": task.task.label_names,
                "prompt_set_sha256": task.task.prompt_set_sha256,
                "summary": task_summary(task),
                **_task_json(task.metrics, full=True),
                "subgroups": {
                    group: {value: _task_json(m, full=False) for value, m in values.items()}
                    for group, values in task.subgroups.items()
                },
                "figures": {kind: path.name for kind, path in task.figures.items()},
            }
            for name, task in result.tasks.items()
        },
        "cases": [
            {"case": c.ref, "task": c.task, "label": result.tasks[c.task].task.label_names[c.label_index],
             "probabilities": dict(zip(result.tasks[c.task].task.label_names, map(float, c.probabilities))),
             "subgroups": c.subgroups}
            for c in result.cases.scored
        ],
    }


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _auroc_cell(m: LabelMetrics) -> str:
    if m.auroc is None:
        return "—"
    ci = f" [{m.auroc_ci[0]:.2f}, {m.auroc_ci[1]:.2f}]" if m.auroc_ci else ""
    return f"{m.auroc:.2f}{ci}"


def _label_rows(metrics: TaskMetrics, *, verdicts: bool) -> str:
    rows = []
    for m in metrics.per_label:
        cells = [m.label, str(m.positives), str(m.negatives), _auroc_cell(m), _number(m.sensitivity),
                 _number(m.specificity), _number(m.ppv), _number(m.npv), _number(m.ece, 3)]
        if verdicts:
            cells.append(m.note or m.verdict)
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


LABEL_HEADER = ("<tr><th>label</th><th>positive</th><th>negative</th><th>AUROC [95 % CI]</th><th>sensitivity</th>"
                "<th>specificity</th><th>PPV</th><th>NPV</th><th>ECE</th>")


def _image(path: Path, alt: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _task_html(name: str, task: TaskResult) -> str:
    parts = [f"<h2>{html.escape(task.task.title)} <small>({html.escape(name)})</small></h2>",
             f"<p class=summary>{html.escape(task_summary(task))}</p>",
             f"<p>{task.metrics.cases} case(s); accuracy at the operating point (argmax) "
             f"{_number(task.metrics.accuracy)}; prompt set SHA-256 <code>{task.task.prompt_set_sha256}</code>.</p>",
             f"<table>{LABEL_HEADER}<th>what it shows</th></tr>\n{_label_rows(task.metrics, verdicts=True)}</table>",
             "<div class=figures>" + "".join(_image(path, f"{kind} {name}") for kind, path in task.figures.items()) + "</div>"]
    for group, values in task.subgroups.items():
        parts.append(f"<h3>By {html.escape(group)}</h3>")
        for value, metrics in values.items():
            parts.append(f"<h4>{html.escape(group)}: {html.escape(value)} ({metrics.cases} case(s))</h4>"
                         f"<table>{LABEL_HEADER}</tr>\n{_label_rows(metrics, verdicts=False)}</table>")
    return "\n".join(parts)


ABOUT = """<h2>How to read this report</h2>
<ul>
<li><b>AUROC</b>: the chance that a random case with the label gets a higher probability for it than a random case
without it (0.5 is chance, 1 perfect). The 95 % interval comes from resampling the cases (bootstrap); an interval that
includes 0.5 means the data give no evidence that the model separates the label from the others.</li>
<li><b>Sensitivity, specificity, PPV, NPV</b> are taken at the operating point: a case counts as positive for the label
the model gives the highest probability (argmax), as the report names its top finding. PPV and NPV depend on how common
the label is in this data set.</li>
<li><b>ROC curves</b>: sensitivity against 1 − specificity over every threshold; the diagonal is chance.</li>
<li><b>Reliability diagram</b>: for cases binned by predicted probability, how often the label was really present. On
the diagonal, a probability of 0.7 means the label is present 7 times in 10. <b>ECE</b> (expected calibration error) is
the cases-weighted mean distance from the diagonal.</li>
<li><b>Confusion matrix</b>: rows are the true labels, columns the labels the model chose.</li>
<li>Subgroups come from the image headers (manufacturer, model, body part, sex, age band) and, for photographs, the
skin type column of the labels file. Small subgroups give wide intervals.</li>
</ul>"""


def _adapter_cell(model: ModelIdentity) -> str:
    """The adapter row of the HTML header: which linear probes replaced zero-shot, or none."""
    adapter = model.adapter
    if adapter is None:
        return "none: zero-shot prompts"
    return (f"{html.escape(adapter.name)} {html.escape(adapter.version)} (linear probes on the frozen image embeddings), "
            f"SHA-256 <code>{adapter.sha256}</code>, fitted {html.escape(adapter.created)} on training set SHA-256 "
            f"<code>{adapter.training_set_sha256}</code>")


def report_html(result: ValidationResult) -> str:
    """The self-contained HTML report (figures embedded as base64 PNGs)."""
    doc = report_document(result)
    data = doc["data_set"]
    warning = f'<p class=warning>{html.escape(UNTRAINED_WARNING)}</p>' if result.model.untrained else ""
    unmatched = "".join(f"<li>line {c.line} ({html.escape(c.task)}): {html.escape(c.reason)}</li>" for c in result.cases.unmatched)
    body = "\n".join(_task_html(name, task) for name, task in result.tasks.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(APP_NAME)} site validation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
td, th {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; }}
.warning {{ background: #fdd; border: 2px solid #c00; padding: 0.7em; font-weight: bold; }}
.summary {{ font-weight: bold; }}
.figures img {{ max-width: 32%; margin-right: 1%; vertical-align: top; }}
code {{ font-size: 0.85em; }}
</style></head><body>
<h1>{html.escape(APP_NAME)} {html.escape(__version__)}: site validation</h1>
{warning}
<table>
<tr><th>model</th><td>{html.escape(result.model.name)} {html.escape(result.model.version)} (status {html.escape(result.model.status)}),
weights SHA-256 <code>{result.model.sha256}</code>, backend {html.escape(result.backend)}</td></tr>
<tr><th>site adapter</th><td>{_adapter_cell(result.model)}</td></tr>
<tr><th>data set</th><td>{data["cases"]} case(s) scored of {data["cases_labelled"]} labelled, {data["instances"]} image(s),
{data["studies_analysed"]} stud(ies) analysed; labels file SHA-256 <code>{data["labels_file_sha256"]}</code>;
instance UIDs SHA-256 <code>{data["instance_uids_sha256"]}</code></td></tr>
<tr><th>method</th><td>operating point argmax; AUROC 95 % interval from {result.settings.bootstrap} bootstrap resamples
(seed {result.settings.seed}); calibration over {result.settings.calibration_bins} uniform bins; scikit-learn</td></tr>
<tr><th>created</th><td>{html.escape(result.created)}</td></tr>
</table>
{f"<h3>Labelled cases without a result</h3><ul>{unmatched}</ul>" if unmatched else ""}
{body}
{ABOUT}
</body></html>
"""


def write_report(result: ValidationResult, folder: Path) -> dict[str, Path]:
    """Draw the figures and write report.json and report.html into `folder`; every path written."""
    from app.validation.plots import task_figures

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, task in result.tasks.items():
        task.figures = task_figures(name, task.metrics, folder)
        written.update({f"{name}-{kind}": path for kind, path in task.figures.items()})
    written["json"] = write_json_atomically(folder / REPORT_JSON, report_document(result), durability=Durability.FILE)
    written["html"] = write_atomically(folder / REPORT_HTML, report_html(result).encode("utf-8"), durability=Durability.FILE)
    return written
