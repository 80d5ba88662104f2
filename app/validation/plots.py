"""The validation report's figures, drawn with matplotlib (Agg: no display needed) as PNG files.

Per task: the ROC curves (one per measurable label, from scikit-learn's `roc_curve`), the
reliability diagram (observed frequency against mean predicted probability per bin, from
`calibration_curve`; the diagonal is perfect calibration) and the confusion matrix at the
operating point (scikit-learn's `ConfusionMatrixDisplay`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from app.validation.metrics import TaskMetrics  # noqa: E402

DPI = 110


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(figure)
    return path


def roc_figure(task: str, metrics: TaskMetrics, path: Path) -> Path:
    """ROC curves of the task's measurable labels, AUROC and its interval in the legend."""
    figure, axes = plt.subplots(figsize=(5.2, 4.6))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUROC 0.5)")
    for label in metrics.per_label:
        if label.auroc is None:
            continue
        ci = f" [{label.auroc_ci[0]:.2f}, {label.auroc_ci[1]:.2f}]" if label.auroc_ci else ""
        axes.plot(label.roc["fpr"], label.roc["tpr"], label=f"{label.label}: {label.auroc:.2f}{ci}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity (false positive rate)",
             ylabel="sensitivity (true positive rate)", title=f"ROC, {task}")
    axes.legend(loc="lower right", fontsize=7)
    return _save(figure, path)


def reliability_figure(task: str, metrics: TaskMetrics, path: Path) -> Path:
    """Reliability diagram: per label, observed frequency against predicted probability per bin."""
    figure, axes = plt.subplots(figsize=(5.2, 4.6))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for label in metrics.per_label:
        if label.positives == 0:
            continue
        axes.plot(label.reliability["predicted"], label.reliability["observed"], marker="o",
                  label=f"{label.label}: ECE {label.ece:.3f}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="mean predicted probability", ylabel="observed frequency",
             title=f"Reliability, {task}")
    axes.legend(loc="upper left", fontsize=7)
    return _save(figure, path)


def confusion_figure(task: str, metrics: TaskMetrics, path: Path) -> Path:
    """The task's confusion matrix at the operating point (rows: true label, columns: predicted)."""
    size = max(4.6, 0.9 * len(metrics.labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    display = ConfusionMatrixDisplay(np.asarray(metrics.confusion), display_labels=metrics.labels)
    display.plot(ax=axes, colorbar=False, xticks_rotation=45, cmap="Blues")
    axes.set_title(f"Confusion matrix (argmax), {task}")
    return _save(figure, path)


def task_figures(task: str, metrics: TaskMetrics, folder: Path) -> dict[str, Path]:
    """Every figure of one task, written into `folder`; the paths by figure kind."""
    return {
        "roc": roc_figure(task, metrics, folder / f"{task}-roc.png"),
        "reliability": reliability_figure(task, metrics, folder / f"{task}-reliability.png"),
        "confusion": confusion_figure(task, metrics, folder / f"{task}-confusion.png"),
    }
