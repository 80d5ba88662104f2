"""Fetching the real BiomedCLIP weights from the Hugging Face hub (or a mirror) into a model directory.

This is the only place the product contacts the network, and only when an administrator runs
`python -m models fetch biomedclip DIR`. It works in two steps so the second can be tested
offline:

1. `download_snapshot` resolves the requested revision to a commit, asks the hub for the sha256
   of the weights file at that commit, and downloads the open_clip repository's model files plus
   the text tower's `config.json` (from the PubMedBERT repository) through `huggingface_hub`.
   `cached_snapshot` instead takes the same files from a Hugging Face cache folder that was
   filled on another machine (`hf download ... --cache-dir`), without any network access.
2. `convert_snapshot` checks the downloaded weights against that sha256, then converts the
   snapshot into the product's model layout (models/directory.py): weights re-saved as
   safetensors, the text tower's config and tokenizer kept beside them, a manifest with status
   `research`, licence MIT, the source and the upstream revision and hash. It finally builds the
   open_clip model from the new folder with strict weight loading, so a folder only appears at
   the destination if the weights fit the architecture.

The hub is `HF_ENDPOINT` (a mirror) when set, else https://huggingface.co, passed explicitly to
every `huggingface_hub` call; `check_hub_client` refuses to start if the library, as loaded in this
process, would send a request of its own anywhere else. A token for a gated or private mirror
comes from `HF_TOKEN`, which `huggingface_hub` sends as an `Authorization` header (to the hub, not
to the storage host it redirects downloads to) and this module never logs. Unless the administrator names a cache (`--cache-dir`), the files are
downloaded into a hidden folder beside the destination that is deleted afterwards, so a failed
fetch leaves nothing behind.

No expected hash is pinned in code: the hub publishes the sha256 of every LFS file for every
commit, and `download_snapshot` verifies against the value for the exact commit it downloaded,
which the manifest records (`upstream.revision`, `upstream.weights_sha256`). To reproduce an
installation, fetch with `--revision <that commit>`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
from models.errors import ModelBuildError, ModelFetchError, WeightsHashMismatch
from models.manifest import ModelManifest, utc_timestamp, write_manifest
from models.staging import staging_folder_beside

log = logging.getLogger(__name__)

HF_ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
UPSTREAM_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""Weight files an open_clip hub repository may hold, in order of preference."""
TOKENIZER_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG, VOCAB_FILE, "special_tokens_map.json")
SNAPSHOT_PATTERNS = [OPEN_CLIP_CONFIG, *UPSTREAM_WEIGHT_FILES, *TOKENIZER_FILES, "LICENSE*"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    endpoint: str | None = None
    """The hub or mirror the files came from (credentials removed); None for an offline copy."""


def hub_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The hub or mirror to fetch from: `HF_ENDPOINT` as set when the fetch runs, else huggingface.co.

    It is read here and passed to `huggingface_hub` explicitly because the library reads the
    variable only once, when it is first imported.
    """
    environ = os.environ if environ is None else environ
    return (environ.get(HF_ENDPOINT_ENV) or DEFAULT_HUB_ENDPOINT).rstrip("/")


def display_endpoint(endpoint: str) -> str:
    """`endpoint` fit for logs and messages: any user name or password in the URL is removed."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def upstream_weights_file(snapshot_dir: Path) -> Path:
    """The weights file of an open_clip snapshot folder (safetensors preferred)."""
    for name in UPSTREAM_WEIGHT_FILES:
        candidate = Path(snapshot_dir) / name
        if candidate.is_file():
            return candidate
    raise ModelBuildError(f"{snapshot_dir}: no weights file ({' or '.join(UPSTREAM_WEIGHT_FILES)}) in the snapshot")


@contextmanager
def _hub_errors(where: str, repository: str, revision: str) -> Iterator[None]:
    """Turn what `huggingface_hub` raises during one hub step into a ModelFetchError saying what to fix.

    The library raises its own HTTP error classes (matched on the hub's `X-Error-Code` header),
    httpx2 transport errors (refused, cut off, timed out) and OSError (size check, disk).
    """
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except ModelBuildError:
        raise
    except RevisionNotFoundError as exc:
        raise ModelFetchError(
            f"{where} has no revision {revision!r} of {repository}; give a branch, tag or full commit id that "
            f"exists there (--revision for the weights, --text-revision for the text tower's config)"
        ) from exc
    except GatedRepoError as exc:
        raise ModelFetchError(
            f"{where} refuses access to {repository} at revision {revision!r}: the repository is gated; set HF_TOKEN "
            f"to an access token that has been granted access to it"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelFetchError(
            f"{where} has no repository {repository}, or it is private and HF_TOKEN is missing or not allowed to "
            f"read it; set HF_ENDPOINT to a hub or mirror that hosts it (and HF_TOKEN if it needs one)"
        ) from exc
    except RemoteEntryNotFoundError as exc:
        raise ModelFetchError(
            f"{where} lists a file of {repository} at revision {revision!r} that it then does not serve "
            f"({_first_line(exc)}); the mirror is incomplete - fetch from the Hugging Face hub or repair the mirror"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = "set HF_TOKEN to an access token allowed to read it" if status in (401, 403) else "try again later"
        raise ModelFetchError(
            f"{where} answered HTTP {status} for {repository} at revision {revision!r} ({_first_line(exc)}); {hint}"
        ) from exc
    except (httpx2.HTTPError, LocalEntryNotFoundError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ else exc
        raise ModelFetchError(
            f"downloading {repository} (revision {revision!r}) from {where} failed: {type(cause).__name__}: "
            f"{_first_line(cause)}. Nothing was installed. Check that {where} is reachable from here (HF_ENDPOINT "
            f"names a mirror) and that there is disk space, then run the command again"
        ) from exc


def check_hub_client(endpoint: str) -> None:
    """Raise ModelFetchError if `huggingface_hub`, as loaded in this process, would not stay on `endpoint`.

    Every request this module makes names `endpoint` explicitly. Two settings of the library are
    read once, when it is first imported, and cannot be passed per call:

    - `HF_HUB_OFFLINE`: with it, every request fails; say so instead of "unreachable".
    - `HF_ENDPOINT` for the library's own request: unless telemetry is off, building the first
      request's User-Agent fetches an AI-agent registry from the endpoint the library was imported
      with. `python -m models` turns telemetry off before the import, and an administrator sets
      HF_ENDPOINT before starting it, so this only refuses a process that imported the library
      earlier and pointed HF_ENDPOINT elsewhere afterwards.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise ModelFetchError(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, so huggingface_hub makes no request; unset it to fetch "
            "from the hub or a mirror, or convert a copied Hugging Face cache with --offline --cache-dir (README, Models)"
        )
    imported_with = constants.ENDPOINT.rstrip("/")
    if imported_with != endpoint and not constants.HF_HUB_DISABLE_TELEMETRY:
        raise ModelFetchError(
            f"huggingface_hub was loaded in this process for {display_endpoint(imported_with)} and would send its "
            f"telemetry request there, not to {display_endpoint(endpoint)}; run `python -m models fetch` in a new "
            f"process with HF_ENDPOINT set, or set HF_HUB_DISABLE_TELEMETRY=1 before huggingface_hub is imported"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def download_snapshot(
    revision: str = "main",
    text_revision: str = "main",
    cache_dir: Path | None = None,
    endpoint: str | None = None,
) -> Snapshot:
    """Download BiomedCLIP's model files at `revision` and the text tower's config (needs the network).

    `endpoint` defaults to `hub_endpoint()`; `cache_dir` is the Hugging Face cache to download
    into (None: the library's default cache). Raises ModelFetchError saying what to fix.
    """
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    where = display_endpoint(endpoint)
    check_hub_client(endpoint)
    api = HfApi(endpoint=endpoint)
    log.info("fetching %s (revision %s) from %s", BIOMEDCLIP_REPO, revision, where)
    with _hub_errors(where, BIOMEDCLIP_REPO, revision):
        info = api.model_info(BIOMEDCLIP_REPO, revision=revision, files_metadata=True)
        if not info.sha:
            raise ModelFetchError(f"{where} did not say which commit revision {revision!r} of {BIOMEDCLIP_REPO} is")
        folder = Path(
            snapshot_download(
                BIOMEDCLIP_REPO,
                revision=info.sha,
                allow_patterns=SNAPSHOT_PATTERNS,
                cache_dir=cache_dir,
                endpoint=endpoint,
            )
        )
    weights = upstream_weights_file(folder)
    published = {sibling.rfilename: sibling.lfs.sha256 for sibling in info.siblings or [] if sibling.lfs is not None}
    expected = published.get(weights.name)
    if expected is None:
        raise ModelFetchError(
            f"{where} publishes no sha256 for {weights.name} of {BIOMEDCLIP_REPO} at commit {info.sha} (no Git LFS "
            f"metadata), so the download cannot be verified; fetch from the Hugging Face hub or a mirror that "
            f"serves the hub's file metadata"
        )
    with _hub_errors(where, TEXT_TOWER_REPO, text_revision):
        text_info = api.model_info(TEXT_TOWER_REPO, revision=text_revision)
        if not text_info.sha:
            raise ModelFetchError(f"{where} did not say which commit revision {text_revision!r} of {TEXT_TOWER_REPO} is")
        text_config = Path(
            hf_hub_download(TEXT_TOWER_REPO, TEXT_CONFIG, revision=text_info.sha, cache_dir=cache_dir, endpoint=endpoint)
        )
    log.info("downloaded %s at commit %s from %s", BIOMEDCLIP_REPO, info.sha, where)
    return Snapshot(
        folder=folder,
        text_config=text_config,
        repository=BIOMEDCLIP_REPO,
        revision=str(info.sha),
        text_repository=TEXT_TOWER_REPO,
        text_revision=str(text_info.sha),
        expected_weights_sha256=expected,
        endpoint=where,
    )


@contextmanager
def _cache_errors(cache_dir: Path, repository: str, revision: str) -> Iterator[None]:
    """Turn a cache miss of `huggingface_hub` (local files only) into a ModelBuildError saying what to do."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        yield
    except LocalEntryNotFoundError as exc:
        raise ModelBuildError(
            f"the Hugging Face cache {cache_dir} holds no complete download of {repository} at revision "
            f"{revision!r} ({_first_line(exc)}); download it with `hf download ... --cache-dir` where the hub is "
            f"reachable and copy the whole cache folder here (README, Models)"
        ) from exc


def published_sha256_in_cache(weights: Path) -> str:
    """The sha256 the hub published for a cached LFS file: the name of the blob it links to.

    The Hugging Face cache stores each LFS file once, as `blobs/<sha256>` (the ETag the hub sent
    for it), and links `snapshots/<commit>/<name>` to that blob.
    """
    target = Path(os.path.realpath(weights))
    if target.parent.name == "blobs" and _SHA256.match(target.name):
        return target.name
    raise ModelBuildError(
        f"{weights}: the cache does not record the sha256 the hub published for it (it is not a link to "
        f"blobs/<sha256>); copy the cache folder as `hf download --cache-dir` made it (links kept, e.g. with "
        f"`cp -a` or `tar`), or fetch where the hub is reachable"
    )


def cached_snapshot(cache_dir: Path, revision: str = "main", text_revision: str = "main") -> Snapshot:
    """The snapshot a Hugging Face cache folder already holds, read without any network access.

    This is the offline path: the cache was filled where the hub is reachable (`hf download ...
    --cache-dir`) and copied here. Branch and tag names resolve through the cache's `refs/`.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise ModelBuildError(f"the Hugging Face cache folder {cache_dir} does not exist (--cache-dir)")
    with _cache_errors(cache_dir, BIOMEDCLIP_REPO, revision):
        folder = Path(
            snapshot_download(
                BIOMEDCLIP_REPO,
                revision=revision,
                allow_patterns=SNAPSHOT_PATTERNS,
                cache_dir=cache_dir,
                local_files_only=True,
            )
        )
    with _cache_errors(cache_dir, TEXT_TOWER_REPO, text_revision):
        text_config = Path(
            hf_hub_download(TEXT_TOWER_REPO, TEXT_CONFIG, revision=text_revision, cache_dir=cache_dir, local_files_only=True)
        )
    weights = upstream_weights_file(folder)
    log.info("using %s at commit %s from the Hugging Face cache %s", BIOMEDCLIP_REPO, folder.name, cache_dir)
    return Snapshot(
        folder=folder,
        text_config=text_config,
        repository=BIOMEDCLIP_REPO,
        revision=folder.name,  # snapshots/<commit>/
        text_repository=TEXT_TOWER_REPO,
        text_revision=text_config.parent.name,
        expected_weights_sha256=published_sha256_in_cache(weights),
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


def convert_snapshot(snapshot: Snapshot, destination: Path, *, replace: bool = False) -> ModelDirectory:
    """Verify a downloaded snapshot and convert it into a model directory at `destination` (offline).

    With `replace`, a model folder already at `destination` is replaced once the new one is complete.
    """
    from models.open_clip_loading import create_open_clip_model

    folder = Path(snapshot.folder)
    if not folder.is_dir():
        raise ModelBuildError(f"snapshot folder {folder} does not exist")
    weights = upstream_weights_file(folder)
    upstream_sha256 = sha256_file(weights)
    if snapshot.expected_weights_sha256 and upstream_sha256 != snapshot.expected_weights_sha256:
        # A download folder is deleted afterwards: name the file by where it came from, not by that folder.
        what = f"{weights.name} as downloaded from {snapshot.endpoint}" if snapshot.endpoint else str(weights)
        raise WeightsHashMismatch(
            f"{what}: sha256 is {upstream_sha256} but {snapshot.repository} at {snapshot.revision} publishes "
            f"{snapshot.expected_weights_sha256}; the file is corrupt or not the published one, nothing was installed - "
            f"download it again (from the Hugging Face hub, or check what the mirror serves)",
            weights,
        )
    read_open_clip_config(folder)
    if not Path(snapshot.text_config).is_file():
        raise ModelBuildError(f"text tower config {snapshot.text_config} does not exist")

    destination = Path(destination)
    staging = prepare_destination(destination, replace=replace)
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
                    **({"endpoint": snapshot.endpoint} if snapshot.endpoint else {}),
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
        publish(staging, destination, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("installed %s (%s) in %s", snapshot.repository, version, destination)
    return open_model_dir(destination, allow_untrained=False)


def forget_cached_file(cache_dir: Path, path: Path) -> None:
    """Remove a downloaded file from the Hugging Face cache `cache_dir`: the blob it links to and the link.

    The cache never re-downloads a blob that is present under its published name, so a blob whose
    bytes are wrong must go for the next fetch to download it again. Nothing outside `cache_dir`
    is touched.
    """
    cache = Path(os.path.realpath(cache_dir))
    path = Path(path)
    blob = Path(os.path.realpath(path))
    inside = [item for item in (path, blob) if Path(os.path.realpath(item.parent)).is_relative_to(cache)]
    for item in dict.fromkeys(inside):
        try:
            item.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s from the Hugging Face cache (%s); delete it before fetching again", item, exc)


def fetch_biomedclip(
    destination: Path,
    *,
    revision: str = "main",
    text_revision: str = "main",
    cache_dir: Path | None = None,
    replace: bool = False,
    offline: bool = False,
) -> ModelDirectory:
    """Download BiomedCLIP at `revision`, verify it and install it as a model directory at `destination`.

    `cache_dir` keeps the downloaded files in that Hugging Face cache; without it they go into a
    hidden folder beside `destination` that is deleted afterwards, whatever happens. `offline`
    takes them from `cache_dir` instead, without the network. The destination is checked before
    anything is downloaded; with `replace` a model folder there is replaced once the new one is
    complete, otherwise an existing non-empty folder is refused.
    """
    destination = Path(destination)
    check_destination(destination, replace=replace)
    if offline:
        if cache_dir is None:
            raise ModelBuildError(
                "--offline needs --cache-dir: the Hugging Face cache folder copied from a machine that downloaded "
                "the model with `hf download ... --cache-dir` (README, Models)"
            )
        return convert_snapshot(cached_snapshot(cache_dir, revision, text_revision), destination, replace=replace)
    if cache_dir is not None:
        snapshot = download_snapshot(revision, text_revision, cache_dir)
        try:
            return convert_snapshot(snapshot, destination, replace=replace)
        except WeightsHashMismatch as exc:
            forget_cached_file(cache_dir, exc.path)
            raise WeightsHashMismatch(
                f"{exc}; the bad copy was removed from the cache {cache_dir}, so the next fetch downloads it again",
                exc.path,
            ) from exc
    downloads = staging_folder_beside(destination, purpose="download")
    try:
        return convert_snapshot(download_snapshot(revision, text_revision, downloads), destination, replace=replace)
    finally:
        try:
            shutil.rmtree(downloads)
        except OSError as exc:
            log.warning("could not delete the download folder %s (%s); delete it", downloads, exc)
