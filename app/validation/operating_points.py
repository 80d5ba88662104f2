"""Choosing a site's operating points from its validation report (`biomedclip-map operating-points`).

For each task and label of `report.json` with positive and negative cases, scikit-learn's
`roc_curve` of that label (one against the others, over the report's cases, every distinct
probability kept) gives the candidate thresholds; a case counts as positive when its probability is at or above the threshold. The
method picks one:

- `youden`: the threshold maximising Youden's J = sensitivity + specificity − 1;
- `sensitivity:T`: the highest threshold whose sensitivity is at least T (the best specificity
  that keeps the target sensitivity);
- `specificity:T`: the lowest threshold whose specificity is at least T (the best sensitivity
  that keeps the target specificity).

The site file (`common.operating_points`) records each threshold with the sensitivity and
specificity it reached on the validation cases, and is tied to the report's model hash and
each task's prompt-set hash, and to the report itself by its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from common.atomic_files import Durability, write_json_atomically
from common.operating_points import FILE_FORMAT, FILE_KIND, METHODS, OperatingPointsError


class ReportReadError(ValueError):
    """The validation report cannot be used to choose operating points; the message names the file."""


@dataclass(frozen=True)
class Method:
    """How to choose a threshold: `youden`, or a target sensitivity or specificity in (0, 1)."""

    name: str
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Method":
        """'youden', 'sensitivity:0.9' or 'specificity:0.95'; ValueError says what is accepted."""
        name, _, target = text.strip().lower().partition(":")
        if name not in METHODS or (name == "youden") != (target == ""):
            raise ValueError(f"{text!r}: expected 'youden', 'sensitivity:T' or 'specificity:T' with T between 0 and 1")
        if name == "youden":
            return cls(name)
        try:
            value = float(target)
        except ValueError:
            value = -1.0
        if not 0 < value < 1:
            raise ValueError(f"{text!r}: the target {name} must be a number between 0 and 1 (exclusive), e.g. 0.9")
        return cls(name, value)


@dataclass(frozen=True)
class ChosenPoint:
    """A label's chosen threshold and what it reached on the validation cases."""

    threshold: float
    sensitivity: float
    specificity: float
    positives: int
    negatives: int


def choose_threshold(truth: np.ndarray, scores: np.ndarray, method: Method) -> ChosenPoint | str:
    """The threshold `method` picks on this label's ROC curve, or why there is none."""
    # every distinct score is a candidate: the intermediate points scikit-learn drops by default
    # can be exactly the highest threshold that keeps a target sensitivity
    fpr, tpr, thresholds = roc_curve(truth, scores, drop_intermediate=False)
    # index 0 is scikit-learn's "nothing positive" point (threshold +inf): never an operating point
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method.name == "youden":
        index = int(np.argmax(tpr - fpr))
    elif method.name == "sensitivity":
        index = int(np.argmax(tpr >= method.target))  # tpr rises along the curve: the first is the highest threshold
    else:
        allowed = np.flatnonzero(1 - fpr >= method.target)
        if not allowed.size:
            return f"no threshold reaches specificity {method.target:.2f} on these cases"
        index = int(allowed[-1])
    return ChosenPoint(float(thresholds[index]), float(tpr[index]), float(1 - fpr[index]), int(truth.sum()), int((~truth).sum()))


def _read_report(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        data = path.read_bytes()
        report = json.loads(data)
    except OSError as exc:
        raise ReportReadError(f"{path}: the validation report cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ReportReadError(f"{path}: not a JSON validation report ({exc})") from exc
    if not isinstance(report, dict) or not str(report.get("report", "")).endswith("site validation") or "cases" not in report:
        raise ReportReadError(f"{path}: not a validation report of 'biomedclip-map validate' (report.json)")
    return report, data


def choose_operating_points(report_path: Path, method: Method, *, band: float, min_top1_margin: float) -> dict[str, Any]:
    """The site file's content for the report at `report_path` (see the module docstring)."""
    report, data = _read_report(Path(report_path))
    tasks: dict[str, Any] = {}
    for name, task in report["tasks"].items():
        cases = [case for case in report["cases"] if case["task"] == name]
        labels, not_set = {}, {}
        for label in task["labels"]:
            truth = np.array([case["label"] == label for case in cases])
            if truth.all() or not truth.any():
                not_set[label] = f"no {'negative' if truth.all() else 'positive'} case of this label in the validation"
                continue
            chosen = choose_threshold(truth, np.array([case["probabilities"][label] for case in cases]), method)
            if isinstance(chosen, str):
                not_set[label] = chosen
            else:
                labels[label] = chosen.__dict__
        tasks[name] = {"prompt_set_sha256": task["prompt_set_sha256"], "labels": labels, "not_set": not_set}
    if not any(task["labels"] for task in tasks.values()):
        raise OperatingPointsError(f"{report_path}: no label of any task can get an operating point (each needs positive and negative cases)")
    return {
        "kind": FILE_KIND,
        "format": FILE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": {"name": method.name, "target": method.target},
        "indeterminate": {"band": band, "min_top1_margin": min_top1_margin},
        "model": {key: report["model"][key] for key in ("name", "version", "sha256")},
        "validation_report_sha256": hashlib.sha256(data).hexdigest(),
        "data_set": {key: report["data_set"][key] for key in ("cases", "labels_file_sha256", "instance_uids_sha256")},
        "tasks": tasks,
    }


def write_operating_points(document: dict[str, Any], path: Path) -> Path:
    """Write the site file (JSON) atomically."""
    return write_json_atomically(path, document, durability=Durability.FILE)
