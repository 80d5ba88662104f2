"""Building the open_clip model of a model directory, offline (imports torch and open_clip).

open_clip's `local-dir:` schema reads `open_clip_config.json` and the weights from the folder,
but its transformers text tower still resolves `text_cfg.hf_model_name` with
`AutoConfig.from_pretrained`, which would contact the Hugging Face hub. We pass open_clip a
`text_cfg` override (its `**model_kwargs` take precedence over the file) whose `hf_model_name`
and `hf_tokenizer_name` are the model folder itself, where the text tower's `config.json` lives.
Nothing is written into the folder, so it stays relocatable.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.directory import ModelDirectory, read_open_clip_config
from models.timm_variants import register_timm_variants

log = logging.getLogger(__name__)


def local_text_cfg(model_dir: Path, open_clip_document: dict) -> dict:
    """The folder's `text_cfg` with the text tower and tokenizer resolved from the folder itself."""
    text_cfg = dict(open_clip_document["model_cfg"]["text_cfg"])
    text_cfg["hf_model_name"] = str(model_dir)
    text_cfg["hf_tokenizer_name"] = str(model_dir)
    # The CLIP checkpoint carries the text tower's weights; never fetch "pretrained" BERT weights.
    text_cfg["hf_model_pretrained"] = False
    return text_cfg


def create_open_clip_model(model_dir: Path, *, load_weights: bool):
    """Create the open_clip model described by `model_dir` through `open_clip.create_model("local-dir:...")`.

    With `load_weights` the folder's checkpoint (`open_clip_model.safetensors`, which open_clip
    prefers over any other file) is loaded strictly, so every tensor must fit the architecture;
    without, the model keeps its random initialisation (used when building test models).
    """
    import open_clip

    model_dir = Path(model_dir).resolve()
    document = read_open_clip_config(model_dir)
    register_timm_variants()
    quiet = _RandomInitNotice() if not load_weights else None
    root = logging.getLogger()
    if quiet:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(
            f"local-dir:{model_dir}",
            load_weights=load_weights,
            pretrained_image=False,
            pretrained_text=False,
            device="cpu",
            text_cfg=local_text_cfg(model_dir, document),
        )
    finally:
        if quiet:
            root.removeFilter(quiet)
    model.eval()
    return model


class _RandomInitNotice(logging.Filter):
    """Hides open_clip's warnings that no weights were loaded, when random weights are the intent."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "no CLIP weights found" not in message and "initialized randomly" not in message


def load_open_clip(model: ModelDirectory, device: str = "cpu"):
    """The verified model directory's open_clip model with its weights, in eval mode on `device`."""
    network = create_open_clip_model(model.path, load_weights=True)
    return network.to(device)
