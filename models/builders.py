"""Building BiomedCLIP-architecture model directories with random, seeded weights (imports torch).

`build_tiny` makes a model small enough for unit tests (a 32-wide, 2-block ViT-B/16-family image
tower and a 32-wide, 2-layer BERT text tower); `build_random` makes the full-size architecture
(ViT-B/16 + BERT-base, about 780 MB) for benchmarks. Both are created by the same
`open_clip.create_model("local-dir:...")` call that loads the real weights, initialised from a
fixed seed (the same seed gives byte-identical weights), and carry status `untrained`.

A directory is assembled under a temporary name next to the destination and renamed into place
when complete, so an interrupted build never leaves a folder that looks like a model; a model
folder already there is replaced only when asked (`replace`) and only once the new one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from models.architecture import (
    BERT_BASE,
    CONTEXT_LENGTH,
    FULL_SIZE_VIT,
    TINY_BERT,
    TINY_VIT,
    TextTowerSize,
    bert_config_kwargs,
    open_clip_config,
)
from models.directory import OPEN_CLIP_CONFIG, WEIGHTS_FILE, ModelDirectory, open_model_dir, sha256_file
from models.errors import ModelBuildError
from models.manifest import MANIFEST_FILE, ModelManifest, utc_timestamp, write_json_atomic, write_manifest
from models.staging import staging_folder_beside
from models.vocabulary import (
    bert_base_sized_vocabulary,
    default_task_file,
    prompt_texts,
    tiny_vocabulary,
    words_of,
    write_tokenizer_files,
)

log = logging.getLogger(__name__)

UNTRAINED_LICENCE = "Apache-2.0"
"""Locally built random weights carry the product's own licence."""


@dataclass(frozen=True)
class ArchitectureSize:
    """Which variant of the BiomedCLIP architecture to build."""

    name: str
    timm_model_name: str
    text_tower: TextTowerSize
    full_vocabulary: bool
    description: str


TINY = ArchitectureSize(
    name="biomedclip-tiny",
    timm_model_name=TINY_VIT,
    text_tower=TINY_BERT,
    full_vocabulary=False,
    description="BiomedCLIP architecture, tiny: ViT-B/16 family 32 wide x 2 blocks, BERT 32 wide x 2 layers",
)
FULL_SIZE = ArchitectureSize(
    name="biomedclip-random",
    timm_model_name=FULL_SIZE_VIT,
    text_tower=BERT_BASE,
    full_vocabulary=True,
    description="BiomedCLIP architecture, full size: ViT-B/16 224 px + BERT-base (PubMedBERT size), 512-d",
)


def check_destination(destination: Path, *, replace: bool = False) -> None:
    """Raise ModelBuildError unless `destination` can receive a new model folder.

    An absent path or an empty folder always can. With `replace`, so can an existing model folder
    (one holding `manifest.json`); `publish` swaps it out only once the new folder is complete.
    Anything else is refused, so a mistyped path never deletes a folder that is not a model.
    """
    destination = Path(destination)
    if not destination.exists() or (destination.is_dir() and not any(destination.iterdir())):
        return
    if not replace:
        raise ModelBuildError(
            f"{destination} already exists and is not an empty folder; choose a new folder, or pass --replace "
            f"to replace the model folder there"
        )
    if not destination.is_dir() or not (destination / MANIFEST_FILE).is_file():
        raise ModelBuildError(
            f"{destination} is not a model folder (it has no {MANIFEST_FILE}); --replace only replaces a model "
            f"folder - choose a new folder"
        )


def prepare_destination(destination: Path, *, replace: bool = False) -> Path:
    """Check `destination` can receive a model and return a fresh staging folder beside it."""
    destination = Path(destination)
    check_destination(destination, replace=replace)
    return staging_folder_beside(destination)


def publish(staging: Path, destination: Path, *, replace: bool = False) -> None:
    """Move a complete staging folder to `destination` (an empty destination folder is replaced).

    With `replace`, an existing model folder stays untouched until this point: it is renamed aside
    (beside it, same filesystem), the new folder is renamed into place, and only then is the old
    one deleted; if the second rename fails, the old folder is put back. A reader sees the old
    model or the new one, never a mixture (the path is absent only between the two renames).
    """
    destination = Path(destination)
    if destination.is_dir() and not any(destination.iterdir()):
        destination.rmdir()
    if not destination.exists():
        os.replace(staging, destination)
        return
    check_destination(destination, replace=replace)  # it may have appeared while the model was being built
    old = staging_folder_beside(destination, purpose="replaced")
    os.replace(destination, old)  # onto an empty folder: allowed by rename(2)
    try:
        os.replace(staging, destination)
    except BaseException:
        os.replace(old, destination)
        raise
    try:
        shutil.rmtree(old)
    except OSError as exc:
        log.warning("installed the new model in %s, but its old copy %s could not be deleted (%s); delete it", destination, old, exc)


def save_weights(state_dict: dict, path: Path) -> None:
    """Save an open_clip state dict as safetensors (no pickle; deterministic bytes for equal tensors)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors creates the file owner-only; the product may run as another user


def write_text_tower_config(destination: Path, size: TextTowerSize, vocab_size: int, pad_token_id: int) -> None:
    """Write the text tower's transformers `config.json` into `destination`."""
    from transformers import BertConfig

    BertConfig(**bert_config_kwargs(size, vocab_size, pad_token_id)).save_pretrained(destination)


def build_random_model(
    destination: Path, size: ArchitectureSize, *, seed: int = 0, task_file: Path | None = None, replace: bool = False
) -> ModelDirectory:
    """Build a `size` BiomedCLIP-architecture model with weights drawn from `seed` into `destination`.

    With `replace`, a model folder already at `destination` is replaced once the new one is complete.
    """
    import torch

    from models.open_clip_loading import create_open_clip_model

    destination = Path(destination)
    staging = prepare_destination(destination, replace=replace)
    try:
        words = words_of(prompt_texts(task_file or default_task_file()))
        vocab = bert_base_sized_vocabulary(words) if size.full_vocabulary else tiny_vocabulary(words)
        write_json_atomic(staging / OPEN_CLIP_CONFIG, open_clip_config(size.timm_model_name))
        write_text_tower_config(staging, size.text_tower, len(vocab), pad_token_id=vocab.index("[PAD]"))
        write_tokenizer_files(vocab, staging, CONTEXT_LENGTH)
        torch.manual_seed(seed)
        network = create_open_clip_model(staging, load_weights=False)
        save_weights(network.state_dict(), staging / WEIGHTS_FILE)
        write_manifest(
            staging,
            ModelManifest(
                name=size.name,
                version=f"seed-{seed}",
                source=f"built locally with random weights (python -m models, seed {seed})",
                weights_file=WEIGHTS_FILE,
                weights_sha256=sha256_file(staging / WEIGHTS_FILE),
                licence=UNTRAINED_LICENCE,
                status="untrained",
                created=utc_timestamp(),
                architecture=size.description,
                notes="Random weights for tests and benchmarks: every result of this model is meaningless.",
            ),
        )
        open_model_dir(staging, allow_untrained=True)
        publish(staging, destination, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("built %s (%s) in %s", size.name, size.description, destination)
    return open_model_dir(destination, allow_untrained=True)


def build_tiny(
    destination: Path, *, seed: int = 0, task_file: Path | None = None, replace: bool = False
) -> ModelDirectory:
    """Build the tiny test model (same architecture family and code path, random weights)."""
    return build_random_model(destination, TINY, seed=seed, task_file=task_file, replace=replace)


def build_random(
    destination: Path, *, seed: int = 0, task_file: Path | None = None, replace: bool = False
) -> ModelDirectory:
    """Build the full-size BiomedCLIP architecture with random weights (about 780 MB) for benchmarks."""
    return build_random_model(destination, FULL_SIZE, seed=seed, task_file=task_file, replace=replace)
