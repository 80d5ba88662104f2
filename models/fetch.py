"""Fetching the real BiomedCLIP weights from the Hugging Face hub into a model directory.

This is the only place the product contacts the network, and only when an administrator runs
`python -m models fetch biomedclip DIR`. It works in two steps so the second can be tested
offline:

1. `download_snapshot` resolves the requested revision to a commit, asks the hub for the sha256
   of the weights file at that commit, and downloads the open_clip repository's model files plus
   the text tower's `config.json` (from the PubMedBERT repository) through `huggingface_hub`.
2. `convert_snapshot` checks the downloaded weights against that sha256, then converts the
   snapshot into the product's model layout (models/directory.py): weights re-saved as
   safetensors, the text tower's config and tokenizer kept beside them, a manifest with status
   `research`, licence MIT, the source and the upstream revision and hash. It finally builds the
   open_clip model from the new folder with strict weight loading, so a folder only appears at
   the destination if the weights fit the architecture.

No expected hash is pinned in code: the hub publishes the sha256 of every LFS file for every
commit, and `download_snapshot` verifies against the value for the exact commit it downloaded,
which the manifest records (`upstream.revision`, `upstream.weights_sha256`). To reproduce an
installation, fetch with `--revision <that commit>`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from models.architecture import BIOMEDCLIP_LICENCE, BIOMEDCLIP_REPO, TEXT_TOWER_REPO
from models.builders import check_destination, prepare_destination, publish, save_weights
from models.directory import (
    OPEN_CLIP_CONFIG,
    TEXT_CONFIG,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    ModelDirectory,
    open_model_dir,
    read_open_clip_config,
    sha256_file,
)
from models.errors import ModelBuildError
from models.manifest import ModelManifest, utc_timestamp, write_manifest

log = logging.getLogger(__name__)

UPSTREAM_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""Weight files an open_clip hub repository may hold, in order of preference."""
TOKENIZER_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG, VOCAB_FILE, "special_tokens_map.json")
SNAPSHOT_PATTERNS = [OPEN_CLIP_CONFIG, *UPSTREAM_WEIGHT_FILES, *TOKENIZER_FILES, "LICENSE*"]


@dataclass(frozen=True)
class Snapshot:
    """Downloaded upstream files and what the hub says about them."""

    folder: Path
    text_config: Path
    repository: str
    revision: str
    text_repository: str
    text_revision: str
    expected_weights_sha256: str | None


def upstream_weights_file(snapshot_dir: Path) -> Path:
    """The weights file of an open_clip snapshot folder (safetensors preferred)."""
    for name in UPSTREAM_WEIGHT_FILES:
        candidate = Path(snapshot_dir) / name
        if candidate.is_file():
            return candidate
    raise ModelBuildError(f"{snapshot_dir}: no weights file ({' or '.join(UPSTREAM_WEIGHT_FILES)}) in the snapshot")


def download_snapshot(revision: str = "main", text_revision: str = "main", cache_dir: Path | None = None) -> Snapshot:
    """Download BiomedCLIP's model files at `revision` and the text tower's config (needs the network)."""
    try:
        return _download_snapshot(revision, text_revision, cache_dir)
    except ModelBuildError:
        raise
    except Exception as exc:  # huggingface_hub/httpx raise many types: HTTP, connection, not-found, disk errors
        raise ModelBuildError(
            f"cannot download {BIOMEDCLIP_REPO} (revision {revision}) and the config of {TEXT_TOWER_REPO} "
            f"(revision {text_revision}) from the Hugging Face hub: {type(exc).__name__}: {exc}. The fetch needs "
            f"access to https://huggingface.co (set HF_ENDPOINT for a mirror); run it where that is reachable and "
            f"copy the resulting model folder"
        ) from exc


def _download_snapshot(revision: str, text_revision: str, cache_dir: Path | None) -> Snapshot:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    info = api.model_info(BIOMEDCLIP_REPO, revision=revision, files_metadata=True)
    expected = {
        sibling.rfilename: sibling.lfs.sha256 for sibling in info.siblings or [] if sibling.lfs is not None
    }
    folder = Path(
        snapshot_download(
            BIOMEDCLIP_REPO, revision=info.sha, allow_patterns=SNAPSHOT_PATTERNS, cache_dir=cache_dir
        )
    )
    weights = upstream_weights_file(folder)
    text_info = api.model_info(TEXT_TOWER_REPO, revision=text_revision)
    text_config = Path(hf_hub_download(TEXT_TOWER_REPO, TEXT_CONFIG, revision=text_info.sha, cache_dir=cache_dir))
    log.info("downloaded %s at commit %s into %s", BIOMEDCLIP_REPO, info.sha, folder)
    return Snapshot(
        folder=folder,
        text_config=text_config,
        repository=BIOMEDCLIP_REPO,
        revision=str(info.sha),
        text_repository=TEXT_TOWER_REPO,
        text_revision=str(text_info.sha),
        expected_weights_sha256=expected.get(weights.name),
    )


def load_upstream_state_dict(weights: Path) -> dict:
    """Read an upstream checkpoint (safetensors, or a torch file loaded with `weights_only=True`)."""
    import torch

    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise RuntimeError, UnpicklingError, EOFError, ...
        raise ModelBuildError(f"{weights}: cannot read the downloaded weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelBuildError(f"{weights}: does not hold a state dict of tensors")
    return state


def copy_tokenizer(snapshot_dir: Path, staging: Path) -> None:
    """Copy the tokenizer files and re-save them through transformers so `tokenizer.json` exists."""
    from transformers import AutoTokenizer

    copied = [name for name in TOKENIZER_FILES if (snapshot_dir / name).is_file()]
    if VOCAB_FILE not in copied and TOKENIZER_FILE not in copied:
        raise ModelBuildError(f"{snapshot_dir}: no tokenizer ({TOKENIZER_FILE} or {VOCAB_FILE}) in the snapshot")
    for name in copied:
        shutil.copyfile(snapshot_dir / name, staging / name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(staging), local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError for unusable files
        raise ModelBuildError(f"{snapshot_dir}: the tokenizer files cannot be loaded ({exc})") from exc
    tokenizer.save_pretrained(str(staging))


def convert_snapshot(snapshot: Snapshot, destination: Path) -> ModelDirectory:
    """Verify a downloaded snapshot and convert it into a model directory at `destination` (offline)."""
    from models.open_clip_loading import create_open_clip_model

    folder = Path(snapshot.folder)
    if not folder.is_dir():
        raise ModelBuildError(f"snapshot folder {folder} does not exist")
    weights = upstream_weights_file(folder)
    upstream_sha256 = sha256_file(weights)
    if snapshot.expected_weights_sha256 and upstream_sha256 != snapshot.expected_weights_sha256:
        raise ModelBuildError(
            f"{weights}: sha256 is {upstream_sha256} but {snapshot.repository} at {snapshot.revision} publishes "
            f"{snapshot.expected_weights_sha256}; the download is corrupt - delete it and fetch again"
        )
    read_open_clip_config(folder)
    if not Path(snapshot.text_config).is_file():
        raise ModelBuildError(f"text tower config {snapshot.text_config} does not exist")

    destination = Path(destination)
    staging = prepare_destination(destination)
    try:
        shutil.copyfile(folder / OPEN_CLIP_CONFIG, staging / OPEN_CLIP_CONFIG)
        shutil.copyfile(snapshot.text_config, staging / TEXT_CONFIG)
        copy_tokenizer(folder, staging)
        save_weights(load_upstream_state_dict(weights), staging / WEIGHTS_FILE)
        version = snapshot.revision[:12] if len(snapshot.revision) == 40 else snapshot.revision
        write_manifest(
            staging,
            ModelManifest(
                name=snapshot.repository.rsplit("/", 1)[-1],
                version=version,
                source=f"https://huggingface.co/{snapshot.repository}",
                weights_file=WEIGHTS_FILE,
                weights_sha256=sha256_file(staging / WEIGHTS_FILE),
                licence=BIOMEDCLIP_LICENCE,
                status="research",
                created=utc_timestamp(),
                architecture="open_clip CustomTextCLIP: timm ViT-B/16 224 px + PubMedBERT (256 tokens), 512-d",
                notes="Published research weights, not validated for clinical use at this site.",
                upstream={
                    "repository": snapshot.repository,
                    "revision": snapshot.revision,
                    "weights_file": weights.name,
                    "weights_sha256": upstream_sha256,
                    "text_config_repository": snapshot.text_repository,
                    "text_config_revision": snapshot.text_revision,
                },
            ),
        )
        open_model_dir(staging, allow_untrained=False)
        try:
            create_open_clip_model(staging, load_weights=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelBuildError(
                f"{weights}: the weights do not fit the architecture in {folder / OPEN_CLIP_CONFIG} ({exc})"
            ) from exc
        publish(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("installed %s (%s) in %s", snapshot.repository, version, destination)
    return open_model_dir(destination, allow_untrained=False)


def fetch_biomedclip(
    destination: Path, *, revision: str = "main", text_revision: str = "main", cache_dir: Path | None = None
) -> ModelDirectory:
    """Download BiomedCLIP at `revision`, verify it and install it as a model directory at `destination`."""
    check_destination(destination)
    return convert_snapshot(download_snapshot(revision, text_revision, cache_dir), destination)
