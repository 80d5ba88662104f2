"""The INT8 image tower for ONNX Runtime on CPU: made from the float32 ONNX export, cached like it.

Recipe (`RECIPE`): ONNX Runtime dynamic quantisation of every MatMul/Gemm weight of the image
graph to signed 8-bit, one scale per output channel, with the activations quantised per batch at
run time. Weights use 7 of the 8 bits (`reduce_range`): on CPUs without VNNI, ONNX Runtime's
u8×s8 kernel (`vpmaddubsw`) adds pairs of products into 16 bits and saturates with full-range
weights; 7-bit weights cannot overflow, so the same graph gives the same answers on every x86
CPU. Dynamic quantisation needs no calibration set; whether the result is accurate enough is
decided by the parity gate (`engines/parity_gate.py`), never assumed. The text tower stays
float32: it runs only when the zero-shot text embeddings are not cached yet, and keeping it exact
keeps the text-embedding cache shared by every backend.

Like the ONNX export, an INT8 graph is valid only for the weights it came from, so its folder
carries `int8.json` with the weights sha256 and the recipe; it is looked up in the model folder
(`onnx/int8/`, shipped) and then in `<work dir>/onnx-int8/<weights sha256>/`, and made there once
when neither matches. Made files are written into a temporary folder that is renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from engines.onnx_files import OnnxFiles, read_export_metadata
from models.directory import ModelDirectory
from models.staging import staging_folder_beside

log = logging.getLogger(__name__)

INT8_IMAGE_ONNX = "image_encoder.int8.onnx"
INT8_METADATA = "int8.json"
INT8_CACHE_SUBDIR = "onnx-int8"
SHIPPED_INT8_SUBDIR = "int8"
RECIPE = "ort-dynamic-qint8-per-channel-reduce-range-v1"


class QuantizationError(RuntimeError):
    """The INT8 graph could not be made; the message names the model and the folder."""


@dataclass(frozen=True)
class Int8Graph:
    """A checked INT8 image graph for one model's weights."""

    path: Path
    origin: str
    """'shipped' (model folder), 'cached' (work folder) or 'made' (just now)."""


class _QuantiserAdviceFilter(logging.Filter):
    """Drops the quantiser's generic advice to pre-process the model (logged on the root logger every time).

    The advice is about shape inference for static quantisation; this recipe is dynamic and the
    parity gate checks the result, so the line would only puzzle an administrator.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


def int8_cache_dir(work_dir: Path, weights_sha256: str) -> Path:
    """Where the INT8 image graph of the weights with `weights_sha256` is cached under `work_dir`."""
    return Path(work_dir) / INT8_CACHE_SUBDIR / weights_sha256


def shipped_int8_dir(model: ModelDirectory) -> Path:
    """Where a model folder may ship its INT8 image graph (`python -m app.engine_commands quantize`)."""
    return model.shipped_onnx_dir / SHIPPED_INT8_SUBDIR


def int8_folder_problem(folder: Path, weights_sha256: str) -> str | None:
    """Why the INT8 graph in `folder` cannot be used for weights `weights_sha256` with this recipe, or None."""
    metadata_path = folder / INT8_METADATA
    metadata, problem = read_export_metadata(metadata_path, weights_sha256)
    if problem:
        return problem
    if metadata.get("recipe") != RECIPE:
        return f"{metadata_path} was made with recipe {metadata.get('recipe')!r}, not the current {RECIPE!r}"
    graph = folder / INT8_IMAGE_ONNX
    if not graph.is_file():
        return f"{graph} is missing"
    size = metadata.get("size_bytes")
    if isinstance(size, int) and graph.stat().st_size != size:
        return f"{graph} has {graph.stat().st_size} bytes, not the {size} written (truncated or replaced)"
    return None


def quantize_image_graph(model: ModelDirectory, onnx_files: OnnxFiles, destination: Path) -> Path:
    """Make the INT8 image graph of `model` from its float32 export into the new folder `destination`.

    The folder is complete or absent: files are written into a temporary sibling that is renamed.
    Raises QuantizationError when ONNX Runtime's quantiser fails or the folder cannot be written.
    """
    destination = Path(destination)
    try:
        from onnxruntime import __version__ as ort_version
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise QuantizationError(f"onnxruntime's quantisation tools cannot be imported ({exc})") from exc
    try:
        staging = staging_folder_beside(destination)
    except OSError as exc:
        raise QuantizationError(f"cannot create the INT8 folder beside {destination}: {exc.strerror}") from exc
    try:
        graph = staging / INT8_IMAGE_ONNX
        advice_filter = _QuantiserAdviceFilter()
        logging.getLogger().addFilter(advice_filter)
        try:
            quantize_dynamic(
                onnx_files.image_model,
                graph,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # the quantiser raises many types (RuntimeError, ValueError, onnx errors, OSError)
            raise QuantizationError(
                f"quantising {onnx_files.image_model} to INT8 failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            logging.getLogger().removeFilter(advice_filter)
        metadata = {
            "weights_sha256": model.sha256,
            "model_name": model.manifest.name,
            "model_version": model.manifest.version,
            "recipe": RECIPE,
            "source": onnx_files.image_model.name,
            "size_bytes": graph.stat().st_size,
            "quantiser": f"onnxruntime {ort_version}",
        }
        (staging / INT8_METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(staging, destination)
        except OSError as exc:
            if int8_folder_problem(destination, model.sha256) is not None:  # not a concurrent run that finished first
                raise QuantizationError(f"cannot move the INT8 graph to {destination}: {exc.strerror}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination / INT8_IMAGE_ONNX


def int8_image_graph_for(model: ModelDirectory, onnx_files: OnnxFiles, work_dir: Path) -> Int8Graph:
    """The INT8 image graph for `model`: shipped if it matches, else cached in `work_dir`, else made there.

    An unusable cached folder (other weights, other recipe, truncated file) is reported with one
    log line and made again. Raises QuantizationError when it has to be made and cannot be.
    """
    shipped = shipped_int8_dir(model)
    if shipped.is_dir():
        problem = int8_folder_problem(shipped, model.sha256)
        if problem is None:
            return Int8Graph(shipped / INT8_IMAGE_ONNX, "shipped")
        log.warning("ignoring the INT8 graph shipped with the model: %s", problem)
    cached = int8_cache_dir(work_dir, model.sha256)
    if cached.exists():
        problem = int8_folder_problem(cached, model.sha256)
        if problem is None:
            return Int8Graph(cached / INT8_IMAGE_ONNX, "cached")
        log.warning("discarding the unusable cached INT8 graph and making it again: %s", problem)
        shutil.rmtree(cached)
    log.info("quantising the image tower of %s %s to INT8 in %s (once per model weights)", model.manifest.name, model.manifest.version, cached)
    path = quantize_image_graph(model, onnx_files, cached)
    problem = int8_folder_problem(cached, model.sha256)
    if problem is not None:
        raise QuantizationError(f"the INT8 graph in {cached} is unusable: {problem}")
    return Int8Graph(path, "made")
