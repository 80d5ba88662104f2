"""Building TensorRT engines from the ONNX export: profiles, FP16, INT8 calibration, progress, cache.

Each tower gets its own engine with one optimisation profile:

    image   images (N, 3, S, S)                 N = 1 … 32 (optimised for 8)
    text    input_ids, attention_mask (N, L)    N = 1 … 32 (8), L = 1 … 256 (64)

Precision `fp16` builds the image tower in FP16. Precision `int8` builds it in INT8 with FP16 for
the layers TensorRT keeps out of INT8, calibrated by entropy calibration
(`IInt8EntropyCalibrator2`) on preprocessed images (engines/calibration.py: the sample studies, or
the folder given with `--calib`). The text tower is always built in float32 with TF32 off: it runs
only when the zero-shot text embeddings are not cached yet, and exact text embeddings keep the
text-embedding cache shared by every backend. Implicit INT8 calibration is deprecated since TensorRT 10.1 but still
supported by TensorRT 10; a TensorRT without it is reported as such.

`ensure_engine` is the cache policy: use the cached engine when its sidecar matches the wanted
`EngineKey` and its bytes are intact; otherwise say why in one log line and build. When the GPU
runs out of memory building for the largest batch, the build is retried with half the largest
batch (down to 1) and the engine records the batch it was built for; the backend then splits
bigger batches. Building takes minutes: `BuildProgress` shows TensorRT's phases as they go.

Importing this module does not import TensorRT; `TensorRTBuilder()` does.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from engines.tensorrt_cache import CachedEngine, EngineKey, Profile, cached_engine_problem, store_engine

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
"""Image tower precisions; the text tower is always built in float32 (`TEXT_PRECISION`)."""
TEXT_PRECISION = "fp32"
MAX_BATCH = 32
OPT_BATCH = 8
MAX_SEQUENCE = 256
OPT_SEQUENCE = 64
WORKSPACE_BYTES = 4 << 30
CALIBRATION_BATCH = 8
OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "outofmemory",
    "cudaerrormemoryallocation",
    "insufficient memory",
    "requested amount of gpu memory",
    "failed to allocate",
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be imported (not installed, or its libraries do not load); the message says which."""


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine; the message names the ONNX file and TensorRT's errors."""


class EngineBuildOutOfMemory(EngineBuildError):
    """The build failed because the GPU ran out of memory (retried with a smaller largest batch)."""


# --------------------------------------------------------------------------- profiles


def image_profile(image_size: int, max_batch: int = MAX_BATCH) -> Profile:
    """The image tower's optimisation profile: batch 1 … `max_batch` at `image_size`²."""
    opt = min(OPT_BATCH, max_batch)
    shape = (3, image_size, image_size)
    return (("images", ((1, *shape), (opt, *shape), (max_batch, *shape))),)


def text_profile(max_batch: int = MAX_BATCH, max_sequence: int = MAX_SEQUENCE) -> Profile:
    """The text tower's optimisation profile: batch 1 … `max_batch`, sequence 1 … `max_sequence`."""
    opt = ((min(OPT_BATCH, max_batch), min(OPT_SEQUENCE, max_sequence)))
    shapes = ((1, 1), opt, (max_batch, max_sequence))
    return (("input_ids", shapes), ("attention_mask", shapes))


def profile_max_batch(profile: Profile) -> int:
    """The largest batch of a profile (the first dimension of its max shapes)."""
    return min(shapes[2][0] for _, shapes in profile)


def with_max_batch(profile: Profile, max_batch: int) -> Profile:
    """`profile` with the batch dimension capped at `max_batch` (min and opt capped too)."""
    capped = []
    for name, shapes in profile:
        capped.append((name, tuple((min(shape[0], max_batch), *shape[1:]) for shape in shapes)))
    return tuple(capped)


def looks_like_out_of_memory(messages: list[str]) -> bool:
    """True when TensorRT's error messages say the GPU ran out of memory."""
    text = " ".join(messages).lower().replace(" ", "")
    return any(marker.replace(" ", "") in text for marker in OUT_OF_MEMORY_MARKERS)


# --------------------------------------------------------------------------- progress


class BuildProgress:
    """Shows TensorRT's build phases: one updating line on a terminal, one line per top-level phase otherwise.

    TensorRT calls the monitor from its own threads, so updates are serialised by a lock.
    """

    def __init__(self, title: str, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.phases: dict[str, tuple[str | None, int, int]] = {}
        """phase name -> (parent, steps, steps completed)"""
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_width = 0

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _render(self, name: str) -> str:
        chain, current = [], name
        while current is not None and current in self.phases:
            parent, steps, done = self.phases[current]
            chain.append(f"{current} {done}/{steps}")
            current = parent
        return f"{self.title} [{self._elapsed()}] " + " › ".join(reversed(chain))

    def _emit(self, text: str, final: bool = False) -> None:
        if self.interactive:
            padding = " " * max(0, self._last_width - len(text))
            self.stream.write("\r" + text + padding + ("\n" if final else ""))
            self._last_width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            self.phases[phase_name] = (parent_phase, int(num_steps), 0)
            if self.interactive or parent_phase is None:
                self._emit(self._render(phase_name))

    def step_complete(self, phase_name: str, step: int) -> bool:
        """Record a finished step; returns True (TensorRT cancels the build on False)."""
        with self._lock:
            if phase_name in self.phases:
                parent, steps, _ = self.phases[phase_name]
                self.phases[phase_name] = (parent, steps, int(step) + 1)
                if self.interactive:
                    self._emit(self._render(phase_name))
        return True

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            parent = self.phases.pop(phase_name, (None, 0, 0))[0]
            if parent is None and self.interactive:
                self._emit(f"{self.title} [{self._elapsed()}] {phase_name} done", final=not self.phases)

    def finish(self, message: str) -> None:
        """The closing line of a build."""
        with self._lock:
            self._emit(f"{self.title} [{self._elapsed()}] {message}", final=True)


def _progress_monitor(trt, progress: BuildProgress):
    """A `trt.IProgressMonitor` forwarding to `progress` (the class needs TensorRT, so it is made here)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()


# --------------------------------------------------------------------------- INT8 calibration


def calibration_batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Fixed-size (batch_size, ...) float32 batches of `images`; a short last batch is filled by repeating images.

    TensorRT's calibrator takes batches of exactly its batch size.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    if len(images) == 0:
        raise ValueError("no calibration images")
    batches = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if len(batch) < batch_size:
            repeat = np.resize(np.arange(len(images)), batch_size - len(batch))
            batch = np.concatenate([batch, images[repeat]], axis=0)
        batches.append(np.ascontiguousarray(batch))
    return batches


def _entropy_calibrator(trt, cuda, images: np.ndarray, input_name: str, cache_path: Path | None):
    """A `trt.IInt8EntropyCalibrator2` feeding `images` from one device buffer, caching its table in `cache_path`."""
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no implicit INT8 calibration (IInt8EntropyCalibrator2); build with --precision fp16"
        )
    batches = calibration_batches(images, CALIBRATION_BATCH)

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device = cuda.malloc(batches[0].nbytes)
            self.host = cuda.pinned(batches[0].shape, np.float32)
            self.stream = cuda.stream()

        def get_batch_size(self):
            return CALIBRATION_BATCH

        def get_batch(self, names):
            if self.index >= len(batches) or input_name not in names:
                return None
            self.host.array[...] = batches[self.index]
            cuda.copy_to_device(self.device.ptr, self.host.ptr, batches[self.index].nbytes, self.stream)
            self.stream.synchronize()
            self.index += 1
            return [self.device.ptr if name == input_name else 0 for name in names]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is None:
                return
            try:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))
            except OSError as exc:
                log.warning("cannot keep the INT8 calibration table in %s (%s); it will be computed again next build", cache_path, exc.strerror or exc)

        def release(self) -> None:
            self.device.free()
            self.host.free()
            self.stream.destroy()

    return _Calibrator()


# --------------------------------------------------------------------------- builder


class _CollectingLogger:
    """Factory of a `trt.ILogger` that forwards warnings and errors to logging and keeps the errors."""

    def __init__(self, trt) -> None:
        self.errors: list[str] = []
        errors = self.errors
        severity = trt.ILogger.Severity

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, level, message):
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    errors.append(str(message))
                    log.debug("TensorRT error: %s", message)
                elif level == severity.WARNING:
                    log.debug("TensorRT warning: %s", message)

        self.logger = _Logger()


_LOGGERS: dict[int, _CollectingLogger] = {}


def shared_logger(trt) -> _CollectingLogger:
    """The process's one TensorRT logger (TensorRT expects every builder and runtime to share one)."""
    collector = _LOGGERS.get(id(trt))
    if collector is None:
        collector = _LOGGERS[id(trt)] = _CollectingLogger(trt)
    return collector


class TensorRTBuilder:
    """Builds serialized engines with the TensorRT Python API (TensorRT 10)."""

    def __init__(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise TensorRTUnavailable(f"TensorRT is not installed ({exc})") from exc
        except OSError as exc:  # the wheel is there but its CUDA libraries do not load
            raise TensorRTUnavailable(f"TensorRT cannot load its libraries ({exc})") from exc
        self.trt = trt
        self.version = str(trt.__version__)

    def build(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str,
        *,
        progress: BuildProgress,
        calibration: np.ndarray | None = None,
        calibration_cache: Path | None = None,
        cuda=None,
    ) -> bytes:
        """Parse `onnx_path`, build it for `profile` and `precision`, return the serialized engine.

        Raises EngineBuildOutOfMemory when TensorRT reports the GPU ran out of memory, and
        EngineBuildError for anything else (unparseable ONNX, unsupported layer, no calibrator).
        """
        trt = self.trt
        collector = shared_logger(trt)
        collector.errors.clear()
        builder = trt.Builder(collector.logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, collector.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors) or 'no details'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)  # TF32 keeps only 10 mantissa bits: not float32 answers
        else:
            config.set_flag(trt.BuilderFlag.FP16)
        optimisation = builder.create_optimization_profile()
        for name, (smallest, optimal, largest) in profile:
            optimisation.set_shape(name, smallest, optimal, largest)
        config.add_optimization_profile(optimisation)
        calibrator = None
        if precision == "int8":
            if calibration is None or cuda is None:
                raise EngineBuildError("an INT8 build needs calibration images and a CUDA runtime")
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = _entropy_calibrator(trt, cuda, calibration, profile[0][0], calibration_cache)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(optimisation)
        elif precision not in ("fp16", "fp32"):
            raise EngineBuildError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        monitor = _progress_monitor(trt, progress) if hasattr(trt, "IProgressMonitor") else None
        if monitor is not None:
            config.progress_monitor = monitor
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.release()
        if serialized is None:
            details = "; ".join(collector.errors[-3:]) or "no details"
            if looks_like_out_of_memory(collector.errors):
                raise EngineBuildOutOfMemory(f"the GPU ran out of memory building {onnx_path.name}: {details}")
            raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path}: {details}")
        return bytes(memoryview(serialized))


# --------------------------------------------------------------------------- cache policy


@dataclass(frozen=True)
class BuildRequest:
    """What to build when the cache cannot serve `key`."""

    key: EngineKey
    onnx_path: Path
    build: Callable[[Profile], bytes]
    """Builds the engine for a (possibly batch-capped) profile."""
    metadata: dict


def ensure_engine(
    work_dir: Path, request: BuildRequest, *, force: bool = False, start_max_batch: int | None = None
) -> CachedEngine:
    """The cached engine for `request.key`, built (and cached) when missing, stale or damaged.

    `force` rebuilds even a valid entry; `start_max_batch` caps the largest batch of the first
    attempt (after the GPU ran out of memory at run time). Raises EngineBuildError when no
    batch size down to 1 can be built, and EngineCacheError when the cache cannot be written.
    """
    key = request.key
    if not force and start_max_batch is None:
        cached, problem = cached_engine_problem(work_dir, key)
        if cached is not None:
            return cached
        if problem is not None and not problem.startswith("no engine cached"):
            log.warning("TensorRT %s %s engine will be rebuilt: %s", key.tower, key.precision, problem)
    max_batch = min(profile_max_batch(key.profile), start_max_batch or MAX_BATCH)
    log.info(
        "building the TensorRT %s %s engine for %s (compute capability %s, TensorRT %s); this takes minutes, once",
        key.tower, key.precision, key.gpu_name, key.compute_capability, key.tensorrt_version,
    )
    while True:
        profile = with_max_batch(key.profile, max_batch)
        try:
            engine = request.build(profile)
            break
        except EngineBuildOutOfMemory as exc:
            if max_batch <= 1:
                raise EngineBuildError(f"{exc}; even a batch of 1 does not fit on this GPU") from exc
            log.warning(
                "GPU out of memory building the %s engine for batches up to %d; building for up to %d instead",
                key.tower, max_batch, max_batch // 2,
            )
            max_batch //= 2
    return store_engine(
        work_dir,
        key,
        engine,
        {**request.metadata, "built_max_batch": max_batch, "source_onnx": request.onnx_path.name},
    )
