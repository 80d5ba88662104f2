"""The ONNX Runtime backend: the exported towers run by onnxruntime (CUDA provider if present, else CPU).

It never imports torch when the ONNX files exist (shipped or cached); the logit scale is read
straight from the safetensors weights with numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.base import BackendUnavailable, InferenceBackend
from engines.onnx_export import IMAGE_INPUT, TEXT_INPUTS, OnnxExportError
from engines.onnx_files import OnnxFiles, onnx_files_for
from models.directory import ModelDirectory

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def read_logit_scale(weights: Path) -> float:
    """exp(logit_scale) from a safetensors checkpoint, without torch."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as handle:
        raw = handle.get_tensor("logit_scale")
    return float(np.exp(np.asarray(raw, dtype=np.float64).reshape(-1)[0]))


class OnnxRuntimeBackend(InferenceBackend):
    """Both towers as ONNX Runtime sessions; `name` is `onnxruntime-cuda` or `onnxruntime-cpu`."""

    def __init__(self, model: ModelDirectory, work_dir: Path, *, allow_cuda: bool = True) -> None:
        super().__init__(model)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
        try:
            self.files: OnnxFiles = onnx_files_for(model, work_dir)
        except OnnxExportError as exc:
            raise BackendUnavailable(str(exc)) from exc
        providers = [CPU_PROVIDER]
        if allow_cuda and CUDA_PROVIDER in ort.get_available_providers():
            providers.insert(0, CUDA_PROVIDER)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's info/warning lines are not for administrators
        try:
            self._image = ort.InferenceSession(str(self.files.image_model), options, providers=providers)
            self._text = ort.InferenceSession(str(self.files.text_model), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
            raise BackendUnavailable(
                f"onnxruntime cannot load the ONNX files in {self.files.folder}: {type(exc).__name__}: {exc}"
            ) from exc
        active = self._image.get_providers()[0]
        self.name = "onnxruntime-cuda" if active == CUDA_PROVIDER else "onnxruntime-cpu"
        self.logit_scale = read_logit_scale(model.weights_path)

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        return self._image.run(None, {IMAGE_INPUT: images})[0]

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._text.run(None, {TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: attention_mask})[0]

    def close(self) -> None:
        self._image = None
        self._text = None
