"""The fast CPU path: the fastest reduced-precision backend that gives the float32 answers on this CPU.

Under `auto`, after TensorRT, the CPU slot of the backend order opens this instead of plain ONNX
Runtime float32. These paths are known:

    openvino-int8      OpenVINO, NNCF static INT8 image tower (engines/openvino_backend.py);
                       offered when the CPU has INT8 dot-product instructions
    openvino-bf16      OpenVINO, bfloat16 inference precision; offered only where bfloat16 is native
    openvino           OpenVINO float32 (its kernels can beat ONNX Runtime's on the same graph);
                       offered on x86-64 with SSE4.2 (OpenVINO's minimum) and on 64-bit Arm
    onnxruntime-int8   INT8 image tower (engines/quantization.py); offered when the CPU has INT8
                       dot-product instructions (AVX2, AVX-VNNI, AVX512-VNNI, AMX-INT8, Arm dotprod)
    pytorch-bf16       PyTorch bfloat16 autocast; offered only where bfloat16 is native
                       (AMX-BF16 or AVX512-BF16): emulated bfloat16 is slower than float32

Each offered path must pass the parity gate (engines/parity_gate.py: smallest embedding cosine,
largest class-probability change and top-1 agreement on the decisive decisions, with limits per
precision) and be at
least `MIN_SPEEDUP` times faster than float32 in the gate's own timing; the fastest one that does
is used. The gate runs once per
(model weights, path, runtime version, CPU instructions) and its result is kept in the work folder.
When no path qualifies, ONNX Runtime float32 is used and one log line says why (INFO when the CPU
simply lacks the instructions, WARNING when a path was tried and failed). A GPU (ONNX Runtime's
CUDA provider) makes the CPU paths moot: plain ONNX Runtime is opened then.

Forcing `--backend onnxruntime-int8` or `pytorch-bf16` skips the CPU check but never the gate: a
forced path that fails it is an error naming the figures. Forcing an OpenVINO path on a CPU
without its instructions is an error saying which are missing (OpenVINO would silently run
another precision, or an emulated one); the gate still runs where they are present.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engines.base import BackendUnavailable, InferenceBackend
from engines.cpu_features import CpuFeatures, read_cpu_features
from engines.onnx_export import OnnxExportError
from engines.onnx_files import onnx_files_for
from engines.parity_gate import (
    BF16_THRESHOLDS,
    FP32_ENGINE_THRESHOLDS,
    INT8_THRESHOLDS,
    SHIPPED_GATES_SUBDIR,
    GateRecords,
    GateResult,
    GateThresholds,
    ParityGateError,
    ProbeSource,
    evaluate_gate,
    gate_key,
)
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

INT8_PATH = "onnxruntime-int8"
BF16_PATH = "pytorch-bf16"
OV_FP32_PATH = "openvino"
OV_BF16_PATH = "openvino-bf16"
OV_INT8_PATH = "openvino-int8"
MIN_SPEEDUP = 1.2
"""A path must be at least this much faster than float32 in the gate's timing to be worth its reduced
precision; the margin also keeps the choice stable against timing noise on busy hosts."""
TORCH_PATH_MIN_ADVANTAGE = 1.5
"""A PyTorch path is chosen over the fastest qualifying ONNX Runtime/OpenVINO path only when it is at least
this much faster in the gate's timing. It has to import torch and load the float32 PyTorch model, which
the others never do: on a cold MAP run of the full-size model (2-core AMX Xeon, README's speed section)
that cost 7–9 s and a 2.4 GB peak RSS against about 1 s and 0.5 GB for the OpenVINO INT8 graph, so a
throughput edge within timing noise (the gate times a few batches, on busy hosts too) must not buy it."""


def _open_int8(model: ModelDirectory, work_dir: Path, probes: ProbeSource | None) -> InferenceBackend:
    from engines.onnxruntime_int8_backend import OnnxRuntimeInt8Backend

    return OnnxRuntimeInt8Backend(model, work_dir)


def _openvino_opener(precision: str) -> Callable[[ModelDirectory, Path, "ProbeSource | None"], InferenceBackend]:
    """Opens OpenVINO in `precision`; an INT8 graph that must be made is calibrated on the probe source's images."""

    def opener(model: ModelDirectory, work_dir: Path, probes: ProbeSource | None) -> InferenceBackend:
        try:
            from engines.openvino_backend import OpenVinoBackend
        except ImportError as exc:
            raise BackendUnavailable(f"the OpenVINO backend cannot be imported ({exc})") from exc
        calibration = (lambda: probes.calibration_set(model)) if probes is not None else None
        return OpenVinoBackend(model, work_dir, precision, calibration=calibration)

    return opener


def _openvino_fp32_not_offered(features: CpuFeatures) -> str | None:
    if features.machine in ("x86_64", "amd64"):
        if "sse4_2" not in features.flags:
            return f"OpenVINO needs at least SSE4.2 on x86-64 (found {features.kernel_signature()})"
        return None
    if features.machine in ("aarch64", "arm64"):
        return None
    return f"OpenVINO's CPU plugin does not run on {features.machine or 'this machine'}"


def _openvino_bf16_not_offered(features: CpuFeatures) -> str | None:
    return _openvino_fp32_not_offered(features) or _bf16_not_offered(features)


def _openvino_int8_not_offered(features: CpuFeatures) -> str | None:
    return _openvino_fp32_not_offered(features) or _int8_not_offered(features)


def _openvino_recipe(precision: str) -> Callable[[], str]:
    def recipe() -> str:
        if precision == "int8":
            from engines.openvino_quantization import RECIPE

            return f"openvino-{RECIPE}"
        return f"openvino-onnx-{precision}-v1"

    return recipe


def _open_bf16(model: ModelDirectory, work_dir: Path, probes: ProbeSource | None) -> InferenceBackend:
    try:
        from engines.pytorch_bf16_backend import PyTorchBf16Backend
    except ImportError as exc:
        raise BackendUnavailable(f"PyTorch/open_clip is not installed ({exc})") from exc
    return PyTorchBf16Backend(model)


def _int8_not_offered(features: CpuFeatures) -> str | None:
    if features.int8_kernel is None:
        return (
            "the CPU has no INT8 dot-product instructions (AVX2, AVX-VNNI, AVX512-VNNI, AMX-INT8 or Arm dotprod); "
            f"found {features.kernel_signature()}"
        )
    return None


def _bf16_not_offered(features: CpuFeatures) -> str | None:
    if features.bf16_kernel is None:
        return f"bfloat16 is emulated on this CPU (no AMX-BF16 or AVX512-BF16; found {features.kernel_signature()}) and slower than float32"
    return None


def _int8_recipe() -> str:
    from engines.quantization import RECIPE

    return RECIPE


@dataclass(frozen=True)
class FastPath:
    """One reduced-precision CPU path: how to open it, when it is offered, what it must reach."""

    name: str
    opener: Callable[[ModelDirectory, Path, "ProbeSource | None"], InferenceBackend]
    """Opens the backend; the probe source supplies calibration images if a graph must be made."""
    not_offered: Callable[[CpuFeatures], str | None]
    thresholds: GateThresholds
    runtime_package: str
    recipe: Callable[[], str]
    forced_needs_instructions: bool = False
    """Forcing the path on a CPU that does not offer it is an error (not just a log line)."""
    graph_identity: Callable[[ModelDirectory, Path], str | None] | None = None
    """For graphs made from calibration images: what identifies the graph a run would open (None: not made
    yet); it joins the gate key so a recalibrated graph is gated again."""


def _ov_int8_graph_identity(model: ModelDirectory, work_dir: Path) -> str | None:
    from engines.openvino_quantization import ov_int8_graph_identity

    return ov_int8_graph_identity(model, work_dir)


FAST_PATHS: tuple[FastPath, ...] = (
    FastPath(
        OV_INT8_PATH, _openvino_opener("int8"), _openvino_int8_not_offered, INT8_THRESHOLDS, "openvino",
        _openvino_recipe("int8"), True, _ov_int8_graph_identity,
    ),
    FastPath(OV_BF16_PATH, _openvino_opener("bf16"), _openvino_bf16_not_offered, BF16_THRESHOLDS, "openvino", _openvino_recipe("bf16"), True),
    FastPath(OV_FP32_PATH, _openvino_opener("fp32"), _openvino_fp32_not_offered, FP32_ENGINE_THRESHOLDS, "openvino", _openvino_recipe("fp32"), True),
    FastPath(INT8_PATH, _open_int8, _int8_not_offered, INT8_THRESHOLDS, "onnxruntime", _int8_recipe),
    FastPath(BF16_PATH, _open_bf16, _bf16_not_offered, BF16_THRESHOLDS, "torch", lambda: "torch-cpu-autocast-bf16-v1"),
)
PATHS_BY_NAME = {path.name: path for path in FAST_PATHS}


def package_version(name: str) -> str:
    """The installed version of a distribution, without importing it ('absent' if not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def gate_ingredients(path: FastPath, features: CpuFeatures) -> dict:
    """What besides the weights can change a path's answers: recipe, runtime version, CPU kernels, thresholds."""
    return {
        "recipe": path.recipe(),
        "runtime": f"{path.runtime_package} {package_version(path.runtime_package)}",
        "cpu": features.kernel_signature(),
        "thresholds": asdict(path.thresholds),
    }


def gate_records(model: ModelDirectory, work_dir: Path) -> GateRecords:
    """The gate records of a run: shipped in the model folder (`onnx/gates/`), then the work folder."""
    return GateRecords(work_dir, model.shipped_onnx_dir / SHIPPED_GATES_SUBDIR)


def run_gate(
    path: FastPath, candidate: InferenceBackend, model: ModelDirectory, work_dir: Path, key: str, details: dict, probes: ProbeSource
) -> GateResult:
    """Compare `candidate` with its own float32 reference on the caller's probe set."""
    probe_set = probes.probe_set(model, work_dir)
    reference = candidate.float32_image_encoder()  # type: ignore[attr-defined]
    return evaluate_gate(
        path=path.name,
        key=key,
        reference=reference,
        candidate=candidate.encode_images,
        probes=probe_set.images,
        class_sets=probe_set.class_sets(candidate),
        logit_scale=candidate.logit_scale,
        thresholds=path.thresholds,
        details=details,
    )


def gated_result(
    path: FastPath, model: ModelDirectory, work_dir: Path, features: CpuFeatures, records: GateRecords, probes: ProbeSource | None
) -> tuple[GateResult, InferenceBackend | None]:
    """The gate result of `path` (stored, or run now on `probes` and stored) and the backend if it had to be opened.

    A path whose graph is made from calibration images (`FastPath.graph_identity`) has that
    graph's identity in its key; if the graph is not made yet, the backend is opened first (which
    makes it), so the key names the graph the result is about.

    Raises BackendUnavailable when the path cannot be opened, ParityGateError when no probe set
    was given, and lets the gate's own errors through (the caller decides whether that is a
    fallback or an error).
    """
    if probes is None:
        raise ParityGateError(f"no probe set was given, so the parity gate of {path.name} cannot run")
    details = gate_ingredients(path, features)
    candidate: InferenceBackend | None = None
    if path.graph_identity is not None:
        identity = path.graph_identity(model, work_dir)
        if identity is None:  # the graph is made when the backend is opened; its identity is known after
            candidate = path.opener(model, work_dir, probes)
            identity = path.graph_identity(model, work_dir)
        details["graph"] = identity
    key = gate_key(model.sha256, path.name, details, probe_set=probes.name)
    stored = records.load(key)
    if stored is not None:
        return stored, candidate
    if candidate is None:
        candidate = path.opener(model, work_dir, probes)
    log.info("checking the %s path against float32 on the probe set (once per model, runtime and CPU)", path.name)
    try:
        result = run_gate(path, candidate, model, work_dir, key, details, probes)
    except BaseException:
        candidate.close()
        raise
    records.store(result)
    return result, candidate


def preferred_result(qualified: list[GateResult]) -> tuple[GateResult, str]:
    """The path to open among those that passed: the fastest, unless it is a PyTorch path not clearly faster than the rest.

    Returns the result and a phrase for the log line ('' when the fastest was taken).
    """
    fastest = max(qualified, key=lambda r: r.images_per_s)
    if PATHS_BY_NAME[fastest.path].runtime_package != "torch":
        return fastest, ""
    lighter = [r for r in qualified if PATHS_BY_NAME[r.path].runtime_package != "torch"]
    if not lighter:
        return fastest, ""
    best_lighter = max(lighter, key=lambda r: r.images_per_s)
    if fastest.images_per_s >= TORCH_PATH_MIN_ADVANTAGE * best_lighter.images_per_s:
        return fastest, ""
    return best_lighter, (
        f"; preferred to {fastest.path} ({fastest.images_per_s:.2f} images/s), which needs torch and the float32 "
        f"PyTorch model and is less than {TORCH_PATH_MIN_ADVANTAGE}× faster"
    )


def _say_whether_shipped_records_apply(records: GateRecords, features: CpuFeatures) -> None:
    """One log line when the model folder ships gate records, but none for this CPU's kind: its paths are gated now.

    Records are keyed by the CPU signature, so a folder prepared on another kind of CPU is never
    trusted here; the gate runs once on this CPU (its results go to the work folder, so a
    persistent work folder pays it once).
    """
    shipped = records.shipped_cpus()
    here = features.kernel_signature()
    if shipped and here not in shipped:
        log.info(
            "the model folder's parity gate records are for other CPU kinds (%s), not this one (%s): gating the fast "
            "CPU paths now on the probe set (prepare the model folder on this kind of CPU with "
            "`python -m app.engine_commands quantize` to avoid this)",
            "; ".join(sorted(shipped)), here,
        )


def _float32_backend(model: ModelDirectory, work_dir: Path) -> InferenceBackend:
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, work_dir, allow_cuda=False)


def open_fastest_cpu_backend(
    model: ModelDirectory, work_dir: Path, *, probes: ProbeSource | None = None, features: CpuFeatures | None = None
) -> InferenceBackend:
    """`auto`'s CPU slot: the fastest gated reduced-precision path, else ONNX Runtime float32 (one log line why).

    `probes` is the caller's probe set for the parity gate (app/probe_set.py); without one no
    reduced-precision path can be checked, so float32 is used (one log line says so).

    Raises BackendUnavailable only when ONNX Runtime itself cannot be used (not installed, no ONNX
    files and no way to export them), exactly as the plain ONNX Runtime backend would.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
    from engines.onnxruntime_backend import CUDA_PROVIDER, OnnxRuntimeBackend

    if CUDA_PROVIDER in ort.get_available_providers():
        return OnnxRuntimeBackend(model, work_dir)  # a GPU is there: the CPU paths would only be slower
    try:
        onnx_files_for(model, work_dir)  # an unusable export is ONNX Runtime's failure: reported once, by the caller
    except OnnxExportError as exc:
        raise BackendUnavailable(str(exc)) from exc
    if probes is None:
        log.info("fast CPU path not used (no probe set was given for the parity gate); using ONNX Runtime float32")
        return _float32_backend(model, work_dir)
    features = features or read_cpu_features()
    records = gate_records(model, work_dir)
    _say_whether_shipped_records_apply(records, features)
    not_used: list[str] = []
    trouble = False
    qualified: list[GateResult] = []
    opened: dict[str, InferenceBackend] = {}
    for path in FAST_PATHS:
        reason = path.not_offered(features)
        if reason is not None:
            not_used.append(f"{path.name}: {reason}")
            continue
        try:
            result, backend = gated_result(path, model, work_dir, features, records, probes)
        except BackendUnavailable as exc:
            not_used.append(f"{path.name} cannot be opened ({exc})")
            trouble = True
            continue
        except Exception as exc:  # the optional path must never stop the run: fall back and say why
            not_used.append(f"{path.name}: the parity gate could not run ({type(exc).__name__}: {exc})")
            trouble = True
            continue
        if backend is not None:
            opened[path.name] = backend
        if not result.passed:
            not_used.append(f"{path.name} failed the parity gate ({result.reason})")
            trouble = True
        elif result.images_per_s < MIN_SPEEDUP * result.reference_images_per_s:
            not_used.append(
                f"{path.name} is not clearly faster than float32 on this CPU "
                f"({result.images_per_s:.2f} vs {result.reference_images_per_s:.2f} images/s; needs {MIN_SPEEDUP}×)"
            )
        else:
            qualified.append(result)
    chosen: InferenceBackend | None = None
    if qualified:
        best, preference = preferred_result(qualified)
        try:
            chosen = opened.pop(best.path, None) or PATHS_BY_NAME[best.path].opener(model, work_dir, probes)
        except BackendUnavailable as exc:
            not_used.append(f"{best.path} passed the parity gate but cannot be opened now ({exc})")
            trouble = True
        else:
            others = "; ".join(
                [f"{r.path} {r.images_per_s:.2f} images/s" for r in qualified if r is not best] + not_used
            )
            log.info(
                "fast CPU path %s: %s%s%s", best.path, best.summary(), preference, f" (not chosen: {others})" if others else ""
            )
    for backend in opened.values():
        backend.close()
    if chosen is not None:
        return chosen
    log.log(
        logging.WARNING if trouble else logging.INFO,
        "fast CPU path not used (%s); using ONNX Runtime float32",
        "; ".join(not_used),
    )
    return _float32_backend(model, work_dir)


def open_forced_fast_path(
    name: str, model: ModelDirectory, work_dir: Path, *, probes: ProbeSource | None = None, features: CpuFeatures | None = None
) -> InferenceBackend:
    """A fast path forced by configuration: opened whatever the CPU, but only if it passes the parity gate on `probes`."""
    path = PATHS_BY_NAME[name]
    features = features or read_cpu_features()
    reason = path.not_offered(features)
    if reason is not None and path.forced_needs_instructions:
        raise BackendUnavailable(f"{name} cannot run on this CPU: {reason}")
    if reason is not None:
        log.info("%s is forced although %s", name, reason)
    try:
        result, backend = gated_result(path, model, work_dir, features, gate_records(model, work_dir), probes)
    except BackendUnavailable:
        raise  # already says why the forced path cannot be opened
    except Exception as exc:  # the gate's failure makes the forced path unusable, with the reason
        raise BackendUnavailable(f"the parity gate of {name} could not run ({type(exc).__name__}: {exc})") from exc
    if not result.passed:
        if backend is not None:
            backend.close()
        raise BackendUnavailable(f"{name} failed the parity gate for this model ({result.reason}; {result.summary()})")
    return backend if backend is not None else path.opener(model, work_dir, probes)
