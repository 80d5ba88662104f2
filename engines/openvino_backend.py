"""OpenVINO on CPU for the image tower (float32, native bfloat16 or INT8); ONNX Runtime float32 for the text tower.

The image graph is the product's ONNX export (float32 and bfloat16) or the NNCF INT8 graph made
from it (engines/openvino_quantization.py). The precision is asked for explicitly with OpenVINO's
`INFERENCE_PRECISION_HINT`: OpenVINO would otherwise run float32 graphs in bfloat16 on its own on
CPUs that have it, and this product only uses a reduced precision that the parity gate accepted.

    openvino        hint f32: the same answers as ONNX Runtime float32, OpenVINO's kernels
    openvino-bf16   hint bf16: only where the CPU computes bfloat16 natively (AMX-BF16, AVX512-BF16)
    openvino-int8   the NNCF INT8 graph, its remaining floating-point operations in f32

Compiled graphs go to OpenVINO's model cache (`CACHE_DIR`) under `<work dir>/openvino-cache/<precision>/`,
so a later run with the same work folder loads the compiled blob instead of compiling again. An
empty cache is first seeded from the blob the model folder ships for this CPU kind
(`onnx/openvino-cache/<cpu kind>/<precision>/`, written by the MAP staging), so a MAP container
without a persistent work folder does not compile either. One
folder per precision, because OpenVINO 2026.4 names a cached blob without the precision hint: with
one shared folder the bfloat16 path loaded the float32 blob of the same ONNX graph (and crashed).
The text tower stays on ONNX Runtime float32, opened on first use only: the zero-shot text
embeddings are normally served from the work folder's cache, and keeping it float32 keeps that
cache shared by every backend. On a run whose text cache is cold the float32 text graph is
loaded and the task prompts are embedded once: on the full-size model (2-core AMX Xeon of the
README's table) loading it took 1.3 s and 470 MB of resident memory, against 0.4 s and 135 MB for
opening the INT8 image tower from OpenVINO's model cache.

Nothing here imports torch.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from engines.base import BackendUnavailable, InferenceBackend, l2_normalise
from engines.calibration import CalibrationSet
from engines.onnx_export import IMAGE_INPUT, TEXT_INPUTS, OnnxExportError
from engines.onnx_files import OnnxFiles, onnx_files_for
from engines.onnxruntime_backend import CPU_PROVIDER, read_logit_scale
from engines.quantization import QuantizationError
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""OpenVINO's precision hint per path (INT8: the operations NNCF left in floating point run in f32)."""
OV_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
"""What OpenVINO's CPU plugin must list in OPTIMIZATION_CAPABILITIES for each path."""
NAMES = {"fp32": "openvino-cpu", "bf16": "openvino-bf16-cpu", "int8": "openvino-int8-cpu"}
CACHE_SUBDIR = "openvino-cache"
SHIPPED_CACHE_SUBDIR = "openvino-cache"
"""In the model's `onnx/` folder: compiled blobs per CPU kind and precision, shipped by the MAP staging."""
DEVICE = "CPU"


def shipped_cache_dir(model: ModelDirectory, precision: str, cpu_signature: str) -> Path:
    """Where the model folder ships OpenVINO's compiled blob of `precision` for CPUs of `cpu_signature`'s kind."""
    kind = cpu_signature.replace(":", "-").replace("+", "-")
    return model.shipped_onnx_dir / SHIPPED_CACHE_SUBDIR / kind / precision


def seed_model_cache(cache_dir: Path, shipped: Path) -> bool:
    """Copy a shipped compiled blob into an empty work-folder model cache; True if one was copied.

    Compiling the INT8 image graph costs about 0.6 s on the full-size model (2-core AMX Xeon),
    loading the cached blob 0.1 s, and a MAP container under MONAI Deploy Express starts with an
    empty work folder. OpenVINO checks a cached blob against the graph, the configuration and its
    own version and compiles afresh when it does not match, so a stale blob costs time, not
    correctness; the blob is looked up by this CPU's kind so it is normally right.
    """
    if not shipped.is_dir() or (cache_dir.is_dir() and any(cache_dir.iterdir())):
        return False
    blobs = [p for p in shipped.iterdir() if p.is_file()]
    for blob in blobs:
        shutil.copyfile(blob, cache_dir / blob.name)
    return bool(blobs)


def compile_config(precision: str, cache_dir: Path | None, threads: int | None = None) -> dict:
    """The CPU plugin configuration of a path: precision hint, latency hint (one stream), model cache, threads."""
    config: dict = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoBackend(InferenceBackend):
    """The image tower compiled by OpenVINO for the CPU in one precision; `name` is e.g. `openvino-int8-cpu`.

    `calibration` supplies the INT8 calibration images, called only when the INT8 graph has to be
    made here (no shipped or cached one). Raises BackendUnavailable when OpenVINO is missing, its
    CPU plugin lacks the precision, or the graph cannot be found, made or compiled.
    """

    def __init__(
        self,
        model: ModelDirectory,
        work_dir: Path,
        precision: str = "fp32",
        *,
        calibration: Callable[[], CalibrationSet] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(model)
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"openvino is not installed ({exc})") from exc
        self.precision = precision
        self.name = NAMES[precision]
        self._core = ov.Core()
        self._check_capability(precision)
        try:
            self.files: OnnxFiles = onnx_files_for(model, work_dir)
            graph = self._image_graph(model, work_dir, calibration)
        except (OnnxExportError, QuantizationError) as exc:
            raise BackendUnavailable(str(exc)) from exc
        self.cache_dir = Path(work_dir) / CACHE_SUBDIR / precision
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            cache: Path | None = self.cache_dir
            from engines.cpu_features import read_cpu_features

            if seed_model_cache(self.cache_dir, shipped_cache_dir(model, precision, read_cpu_features().kernel_signature())):
                log.info("OpenVINO model cache seeded from the compiled %s graph shipped for this CPU kind", precision)
        except OSError as exc:
            log.warning("cannot create the OpenVINO model cache %s (%s); compiling without it", self.cache_dir, exc.strerror or exc)
            cache = None
        try:
            self._image = self._core.compile_model(str(graph), DEVICE, compile_config(precision, cache, threads))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types for unreadable or unsupported graphs
            raise BackendUnavailable(f"OpenVINO cannot compile the image graph {graph}: {type(exc).__name__}: {exc}") from exc
        self._request = self._image.create_infer_request()
        self.image_graph = graph
        self._threads = threads
        self._text = None
        self.logit_scale = read_logit_scale(model.weights_path)

    def _check_capability(self, precision: str) -> None:
        try:
            capabilities = set(self._core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
        except Exception as exc:  # no CPU plugin for this machine
            raise BackendUnavailable(f"OpenVINO has no usable CPU device here ({type(exc).__name__}: {exc})") from exc
        if OV_CAPABILITY[precision] not in capabilities:
            raise BackendUnavailable(
                f"OpenVINO's CPU plugin cannot run {precision} on this CPU (it offers {', '.join(sorted(capabilities))})"
            )

    def _image_graph(self, model: ModelDirectory, work_dir: Path, calibration: Callable[[], CalibrationSet] | None) -> Path:
        if self.precision != "int8":
            return self.files.image_model
        from engines.openvino_quantization import openvino_int8_graph_for

        def no_calibration() -> CalibrationSet:
            raise QuantizationError(
                f"the OpenVINO INT8 graph of {model.path} must be made here, but no calibration images were given; "
                f"ship it with `python -m app.engine_commands quantize`"
            )

        return openvino_int8_graph_for(model, self.files, work_dir, calibration or no_calibration).xml

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        self._request.infer({IMAGE_INPUT: images})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def _text_session(self):
        if self._text is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise BackendUnavailable(f"the text tower runs on onnxruntime, which is not installed ({exc})") from exc
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only
            try:
                self._text = ort.InferenceSession(str(self.files.text_model), options, providers=[CPU_PROVIDER])
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BackendUnavailable(
                    f"onnxruntime cannot load the text graph {self.files.text_model}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._text

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._text_session().run(None, {TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: attention_mask})[0]

    def float32_image_encoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """ONNX Runtime float32 on the same ONNX export: the parity gate's reference."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(self.files.image_model), options, providers=[CPU_PROVIDER])
        return lambda images: l2_normalise(session.run(None, {IMAGE_INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0])

    def close(self) -> None:
        self._request = None
        self._image = None
        self._text = None
