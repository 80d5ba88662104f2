"""The two towers of an open_clip BiomedCLIP model as standalone torch modules (imports torch).

The PyTorch backend runs them and the ONNX exporter exports them, so both backends compute the
same graph. The image tower is open_clip's `encode_image(normalize=True)`. The text tower takes
the attention mask as an input, rather than deriving it from pad ids inside the graph as
open_clip's `HFTextEncoder.forward` does, so that ONNX, TensorRT and Triton serve the standard
(input_ids, attention_mask) BERT signature; it is otherwise the same computation (transformer,
CLS pooler, projection), which tests check against open_clip's `encode_text`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageTower(nn.Module):
    """images (N, 3, S, S) -> L2-normalised image embeddings (N, D)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images, normalize=True)


class TextTower(nn.Module):
    """input_ids, attention_mask (N, L) -> L2-normalised text embeddings (N, D)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.text = clip.text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.text.transformer(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.text.pooler(out, attention_mask)
        return F.normalize(self.text.proj(pooled), dim=-1)
