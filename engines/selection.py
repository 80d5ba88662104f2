"""Choosing the inference backend for a model.

`auto` tries the backends in the product's order of preference and falls back with one log line
saying why a backend was not used. The order is TensorRT, ONNX Runtime, PyTorch. Under `auto`
the ONNX Runtime slot on a CPU host is the fast CPU path (engines/cpu_fast_path.py): the fastest
reduced-precision path that passes the parity gate, else float32. A backend that does not apply
to the host (`BackendNotApplicable`: TensorRT without a GPU) is noted at INFO, a backend that
failed at WARNING. A forced backend (`EngineSettings.backend`) that cannot be used is an error,
never a silent fallback.

What to open comes from the caller as explicit values (`EngineSettings`): the application
resolves them from its flags, configuration and environment (app/settings.py: the environment
variable `BIOMEDCLIP_MAP_BACKEND` wins over the configuration, as deployment-time settings do);
nothing here reads the environment. The parity gate's probe set comes from the caller too
(`engines.parity_gate.ProbeSource`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engines.base import (
    AUTO,
    BACKEND_CHOICES,
    BACKEND_NAMES,
    BackendConfigError,
    DEFAULT_TRITON_TIMEOUT_S,
    BackendNotApplicable,
    BackendUnavailable,
    InferenceBackend,
    checked_backend_name,
)
from engines.parity_gate import ProbeSource
from models.directory import ModelDirectory

__all__ = [
    "AUTO", "AUTO_ORDER", "BACKEND_CHOICES", "BACKEND_NAMES", "BackendConfigError", "DEFAULT_TRITON_TIMEOUT_S",
    "EngineSettings", "OPENERS", "open_backend",
]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class EngineSettings:
    """What a run asks of the inference engines, resolved by the application (app/settings.py)."""

    backend: str = AUTO
    """`auto` or one of `BACKEND_NAMES`; checked on creation."""
    origin: str = ""
    """Where the backend choice came from, for messages (e.g. 'BIOMEDCLIP_MAP_BACKEND=pytorch'); default: the setting."""
    tensorrt_precision: str = ""
    """Image engine precision for TensorRT as the run gave it (empty: fp16); checked when TensorRT is opened."""
    triton_server_netloc: str | None = None
    """Triton server `host:port` to send inference to; None or empty: local inference."""
    triton_fallback: bool = False
    """Fall back to local inference when the Triton server is unusable."""
    triton_timeout_s: float = DEFAULT_TRITON_TIMEOUT_S
    """Seconds one Triton request may take before it counts as failed."""

    def __post_init__(self) -> None:
        origin = self.origin or f"backend setting {self.backend!r}"
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "backend", checked_backend_name(self.backend, origin))
        if not self.triton_timeout_s > 0:
            raise BackendConfigError(f"Triton request timeout {self.triton_timeout_s!r}: expected a positive number of seconds")

    @property
    def local(self) -> "EngineSettings":
        """The same settings without the Triton server: what a Triton fallback opens."""
        return EngineSettings(self.backend, self.origin, self.tensorrt_precision, None, self.triton_fallback, self.triton_timeout_s)


BackendOpener = Callable[[ModelDirectory, Path, EngineSettings, "ProbeSource | None"], InferenceBackend]


def _open_onnxruntime(model: ModelDirectory, work_dir: Path, settings: EngineSettings, probes: ProbeSource | None) -> InferenceBackend:
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, work_dir)


def _open_pytorch(model: ModelDirectory, work_dir: Path, settings: EngineSettings, probes: ProbeSource | None) -> InferenceBackend:
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model)


def _open_tensorrt(model: ModelDirectory, work_dir: Path, settings: EngineSettings, probes: ProbeSource | None) -> InferenceBackend:
    from engines.tensorrt_backend import open_tensorrt_backend

    return open_tensorrt_backend(model, work_dir, precision=settings.tensorrt_precision, probes=probes)


def _open_fastest_cpu(model: ModelDirectory, work_dir: Path, settings: EngineSettings, probes: ProbeSource | None) -> InferenceBackend:
    from engines.cpu_fast_path import open_fastest_cpu_backend

    return open_fastest_cpu_backend(model, work_dir, probes=probes)


def _open_fast_path(name: str) -> BackendOpener:
    def opener(model: ModelDirectory, work_dir: Path, settings: EngineSettings, probes: ProbeSource | None) -> InferenceBackend:
        from engines.cpu_fast_path import open_forced_fast_path

        return open_forced_fast_path(name, model, work_dir, probes=probes)

    return opener


OPENERS: dict[str, BackendOpener] = {
    "tensorrt": _open_tensorrt,
    "onnxruntime": _open_onnxruntime,
    "onnxruntime-int8": _open_fast_path("onnxruntime-int8"),
    "openvino": _open_fast_path("openvino"),
    "openvino-bf16": _open_fast_path("openvino-bf16"),
    "openvino-int8": _open_fast_path("openvino-int8"),
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
    "openvino": "OpenVINO",
    "openvino-bf16": "OpenVINO bfloat16",
    "openvino-int8": "OpenVINO INT8",
    "pytorch": "PyTorch",
    "pytorch-bf16": "PyTorch bfloat16",
}


def open_backend(
    model: ModelDirectory,
    settings: EngineSettings | str = AUTO,
    *,
    work_dir: Path,
    probes: ProbeSource | None = None,
) -> InferenceBackend:
    """Open the inference backend for `model` as `settings` ask (a bare name stands for `EngineSettings(name)`).

    `work_dir` holds per-run caches (ONNX exports keyed by the weights hash). `probes` is the
    parity gate's probe set (app/probe_set.py); without it the reduced-precision paths (TensorRT,
    the fast CPU paths) cannot be checked, so they are not used. Raises BackendUnavailable when a
    forced backend, or every backend under `auto`, cannot be used. A Triton server address
    (`settings.triton_server_netloc`) sends inference to that server instead
    (engines/triton_backend.py); the local backend chosen here is then only the fallback.
    """
    if not isinstance(settings, EngineSettings):
        settings = EngineSettings(settings)
    if (settings.triton_server_netloc or "").strip():
        from engines.triton_backend import open_triton_backend

        local = settings.local
        return open_triton_backend(
            model, settings.triton_server_netloc, fallback=settings.triton_fallback, timeout_s=settings.triton_timeout_s,
            open_local=lambda: open_backend(model, local, work_dir=work_dir, probes=probes),
        )
    choice, origin = settings.backend, settings.origin
    if choice != AUTO:
        try:
            backend = OPENERS[choice](model, Path(work_dir), settings, probes)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{origin} forces the {DISPLAY_NAMES[choice]} backend, which cannot be used: {exc}") from exc
        log.info("inference backend %s (forced by %s)", backend.name, origin)
        return backend
    reasons = []
    for position, candidate in enumerate(AUTO_ORDER):
        try:
            backend = AUTO_OPENERS[candidate](model, Path(work_dir), settings, probes)
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
