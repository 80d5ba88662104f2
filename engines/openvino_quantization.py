"""The OpenVINO INT8 image tower: NNCF post-training static quantisation of the float32 ONNX export.

Recipe (`RECIPE`): NNCF `quantize` of the image graph read by OpenVINO, transformer model type
(SmoothQuant on the matrix products, LayerNorm/Softmax/GELU kept in floating point), mixed preset
(symmetric weights, per channel; asymmetric activations, per tensor), activation ranges by
min/max over preprocessed calibration images. Min/max rather than NNCF's default quantile
ranges: with the few images a model folder is calibrated on, a clipped range was what moved
embeddings most (tiny model: smallest probe cosine 0.971 with the defaults, 0.9987 with min/max
on the widened set below). A set of fewer than `WIDEN_BELOW` images (the ten sample-study images)
is widened with six deterministic variants of each image (flips, a transpose, lower contrast,
brighter, darker, noise), different from the parity gate's probe variants, so that the
activation ranges are not measured on the very images the gate judges. Unlike ONNX Runtime's dynamic recipe (engines/quantization.py)
the activation scales are fixed in the graph, so OpenVINO runs whole INT8 matrix products with
VNNI/AMX and no per-batch quantisation step; the price is that the ranges come from the
calibration images. They are the product's own preprocessed images: the sample studies by
default, or a folder given with `python -m app.engine_commands quantize --calib DIR`. Whether the
result is accurate enough is decided by the parity gate, never assumed.

Like the ONNX export, the graph is valid only for the weights it came from: its folder carries
`openvino-int8.json` with the weights sha256, the recipe and the calibration images' digest. It is
looked up in the model folder (`onnx/openvino-int8/`, shipped by `quantize`) and then in
`<work dir>/openvino-int8/<weights sha256>/`, and made there once when neither matches. Made
files are written into a temporary folder that is renamed into place. NNCF (which imports torch)
is imported only when a graph has to be made.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engines.calibration import CalibrationSet
from engines.onnx_files import OnnxFiles, read_export_metadata
from engines.quantization import QuantizationError
from models.directory import ModelDirectory
from models.staging import staging_folder_beside

log = logging.getLogger(__name__)

OV_INT8_XML = "image_encoder.int8.xml"
OV_INT8_BIN = "image_encoder.int8.bin"
OV_INT8_METADATA = "openvino-int8.json"
OV_INT8_CACHE_SUBDIR = "openvino-int8"
SHIPPED_OV_INT8_SUBDIR = "openvino-int8"
RECIPE = "nncf-ptq-transformer-mixed-minmax-widened7-v1"
WIDEN_BELOW = 64
"""Calibration sets smaller than this are widened with variants (`widened_calibration`)."""
MAX_CALIBRATION_IMAGES = 300
"""NNCF's own default subset size: more images only make quantisation slower."""


@dataclass(frozen=True)
class OpenVinoInt8Graph:
    """A checked OpenVINO INT8 image graph (IR .xml + .bin) for one model's weights."""

    xml: Path
    origin: str
    """'shipped' (model folder), 'cached' (work folder) or 'made' (just now)."""
    calibration: str
    """Where its calibration images came from, as recorded when it was made."""


def ov_int8_cache_dir(work_dir: Path, weights_sha256: str) -> Path:
    """Where the OpenVINO INT8 graph of the weights with `weights_sha256` is cached under `work_dir`."""
    return Path(work_dir) / OV_INT8_CACHE_SUBDIR / weights_sha256


def shipped_ov_int8_dir(model: ModelDirectory) -> Path:
    """Where a model folder may ship its OpenVINO INT8 graph (`python -m app.engine_commands quantize`)."""
    return model.shipped_onnx_dir / SHIPPED_OV_INT8_SUBDIR


def ov_int8_folder_problem(folder: Path, weights_sha256: str) -> str | None:
    """Why the OpenVINO INT8 graph in `folder` cannot be used for weights `weights_sha256`, or None if it can."""
    metadata_path = folder / OV_INT8_METADATA
    metadata, problem = read_export_metadata(metadata_path, weights_sha256)
    if problem:
        return problem
    if metadata.get("recipe") != RECIPE:
        return f"{metadata_path} was made with recipe {metadata.get('recipe')!r}, not the current {RECIPE!r}"
    for name in (OV_INT8_XML, OV_INT8_BIN):
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
    size = metadata.get("bin_size_bytes")
    actual = (folder / OV_INT8_BIN).stat().st_size
    if size != actual:
        return f"{folder / OV_INT8_BIN} is {actual} bytes, {metadata_path} says {size} (truncated or replaced)"
    return None


def widened_calibration(calibration: CalibrationSet) -> CalibrationSet:
    """`calibration` with six deterministic variants of each image when it has fewer than `WIDEN_BELOW` images.

    The variants are made on the normalised tensors (a flip, a transpose, contrast × 0.8 about
    each channel's mean, ± 0.3 standard deviations, Gaussian noise of 0.15) and differ from the
    parity gate's probe variants, which are made on the pictures (app/probe_set.py).
    """
    if len(calibration) >= WIDEN_BELOW:
        return calibration
    rng = np.random.default_rng(7)
    widened: list[np.ndarray] = []
    for image in calibration.images:
        mean = image.mean(axis=(1, 2), keepdims=True)
        widened += [
            image,
            image[:, ::-1, :],
            np.swapaxes(image, 1, 2)[:, :, ::-1],
            mean + (image - mean) * 0.8,
            image + 0.3,
            image - 0.3,
            image + rng.normal(0.0, 0.15, image.shape),
        ]
    images = np.ascontiguousarray(np.stack(widened), dtype=np.float32)
    return CalibrationSet(images, f"{calibration.source}, widened with 6 variants per image")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def quantize_openvino_image_graph(
    model: ModelDirectory, onnx_files: OnnxFiles, calibration: CalibrationSet, destination: Path
) -> Path:
    """Quantise `onnx_files`' image graph with NNCF on `calibration` into the new folder `destination`; the .xml path.

    The folder is complete or absent. Raises QuantizationError when NNCF/OpenVINO cannot be
    imported, the calibration set is empty, quantisation fails or the folder cannot be written.
    """
    destination = Path(destination)
    if len(calibration) == 0:
        raise QuantizationError(f"no calibration images to quantise the OpenVINO image graph of {model.path}")
    calibration = widened_calibration(calibration)
    try:
        with _quiet_quantiser():
            import nncf
            import openvino as ov
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError as exc:
        raise QuantizationError(f"OpenVINO INT8 needs openvino and nncf, which cannot be imported ({exc})") from exc
    try:
        staging = staging_folder_beside(destination)
    except OSError as exc:
        raise QuantizationError(f"cannot create the OpenVINO INT8 folder beside {destination}: {exc.strerror}") from exc
    try:
        images = calibration.images
        dataset = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
        try:
            float_graph = ov.Core().read_model(str(onnx_files.image_model))
            with _quiet_quantiser():
                quantised = nncf.quantize(
                    float_graph,
                    dataset,
                    model_type=nncf.ModelType.TRANSFORMER,
                    preset=nncf.QuantizationPreset.MIXED,
                    subset_size=min(len(images), MAX_CALIBRATION_IMAGES),
                    advanced_parameters=AdvancedQuantizationParameters(
                        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                    ),
                )
            ov.save_model(quantised, str(staging / OV_INT8_XML), compress_to_fp16=False)
        except Exception as exc:  # NNCF and OpenVINO raise many types (RuntimeError, ValueError, nncf errors, OSError)
            raise QuantizationError(
                f"quantising {onnx_files.image_model} to OpenVINO INT8 failed: {type(exc).__name__}: {exc}"
            ) from exc
        metadata = {
            "weights_sha256": model.sha256,
            "model_name": model.manifest.name,
            "model_version": model.manifest.version,
            "recipe": RECIPE,
            "source": onnx_files.image_model.name,
            "calibration": calibration.source,
            "calibration_images": len(calibration),
            "calibration_sha256": calibration.digest,
            "bin_size_bytes": (staging / OV_INT8_BIN).stat().st_size,
            "quantiser": f"nncf {_version('nncf')}, openvino {_version('openvino')}",
        }
        (staging / OV_INT8_METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(staging, destination)
        except OSError as exc:
            if ov_int8_folder_problem(destination, model.sha256) is not None:  # not a concurrent run that finished first
                raise QuantizationError(f"cannot move the OpenVINO INT8 graph to {destination}: {exc.strerror}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination / OV_INT8_XML


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """NNCF's progress bars (written to stdout, which carries the commands' JSON) and info lines, and the
    warning torch logs on import about CUDA, are not for administrators; errors still come through."""
    loggers = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _recorded_calibration(folder: Path) -> str:
    try:
        return str(json.loads((folder / OV_INT8_METADATA).read_text(encoding="utf-8")).get("calibration", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def ov_int8_graph_identity(model: ModelDirectory, work_dir: Path) -> str | None:
    """What identifies the OpenVINO INT8 graph a run would open (its calibration digest), or None if none is made yet.

    Part of the gate key: a graph calibrated on other images is gated again, never judged by
    another graph's record.
    """
    for folder in (shipped_ov_int8_dir(model), ov_int8_cache_dir(work_dir, model.sha256)):
        if folder.is_dir() and ov_int8_folder_problem(folder, model.sha256) is None:
            metadata = json.loads((folder / OV_INT8_METADATA).read_text(encoding="utf-8"))
            return f"calibration {metadata.get('calibration_sha256')}, {metadata.get('bin_size_bytes')} bytes"
    return None


def openvino_int8_graph_for(
    model: ModelDirectory, onnx_files: OnnxFiles, work_dir: Path, calibration: Callable[[], CalibrationSet]
) -> OpenVinoInt8Graph:
    """The OpenVINO INT8 image graph for `model`: shipped if it matches, else cached in `work_dir`, else made there.

    `calibration` is called only when the graph has to be made. An unusable cached folder is
    reported with one log line and made again. Raises QuantizationError when it cannot be made.
    """
    shipped = shipped_ov_int8_dir(model)
    if shipped.is_dir():
        problem = ov_int8_folder_problem(shipped, model.sha256)
        if problem is None:
            return OpenVinoInt8Graph(shipped / OV_INT8_XML, "shipped", _recorded_calibration(shipped))
        log.warning("ignoring the OpenVINO INT8 graph shipped with the model: %s", problem)
    cached = ov_int8_cache_dir(work_dir, model.sha256)
    if cached.exists():
        problem = ov_int8_folder_problem(cached, model.sha256)
        if problem is None:
            return OpenVinoInt8Graph(cached / OV_INT8_XML, "cached", _recorded_calibration(cached))
        log.warning("discarding the unusable cached OpenVINO INT8 graph and making it again: %s", problem)
        shutil.rmtree(cached)
    images = calibration()
    log.info(
        "quantising the image tower of %s %s to OpenVINO INT8 in %s, calibrated on %d images from %s (once per model weights)",
        model.manifest.name, model.manifest.version, cached, len(images), images.source,
    )
    xml = quantize_openvino_image_graph(model, onnx_files, images, cached)
    problem = ov_int8_folder_problem(cached, model.sha256)
    if problem is not None:
        raise QuantizationError(f"the OpenVINO INT8 graph in {cached} is unusable: {problem}")
    return OpenVinoInt8Graph(xml, "made", images.source)
