"""The TensorRT backend: engines built from the ONNX export, cached per model, TensorRT version and GPU.

Opening it (first in the `auto` order) goes:

1. `import tensorrt` and a CUDA device (engines/tensorrt_cuda.py). Without either the backend does
   not apply to this host: `BackendNotApplicable`, reported in one INFO line, and `auto` moves on.
2. The ONNX export (engines/onnx_files.py; an export whose `onnx.json` names other weights is
   ignored with one line and exported again).
3. An engine per tower from the cache (engines/tensorrt_cache.py), built when missing, built for
   another GPU or TensorRT version, truncated or corrupt (engines/tensorrt_build.py). An engine
   that passes those checks but that TensorRT still refuses to load is discarded and rebuilt once.
4. An execution context per engine; if the GPU cannot hold the largest profile's activations,
   the engine is rebuilt for half the largest batch (down to 1) and batches are split.
5. The parity gate (engines/parity_gate.py) of the image engine against the float32 ONNX graph:
   FP16 cosine ≥ 0.999; INT8 cosine ≥ 0.99 and top-1 agreement ≥ 98%. Once per engine; cached.

Anything that still fails raises `BackendUnavailable` with the reason, so `auto` falls back to
ONNX Runtime with one line, before the first study, never in the middle of one. The image
precision is `fp16` unless the run asks for `int8` (`BIOMEDCLIP_MAP_TENSORRT_PRECISION`, read by
app/settings.py). The parity gate's probe set and the default INT8 calibration images come from
the caller (`engines.parity_gate.ProbeSource`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from engines.base import BackendNotApplicable, BackendUnavailable, InferenceBackend, l2_normalise
from engines.calibration import CalibrationError, CalibrationSet
from engines.onnx_export import IMAGE_INPUT, TEXT_INPUTS, OnnxExportError
from engines.onnx_files import OnnxFiles, onnx_files_for
from engines.parity_gate import FP16_THRESHOLDS, INT8_THRESHOLDS, GateRecords, GateResult, ProbeSource, evaluate_gate, gate_key
from engines.tensorrt_build import (
    PRECISIONS,
    TEXT_PRECISION,
    BuildProgress,
    BuildRequest,
    EngineBuildError,
    TensorRTBuilder,
    TensorRTUnavailable,
    ensure_engine,
    image_profile,
    shared_logger,
    text_profile,
)
from engines.tensorrt_cache import CachedEngine, EngineCacheError, EngineKey, cached_engine_problem, discard_engine
from engines.tensorrt_cuda import CudaError, CudaRuntime, CudaUnavailable, DeviceInfo, open_cuda_runtime
from engines.tensorrt_runtime import ContextOutOfMemory, TensorRTExecutionError, TowerRunner
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

PRECISION_SETTING = "BIOMEDCLIP_MAP_TENSORRT_PRECISION"
"""The name of the run setting that asks for an image engine precision (read by app/settings.py)."""


def tensorrt_precision(value: str | None = None) -> str:
    """The image engine precision a run asks for (empty: fp16); BackendUnavailable naming the setting otherwise."""
    precision = (value or "").strip().lower() or "fp16"
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"{PRECISION_SETTING}={precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def engine_key(model: ModelDirectory, tower: str, precision: str, tensorrt_version: str, device: DeviceInfo) -> EngineKey:
    """The cache key of one tower's engine for this model, TensorRT version and GPU."""
    profile = image_profile(model.image_size) if tower == "image" else text_profile(max_sequence=model.context_length)
    return EngineKey(
        model_sha256=model.sha256,
        tower=tower,
        precision=precision,
        profile=profile,
        tensorrt_version=tensorrt_version,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
    )


def default_calibration(model: ModelDirectory, probes: ProbeSource | None) -> CalibrationSet:
    """The calibration images used when none are given: the caller's base images (the sample studies)."""
    if probes is None:
        raise CalibrationError("an INT8 engine needs calibration images, and neither a calibration set nor a probe source was given")
    return probes.calibration_set(model)


def build_requests(
    model: ModelDirectory,
    onnx: OnnxFiles,
    precision: str,
    *,
    builder: TensorRTBuilder,
    cuda: CudaRuntime,
    device: DeviceInfo,
    work_dir: Path,
    calibration: CalibrationSet | None = None,
    probes: ProbeSource | None = None,
    progress_stream=None,
) -> dict[str, BuildRequest]:
    """What to build for each tower; INT8 calibration images (`calibration`, else `probes`'s base images)
    are prepared only if a build happens."""
    requests: dict[str, BuildRequest] = {}
    for tower, tower_precision, onnx_path in (("image", precision, onnx.image_model), ("text", TEXT_PRECISION, onnx.text_model)):
        key = engine_key(model, tower, tower_precision, builder.version, device)
        metadata: dict = {"model_name": model.manifest.name, "model_version": model.manifest.version}

        def build(profile, key=key, onnx_path=onnx_path, metadata=metadata) -> bytes:
            images = None
            cache_path = None
            if key.precision == "int8":
                calibration_set = calibration if calibration is not None else default_calibration(model, probes)
                images = calibration_set.images
                metadata["calibration"] = {
                    # never the folder path: sidecars are copied around and a path can name a patient
                    "source": "sample studies" if calibration is None else "calibration folder (--calib)",
                    "images": len(calibration_set),
                    "digest": calibration_set.digest,
                }
                cache_path = Path(work_dir) / "tensorrt" / model.sha256 / f"image-int8-{calibration_set.digest[:16]}.calib"
            progress = BuildProgress(f"TensorRT {key.tower} {key.precision}", progress_stream)
            engine = builder.build(
                onnx_path, profile, key.precision, progress=progress, calibration=images, calibration_cache=cache_path, cuda=cuda
            )
            progress.finish(f"built, {len(engine) / 1e6:.0f} MB")
            return engine

        requests[tower] = BuildRequest(key=key, onnx_path=onnx_path, build=build, metadata=metadata)
    return requests


def calibration_changed(work_dir: Path, request: BuildRequest, calibration: CalibrationSet | None) -> bool:
    """True when an explicitly given calibration set differs from the one the cached INT8 engine was built with."""
    if calibration is None or request.key.precision != "int8":
        return False
    cached, _ = cached_engine_problem(work_dir, request.key)
    if cached is None:
        return False
    return cached.metadata.get("calibration", {}).get("digest") != calibration.digest


def load_tower(
    work_dir: Path,
    request: BuildRequest,
    deserialize: Callable[[bytes], object | None],
    make_runner: Callable[[object, int], object],
    *,
    force: bool = False,
):
    """Cached-or-built engine -> deserialized -> runner, recovering from what TensorRT refuses.

    An engine TensorRT cannot deserialize (corrupt in a way the hash cannot see, or built by an
    incompatible TensorRT despite its sidecar) is discarded and rebuilt once. An engine whose
    execution context does not fit the GPU at its largest batch is rebuilt for half that batch,
    down to 1. Raises BackendUnavailable when neither helps.
    """
    tower = request.key.tower
    cached: CachedEngine = ensure_engine(work_dir, request, force=force)
    rebuilt = force
    while True:
        engine = deserialize(cached.engine_path.read_bytes())
        if engine is None:
            if rebuilt:
                raise BackendUnavailable(f"TensorRT cannot load the {tower} engine {cached.engine_path} even after rebuilding it")
            log.warning("TensorRT cannot load the cached %s engine %s; rebuilding it", tower, cached.engine_path)
            discard_engine(work_dir, request.key)
            cached = ensure_engine(work_dir, request, force=True)
            rebuilt = True
            continue
        try:
            return make_runner(engine, cached.max_batch)
        except ContextOutOfMemory as exc:
            if cached.max_batch <= 1:
                raise BackendUnavailable(f"{exc}, even for a batch of 1") from exc
            half = cached.max_batch // 2
            log.warning("%s at batches up to %d; rebuilding the engine for batches up to %d", exc, cached.max_batch, half)
            cached = ensure_engine(work_dir, request, start_max_batch=half)


class TensorRTBackend(InferenceBackend):
    """Both towers as TensorRT engines on one GPU; `name` is `tensorrt-fp16` or `tensorrt-int8`."""

    def __init__(
        self,
        model: ModelDirectory,
        work_dir: Path,
        precision: str = "fp16",
        *,
        builder: TensorRTBuilder,
        cuda: CudaRuntime,
        probes: ProbeSource | None = None,
    ) -> None:
        super().__init__(model)
        from engines.onnxruntime_backend import read_logit_scale

        self.precision = precision
        self._cuda = cuda
        self._runners: dict[str, TowerRunner] = {}
        trt = builder.trt
        self.device = cuda.device_info()
        try:
            self.files = onnx_files_for(model, work_dir)
        except OnnxExportError as exc:
            raise BackendUnavailable(str(exc)) from exc
        runtime = trt.Runtime(shared_logger(trt).logger)
        requests = build_requests(
            model, self.files, precision, builder=builder, cuda=cuda, device=self.device, work_dir=work_dir, probes=probes
        )
        try:
            for tower, request in requests.items():
                self._runners[tower] = load_tower(
                    work_dir,
                    request,
                    runtime.deserialize_cuda_engine,
                    lambda engine, max_batch, tower=tower: TowerRunner(trt, engine, cuda, tower, max_batch),
                )
        except BaseException:
            self.close()
            raise
        self.image_engine = requests["image"].key
        self.name = f"tensorrt-{precision}"
        self.logit_scale = read_logit_scale(model.weights_path)
        self.gate = self._check_gate(model, work_dir, builder.version, probes)

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        return self._runners["image"].run({IMAGE_INPUT: images})

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._runners["text"].run({TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: attention_mask})

    def float32_image_encoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """The float32 ONNX image graph on ONNX Runtime's CPU provider: the parity gate's reference."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(self.files.image_model), options, providers=["CPUExecutionProvider"])
        return lambda images: l2_normalise(session.run(None, {IMAGE_INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0])

    def _check_gate(self, model: ModelDirectory, work_dir: Path, tensorrt_version: str, probes: ProbeSource | None) -> GateResult:
        if probes is None:
            self.close()
            raise BackendUnavailable(f"no probe set was given, so the parity gate of the TensorRT {self.precision} engine cannot run")
        path = f"tensorrt-{self.precision}"
        thresholds = INT8_THRESHOLDS if self.precision == "int8" else FP16_THRESHOLDS
        engine_meta = cached_engine_problem(work_dir, self.image_engine)[0]
        details = {
            "tensorrt": tensorrt_version,
            "gpu": f"{self.device.name} ({self.device.compute_capability})",
            "engine_sha256": engine_meta.metadata.get("sha256") if engine_meta else "unknown",
        }
        key = gate_key(model.sha256, path, details, probe_set=probes.name)
        records = GateRecords(work_dir)
        result = records.load(key)
        if result is None:
            log.info("checking the TensorRT %s image engine against float32 on the probe set (once per engine)", self.precision)
            probe_set = probes.probe_set(model, work_dir)
            result = evaluate_gate(
                path=path,
                key=key,
                reference=self.float32_image_encoder(),
                candidate=self.encode_images,
                probes=probe_set.images,
                class_sets=probe_set.class_sets(self),
                logit_scale=self.logit_scale,
                thresholds=thresholds,
                details=details,
            )
            records.store(result)
        if not result.passed:
            self.close()
            raise BackendUnavailable(f"the TensorRT {self.precision} engine failed the parity gate ({result.reason})")
        log.info("TensorRT %s parity gate passed: %s", self.precision, result.summary())
        return result

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners = {}


def open_tensorrt_backend(
    model: ModelDirectory, work_dir: Path, *, precision: str | None = None, probes: ProbeSource | None = None
) -> InferenceBackend:
    """The TensorRT backend, or BackendNotApplicable (no TensorRT / no GPU) / BackendUnavailable (it failed).

    `precision` is the run's image engine precision (empty: fp16); `probes` the caller's probe
    set for the parity gate and default INT8 calibration (app/probe_set.py).
    """
    precision = tensorrt_precision(precision)
    try:
        builder = TensorRTBuilder()
    except TensorRTUnavailable as exc:
        raise BackendNotApplicable(str(exc)) from exc
    try:
        cuda = open_cuda_runtime()
    except CudaUnavailable as exc:
        raise BackendNotApplicable(f"no CUDA GPU can be used ({exc})") from exc
    try:
        return TensorRTBackend(model, work_dir, precision, builder=builder, cuda=cuda, probes=probes)
    except (EngineBuildError, EngineCacheError, CudaError, CalibrationError, TensorRTExecutionError, ContextOutOfMemory, OSError) as exc:
        raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
