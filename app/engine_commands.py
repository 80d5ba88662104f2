"""Inference engine commands: `python -m app.engine_commands export|quantize|build|triton-repo ...`.

    python -m app.engine_commands export MODEL_PATH
    python -m app.engine_commands quantize [--calib DIR] [-m MODELS] [-w WORKDIR]
    python -m app.engine_commands build --precision fp16|int8 [--calib DIR] [-m MODELS] [-w WORKDIR] [--force]
    python -m app.engine_commands triton-repo OUT [-m MODELS] [-w WORKDIR] [options]

`export` (alias `export-onnx`) writes the ONNX export of a model's towers into `<model folder>/onnx/`
(with the weights hash in `onnx.json`), so a deployment can ship it and run ONNX Runtime without
torch, and checks it against PyTorch (cosine ≥ 0.9999, engines/export_parity.py). `quantize`
ships the checked ONNX export, the CPU INT8 image graphs (ONNX Runtime dynamic, and OpenVINO static
by NNCF, calibrated on `--calib DIR` or the sample studies) and the parity gate results of every fast
CPU path this CPU offers in the model folder (what the MAP staging ships, so that a MAP run on a CPU
of this kind exports, quantises and gates nothing); `build`
builds the TensorRT engines on the GPU host that runs them (engines/build_commands.py).
`--calib` names a folder of DICOM studies or PNG/JPEG images for INT8 calibration (default: the
sample studies); a folder without usable images is refused before anything is built.
`triton-repo` writes a Triton Inference Server model repository (engines/triton_repository.py).

The commands live with the application because they need what only it has: the sample studies
and the product's preprocessing (the parity gate's probe set, app/probe_set.py) and the MAP's
folder conventions: `-m` and `-w` default to `HOLOSCAN_MODEL_PATH` / `HOLOSCAN_WORKDIR`, then
`./models` and the MAP's own default work folder, so `build` fills the cache the MAP reads.
Exit status 0 on success, 2 when something is unusable (one line says what).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.settings import ENV_MODELS, default_work_dir

if TYPE_CHECKING:
    from engines.calibration import CalibrationSet
    from engines.parity_gate import ProbeSource
    from models.directory import ModelDirectory

log = logging.getLogger("engines.commands")

DEFAULT_MODELS = "models"


def models_path(flag_value: Path | None) -> Path:
    """The model folder: the flag, else $HOLOSCAN_MODEL_PATH, else ./models (as the MAP resolves it)."""
    return Path(flag_value) if flag_value else Path(os.environ.get(ENV_MODELS) or DEFAULT_MODELS)


def work_folder(flag_value: Path | None) -> Path:
    """The work folder: the flag, else the MAP's default ($HOLOSCAN_WORKDIR, else one in the system temp dir)."""
    return Path(flag_value) if flag_value else default_work_dir()


def _folders(parser: argparse.ArgumentParser, work_help: str) -> None:
    parser.add_argument(
        "-m", "--model", type=Path, default=None,
        help="model folder, or the models folder holding biomedclip/ (default: $HOLOSCAN_MODEL_PATH, else ./models)",
    )
    parser.add_argument("-w", "--workdir", type=Path, default=None, help=work_help)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m app.engine_commands` argument parser."""
    from engines.triton_repository import ACCELERATORS, INSTANCE_KINDS, TritonRepositoryOptions

    parser = argparse.ArgumentParser(prog="python -m app.engine_commands", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", aliases=["export-onnx"], help="export the model's towers to ONNX inside the model folder")
    export.add_argument("model", type=Path, help="model folder, or the models folder holding biomedclip/")

    build = commands.add_parser("build", help="build the TensorRT engines for this GPU (takes minutes)")
    _folders(build, "work folder whose caches the MAP uses (default: $HOLOSCAN_WORKDIR, else the MAP's default)")
    build.add_argument("--precision", choices=("fp16", "int8"), default="fp16", help="image engine precision (default fp16)")
    build.add_argument("--calib", type=Path, default=None, help="INT8 calibration folder: DICOM studies or PNG/JPEG images (default: the sample studies)")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    quantize = commands.add_parser("quantize", help="ship the CPU INT8 image graphs and their parity results in the model folder")
    _folders(quantize, "work folder whose caches the MAP uses (default: $HOLOSCAN_WORKDIR, else the MAP's default)")
    quantize.add_argument(
        "--calib", type=Path, default=None,
        help="OpenVINO INT8 calibration folder: DICOM studies or PNG/JPEG images (default: the sample studies)",
    )

    defaults = TritonRepositoryOptions()
    triton = commands.add_parser(
        "triton-repo",
        help="write a Triton Inference Server model repository (image and text encoders) for scale-out",
        description="Write a Triton model repository serving the model's image and text towers (ONNX, dynamic "
        "batching, instance groups). Serve it with: tritonserver --model-repository OUT",
    )
    triton.add_argument("out", type=Path, help="new folder for the repository (never overwritten)")
    _folders(triton, "work folder for the ONNX export cache (default: $HOLOSCAN_WORKDIR, else a folder in the system temp dir)")
    triton.add_argument("--image-max-batch", type=int, default=defaults.image_max_batch_size, help=f"max_batch_size of the image encoder (default {defaults.image_max_batch_size})")
    triton.add_argument("--text-max-batch", type=int, default=defaults.text_max_batch_size, help=f"max_batch_size of the text encoder (default {defaults.text_max_batch_size})")
    triton.add_argument("--instances", type=int, default=defaults.instance_count, help="model instances per GPU (or in total for CPU) (default 1)")
    triton.add_argument("--instance-kind", choices=sorted(INSTANCE_KINDS), default=defaults.instance_kind, help="run the instances on the server's GPUs or CPUs (default gpu)")
    triton.add_argument("--accelerator", choices=ACCELERATORS, default=defaults.accelerator, help="let Triton's ONNX Runtime backend build TensorRT engines on the server GPU (fp16: faster, results differ slightly) (default none)")
    triton.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us, help=f"dynamic batching delay in microseconds (default {defaults.max_queue_delay_us})")
    return parser


def _open_model_and_work_dir(args: argparse.Namespace):
    from models.directory import open_model_dir

    model = open_model_dir(models_path(args.model), allow_untrained=True)
    work_dir = work_folder(args.workdir)
    work_dir.mkdir(parents=True, exist_ok=True)
    return model, work_dir


def run_export(args: argparse.Namespace) -> int:
    """`export`: the checked ONNX export inside the model folder; 0, or 2 with one line saying why."""
    from app.probe_set import SampleStudyProbes
    from engines.build_commands import export_checked_onnx
    from engines.export_parity import ExportParityError
    from engines.onnx_export import OnnxExportError
    from models.directory import open_model_dir
    from models.errors import ModelDirectoryError

    try:
        model = open_model_dir(args.model, allow_untrained=True)
        parity = export_checked_onnx(model, SampleStudyProbes().calibration_set(model).images)
    except (ModelDirectoryError, OnnxExportError, ExportParityError) as exc:
        log.error("%s", exc)
        return 2
    if parity is not None:
        log.info(
            "exported ONNX to %s; parity with PyTorch: smallest cosine %.6f (image), %.6f (text)",
            model.shipped_onnx_dir, parity.image_min_cosine, parity.text_min_cosine,
        )
    return 0


def _build(args: argparse.Namespace) -> dict:
    from app.probe_set import SampleStudyProbes, folder_images
    from engines.build_commands import build_tensorrt_engines

    if args.calib is not None and args.precision != "int8":
        raise ValueError("--calib is only used with --precision int8")
    model, work_dir = _open_model_and_work_dir(args)
    calibration = None
    if args.calib is not None:
        calibration = folder_images(args.calib, size=model.image_size, mean=model.mean, std=model.std)
        log.info("calibrating on %d preprocessed images from %s", len(calibration), args.calib)
    return build_tensorrt_engines(
        model, work_dir, precision=args.precision, probes=SampleStudyProbes(), calibration=calibration, force=args.force
    )


def _quantize(args: argparse.Namespace) -> dict:
    from app.probe_set import SampleStudyProbes, folder_images

    model, work_dir = _open_model_and_work_dir(args)
    calibration = None
    if args.calib is not None:
        calibration = folder_images(args.calib, size=model.image_size, mean=model.mean, std=model.std)
        log.info("calibrating the OpenVINO INT8 graph on %d preprocessed images from %s", len(calibration), args.calib)
    return prepare_model_folder(model, work_dir, calibration=calibration)


def prepare_model_folder(model: ModelDirectory, work_dir: Path, *, calibration: CalibrationSet | None = None) -> dict:
    """Ship in `model`'s folder all a CPU run needs: the checked ONNX export, both INT8 graphs, this CPU's gate records.

    What `quantize` and the MAP staging (deploy/stage_map.py) do, so a MAP run with an empty work
    folder on a CPU of this kind exports, quantises and gates nothing. A JSON-ready summary.
    Raises what `export_checked_onnx` and `ship_int8_graph` raise.
    """
    from app.probe_set import SampleStudyProbes
    from engines.build_commands import export_checked_onnx, ship_int8_graph

    probes = SampleStudyProbes()
    parity = export_checked_onnx(model, probes.calibration_set(model).images)
    summary: dict = {"onnx": str(model.shipped_onnx_dir)}
    if parity is not None:
        summary["onnx_parity"] = {"image_min_cosine": parity.image_min_cosine, "text_min_cosine": parity.text_min_cosine}
    summary.update(ship_int8_graph(model, work_dir, probes=probes, calibration=calibration))
    summary["text_embeddings"] = ship_text_embeddings(model, work_dir)
    summary["compiled"] = ship_compiled_graph(model, probes)
    return summary


def ship_compiled_graph(model: ModelDirectory, probes: ProbeSource) -> str | None:
    """Open what `auto` chooses on this CPU (from the records just shipped) and, if OpenVINO, ship its compiled blob.

    Returns the shipped folder, or None when `auto` chooses no OpenVINO path here. The blob goes to
    `onnx/openvino-cache/<cpu kind>/<precision>/`; a run seeds its empty model cache from it.
    """
    import shutil
    import tempfile

    from engines.cpu_fast_path import open_fastest_cpu_backend
    from engines.cpu_features import read_cpu_features
    from engines.openvino_backend import OpenVinoBackend, shipped_cache_dir

    with tempfile.TemporaryDirectory(prefix="compile-") as scratch:
        backend = open_fastest_cpu_backend(model, Path(scratch), probes=probes)
        try:
            if not isinstance(backend, OpenVinoBackend):
                return None
            destination = shipped_cache_dir(model, backend.precision, read_cpu_features().kernel_signature())
            if destination.exists():
                shutil.rmtree(destination)
            shutil.copytree(backend.cache_dir, destination)
        finally:
            backend.close()
    log.info("shipped OpenVINO's compiled %s graph for this CPU kind in %s", backend.precision, destination)
    return str(destination)


def ship_text_embeddings(model: ModelDirectory, work_dir: Path) -> dict:
    """The class embeddings of the bundled tasks and the burn depth task (ONNX Runtime float32 text tower) in `onnx/text-embeddings/`.

    The text embedding cache is keyed by the weights and the prompts, so a site task file or burn
    configuration with other prompts simply misses and is embedded at run time; with the bundled
    configuration a run loads no text tower at all.
    """
    from app.probe_set import BUNDLED_TASKS
    from common.zero_shot_tasks import load_tasks
    from engines.onnxruntime_backend import OnnxRuntimeBackend
    from engines.text_cache import TEXT_CACHE_SUBDIR, TextEmbeddingCache
    from engines.tokenizer import TextTokenizer
    from operators.inference.zero_shot import class_embeddings
    from operators.specialists.burn.config import load_burn_config

    destination = model.shipped_onnx_dir / TEXT_CACHE_SUBDIR
    cache = TextEmbeddingCache(destination)
    tasks = [task for _, task in sorted(load_tasks(BUNDLED_TASKS).tasks.items())] + [load_burn_config().depth.task]
    backend = OnnxRuntimeBackend(model, work_dir, allow_cuda=False)
    try:
        tokenizer = TextTokenizer.from_model(model)
        for task in tasks:
            class_embeddings(backend, tokenizer, task, cache)
    finally:
        backend.close()
    log.info("shipped the class embeddings of %d tasks in %s (%d texts embedded)", len(tasks), destination, cache.stats.texts_embedded)
    return {"folder": str(destination), "tasks": len(tasks), "texts_embedded": cache.stats.texts_embedded}


def run_build(args: argparse.Namespace) -> int:
    """`build` or `quantize`; prints a JSON summary; returns the exit status."""
    from engines.base import BackendUnavailable
    from engines.calibration import CalibrationError
    from engines.export_parity import ExportParityError
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
        ModelDirectoryError, CalibrationError, OnnxExportError, ExportParityError, QuantizationError, EngineBuildError,
        EngineCacheError, CudaError, BackendUnavailable, ValueError, OSError,
    ) as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def run_triton_repo(args: argparse.Namespace) -> int:
    """`triton-repo`: 0 on success, 2 when the model or the destination is unusable."""
    from engines.triton_repository import TritonRepositoryError, TritonRepositoryOptions, write_triton_repository
    from models.directory import open_model_dir
    from models.errors import ModelDirectoryError

    options = TritonRepositoryOptions(
        image_max_batch_size=args.image_max_batch,
        text_max_batch_size=args.text_max_batch,
        instance_count=args.instances,
        instance_kind=args.instance_kind,
        accelerator=args.accelerator,
        max_queue_delay_us=args.max_queue_delay_us,
    )
    try:
        model = open_model_dir(models_path(args.model), allow_untrained=True)
        written = write_triton_repository(model, args.out, work_dir=work_folder(args.workdir), options=options)
    except (ModelDirectoryError, TritonRepositoryError) as exc:
        log.error("%s", exc)
        return 2
    identity = model.identity
    log.info(
        "wrote the Triton model repository for %s %s (status %s, sha256 %s…) to %s; serve it with "
        "`tritonserver --model-repository %s` and point the MAP at it with TRITON_SERVER_NETLOC=<host>:8000",
        identity.name, identity.version, identity.status, identity.sha256[:12], written, written,
    )
    if identity.untrained:
        log.warning("this model is UNTRAINED (random weights): a server running it gives meaningless results")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one engine command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "triton-repo":
        return run_triton_repo(args)
    if args.command in ("build", "quantize"):
        return run_build(args)
    return run_export(args)


if __name__ == "__main__":
    sys.exit(main())
