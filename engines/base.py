"""The interface every inference backend implements, and the errors backends raise.

A backend turns model-ready arrays into L2-normalised embeddings: images (N, 3, S, S) float32,
already resized and normalised with the model's mean/std, and token ids with their attention mask
(N, L) int64, trimmed to the batch's longest real length. Callers (zero-shot scoring, the
inference operator) see only this interface, so a TensorRT engine or a remote Triton server is
added as one more subclass without changing them. Inputs and outputs are numpy arrays on the host
so no caller needs torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from models.directory import ModelDirectory
from common.model_identity import ModelIdentity


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here (library missing, export failed, no device); the message says why."""


class BackendNotApplicable(BackendUnavailable):
    """The backend does not apply to this host at all (e.g. TensorRT without a GPU): an expected condition,
    so `auto` notes it at INFO level instead of warning about it."""


class BackendConfigError(ValueError):
    """The configured or environment backend name is not one this product knows."""


AUTO = "auto"
BACKEND_NAMES: tuple[str, ...] = (
    "tensorrt", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8", "pytorch", "pytorch-bf16",
)
"""Every inference backend a run can be forced to; the one list the CLI, the settings and the node's
configuration are checked against."""
BACKEND_CHOICES: tuple[str, ...] = (AUTO, *BACKEND_NAMES)

#: Seconds a remote (Triton) inference request may take before the run gives up on the server.
DEFAULT_TRITON_TIMEOUT_S = 60.0
"""What a backend setting may say: `auto` (the product's order of preference) or one backend."""


def checked_backend_name(value: str | None, origin: str) -> str:
    """`value` as a known backend name (lower case; empty means `auto`), else BackendConfigError naming `origin`.

    `origin` says where the value came from (a flag, an environment variable, a configuration key),
    so the message tells an administrator which setting to fix.
    """
    name = (value or AUTO).strip().lower() or AUTO
    if name not in BACKEND_CHOICES:
        raise BackendConfigError(f"{origin}: unknown inference backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


class InferenceBackend(ABC):
    """Embeds images and texts with one model; `name` says which runtime and device, e.g. `onnxruntime-cpu`."""

    name: str
    model: ModelIdentity
    embed_dim: int
    image_size: int
    logit_scale: float
    """The model's learned temperature, already exponentiated (logits = logit_scale * cosine)."""

    def __init__(self, model: ModelDirectory) -> None:
        self.model = model.identity
        self.embed_dim = model.embed_dim
        self.image_size = model.image_size

    @abstractmethod
    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        """Backend-specific image embedding of a checked (N, 3, S, S) float32 batch."""

    @abstractmethod
    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Backend-specific text embedding of checked (N, L) int64 ids and mask."""

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, D) float32 L2-normalised embeddings."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"image batch must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}), got {images.shape}")
        if images.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return l2_normalise(self._encode_images(images))

    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(N, L) token ids and attention mask -> (N, D) float32 L2-normalised embeddings."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"token ids and attention mask must be equal (N, L) arrays, got {input_ids.shape} and {attention_mask.shape}"
            )
        if input_ids.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return l2_normalise(self._encode_texts(input_ids, attention_mask))

    def close(self) -> None:
        """Release the runtime's resources (sessions, device memory); the backend is unusable afterwards."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); the towers already normalise, this guards reduced precision."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)
