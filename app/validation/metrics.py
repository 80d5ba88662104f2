"""The validation's figures, computed with scikit-learn (no ROC or calibration code of our own).

For each task, with `y` the true label indices and `P` the (cases × labels) probabilities:

- per label, one-vs-rest: AUROC (`roc_auc_score`) with a seeded bootstrap 95 % interval
  (cases resampled with replacement; resamples holding one class only are skipped and counted);
  sensitivity, specificity, PPV and NPV at the operating point, from `confusion_matrix`; the
  expected calibration error from `calibration_curve` (uniform bins; each bin's |observed −
  predicted| weighted by its share of the cases) and the curve itself for the reliability
  diagram; the number of positive and negative cases;
- for the task: the confusion matrix over its labels and the accuracy at the operating point.

The operating point is *argmax*: a case is positive for the label with the highest probability,
the way the SR names the top label today. A figure that cannot be measured (no positive case, a
zero denominator) is None and `LabelMetrics.note` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

OPERATING_POINT = "argmax"
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0
CALIBRATION_BINS = 10
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricSettings:
    """How the figures are computed: bootstrap resamples and seed, calibration bins."""

    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = DEFAULT_SEED
    calibration_bins: int = CALIBRATION_BINS


@dataclass
class LabelMetrics:
    """One label's one-vs-rest figures (None where not measurable; `note` says why)."""

    label: str
    positives: int
    negatives: int
    auroc: float | None = None
    auroc_ci: tuple[float, float] | None = None
    bootstrap_used: int = 0
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    ece: float | None = None
    reliability: dict[str, list[float]] = field(default_factory=dict)
    roc: dict[str, list[float]] = field(default_factory=dict)
    verdict: str = ""
    note: str = ""


@dataclass
class TaskMetrics:
    """A task's figures: per label, the confusion matrix (rows true, columns predicted) and accuracy."""

    labels: list[str]
    cases: int
    class_counts: dict[str, int]
    per_label: list[LabelMetrics]
    confusion: list[list[int]]
    accuracy: float | None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def bootstrap_auroc(truth: np.ndarray, scores: np.ndarray, resamples: int, seed: int) -> tuple[tuple[float, float] | None, int]:
    """The 95 % percentile interval of AUROC over seeded bootstrap resamples, and how many resamples counted."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(truth), len(truth))
        sample = truth[index]
        if sample.min() == sample.max():
            continue  # one class only: AUROC is undefined for this resample
        values.append(roc_auc_score(sample, scores[index]))
    if not values:
        return None, 0
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high)), len(values)


def expected_calibration_error(truth: np.ndarray, scores: np.ndarray, bins: int) -> tuple[float, dict[str, list[float]]]:
    """ECE over `calibration_curve`'s uniform bins, and the curve (observed, predicted, cases per bin).

    `calibration_curve` returns the non-empty bins only; the cases per bin are counted with the
    same bin edges and assignment it uses (`np.searchsorted` on the inner edges).
    """
    observed, predicted = calibration_curve(truth, scores, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=bins)
    counts = counts[counts != 0]
    ece = float(np.sum(counts / len(truth) * np.abs(observed - predicted)))
    return ece, {"observed": observed.tolist(), "predicted": predicted.tolist(), "cases": counts.astype(int).tolist()}


def verdict(auroc_ci: tuple[float, float] | None) -> str:
    """What the AUROC interval lets a committee conclude, in one sentence."""
    if auroc_ci is None:
        return "not measurable"
    low, high = auroc_ci
    if low <= 0.5 <= high:
        return "no evidence the model separates this label from the others (the AUROC 95 % interval includes 0.5, chance)"
    if low > 0.5:
        return "the model separates this label from the others better than chance (AUROC 95 % interval above 0.5)"
    return "the model ranks this label worse than chance (AUROC 95 % interval below 0.5): its scores are inverted"


def label_metrics(name: str, truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray, settings: MetricSettings) -> LabelMetrics:
    """One label's figures from its one-vs-rest truth, its probabilities and the operating point's decisions."""
    positives = int(truth.sum())
    result = LabelMetrics(label=name, positives=positives, negatives=int(len(truth) - positives))
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(truth, predicted, labels=[False, True]).ravel())
    result.tp, result.fp, result.tn, result.fn = tp, fp, tn, fn
    result.sensitivity, result.specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    result.ppv, result.npv = _ratio(tp, tp + fp), _ratio(tn, tn + fn)
    result.ece, result.reliability = expected_calibration_error(truth, scores, settings.calibration_bins)
    if positives == 0 or result.negatives == 0:
        result.note = f"AUROC not measurable: no {'positive' if positives == 0 else 'negative'} case of this label"
        result.verdict = verdict(None)
        return result
    result.auroc = float(roc_auc_score(truth, scores))
    result.auroc_ci, result.bootstrap_used = bootstrap_auroc(truth, scores, settings.bootstrap, settings.seed)
    fpr, tpr, _ = roc_curve(truth, scores)
    result.roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    result.verdict = verdict(result.auroc_ci)
    return result


def task_metrics(labels: list[str], truth: np.ndarray, probabilities: np.ndarray, settings: MetricSettings) -> TaskMetrics:
    """Every figure of one task (see the module docstring); `truth` are label indices."""
    predicted = np.argmax(probabilities, axis=1)
    indices = list(range(len(labels)))
    return TaskMetrics(
        labels=list(labels),
        cases=int(len(truth)),
        class_counts={name: int(np.sum(truth == i)) for i, name in enumerate(labels)},
        per_label=[
            label_metrics(name, truth == i, probabilities[:, i], predicted == i, settings) for i, name in enumerate(labels)
        ],
        confusion=confusion_matrix(truth, predicted, labels=indices).astype(int).tolist(),
        accuracy=float(accuracy_score(truth, predicted)) if len(truth) else None,
    )
