"""`python -m engines build` (TensorRT engines) and `python -m engines quantize` (the CPU INT8 graph).

    python -m engines build --precision fp16|int8 [--calib DIR] [-m MODELS] [-w WORKDIR] [--force]
    python -m engines quantize [-m MODELS] [-w WORKDIR]

`build` runs on the GPU host that will serve the model: it builds (or finds valid in the cache)
the image engine in the given precision and the float32 text engine, with a progress display,
into `<work dir>/tensorrt/<weights sha256>/`, then loads them and runs the parity gate. `--calib`
names a folder of DICOM studies or PNG/JPEG images for INT8 calibration (default: the sample
studies); a folder without usable images is refused before anything is built. A cached INT8
engine calibrated on other images is rebuilt.

`quantize` makes the INT8 image graph for ONNX Runtime on CPU and ships it inside the model folder
(`onnx/int8/`), with the parity gate's result for this CPU (`onnx/gates/`), so MAP runs with an
empty work folder neither quantise nor re-check.

`-m` and `-w` default to `HOLOSCAN_MODEL_PATH` / `HOLOSCAN_WORKDIR` like the MAP itself. Exit
status 0 on success, 2 when something is unusable (one line says what).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("engines")

COMMANDS = ("build", "quantize")
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "biomedclip-map-work"
"""The MAP's own default work folder (app/settings.py), so `build` fills the cache the MAP reads."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", type=Path, default=None,
        help="model folder, or the models folder holding biomedclip/ (default: $HOLOSCAN_MODEL_PATH, else ./models)",
    )
    parser.add_argument(
        "-w", "--workdir", type=Path, default=None,
        help="work folder whose caches the MAP uses (default: $HOLOSCAN_WORKDIR, else the MAP's default)",
    )


def add_build_commands(commands) -> None:
    """Register `build` and `quantize` on the `python -m engines` sub-command parser."""
    build = commands.add_parser("build", help="build the TensorRT engines for this GPU (takes minutes)")
    _common(build)
    build.add_argument("--precision", choices=("fp16", "int8"), default="fp16", help="image engine precision (default fp16)")
    build.add_argument("--calib", type=Path, default=None, help="INT8 calibration folder: DICOM studies or PNG/JPEG images (default: the sample studies)")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    quantize = commands.add_parser("quantize", help="ship the CPU INT8 image graph and its parity result in the model folder")
    _common(quantize)


def _model_and_work_dir(args: argparse.Namespace):
    from models.directory import open_model_dir

    model_path = args.model or Path(os.environ.get("HOLOSCAN_MODEL_PATH") or "models")
    work_dir = args.workdir or Path(os.environ.get("HOLOSCAN_WORKDIR") or DEFAULT_WORK_DIR)
    model = open_model_dir(model_path, allow_untrained=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    return model, work_dir


def _build(args: argparse.Namespace) -> dict:
    from engines.calibration import folder_images
    from engines.onnx_files import onnx_files_for
    from engines.tensorrt_backend import TensorRTBackend, build_requests, calibration_changed
    from engines.tensorrt_build import TensorRTBuilder, ensure_engine
    from engines.tensorrt_cuda import open_cuda_runtime

    if args.calib is not None and args.precision != "int8":
        raise ValueError("--calib is only used with --precision int8")
    model, work_dir = _model_and_work_dir(args)
    calibration = None
    if args.calib is not None:
        calibration = folder_images(args.calib, size=model.image_size, mean=model.mean, std=model.std)
        log.info("calibrating on %d preprocessed images from %s", len(calibration), args.calib)
    builder = TensorRTBuilder()
    cuda = open_cuda_runtime()
    device = cuda.device_info()
    onnx = onnx_files_for(model, work_dir)
    requests = build_requests(
        model, onnx, args.precision, builder=builder, cuda=cuda, device=device, work_dir=work_dir, calibration=calibration
    )
    engines = {}
    for tower, request in requests.items():
        force = args.force or calibration_changed(work_dir, request, calibration)
        if force and not args.force:
            log.info("the cached INT8 %s engine was calibrated on other images; rebuilding", tower)
        cached = ensure_engine(work_dir, request, force=force)
        engines[tower] = {
            "precision": request.key.precision,
            "engine": str(cached.engine_path),
            "size_mb": round(cached.metadata["size_bytes"] / 1e6, 1),
            "max_batch": cached.max_batch,
        }
    backend = TensorRTBackend(model, work_dir, args.precision, builder=builder, cuda=cuda)
    gate = backend.gate
    backend.close()
    return {
        "gpu": device.name,
        "compute_capability": device.compute_capability,
        "tensorrt": builder.version,
        "engines": engines,
        "parity_gate": {"passed": gate.passed, "summary": gate.summary()},
    }


def _quantize(args: argparse.Namespace) -> dict:
    from engines.cpu_fast_path import INT8_PATH, PATHS_BY_NAME, gated_result
    from engines.cpu_features import read_cpu_features
    from engines.onnx_files import onnx_files_for
    from engines.parity_gate import SHIPPED_GATES_SUBDIR, GateRecords
    from engines.quantization import int8_folder_problem, quantize_image_graph, shipped_int8_dir

    model, work_dir = _model_and_work_dir(args)
    onnx = onnx_files_for(model, work_dir)
    destination = shipped_int8_dir(model)
    if destination.exists():
        problem = int8_folder_problem(destination, model.sha256)
        if problem is not None:
            raise ValueError(f"{destination} exists but is unusable ({problem}); remove it and run quantize again")
        log.info("%s already holds the INT8 graph of these weights", destination)
    else:
        quantize_image_graph(model, onnx, destination)
    gates_dir = model.shipped_onnx_dir / SHIPPED_GATES_SUBDIR
    records = GateRecords(work_dir, gates_dir)
    result, backend = gated_result(PATHS_BY_NAME[INT8_PATH], model, work_dir, read_cpu_features(), records)
    if backend is not None:
        backend.close()
    records.store(result, gates_dir)
    if not result.passed:
        log.warning("the INT8 graph failed the parity gate on this CPU (%s): MAP runs here will use float32", result.reason)
    return {"int8_graph": str(destination), "parity_gate": {"passed": result.passed, "summary": result.summary()}}


def run_build_command(args: argparse.Namespace) -> int:
    """Run `build` or `quantize`; prints a JSON summary; returns the exit status."""
    from engines.base import BackendUnavailable
    from engines.calibration import CalibrationError
    from engines.onnx_export import OnnxExportError
    from engines.quantization import QuantizationError
    from engines.tensorrt_build import EngineBuildError, TensorRTUnavailable
    from engines.tensorrt_cache import EngineCacheError
    from engines.tensorrt_cuda import CudaError, CudaUnavailable
    from models.errors import ModelDirectoryError

    try:
        summary = _build(args) if args.command == "build" else _quantize(args)
    except TensorRTUnavailable as exc:
        log.error("%s: build the engines on the GPU host that runs them, where TensorRT is installed", exc)
        return 2
    except CudaUnavailable as exc:
        log.error("no CUDA GPU can be used here (%s): TensorRT engines are built on the GPU that runs them", exc)
        return 2
    except (
        ModelDirectoryError, CalibrationError, OnnxExportError, QuantizationError, EngineBuildError,
        EngineCacheError, CudaError, BackendUnavailable, ValueError, OSError,
    ) as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
