"""The PyTorch backend: the open_clip model itself, in eval mode under `torch.inference_mode()`.

It is the reference every other backend is compared with. torch is imported only when this
backend is opened.
"""

from __future__ import annotations

import numpy as np

from engines.base import BackendUnavailable, InferenceBackend
from models.directory import ModelDirectory


class PyTorchBackend(InferenceBackend):
    """open_clip on CPU, or on CUDA when torch sees a GPU (`device="auto"`)."""

    def __init__(self, model: ModelDirectory, device: str = "auto") -> None:
        super().__init__(model)
        try:
            import torch

            from engines.torch_towers import ImageTower, TextTower
            from models.open_clip_loading import load_open_clip
        except ImportError as exc:
            raise BackendUnavailable(f"PyTorch/open_clip is not installed ({exc})") from exc
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._torch = torch
        self._device = torch.device(device)
        clip = load_open_clip(model, device=str(self._device))
        self._image_tower = ImageTower(clip).eval()
        self._text_tower = TextTower(clip).eval()
        with torch.inference_mode():
            self.logit_scale = float(clip.logit_scale.exp().item())
        self.name = f"pytorch-{self._device.type}"

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            batch = self._torch.from_numpy(images).to(self._device)
            return self._image_tower(batch).float().cpu().numpy()

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            ids = self._torch.from_numpy(input_ids).to(self._device)
            mask = self._torch.from_numpy(attention_mask).to(self._device)
            return self._text_tower(ids, mask).float().cpu().numpy()

    def close(self) -> None:
        self._image_tower = None
        self._text_tower = None
