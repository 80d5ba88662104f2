"""`biomedclip-map drift`: has the model's behaviour moved since its site validation?

It compares the probabilities of recent audit records (each analysed series' task, label
probabilities and decisions; no identifiers) with those of the validation report's cases, for
the same weights: per task and label, the population stability index (PSI) of the probability
distributions, over bins cut at the validation's quantiles (ten, fewer for small samples), and, with the site's operating
points, the share of indeterminate results against the share the same operating points give on
the validation's cases. A label whose PSI reaches `psi_limit` (0.25 by convention: a major shift)
or an indeterminate share that grew by `indeterminate_increase` or more says the behaviour moved.

Exit codes: 0 no sign of drift (or too few recent results to tell, said plainly); 1 the
behaviour moved; 2 nothing could be compared (unreadable files, no record of these weights).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.run import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED
from common.operating_points import OperatingPointsError, check_operating_points

logger = logging.getLogger("biomedclip_map.drift")

PSI_LIMIT = 0.25
INDETERMINATE_INCREASE = 0.10
MIN_RECENT = 20
BINS = 10


class DriftInputError(ValueError):
    """The audit log or the validation report cannot be used; the message names the file."""


@dataclass
class DriftResult:
    """What was compared and what it showed; `verdict` is the one line said to the administrator."""

    recent: int
    psi: dict[str, float] = field(default_factory=dict)
    indeterminate: dict[str, tuple[float, float]] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)
    verdict: str = ""


def bins_for(reference: int, recent: int) -> int:
    """Quantile bins for the PSI: ten, fewer for small samples (about ten cases a bin), at least two.

    PSI from few cases per bin is mostly noise (its expected value with no shift at all is about
    (bins − 1)(1/n₁ + 1/n₂)), so small samples get coarser bins rather than false alarms.
    """
    return int(max(2, min(BINS, min(reference, recent) // 10)))


def population_stability_index(reference: np.ndarray, recent: np.ndarray, bins: int | None = None) -> float:
    """PSI = Σ (recent − reference share) · ln(recent / reference share), bins cut at the reference's quantiles.

    Each bin's count gets half a case added (so an empty bin gives a large, finite term).
    """
    bins = bins or bins_for(len(reference), len(recent))
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    ref = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1) + 0.5
    new = np.bincount(np.searchsorted(inner, recent, side="right"), minlength=len(inner) + 1) + 0.5
    ref, new = ref / ref.sum(), new / new.sum()
    return float(np.sum((new - ref) * np.log(new / ref)))


def read_recent(audit_log: Path, model_sha256: str, last: int) -> list[dict]:
    """The task summaries of the last `last` analysed studies of these weights in the audit log."""
    try:
        lines = Path(audit_log).read_text(encoding="ascii").splitlines()
    except OSError as exc:
        raise DriftInputError(f"{audit_log}: the audit log cannot be read ({exc.strerror or exc})") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DriftInputError(f"{audit_log}: line {number} is not JSON ({exc})") from exc
        if record.get("model", {}).get("sha256") == model_sha256 and record.get("tasks"):
            records.append(record)
    return [summary for record in records[-last:] for summary in record["tasks"]]


def measure_drift(report_path: Path, audit_log: Path, *, operating_points: Path | None = None, last: int = 500,
                  psi_limit: float = PSI_LIMIT, indeterminate_increase: float = INDETERMINATE_INCREASE) -> DriftResult:
    """Compare the audit log's recent results with the validation report (see the module docstring)."""
    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
        model_sha256, tasks, cases = report["model"]["sha256"], report["tasks"], report["cases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DriftInputError(f"{report_path}: not a readable validation report of 'biomedclip-map validate' ({exc})") from exc
    recent = read_recent(audit_log, model_sha256, last)
    if not recent:
        raise DriftInputError(f"{audit_log}: no analysed study of the validated weights (sha256 {model_sha256[:12]}…) in the audit log")
    site = None
    if operating_points is not None:
        site = check_operating_points(operating_points, model_sha256, {name: t["prompt_set_sha256"] for name, t in tasks.items()})
    result = DriftResult(recent=len(recent))
    for task, entry in tasks.items():
        reference = [c for c in cases if c["task"] == task]
        now = [s for s in recent if s["task"] == task]
        if len(now) < MIN_RECENT:
            continue
        for label in entry["labels"]:
            key = f"{task}/{label}"
            result.psi[key] = population_stability_index(np.array([c["probabilities"][label] for c in reference]),
                                                          np.array([s["probabilities"][label] for s in now]))
            if result.psi[key] >= psi_limit:
                result.moved.append(f"{key} PSI {result.psi[key]:.2f}")
        points = site.for_task(task) if site is not None else {}
        if points:
            def share(rows: list[dict[str, float]]) -> float:
                decided = []
                for probabilities in rows:
                    ordered = sorted(probabilities.values(), reverse=True)
                    margin = ordered[0] - ordered[1] if len(ordered) > 1 else 1.0
                    decided += [point.decide(probabilities[label], margin).value for label, point in points.items()]
                return decided.count("indeterminate") / max(len(decided), 1)

            before = share([c["probabilities"] for c in reference])
            after = share([s["probabilities"] for s in now])
            result.indeterminate[task] = (before, after)
            if after - before >= indeterminate_increase:
                result.moved.append(f"{task} indeterminate {after:.0%} (validation {before:.0%})")
    counted = sum(1 for s in recent if s["task"] in tasks)
    if not result.psi:
        result.verdict = (f"drift: cannot tell yet: {counted} recent result(s) of the validated task(s), at least {MIN_RECENT} "
                          "per task are needed")
    elif result.moved:
        result.verdict = f"drift: the model's behaviour has MOVED since its validation ({counted} recent results): " + "; ".join(result.moved)
    else:
        largest = max(result.psi, key=result.psi.get)
        result.verdict = (f"drift: no sign the model's behaviour has moved ({counted} recent results; largest PSI "
                          f"{result.psi[largest]:.2f} for {largest}, limit {psi_limit:.2f})")
    return result


def drift(report_path: Path, audit_log: Path, **options) -> int:
    """Run the comparison and say the verdict in one line (stdout); the exit code."""
    try:
        result = measure_drift(report_path, audit_log, **options)
    except (DriftInputError, OperatingPointsError) as exc:
        logger.error("cannot compare: %s", exc)
        return EXIT_CANNOT_START
    print(result.verdict)
    return EXIT_STUDY_FAILED if result.moved else EXIT_OK
