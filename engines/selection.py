"""Choosing the inference backend for a model.

`auto` tries the backends in the product's order of preference and falls back with one log line
saying why a backend was not used. The order is TensorRT, ONNX Runtime, PyTorch. Under `auto`
the ONNX Runtime slot on a CPU host is the fast CPU path (engines/cpu_fast_path.py): the fastest
reduced-precision path that passes the parity gate, else float32. A backend that does not apply
to the host (`BackendNotApplicable`: TensorRT without a GPU) is noted at INFO, a backend that
failed at WARNING. A configured preference, or the environment variable
`BIOMEDCLIP_MAP_BACKEND` (which wins over the configuration, as deployment-time settings do),
forces one backend; a forced backend that cannot be used is an error, never a silent fallback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping

from engines.base import BackendConfigError, BackendNotApplicable, BackendUnavailable, InferenceBackend
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

BACKEND_ENV = "BIOMEDCLIP_MAP_BACKEND"
AUTO = "auto"


def _open_onnxruntime(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, work_dir)


def _open_pytorch(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model)


def _open_tensorrt(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.tensorrt_backend import open_tensorrt_backend

    return open_tensorrt_backend(model, work_dir)


def _open_fastest_cpu(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.cpu_fast_path import open_fastest_cpu_backend

    return open_fastest_cpu_backend(model, work_dir)


def _open_fast_path(name: str) -> "BackendOpener":
    def opener(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
        from engines.cpu_fast_path import open_forced_fast_path

        return open_forced_fast_path(name, model, work_dir)

    return opener


BackendOpener = Callable[[ModelDirectory, Path], InferenceBackend]

OPENERS: dict[str, BackendOpener] = {
    "tensorrt": _open_tensorrt,
    "onnxruntime": _open_onnxruntime,
    "onnxruntime-int8": _open_fast_path("onnxruntime-int8"),
    "pytorch": _open_pytorch,
    "pytorch-bf16": _open_fast_path("pytorch-bf16"),
}
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime", "pytorch")
AUTO_OPENERS: dict[str, BackendOpener] = {**OPENERS, "onnxruntime": _open_fastest_cpu}
"""What `auto` opens for each slot: the ONNX Runtime slot picks the fast CPU path when it qualifies."""
DISPLAY_NAMES = {
    "tensorrt": "TensorRT",
    "onnxruntime": "ONNX Runtime",
    "onnxruntime-int8": "ONNX Runtime INT8",
    "pytorch": "PyTorch",
    "pytorch-bf16": "PyTorch bfloat16",
}


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
    triton_server_netloc: str | None = None,
    triton_fallback: bool | None = None,
) -> InferenceBackend:
    """Open the inference backend for `model`, honouring `BIOMEDCLIP_MAP_BACKEND` over `preference`.

    `work_dir` holds per-run caches (ONNX exports keyed by the weights hash). Raises
    BackendUnavailable when a forced backend, or every backend under `auto`, cannot be used.
    A Triton server address (`triton_server_netloc`, else `TRITON_SERVER_NETLOC`; "" means none)
    sends inference to that server instead (engines/triton_backend.py); the local backend chosen
    here is then only the fallback.
    """
    netloc = (os.environ if environ is None else environ).get("TRITON_SERVER_NETLOC", "") if triton_server_netloc is None else triton_server_netloc
    if netloc.strip():
        from engines.triton_backend import open_triton_backend

        return open_triton_backend(
            model, netloc, fallback=triton_fallback, environ=environ,
            open_local=lambda: open_backend(model, preference, work_dir=work_dir, environ=environ, triton_server_netloc=""),
        )
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
            backend = AUTO_OPENERS[candidate](model, Path(work_dir))
        except BackendUnavailable as exc:
            reasons.append(f"{DISPLAY_NAMES[candidate]}: {exc}")
            following = AUTO_ORDER[position + 1] if position + 1 < len(AUTO_ORDER) else None
            if following is not None:
                log.log(
                    logging.INFO if isinstance(exc, BackendNotApplicable) else logging.WARNING,
                    "%s backend not used (%s); falling back to %s", DISPLAY_NAMES[candidate], exc, DISPLAY_NAMES[following],
                )
            continue
        log.info("inference backend %s", backend.name)
        return backend
    raise BackendUnavailable("no inference backend can be used: " + "; ".join(reasons))
