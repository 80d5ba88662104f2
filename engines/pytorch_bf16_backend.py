"""PyTorch on CPU with the image tower under bfloat16 autocast (fast on CPUs with AMX-BF16 / AVX512-BF16).

Only matrix products and convolutions run in bfloat16 (autocast's CPU policy); layer norms and
softmax stay float32 and the embeddings come back as float32. The text tower stays float32, so
the cached zero-shot text embeddings are the reference ones. The fast CPU path
(engines/cpu_fast_path.py) offers this backend only where the CPU computes bfloat16 natively and
the parity gate accepted it; elsewhere bfloat16 is emulated and slower than float32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engines.base import l2_normalise
from engines.pytorch_backend import PyTorchBackend
from models.directory import ModelDirectory

NAME = "pytorch-bf16-cpu"


class PyTorchBf16Backend(PyTorchBackend):
    """open_clip on CPU, image tower in bfloat16 autocast; `name` is `pytorch-bf16-cpu`."""

    def __init__(self, model: ModelDirectory) -> None:
        super().__init__(model, device="cpu")
        self.name = NAME

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self._image_tower(torch.from_numpy(images)).float().numpy()

    def float32_image_encoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """The same image tower without autocast, as the parity gate's reference."""
        return lambda images: l2_normalise(PyTorchBackend._encode_images(self, np.ascontiguousarray(images, dtype=np.float32)))
