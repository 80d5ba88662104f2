"""What the engine commands do (`build`, `quantize`, `export`), given explicit values.

The command line is app/engine_commands.py (`python -m app.engine_commands ...`): it resolves
the model and work folders (flags, then `HOLOSCAN_MODEL_PATH` / `HOLOSCAN_WORKDIR`, like the MAP
itself), builds the probe set and any calibration images with the product's preprocessing, and
calls these functions, which never read the environment.

- `build_tensorrt_engines` runs on the GPU host that will serve the model: it builds (or finds
  valid in the cache) the image engine in the given precision and the float32 text engine, with a
  progress display, into `<work dir>/tensorrt/<weights sha256>/`, then loads them and runs the
  parity gate. A cached INT8 engine calibrated on other images is rebuilt.
- `ship_int8_graph` makes the CPU INT8 image graphs (ONNX Runtime, `onnx/int8/`; OpenVINO,
  `onnx/openvino-int8/`) inside the model folder and ships the parity gate's result of every fast
  CPU path this CPU offers (`onnx/gates/`), so MAP runs with an empty work folder on a CPU of this
  kind neither quantise nor gate.
- `export_checked_onnx` writes the ONNX export into the model folder and checks it against
  PyTorch; a wrong export is removed, never shipped.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from engines.calibration import CalibrationSet
from engines.export_parity import ExportParity
from engines.parity_gate import ProbeSource
from models.directory import ModelDirectory

log = logging.getLogger("engines")


def build_tensorrt_engines(
    model: ModelDirectory,
    work_dir: Path,
    *,
    precision: str,
    probes: ProbeSource,
    calibration: CalibrationSet | None = None,
    force: bool = False,
) -> dict:
    """Build (or reuse) both towers' TensorRT engines, load them, run the gate; a JSON-ready summary.

    `calibration` are the INT8 calibration images (None: `probes`'s base images).
    """
    from engines.onnx_files import onnx_files_for
    from engines.tensorrt_backend import TensorRTBackend, build_requests, calibration_changed
    from engines.tensorrt_build import TensorRTBuilder, ensure_engine
    from engines.tensorrt_cuda import open_cuda_runtime

    builder = TensorRTBuilder()
    cuda = open_cuda_runtime()
    device = cuda.device_info()
    onnx = onnx_files_for(model, work_dir)
    requests = build_requests(
        model, onnx, precision, builder=builder, cuda=cuda, device=device, work_dir=work_dir,
        calibration=calibration, probes=probes,
    )
    engines = {}
    for tower, request in requests.items():
        rebuild = force or calibration_changed(work_dir, request, calibration)
        if rebuild and not force:
            log.info("the cached INT8 %s engine was calibrated on other images; rebuilding", tower)
        cached = ensure_engine(work_dir, request, force=rebuild)
        engines[tower] = {
            "precision": request.key.precision,
            "engine": str(cached.engine_path),
            "size_mb": round(cached.metadata["size_bytes"] / 1e6, 1),
            "max_batch": cached.max_batch,
        }
    backend = TensorRTBackend(model, work_dir, precision, builder=builder, cuda=cuda, probes=probes)
    gate = backend.gate
    backend.close()
    return {
        "gpu": device.name,
        "compute_capability": device.compute_capability,
        "tensorrt": builder.version,
        "engines": engines,
        "parity_gate": {"passed": gate.passed, "summary": gate.summary()},
    }


def ship_int8_graph(
    model: ModelDirectory, work_dir: Path, *, probes: ProbeSource, calibration: CalibrationSet | None = None
) -> dict:
    """Make the CPU INT8 image graphs in the model folder and ship this CPU's gate results; a JSON-ready summary.

    Two graphs: ONNX Runtime's dynamic INT8 (`onnx/int8/`, needs no calibration) and OpenVINO's
    NNCF static INT8 (`onnx/openvino-int8/`), calibrated on `calibration` (default: the probe
    source's calibration set, the sample studies). The gate of every fast CPU path this CPU offers
    (INT8, bfloat16 and OpenVINO float32, engines/cpu_fast_path.py) is run and its record shipped in
    `onnx/gates/`, so that `auto` on a CPU of this kind reads every figure it chooses by and gates nothing. Raises ValueError when the model folder already
    holds an unusable INT8 folder, QuantizationError when a graph cannot be made.
    """
    from engines.cpu_fast_path import FAST_PATHS, INT8_PATH, OV_INT8_PATH, gated_result
    from engines.cpu_features import read_cpu_features
    from engines.onnx_files import onnx_files_for
    from engines.openvino_quantization import ov_int8_folder_problem, quantize_openvino_image_graph, shipped_ov_int8_dir
    from engines.parity_gate import SHIPPED_GATES_SUBDIR, GateRecords
    from engines.quantization import int8_folder_problem, quantize_image_graph, shipped_int8_dir

    onnx = onnx_files_for(model, work_dir)
    made = {
        INT8_PATH: (shipped_int8_dir(model), int8_folder_problem, lambda dest: quantize_image_graph(model, onnx, dest)),
        OV_INT8_PATH: (
            shipped_ov_int8_dir(model),
            ov_int8_folder_problem,
            lambda dest: quantize_openvino_image_graph(model, onnx, calibration or probes.calibration_set(model), dest),
        ),
    }
    features = read_cpu_features()
    gates_dir = model.shipped_onnx_dir / SHIPPED_GATES_SUBDIR
    records = GateRecords(work_dir, gates_dir)
    summary: dict = {}
    for name, (destination, folder_problem, make) in made.items():
        if destination.exists():
            problem = folder_problem(destination, model.sha256)
            if problem is not None:
                raise ValueError(f"{destination} exists but is unusable ({problem}); remove it and run quantize again")
            log.info("%s already holds the %s graph of these weights", destination, name)
        else:
            make(destination)
        summary[name] = {"graph": str(destination)}
    for path in FAST_PATHS:  # every path this CPU offers, so that `auto` gates nothing at run time here
        entry = summary.setdefault(path.name, {})
        not_offered = path.not_offered(features)
        if not_offered is not None:
            entry["parity_gate"] = {"passed": None, "summary": f"not run: {not_offered}"}
            continue
        result, backend = gated_result(path, model, work_dir, features, records, probes)
        if backend is not None:
            backend.close()
        records.store(result, gates_dir)
        if not result.passed:
            log.warning("the %s path failed the parity gate on this CPU (%s): MAP runs here will not use it", path.name, result.reason)
        entry["parity_gate"] = {"passed": result.passed, "summary": result.summary()}
    summary["cpu"] = features.kernel_signature()
    return summary


def export_checked_onnx(model: ModelDirectory, sample_images: np.ndarray) -> ExportParity | None:
    """Export the towers into `<model folder>/onnx/` and check them against PyTorch on `sample_images`.

    Returns None when the folder already holds a valid export of these weights. Raises
    OnnxExportError when an existing folder is unusable or the export fails, and
    ExportParityError (after removing the export) when it does not reproduce PyTorch.
    """
    from engines.export_parity import ExportParityError, check_export_parity
    from engines.onnx_export import OnnxExportError, export_onnx
    from engines.onnx_files import onnx_folder_problem

    destination = model.shipped_onnx_dir
    if destination.exists():
        problem = onnx_folder_problem(destination, model.sha256)
        if problem is None:
            log.info("%s already holds the ONNX export of these weights", destination)
            return None
        raise OnnxExportError(f"{destination} exists but is unusable ({problem}); remove it and export again")
    export_onnx(model, destination)
    try:
        return check_export_parity(model, destination, sample_images)
    except ExportParityError:
        shutil.rmtree(destination, ignore_errors=True)  # a wrong export must not be shipped
        raise
