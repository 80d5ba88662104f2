"""The parity gate: a reduced-precision path is used only if it gives the float32 answers.

A candidate backend (INT8, bfloat16, TensorRT FP16/INT8) embeds a probe set of preprocessed
images and is compared with a float32 reference backend on the same images. The probe set comes
from the caller (`ProbeSource`: the application builds it from its sample studies with its own
preprocessing, app/probe_set.py), so the engines never read DICOM or configuration themselves:

- every probe's embedding must have cosine similarity ≥ `min_cosine` with the reference one;
- for INT8, the zero-shot top-1 label must be the same as the reference's for at least
  `min_top1_agreement` of the (probe image, task) decisions, over every task of the task file.

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
GATE_FORMAT = 1
GATE_BATCH_SIZE = 8


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
    min_top1_agreement: float | None = None
    """Fraction of (image, task) decisions whose top-1 label must agree; None: not checked."""


BF16_THRESHOLDS = GateThresholds(min_cosine=0.999)
INT8_THRESHOLDS = GateThresholds(min_cosine=0.99, min_top1_agreement=0.98)
FP16_THRESHOLDS = GateThresholds(min_cosine=0.999)


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
    top1_agreement: float | None
    decisions: int
    images_per_s: float
    reference_images_per_s: float
    thresholds: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    """The key's ingredients (versions, CPU kernels), for people reading the record."""

    def summary(self) -> str:
        """The figures in one short phrase for log lines."""
        agreement = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        return (
            f"min cosine {self.min_cosine:.4f}{agreement} on {self.probes} probe images, "
            f"{self.images_per_s:.2f} vs {self.reference_images_per_s:.2f} images/s float32"
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


def evaluate_gate(
    *,
    path: str,
    key: str,
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    probes: np.ndarray,
    class_sets: Sequence[np.ndarray],
    thresholds: GateThresholds,
    details: dict | None = None,
    batch_size: int = GATE_BATCH_SIZE,
) -> GateResult:
    """Embed `probes` with both callables (N, 3, S, S) -> (N, D), compare, and judge against `thresholds`."""
    ref_embeddings, ref_speed = _timed_embeddings(reference, probes, batch_size)
    cand_embeddings, cand_speed = _timed_embeddings(candidate, probes, batch_size)
    if ref_embeddings.shape != cand_embeddings.shape:
        raise ValueError(f"{path}: embeddings of shape {cand_embeddings.shape}, reference {ref_embeddings.shape}")
    cosines = _cosines(ref_embeddings, cand_embeddings)
    min_cos = float(np.nan_to_num(cosines, nan=-1.0).min())
    agreement, decisions = (None, 0)
    if thresholds.min_top1_agreement is not None:
        agreement, decisions = top1_agreement(ref_embeddings, cand_embeddings, class_sets)
    reasons = []
    if min_cos < thresholds.min_cosine:
        reasons.append(f"min cosine {min_cos:.4f} < {thresholds.min_cosine}")
    if agreement is not None and agreement < thresholds.min_top1_agreement:
        reasons.append(f"top-1 agreement {agreement:.1%} < {thresholds.min_top1_agreement:.0%}")
    return GateResult(
        path=path,
        key=key,
        passed=not reasons,
        reason="; ".join(reasons),
        probes=int(len(probes)),
        min_cosine=round(min_cos, 6),
        mean_cosine=round(float(np.nan_to_num(cosines, nan=-1.0).mean()), 6),
        top1_agreement=None if agreement is None else round(agreement, 6),
        decisions=decisions,
        images_per_s=round(cand_speed, 3),
        reference_images_per_s=round(ref_speed, 3),
        thresholds=asdict(thresholds),
        details=dict(details or {}),
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
