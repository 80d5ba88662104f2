"""Opening a model directory: find it, check it is complete, verify its weights, read its settings.

This is the registry API the application uses. It needs neither torch nor open_clip, so a run
that infers through ONNX Runtime with cached ONNX files never imports torch.

A model directory (the same layout for fetched, tiny and full-size random models) holds:

    manifest.json                identity, weights sha256, licence, status (models/manifest.py)
    open_clip_config.json        open_clip `model_cfg` + `preprocess_cfg` (mean/std)
    open_clip_model.safetensors  the weights (file name recorded in the manifest)
    config.json                  the text tower's transformers (BERT) config, so it resolves locally
    tokenizer.json, tokenizer_config.json, vocab.txt   the text tower's WordPiece tokenizer
    onnx/                        optional ONNX export of both towers (engines/onnx_files.py)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from models.errors import (
    ALLOW_UNTRAINED_ENV,
    ALLOW_UNTRAINED_FLAG,
    ModelDirectoryError,
    UntrainedModelRefused,
)
from models.manifest import MANIFEST_FILE, ModelManifest, read_manifest
from common.model_identity import ModelIdentity

MODEL_SUBDIR = "biomedclip"
"""Name of the model directory inside the MAP's models folder (HOLOSCAN_MODEL_PATH)."""

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
"""The weights file name: open_clip's `local-dir:` loader picks this name before any other checkpoint."""
TEXT_CONFIG = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_FILE = "vocab.txt"
ONNX_SUBDIR = "onnx"


@dataclass(frozen=True)
class ModelDirectory:
    """An opened, verified model directory and the settings the pipeline needs from it."""

    path: Path
    manifest: ModelManifest
    open_clip_config: Mapping[str, object] = field(repr=False)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    context_length: int
    embed_dim: int

    @property
    def identity(self) -> ModelIdentity:
        """What the report records about the model."""
        m = self.manifest
        return ModelIdentity(
            name=m.name, version=m.version, sha256=m.weights_sha256, status=m.status, source=m.source,
            validation=m.validation_record(self.path / "manifest.json") if m.status == "validated" else None,
        )

    @property
    def sha256(self) -> str:
        return self.manifest.weights_sha256

    @property
    def weights_path(self) -> Path:
        return self.path / self.manifest.weights_file

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def text_config_path(self) -> Path:
        return self.path / TEXT_CONFIG

    @property
    def shipped_onnx_dir(self) -> Path:
        return self.path / ONNX_SUBDIR


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weights never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def locate_model_dir(path: Path) -> Path:
    """Return the model directory for `path`: the directory itself, or its `biomedclip/` child.

    `path` is what the administrator configured (HOLOSCAN_MODEL_PATH, `-m`, or the node's model
    setting): either the models folder holding `biomedclip/`, or the model folder itself.
    """
    path = Path(path)
    if not path.exists():
        raise ModelDirectoryError(
            f"model path {path} does not exist; point the model path setting (HOLOSCAN_MODEL_PATH or -m) "
            f"at the folder holding {MODEL_SUBDIR}/ or at the model folder itself"
        )
    if not path.is_dir():
        raise ModelDirectoryError(f"model path {path} is not a folder; expected a model folder with {MANIFEST_FILE}")
    try:
        entries = set(os.listdir(path))
    except OSError as exc:
        raise ModelDirectoryError(
            f"model path {path} cannot be read ({exc.strerror}); give the user running the product read access"
        ) from exc
    if MANIFEST_FILE in entries:
        return path
    child = path / MODEL_SUBDIR
    if MODEL_SUBDIR in entries and child.is_dir():
        return child
    raise ModelDirectoryError(
        f"model path {path} is neither a model folder (no {MANIFEST_FILE}) nor a models folder holding "
        f"{MODEL_SUBDIR}/; install a model with `python -m models fetch biomedclip {path / MODEL_SUBDIR}`"
    )


def _rgb_triple(value: object, key: str, where: Path) -> tuple[float, float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ModelDirectoryError(f"{where}: preprocess_cfg.{key} must be a list of three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _positive_int(value: object, key: str, where: Path) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelDirectoryError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def read_open_clip_config(model_dir: Path) -> dict:
    """Read `open_clip_config.json` and check it has the sections the product relies on."""
    path = Path(model_dir) / OPEN_CLIP_CONFIG
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirectoryError(f"{path}: missing; every model folder needs its open_clip configuration") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelDirectoryError(f"{path}: cannot read the open_clip configuration: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelDirectoryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("model_cfg"), dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object with a 'model_cfg' mapping")
    model_cfg = document["model_cfg"]
    for section in ("vision_cfg", "text_cfg"):
        if not isinstance(model_cfg.get(section), dict):
            raise ModelDirectoryError(f"{path}: model_cfg.{section} must be a mapping")
    if not model_cfg["text_cfg"].get("hf_model_name"):
        raise ModelDirectoryError(
            f"{path}: model_cfg.text_cfg.hf_model_name is missing; this product runs BiomedCLIP-family "
            f"models whose text tower is a transformers (BERT) model"
        )
    if not isinstance(document.get("preprocess_cfg"), dict):
        raise ModelDirectoryError(f"{path}: expected a 'preprocess_cfg' mapping with the image mean and std")
    return document


def open_model_dir(path: Path, *, allow_untrained: bool) -> ModelDirectory:
    """Open the model at `path` (models folder or model folder), verify it, and return its settings.

    Checks, in order: the folder exists and is readable, the manifest is valid, the open_clip and
    text tower configurations and the tokenizer are present, the weights file exists and its
    sha256 equals the manifest's, and the status is not `untrained` unless `allow_untrained`.
    """
    model_dir = locate_model_dir(path)
    manifest = read_manifest(model_dir)
    document = read_open_clip_config(model_dir)
    config_path = model_dir / OPEN_CLIP_CONFIG
    model_cfg = document["model_cfg"]
    preprocess = document["preprocess_cfg"]
    for name in (TEXT_CONFIG, TOKENIZER_FILE):
        if not (model_dir / name).is_file():
            raise ModelDirectoryError(
                f"{model_dir / name}: missing; the text tower's configuration and tokenizer must be in the "
                f"model folder (the product never downloads them)"
            )
    if manifest.weights_file != WEIGHTS_FILE:
        raise ModelDirectoryError(
            f"{model_dir / MANIFEST_FILE}: weights_file is {manifest.weights_file!r}; the weights must be "
            f"stored as {WEIGHTS_FILE} (the checkpoint open_clip loads from a model folder)"
        )
    weights = model_dir / manifest.weights_file
    if not weights.is_file():
        raise ModelDirectoryError(
            f"{weights}: the weights file named in {model_dir / MANIFEST_FILE} is missing"
        )
    try:
        actual = sha256_file(weights)
    except OSError as exc:
        raise ModelDirectoryError(f"{weights}: cannot read the weights file: {exc.strerror}") from exc
    if actual != manifest.weights_sha256:
        raise ModelDirectoryError(
            f"{weights}: sha256 is {actual} but {model_dir / MANIFEST_FILE} says {manifest.weights_sha256}; "
            f"the weights are corrupt or were replaced - reinstall the model"
        )
    if manifest.untrained and not allow_untrained:
        raise UntrainedModelRefused(
            f"the model in {model_dir} has status 'untrained' (random weights: its results are meaningless). "
            f"It is refused unless explicitly allowed, for tests and demonstrations only: pass "
            f"{ALLOW_UNTRAINED_FLAG} or set {ALLOW_UNTRAINED_ENV}=1"
        )
    return ModelDirectory(
        path=model_dir,
        manifest=manifest,
        open_clip_config=document,
        mean=_rgb_triple(preprocess.get("mean"), "mean", config_path),
        std=_rgb_triple(preprocess.get("std"), "std", config_path),
        image_size=_positive_int(
            model_cfg["vision_cfg"].get("image_size", 224), "model_cfg.vision_cfg.image_size", config_path
        ),
        context_length=_positive_int(
            model_cfg["text_cfg"].get("context_length"), "model_cfg.text_cfg.context_length", config_path
        ),
        embed_dim=_positive_int(model_cfg.get("embed_dim"), "model_cfg.embed_dim", config_path),
    )
