"""Choosing the inference backend for a model.

`auto` tries the backends in the product's order of preference and falls back with one log line
saying why a backend was not used. The order is TensorRT, ONNX Runtime, PyTorch; this build
carries ONNX Runtime and PyTorch, and a TensorRT backend joins by adding its opener at the front
of `AUTO_ORDER`. A configured preference, or the environment variable
`BIOMEDCLIP_MAP_BACKEND` (which wins over the configuration, as deployment-time settings do),
forces one backend; a forced backend that cannot be used is an error, never a silent fallback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping

from engines.base import BackendUnavailable, InferenceBackend
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

BACKEND_ENV = "BIOMEDCLIP_MAP_BACKEND"
AUTO = "auto"


class BackendConfigError(ValueError):
    """The configured or environment backend name is not one this product knows."""


def _open_onnxruntime(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, work_dir)


def _open_pytorch(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model)


BackendOpener = Callable[[ModelDirectory, Path], InferenceBackend]

OPENERS: dict[str, BackendOpener] = {"onnxruntime": _open_onnxruntime, "pytorch": _open_pytorch}
AUTO_ORDER: tuple[str, ...] = ("onnxruntime", "pytorch")
DISPLAY_NAMES = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}


def backend_choice(configured: str = AUTO, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The backend to use and where that choice came from (`BIOMEDCLIP_MAP_BACKEND` or the configuration)."""
    env_value = (os.environ if environ is None else environ).get(BACKEND_ENV, "").strip().lower()
    if env_value:
        choice, origin = env_value, f"{BACKEND_ENV}={env_value}"
    else:
        choice, origin = (configured or AUTO).strip().lower(), f"backend setting {configured!r}"
    valid = (AUTO, *OPENERS)
    if choice not in valid:
        raise BackendConfigError(f"{origin}: unknown inference backend; choose one of {', '.join(valid)}")
    return choice, origin


def open_backend(
    model: ModelDirectory,
    preference: str = AUTO,
    *,
    work_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> InferenceBackend:
    """Open the inference backend for `model`, honouring `BIOMEDCLIP_MAP_BACKEND` over `preference`.

    `work_dir` holds per-run caches (ONNX exports keyed by the weights hash). Raises
    BackendUnavailable when a forced backend, or every backend under `auto`, cannot be used.
    """
    choice, origin = backend_choice(preference, environ)
    if choice != AUTO:
        try:
            backend = OPENERS[choice](model, Path(work_dir))
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{origin} forces the {DISPLAY_NAMES[choice]} backend, which cannot be used: {exc}") from exc
        log.info("inference backend %s (forced by %s)", backend.name, origin)
        return backend
    reasons = []
    for position, candidate in enumerate(AUTO_ORDER):
        try:
            backend = OPENERS[candidate](model, Path(work_dir))
        except BackendUnavailable as exc:
            reasons.append(f"{DISPLAY_NAMES[candidate]}: {exc}")
            following = AUTO_ORDER[position + 1] if position + 1 < len(AUTO_ORDER) else None
            if following is not None:
                log.warning(
                    "%s backend not used (%s); falling back to %s", DISPLAY_NAMES[candidate], exc, DISPLAY_NAMES[following]
                )
            continue
        log.info("inference backend %s", backend.name)
        return backend
    raise BackendUnavailable("no inference backend can be used: " + "; ".join(reasons))
