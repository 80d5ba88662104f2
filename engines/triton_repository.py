"""Exporting a model as a Triton Inference Server model repository (`python -m app.engine_commands triton-repo OUT`).

Large sites run the two BiomedCLIP towers on shared GPU servers and let many MAP containers send
them requests (engines/triton_backend.py). The repository written here is what such a server
loads with `tritonserver --model-repository OUT`:

    OUT/biomedclip_image_encoder/config.pbtxt     images (N, 3, S, S) FP32 -> image_embeddings (N, D)
    OUT/biomedclip_image_encoder/1/model.onnx
    OUT/biomedclip_text_encoder/config.pbtxt      input_ids, attention_mask (N, L) INT64 -> text_embeddings (N, D)
    OUT/biomedclip_text_encoder/1/model.onnx

The graphs are the product's own ONNX export (engines/onnx_export.py), so a server gives the same
embeddings as the local ONNX Runtime backend. Each `config.pbtxt` is built with Triton's own
protobuf schema (`tritonclient.grpc.model_config_pb2`) and declares dynamic batching (requests of
many MAP containers are merged into one batch on the GPU) and an instance group (how many copies
of the model run, on GPU or CPU). The optional TensorRT accelerator makes Triton's ONNX Runtime
backend compile TensorRT engines on the server's own GPU, which is where they must be built: a
TensorRT engine is specific to the GPU model and TensorRT version it was built with.

Every config carries the model's name, version, status and weights sha256 as parameters. The MAP
reads them back before its first request and refuses a server that serves different weights, so
a report never names one model while its numbers come from another.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from engines.onnx_export import IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUTS, TEXT_OUTPUT
from models.directory import ModelDirectory
from models.staging import staging_folder_beside

IMAGE_MODEL = "biomedclip_image_encoder"
TEXT_MODEL = "biomedclip_text_encoder"
MODEL_VERSION_DIR = "1"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
ONNX_PLATFORM = "onnxruntime_onnx"

PARAM_WEIGHTS_SHA256 = "biomedclip_weights_sha256"
PARAM_MODEL_NAME = "biomedclip_model_name"
PARAM_MODEL_VERSION = "biomedclip_model_version"
PARAM_MODEL_STATUS = "biomedclip_model_status"

INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ACCELERATORS = ("none", "tensorrt", "tensorrt-fp16")
TENSORRT_WORKSPACE_BYTES = 1 << 30
TENSORRT_CACHE_PATH = "/tmp/biomedclip-tensorrt-cache"
"""Where Triton's ONNX Runtime backend keeps the TensorRT engines it builds (inside the server container)."""


class TritonRepositoryError(RuntimeError):
    """The Triton model repository cannot be written; the message names the folder or setting."""


@dataclass(frozen=True)
class TritonRepositoryOptions:
    """How the server runs the towers: batching, instances and the optional TensorRT accelerator."""

    image_max_batch_size: int = 32
    text_max_batch_size: int = 64
    instance_count: int = 1
    instance_kind: str = "gpu"
    accelerator: str = "none"
    max_queue_delay_us: int = 2000
    """How long Triton may hold a request to merge it with others (2 ms: small next to a tower's run time)."""

    def check(self) -> None:
        """Raise TritonRepositoryError naming the option that is out of range."""
        for name in ("image_max_batch_size", "text_max_batch_size", "instance_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TritonRepositoryError(f"{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.max_queue_delay_us < 0:
            raise TritonRepositoryError(f"max-queue-delay-us must not be negative, got {self.max_queue_delay_us}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise TritonRepositoryError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}, got {self.instance_kind!r}")
        if self.accelerator not in ACCELERATORS:
            raise TritonRepositoryError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        if self.accelerator != "none" and self.instance_kind != "gpu":
            raise TritonRepositoryError("the TensorRT accelerator needs GPU instances (--instance-kind gpu)")


def _preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 4 up to the maximum: batch shapes the runtime handles efficiently."""
    sizes, size = [], 4
    while size <= max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes or [max_batch_size]


def model_config(model: ModelDirectory, tower: str, options: TritonRepositoryOptions):
    """Triton's `ModelConfig` protobuf for one tower (`IMAGE_MODEL` or `TEXT_MODEL`) of `model`."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=tower, platform=ONNX_PLATFORM, default_model_filename=MODEL_FILE)
    if tower == IMAGE_MODEL:
        config.max_batch_size = options.image_max_batch_size
        config.input.add(name=IMAGE_INPUT, data_type=pb.TYPE_FP32, dims=[3, model.image_size, model.image_size])
        config.output.add(name=IMAGE_OUTPUT, data_type=pb.TYPE_FP32, dims=[model.embed_dim])
    elif tower == TEXT_MODEL:
        config.max_batch_size = options.text_max_batch_size
        for name in TEXT_INPUTS:
            config.input.add(name=name, data_type=pb.TYPE_INT64, dims=[-1])  # sequence trimmed per batch
        config.output.add(name=TEXT_OUTPUT, data_type=pb.TYPE_FP32, dims=[model.embed_dim])
    else:
        raise ValueError(f"unknown tower {tower!r}")
    config.dynamic_batching.preferred_batch_size.extend(_preferred_batch_sizes(config.max_batch_size))
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instance_count, kind=getattr(pb.ModelInstanceGroup, INSTANCE_KINDS[options.instance_kind]))
    if options.accelerator != "none":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16" if options.accelerator == "tensorrt-fp16" else "FP32"
        accelerator.parameters["max_workspace_size_bytes"] = str(TENSORRT_WORKSPACE_BYTES)
        accelerator.parameters["trt_engine_cache_enable"] = "1"
        accelerator.parameters["trt_engine_cache_path"] = TENSORRT_CACHE_PATH
    identity = model.identity
    for key, value in (
        (PARAM_WEIGHTS_SHA256, identity.sha256),
        (PARAM_MODEL_NAME, identity.name),
        (PARAM_MODEL_VERSION, identity.version),
        (PARAM_MODEL_STATUS, identity.status),
    ):
        config.parameters[key].string_value = value
    return config


def config_text(config) -> str:
    """The `config.pbtxt` text of a `ModelConfig` (protobuf text format, as Triton reads it)."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: Path):
    """Parse a `config.pbtxt` back into a `ModelConfig`; raises TritonRepositoryError if it is not valid."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        return text_format.Parse(Path(path).read_text(encoding="utf-8"), pb.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise TritonRepositoryError(f"{path}: not a readable Triton model configuration ({exc})") from exc


def write_triton_repository(
    model: ModelDirectory,
    destination: Path,
    *,
    work_dir: Path,
    options: TritonRepositoryOptions | None = None,
) -> Path:
    """Write the Triton model repository of `model` into the new folder `destination`.

    The ONNX graphs come from the model folder's shipped export, the work-folder cache, or a new
    export (engines/onnx_files.py). The repository is assembled under a temporary sibling name and
    renamed into place, so `destination` is either complete or absent. Raises
    TritonRepositoryError if `destination` already exists or the ONNX files cannot be had.
    """
    from engines.onnx_export import OnnxExportError
    from engines.onnx_files import onnx_files_for

    options = options or TritonRepositoryOptions()
    options.check()
    destination = Path(destination)
    if destination.exists():
        raise TritonRepositoryError(f"{destination} already exists; choose a new folder (an existing repository is never overwritten)")
    try:
        onnx = onnx_files_for(model, Path(work_dir))
    except OnnxExportError as exc:
        raise TritonRepositoryError(f"the ONNX export needed for the Triton repository cannot be made: {exc}") from exc
    try:
        staging = staging_folder_beside(destination)
    except OSError as exc:
        raise TritonRepositoryError(f"cannot create the repository folder beside {destination}: {exc.strerror}") from exc
    try:
        for tower, graph in ((IMAGE_MODEL, onnx.image_model), (TEXT_MODEL, onnx.text_model)):
            version_dir = staging / tower / MODEL_VERSION_DIR
            version_dir.mkdir(parents=True)
            shutil.copyfile(graph, version_dir / MODEL_FILE)
            (staging / tower / CONFIG_FILE).write_text(config_text(model_config(model, tower, options)), encoding="utf-8")
        os.rename(staging, destination)
    except OSError as exc:
        raise TritonRepositoryError(f"cannot write the Triton repository {destination}: {exc.strerror or exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination
