"""The parity check of a fresh ONNX export against PyTorch (`python -m app.engine_commands export` runs it).

The exported graphs must give the PyTorch reference's embeddings: cosine ≥ 0.9999 for every
probe image (sample-study images, preprocessed, plus random inputs at batch sizes 1 and 3, which
also exercises the dynamic batch axis) and every probe text (different lengths, exercising the
dynamic sequence axis). The figures are returned so the command can print them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.directory import ModelDirectory

EXPORT_MIN_COSINE = 0.9999
PROBE_TEXTS = (
    "this is a photo of a burn wound on the skin",
    "a chest X-ray",
    "pneumothorax",
    "a medical image showing a normal computed tomography scan of the chest with no abnormality",
)


class ExportParityError(RuntimeError):
    """The ONNX export does not reproduce PyTorch; the message gives the figures."""


@dataclass(frozen=True)
class ExportParity:
    """Smallest cosine similarity of ONNX Runtime vs PyTorch embeddings, per tower."""

    image_min_cosine: float
    text_min_cosine: float
    images: int
    texts: int


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def check_export_parity(model: ModelDirectory, onnx_folder: Path, sample_images: np.ndarray) -> ExportParity:
    """Compare the ONNX graphs in `onnx_folder` with PyTorch on probe images and texts.

    `sample_images` are preprocessed (N, 3, S, S) images from the caller (the sample studies,
    app/probe_set.py); the first two are used, with two random inputs.

    Raises ExportParityError when either tower's smallest cosine is below 0.9999.
    """
    import onnxruntime as ort

    from engines.onnx_export import IMAGE_INPUT, IMAGE_ONNX, TEXT_INPUTS, TEXT_ONNX
    from engines.pytorch_backend import PyTorchBackend
    from engines.tokenizer import TextTokenizer

    samples = np.asarray(sample_images, dtype=np.float32)[:2]
    noise = np.random.default_rng(0).standard_normal((2, 3, model.image_size, model.image_size)).astype(np.float32)
    images = np.concatenate([samples, noise], axis=0)
    tokens = TextTokenizer.from_model(model)(list(PROBE_TEXTS))

    options = ort.SessionOptions()
    options.log_severity_level = 3
    image_session = ort.InferenceSession(str(Path(onnx_folder) / IMAGE_ONNX), options, providers=["CPUExecutionProvider"])
    text_session = ort.InferenceSession(str(Path(onnx_folder) / TEXT_ONNX), options, providers=["CPUExecutionProvider"])
    onnx_images = np.concatenate(
        [image_session.run(None, {IMAGE_INPUT: images[:1]})[0], image_session.run(None, {IMAGE_INPUT: images[1:]})[0]]
    )
    onnx_texts = text_session.run(None, {TEXT_INPUTS[0]: tokens.input_ids, TEXT_INPUTS[1]: tokens.attention_mask})[0]
    short = text_session.run(None, {TEXT_INPUTS[0]: tokens.input_ids[2:3, : int(tokens.attention_mask[2].sum())],
                                    TEXT_INPUTS[1]: tokens.attention_mask[2:3, : int(tokens.attention_mask[2].sum())]})[0]

    reference = PyTorchBackend(model, device="cpu")
    try:
        torch_images = reference.encode_images(images)
        torch_texts = reference.encode_texts(tokens.input_ids, tokens.attention_mask)
    finally:
        reference.close()
    parity = ExportParity(
        image_min_cosine=_min_cosine(torch_images, onnx_images),
        text_min_cosine=min(_min_cosine(torch_texts, onnx_texts), _min_cosine(torch_texts[2:3], short)),
        images=len(images),
        texts=len(PROBE_TEXTS),
    )
    if min(parity.image_min_cosine, parity.text_min_cosine) < EXPORT_MIN_COSINE:
        raise ExportParityError(
            f"the ONNX export in {onnx_folder} does not reproduce PyTorch: smallest cosine "
            f"{parity.image_min_cosine:.6f} (image), {parity.text_min_cosine:.6f} (text), needed ≥ {EXPORT_MIN_COSINE}"
        )
    return parity
