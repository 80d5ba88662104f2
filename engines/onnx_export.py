"""Exporting a model's image and text towers to ONNX (imports torch; needed only when no ONNX exists).

Two graphs are written, both with a dynamic batch axis and the text graph also with a dynamic
sequence axis (token batches are trimmed to their longest real length):

    image_encoder.onnx   images (N, 3, S, S) float32                       -> image_embeddings (N, D)
    text_encoder.onnx    input_ids, attention_mask (N, L) int64            -> text_embeddings (N, D)
    onnx.json            the weights sha256 they were exported from, opset, names and sizes

Opset 17 (native LayerNormalization) is well inside what ONNX Runtime 1.31 and TensorRT 10 read.
The TorchScript-based exporter is used (`dynamo=False`): the dynamo exporter needs `onnxscript`,
which is not a dependency of the product. The exporter's deprecation and tracer warnings are
expected for this path and filtered for the duration of the export only.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from models.directory import ModelDirectory
from models.staging import staging_folder_beside

IMAGE_ONNX = "image_encoder.onnx"
TEXT_ONNX = "text_encoder.onnx"
ONNX_METADATA = "onnx.json"
OPSET = 17
IMAGE_INPUT = "images"
TEXT_INPUTS = ("input_ids", "attention_mask")
IMAGE_OUTPUT = "image_embeddings"
TEXT_OUTPUT = "text_embeddings"


class OnnxExportError(RuntimeError):
    """The ONNX export could not be made; the message names the model and destination."""


def _example_tokens(torch, vocab_size: int, pad_id: int):
    """Two token rows, one padded: tracing with padding keeps the attention mask in the graph."""
    ids = (torch.arange(16, dtype=torch.long).reshape(2, 8) % max(vocab_size - 1, 1)) + 1
    ids[ids == pad_id] = (pad_id + 1) % vocab_size
    mask = torch.ones_like(ids)
    ids[0, 5:] = pad_id
    mask[0, 5:] = 0
    return ids, mask


def _export_towers(model: ModelDirectory, folder: Path) -> None:
    import torch

    from engines.torch_towers import ImageTower, TextTower
    from models.open_clip_loading import load_open_clip

    clip = load_open_clip(model, device="cpu")
    # Wrappers must be in eval mode: the exporter restores each module's mode afterwards.
    image_tower = ImageTower(clip).eval()
    text_tower = TextTower(clip).eval()
    config = clip.text.transformer.config
    ids, mask = _example_tokens(torch, int(config.vocab_size), int(config.pad_token_id or 0))
    images = torch.zeros(2, 3, model.image_size, model.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(
                image_tower,
                (images,),
                str(folder / IMAGE_ONNX),
                dynamo=False,
                opset_version=OPSET,
                input_names=[IMAGE_INPUT],
                output_names=[IMAGE_OUTPUT],
                dynamic_axes={IMAGE_INPUT: {0: "batch"}, IMAGE_OUTPUT: {0: "batch"}},
            )
            torch.onnx.export(
                text_tower,
                (ids, mask),
                str(folder / TEXT_ONNX),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(TEXT_INPUTS),
                output_names=[TEXT_OUTPUT],
                dynamic_axes={
                    TEXT_INPUTS[0]: {0: "batch", 1: "sequence"},
                    TEXT_INPUTS[1]: {0: "batch", 1: "sequence"},
                    TEXT_OUTPUT: {0: "batch"},
                },
            )
    metadata = {
        "weights_sha256": model.sha256,
        "model_name": model.manifest.name,
        "model_version": model.manifest.version,
        "opset": OPSET,
        "image_model": IMAGE_ONNX,
        "text_model": TEXT_ONNX,
        "image_size": model.image_size,
        "embed_dim": model.embed_dim,
        "exporter": f"torch {torch.__version__} (TorchScript exporter)",
    }
    (folder / ONNX_METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def export_onnx(model: ModelDirectory, destination: Path) -> Path:
    """Export both towers of `model` into the new folder `destination` (complete or absent, never half-written).

    The files are written into a temporary sibling folder and renamed into place. If another
    process finished the same export first, its folder is kept and this one discarded.
    """
    destination = Path(destination)
    if destination.exists():
        raise OnnxExportError(f"ONNX destination {destination} already exists")
    try:
        staging = staging_folder_beside(destination)
    except OSError as exc:
        raise OnnxExportError(f"cannot create the ONNX folder beside {destination}: {exc.strerror}") from exc
    try:
        try:
            _export_towers(model, staging)
        except ImportError as exc:
            raise OnnxExportError(
                f"exporting ONNX for the model in {model.path} needs torch and open_clip, which cannot be "
                f"imported ({exc}); ship the ONNX files in {model.shipped_onnx_dir} "
                f"(python -m app.engine_commands export-onnx {model.path})"
            ) from exc
        except OnnxExportError:
            raise
        except Exception as exc:  # the exporter raises many types (RuntimeError, TorchExportError, OSError, ...)
            raise OnnxExportError(
                f"exporting ONNX for the model in {model.path} to {destination} failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            os.rename(staging, destination)
        except OSError as exc:
            if not (destination / ONNX_METADATA).is_file():  # not a concurrent export that finished first
                raise OnnxExportError(f"cannot move the exported ONNX files to {destination}: {exc.strerror}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination
