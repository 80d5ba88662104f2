"""The parity gate: a reduced-precision path is used only if it gives the float32 answers.

A candidate backend (INT8, bfloat16, TensorRT FP16/INT8) embeds a probe set of preprocessed
images and is compared with a float32 reference backend on the same images. The probe set comes
from the caller (`ProbeSource`: the application builds it from its sample studies with its own
preprocessing, app/probe_set.py), so the engines never read DICOM or configuration themselves:

It measures the engine, not the model's indecision. Over every (probe image, zero-shot task)
decision of the task file it computes:

- the smallest cosine similarity between a probe's candidate and float32 embeddings;
- the largest absolute change of any class probability (softmax of `logit_scale` × cosine, as
  the zero-shot scoring computes it), so a path cannot move a reported probability by much;
- top-1 agreement over the *decisive* decisions only: those whose float32 margin (top-1 minus
  top-2 probability) is at least `DECISIVE_MARGIN`. A near-tie flips under any perturbation, so
  counting it would measure the model (a random-weight model's probabilities are all about
  equal), not the engine. The number of decisive decisions is reported; with fewer than
  `MIN_DECISIVE_DECISIONS` the agreement cannot be judged and the record says so
  (`decisive_agreement` is None): the path then passes on the cosine and probability limits
  alone, never on agreement.

Thresholds per precision (`*_THRESHOLDS` below; why these values is said there):

    precision           min cosine   max |Δp|   decisive top-1 agreement
    float32 (engine)    0.9999       0.005      100 %
    bfloat16 / FP16     0.999        0.01       99 %
    INT8                0.99         0.03       99 %

The gate also times both backends on the probe batches, so the fast CPU path can pick the fastest
path that passes (and none that is slower than float32). Running it costs a few dozen image
embeddings in float32, so its result is kept as a small JSON record under
`<work dir>/cpu-fast-path/`, keyed by everything that can change the answer: the model weights
hash, the path and its recipe, the runtime version, and the CPU's reduced-precision instructions
(`engines/cpu_features.py`). A model folder may ship records too (`onnx/gates/`, written by
`python -m app.engine_commands quantize`); they are used when their key matches. Records hold numbers only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from common.atomic_files import Durability, write_json_atomically

if TYPE_CHECKING:
    from engines.base import InferenceBackend
    from engines.calibration import CalibrationSet
    from models.directory import ModelDirectory

log = logging.getLogger(__name__)

GATE_SUBDIR = "cpu-fast-path"
SHIPPED_GATES_SUBDIR = "gates"
GATE_FORMAT = 2
"""Version of the record format and of what the gate measures; part of every key, so records of an
older gate (format 1: cosine and top-1 agreement over all decisions) are never reused."""
GATE_BATCH_SIZE = 8
DECISIVE_MARGIN = 0.05
"""A decision counts as decisive when float32's top-1 probability exceeds its top-2 by at least this
(5 percentage points). Below it the model itself is undecided; above it a flip is an engine error.
The value is a little below twice the INT8 |Δp| limit, so the agreement check still adds
something to the probability limit (two probabilities each moving 0.03 could just close 0.05)."""
MIN_DECISIVE_DECISIONS = 20
"""Fewer decisive decisions than this cannot support an agreement figure (one flip would be ≥ 5 %)."""


class ParityGateError(RuntimeError):
    """The parity gate cannot run (no probe set was given); the path it would check is not used."""


@dataclass(frozen=True)
class ProbeSet:
    """What the gate compares a path on: preprocessed probe images and the zero-shot decisions to agree on."""

    images: np.ndarray
    """(N, 3, S, S) float32 images, resized and normalised with the model's mean and std."""
    class_sets: Callable[["InferenceBackend"], Sequence[np.ndarray]]
    """The (C, D) class embeddings of every zero-shot task, computed with the given backend's text tower."""


class ProbeSource(Protocol):
    """Where the gate and INT8 calibration get their images; built lazily, only when a gate must run."""

    name: str
    """Names the probe set's construction; part of every gate key, so a new construction re-runs the gates."""

    def calibration_set(self, model: "ModelDirectory") -> "CalibrationSet":
        """Preprocessed base images for `model` (INT8 calibration when no folder is given)."""

    def probe_set(self, model: "ModelDirectory", work_dir: Path) -> ProbeSet:
        """The probe set for `model`; `work_dir` holds the text-embedding cache the class sets go through."""


@dataclass(frozen=True)
class GateThresholds:
    """What a path must reach against float32 to be used."""

    min_cosine: float
    max_prob_change: float | None = None
    """Largest allowed absolute change of any class probability; None: not checked."""
    min_decisive_agreement: float | None = None
    """Fraction of decisive decisions whose top-1 class must agree; None: not checked."""


FP32_ENGINE_THRESHOLDS = GateThresholds(min_cosine=0.9999, max_prob_change=0.005, min_decisive_agreement=1.0)
"""Another runtime in float32 (e.g. OpenVINO): only summation order differs, so the answers must be the same."""
BF16_THRESHOLDS = GateThresholds(min_cosine=0.999, max_prob_change=0.01, min_decisive_agreement=0.99)
"""bfloat16 keeps 8 mantissa bits in the matrix products: a cosine of 0.999 is what a sound bf16 run of
this ViT gives; one percentage point of probability is below any reporting threshold of the product."""
INT8_THRESHOLDS = GateThresholds(min_cosine=0.99, max_prob_change=0.03, min_decisive_agreement=0.99)
"""INT8 rounds weights and activations to 256 levels: cosine 0.99 and 3 percentage points of probability
still leave every decisive decision unchanged on a sound graph; a damaged scale breaks both at once."""
FP16_THRESHOLDS = BF16_THRESHOLDS
"""TensorRT FP16 has more mantissa bits than bfloat16; the bfloat16 limits are kept for it."""


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate run: the figures and whether the thresholds were met."""

    path: str
    key: str
    passed: bool
    reason: str
    """Why it failed ('' when it passed), in words for a log line."""
    probes: int
    min_cosine: float
    mean_cosine: float
    max_prob_change: float
    """Largest absolute change of any class probability over every decision."""
    top1_agreement: float
    """Top-1 agreement over all decisions, near-ties included: for information, never judged."""
    decisions: int
    decisive_margin: float
    decisive_decisions: int
    """Decisions whose float32 margin (top-1 minus top-2 probability) is at least `decisive_margin`."""
    decisive_agreement: float | None
    """Top-1 agreement over the decisive decisions; None when too few to judge."""
    images_per_s: float
    reference_images_per_s: float
    thresholds: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    """The key's ingredients (versions, CPU kernels), for people reading the record."""
    note: str = ""
    """What the gate could not judge (too few decisive decisions), in words; '' otherwise."""

    @property
    def speedup(self) -> float:
        """Images/s relative to the float32 reference in the gate's own timing."""
        return self.images_per_s / max(self.reference_images_per_s, 1e-9)

    def summary(self) -> str:
        """The figures in one short phrase for log lines."""
        if self.decisive_agreement is None:
            agreement = f"decisive agreement not judged ({self.decisive_decisions} decisive decisions)"
        else:
            agreement = f"decisive top-1 agreement {self.decisive_agreement:.1%} of {self.decisive_decisions}"
        return (
            f"min cosine {self.min_cosine:.4f}, max |Δp| {self.max_prob_change:.4f}, {agreement} "
            f"(margin ≥ {self.decisive_margin:g}; {self.decisions} decisions on {self.probes} probe images), "
            f"{self.images_per_s:.2f} vs {self.reference_images_per_s:.2f} images/s float32 ({self.speedup:.2f}×)"
        )


def gate_key(model_sha256: str, path: str, ingredients: dict, *, probe_set: str) -> str:
    """The cache key of a gate result: sha256 of the model hash, the path, the probe set and what can change its answers."""
    canonical = json.dumps(
        {"format": GATE_FORMAT, "model": model_sha256, "path": path, "probe_set": probe_set, **ingredients},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)


def _timed_embeddings(encode: Callable[[np.ndarray], np.ndarray], probes: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Embeddings of `probes` in batches and the images/s of the batches after the first (warm-up)."""
    parts, seconds, timed_images = [], 0.0, 0
    for index, start in enumerate(range(0, len(probes), batch_size)):
        batch = probes[start : start + batch_size]
        began = time.perf_counter()
        parts.append(encode(batch))
        if index > 0 or len(probes) <= batch_size:
            seconds += time.perf_counter() - began
            timed_images += len(batch)
    return np.concatenate(parts, axis=0), timed_images / max(seconds, 1e-9)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray, class_sets: Sequence[np.ndarray]) -> tuple[float, int]:
    """Fraction of (image, task) decisions with the same top-1 class, and the number of decisions."""
    agree, total = 0, 0
    for classes in class_sets:
        classes = np.asarray(classes, dtype=np.float64)
        ref_top = np.argmax(np.asarray(reference, dtype=np.float64) @ classes.T, axis=1)
        cand_top = np.argmax(np.asarray(candidate, dtype=np.float64) @ classes.T, axis=1)
        agree += int((ref_top == cand_top).sum())
        total += len(ref_top)
    return (agree / total if total else 1.0), total


@dataclass(frozen=True)
class DecisionFigures:
    """How a candidate's zero-shot decisions compare with float32's over every (image, task)."""

    decisions: int
    max_prob_change: float
    top1_agreement: float
    decisive_decisions: int
    decisive_agreeing: int


def decision_figures(
    reference: np.ndarray, candidate: np.ndarray, class_sets: Sequence[np.ndarray], logit_scale: float, margin: float
) -> DecisionFigures:
    """Class probabilities of both embeddings per task (softmax of logit_scale × cosine) and their agreement.

    Tasks with fewer than two classes are left out: they decide nothing.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    decisions = agreeing = decisive = decisive_agreeing = 0
    max_change = 0.0
    for classes in class_sets:
        classes = np.asarray(classes, dtype=np.float64)
        if classes.ndim != 2 or classes.shape[0] < 2:
            continue
        ref_p = _softmax(logit_scale * (reference @ classes.T))
        cand_p = _softmax(logit_scale * (candidate @ classes.T))
        max_change = max(max_change, float(np.abs(ref_p - cand_p).max()))
        ref_top, cand_top = ref_p.argmax(axis=1), cand_p.argmax(axis=1)
        top_two = np.sort(ref_p, axis=1)[:, -2:]
        is_decisive = (top_two[:, 1] - top_two[:, 0]) >= margin
        same = ref_top == cand_top
        decisions += len(same)
        agreeing += int(same.sum())
        decisive += int(is_decisive.sum())
        decisive_agreeing += int((same & is_decisive).sum())
    return DecisionFigures(decisions, max_change, agreeing / decisions if decisions else 1.0, decisive, decisive_agreeing)


def judge(
    min_cos: float, figures: DecisionFigures, thresholds: GateThresholds, min_decisive: int = MIN_DECISIVE_DECISIONS
) -> tuple[list[str], float | None, str]:
    """The reasons a path fails `thresholds` (empty: it passes), the decisive agreement (None: not judged) and a note."""
    reasons: list[str] = []
    if not min_cos >= thresholds.min_cosine:  # NaN fails too
        reasons.append(f"min cosine {min_cos:.4f} < {thresholds.min_cosine}")
    if thresholds.max_prob_change is not None and not figures.max_prob_change <= thresholds.max_prob_change:
        reasons.append(f"max |Δp| {figures.max_prob_change:.4f} > {thresholds.max_prob_change}")
    agreement: float | None = None
    note = ""
    if figures.decisive_decisions >= min_decisive:
        agreement = figures.decisive_agreeing / figures.decisive_decisions
        if thresholds.min_decisive_agreement is not None and agreement < thresholds.min_decisive_agreement:
            reasons.append(
                f"decisive top-1 agreement {agreement:.1%} < {thresholds.min_decisive_agreement:.0%} "
                f"({figures.decisive_decisions - figures.decisive_agreeing} of {figures.decisive_decisions} flipped)"
            )
    elif thresholds.min_decisive_agreement is not None:
        note = (
            f"only {figures.decisive_decisions} of {figures.decisions} decisions are decisive (float32 margin ≥ "
            f"{DECISIVE_MARGIN:g}; {min_decisive} needed): top-1 agreement not judged, the path is judged on "
            f"cosine and class probabilities alone"
        )
    return reasons, agreement, note


def evaluate_gate(
    *,
    path: str,
    key: str,
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    probes: np.ndarray,
    class_sets: Sequence[np.ndarray],
    logit_scale: float,
    thresholds: GateThresholds,
    details: dict | None = None,
    batch_size: int = GATE_BATCH_SIZE,
) -> GateResult:
    """Embed `probes` with both callables (N, 3, S, S) -> (N, D), compare, and judge against `thresholds`.

    `logit_scale` is the model's exponentiated temperature (class probabilities are softmax of
    logit_scale × cosine, as zero-shot scoring computes them).
    """
    ref_embeddings, ref_speed = _timed_embeddings(reference, probes, batch_size)
    cand_embeddings, cand_speed = _timed_embeddings(candidate, probes, batch_size)
    if ref_embeddings.shape != cand_embeddings.shape:
        raise ValueError(f"{path}: embeddings of shape {cand_embeddings.shape}, reference {ref_embeddings.shape}")
    cosines = np.nan_to_num(_cosines(ref_embeddings, cand_embeddings), nan=-1.0)
    min_cos = float(cosines.min())
    figures = decision_figures(
        np.nan_to_num(ref_embeddings), np.nan_to_num(cand_embeddings, nan=0.0), class_sets, float(logit_scale), DECISIVE_MARGIN
    )
    reasons, agreement, note = judge(min_cos, figures, thresholds)
    if note:
        log.info("parity gate of %s: %s", path, note)
    return GateResult(
        path=path,
        key=key,
        passed=not reasons,
        reason="; ".join(reasons),
        probes=int(len(probes)),
        min_cosine=round(min_cos, 6),
        mean_cosine=round(float(cosines.mean()), 6),
        max_prob_change=round(figures.max_prob_change, 6),
        top1_agreement=round(figures.top1_agreement, 6),
        decisions=figures.decisions,
        decisive_margin=DECISIVE_MARGIN,
        decisive_decisions=figures.decisive_decisions,
        decisive_agreement=None if agreement is None else round(agreement, 6),
        images_per_s=round(cand_speed, 3),
        reference_images_per_s=round(ref_speed, 3),
        thresholds=asdict(thresholds),
        details=dict(details or {}),
        note=note,
    )


class GateRecords:
    """Gate results on disk: read from the shipped folder (if any) then the work folder; written to the work folder."""

    def __init__(self, work_dir: Path, shipped_dir: Path | None = None) -> None:
        self.directory = Path(work_dir) / GATE_SUBDIR
        self.shipped_dir = shipped_dir

    def load(self, key: str) -> GateResult | None:
        """The stored result for `key`, or None; an unreadable record is reported with one line and ignored."""
        for folder in (self.shipped_dir, self.directory):
            if folder is None:
                continue
            path = folder / f"{key}.json"
            if not path.is_file():
                continue
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                result = GateResult(**raw)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
                log.warning("parity gate record %s is unreadable (%s); the gate will be run again", path, exc)
                continue
            if result.key != key:
                log.warning("parity gate record %s belongs to key %s…; the gate will be run again", path, result.key[:12])
                continue
            return result
        return None

    def shipped_cpus(self) -> set[str]:
        """The CPU signatures (`details["cpu"]`) of the records shipped with the model; empty when none are shipped.

        Lets a run say in one line that the model folder was prepared on another kind of CPU, so
        its paths are gated now rather than read. An unreadable record counts for no CPU.
        """
        if self.shipped_dir is None or not self.shipped_dir.is_dir():
            return set()
        cpus = set()
        for path in self.shipped_dir.glob("*.json"):
            try:
                cpu = json.loads(path.read_text(encoding="utf-8")).get("details", {}).get("cpu")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                continue
            if isinstance(cpu, str):
                cpus.add(cpu)
        return cpus

    def store(self, result: GateResult, directory: Path | None = None) -> Path | None:
        """Write `result` atomically (into `directory`, default the work folder); a failure is one log line."""
        folder = Path(directory) if directory is not None else self.directory
        target = folder / f"{result.key}.json"
        try:
            write_json_atomically(target, asdict(result), durability=Durability.FILE)
        except OSError as exc:
            log.warning("cannot write the parity gate record in %s (%s); the gate will run again next time", folder, exc.strerror or exc)
            return None
        return target
