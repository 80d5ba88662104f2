"""ONNX Runtime on CPU with the INT8 image tower (engines/quantization.py) and the float32 text tower.

Opened by the fast CPU path (engines/cpu_fast_path.py) once the parity gate has accepted the INT8
graph for this model and CPU, or forced with `--backend onnxruntime-int8` (which runs the same
gate). The text session is opened on first use: the zero-shot text embeddings are usually served
from the work folder's cache, and then the 440 MB float32 text graph never has to be loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from engines.base import BackendUnavailable, InferenceBackend, l2_normalise
from engines.onnx_export import IMAGE_INPUT, TEXT_INPUTS, OnnxExportError
from engines.onnx_files import OnnxFiles, onnx_files_for
from engines.onnxruntime_backend import CPU_PROVIDER, read_logit_scale
from engines.quantization import Int8Graph, QuantizationError, int8_image_graph_for
from models.directory import ModelDirectory

NAME = "onnxruntime-int8-cpu"


def _session_options(ort):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's info/warning lines are not for administrators
    return options


class OnnxRuntimeInt8Backend(InferenceBackend):
    """INT8 image tower and float32 text tower as ONNX Runtime CPU sessions; `name` is `onnxruntime-int8-cpu`."""

    def __init__(self, model: ModelDirectory, work_dir: Path) -> None:
        super().__init__(model)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
        self._ort = ort
        try:
            self.files: OnnxFiles = onnx_files_for(model, work_dir)
            self.int8: Int8Graph = int8_image_graph_for(model, self.files, work_dir)
        except (OnnxExportError, QuantizationError) as exc:
            raise BackendUnavailable(str(exc)) from exc
        try:
            self._image = ort.InferenceSession(str(self.int8.path), _session_options(ort), providers=[CPU_PROVIDER])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
            raise BackendUnavailable(
                f"onnxruntime cannot load the INT8 image graph {self.int8.path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._text = None
        self.name = NAME
        self.logit_scale = read_logit_scale(model.weights_path)

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        return self._image.run(None, {IMAGE_INPUT: images})[0]

    def _text_session(self):
        if self._text is None:
            try:
                self._text = self._ort.InferenceSession(
                    str(self.files.text_model), _session_options(self._ort), providers=[CPU_PROVIDER]
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BackendUnavailable(
                    f"onnxruntime cannot load the text graph {self.files.text_model}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._text

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._text_session().run(None, {TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: attention_mask})[0]

    def float32_image_encoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """The float32 image graph this INT8 graph was made from, as the parity gate's reference."""
        session = self._ort.InferenceSession(str(self.files.image_model), _session_options(self._ort), providers=[CPU_PROVIDER])
        return lambda images: l2_normalise(session.run(None, {IMAGE_INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0])

    def close(self) -> None:
        self._image = None
        self._text = None
