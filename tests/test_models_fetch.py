"""`python -m models fetch` end to end, through the real `huggingface_hub` client, against a hub on loopback.

The hub (tests/hub_server.py) serves two repositories built by code from the tiny model: the
open_clip repository (two commits: tag `v1.0` with the tiny model's weights, `main` with other
weights) and the text tower's repository. `HF_ENDPOINT` points the command at it, exactly as an
administrator points it at a mirror. Only loopback connections are allowed (the network guard).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.architecture import BIOMEDCLIP_REPO, TEXT_TOWER_REPO
from models.directory import (
    OPEN_CLIP_CONFIG,
    TEXT_CONFIG,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    open_model_dir,
)
from models.manifest import MANIFEST_FILE, read_manifest
from tests.hub_server import REDACTED, HubCommit, HubFile, HubRepo, HubServer

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_WEIGHTS = "open_clip_pytorch_model.bin"
TOKEN = "hf_testTOKENnever2bLogged0123456789"
AGENT_REGISTRY = "/api/agent-harnesses"
"""What huggingface_hub fetches from its endpoint to build its User-Agent unless telemetry is off."""


@dataclass(frozen=True)
class HubContent:
    """What the test hub serves."""

    biomedclip: HubRepo
    text_tower: HubRepo
    tagged: HubCommit  # tag v1.0: the tiny model's own weights
    latest: HubCommit  # main: the same architecture with other weights
    misfit: HubCommit  # tag misfit: weights of another shape (published and served correctly)

    def weights(self, commit: HubCommit) -> HubFile:
        hub_file = commit.file(UPSTREAM_WEIGHTS)
        assert hub_file is not None
        return hub_file


def _open_clip_commit(model_dir: Path, state: dict) -> HubCommit:
    """A commit of the open_clip repository in the upstream layout (torch checkpoint in LFS)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = [HubFile(name, (model_dir / name).read_bytes()) for name in (OPEN_CLIP_CONFIG, TOKENIZER_FILE, TOKENIZER_CONFIG, VOCAB_FILE)]
    return HubCommit(
        (
            HubFile(".gitattributes", b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.jpg filter=lfs diff=lfs merge=lfs -text\n"),
            HubFile("README.md", b"# BiomedCLIP test copy, built from the tiny model\n"),
            HubFile("LICENSE", b"MIT License\n"),
            HubFile("biomed_clip_example.ipynb", b'{"cells": []}\n'),
            HubFile("example_data/chest_X-ray.jpg", b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9", lfs=True),
            HubFile(UPSTREAM_WEIGHTS, buffer.getvalue(), lfs=True),
            *files,
        )
    )


@pytest.fixture(scope="session")
def hub_content(tiny_model_dir: Path) -> HubContent:
    from safetensors.torch import load_file

    state = load_file(str(tiny_model_dir / WEIGHTS_FILE))
    tagged = _open_clip_commit(tiny_model_dir, state)
    latest = _open_clip_commit(tiny_model_dir, {**state, "logit_scale": state["logit_scale"] + 1.0})
    misfit = _open_clip_commit(tiny_model_dir, {**state, "visual.head.proj.weight": state["visual.head.proj.weight"][:, :16]})
    refs = {"main": latest.sha, "v1.0": tagged.sha, "misfit": misfit.sha}
    biomedclip = HubRepo(BIOMEDCLIP_REPO, [tagged, latest, misfit], refs)
    text_commit = HubCommit(
        (
            HubFile("README.md", b"# text tower test copy\n"),
            HubFile(TEXT_CONFIG, (tiny_model_dir / TEXT_CONFIG).read_bytes()),
            HubFile(VOCAB_FILE, (tiny_model_dir / VOCAB_FILE).read_bytes()),
            HubFile("pytorch_model.bin", bytes(4096), lfs=True),
        )
    )
    text_tower = HubRepo(TEXT_TOWER_REPO, [text_commit], {"main": text_commit.sha})
    return HubContent(biomedclip, text_tower, tagged, latest, misfit)


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client as `python -m models` runs it: no telemetry, and no token unless a test sets HF_TOKEN."""
    import huggingface_hub.constants

    # `python -m models` sets HF_HUB_DISABLE_TELEMETRY before huggingface_hub is imported; here the
    # library was imported earlier in the session, so its import-time value is set directly.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, client_env: None, loopback_only_network: list):
    """Yields a function that starts a hub on loopback and points HF_ENDPOINT at it."""
    servers: list[HubServer] = []

    def start(repos: list[HubRepo], **kwargs) -> HubServer:
        server = HubServer(repos, **kwargs).__enter__()
        servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        return server

    yield start
    for server in servers:
        server.stop()
    assert loopback_only_network == [], "only loopback may be reached"


@pytest.fixture
def hub(hub_env, hub_content: HubContent) -> HubServer:
    return hub_env([hub_content.biomedclip, hub_content.text_tower])


def clean_environment(hf_home: Path) -> dict[str, str]:
    """The environment for a command in a subprocess: this checkout, its own HF_HOME, no token, no telemetry setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "HF_HOME": str(hf_home)}


def fetch(destination: Path, *arguments: str) -> int:
    """`python -m models fetch biomedclip DESTINATION ARGUMENTS...` in this process."""
    from models.__main__ import main

    return main(["fetch", "biomedclip", str(destination), *arguments])


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_but(parent: Path, *names: str) -> None:
    """`parent` holds exactly `names` (or, for none, may be absent): no partial, staging or download folder."""
    assert sorted(p.name for p in parent.iterdir()) == sorted(names) if parent.exists() else not names


@contextmanager
def root_logging_restored() -> Iterator[None]:
    """The MAP's entry point configures the root logger for its process; undo that for the next tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _copy_of_old_model(tiny_model_dir: Path, destination: Path) -> dict[str, str]:
    shutil.copytree(tiny_model_dir, destination)
    return tree_digest(destination)


# --------------------------------------------------------------------------- success


def test_fetch_installs_a_research_model_that_the_map_runs(hub, hub_content, tmp_path, capsys) -> None:
    from pydicom.data import get_testdata_file

    from app.cli import EXIT_OK, map_main
    from operators.sr.sr_readback import read_findings

    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 0

    printed = json.loads(capsys.readouterr().out)
    manifest = read_manifest(destination)
    weights = hub_content.weights(hub_content.latest)
    assert printed["status"] == manifest.status == "research"
    assert manifest.version == hub_content.latest.sha[:12]
    assert manifest.upstream["revision"] == hub_content.latest.sha, "the branch is recorded as the commit it was"
    assert manifest.upstream["weights_sha256"] == weights.sha256
    assert manifest.upstream["text_config_revision"] == hub_content.text_tower.refs["main"]
    assert manifest.upstream["endpoint"] == hub.url
    assert open_model_dir(destination, allow_untrained=False).sha256 == manifest.weights_sha256
    assert_nothing_but(destination.parent, "biomedclip")

    # What the client asked for: metadata, the listing, only the files the model needs, weights from storage.
    requested = [(r.host, r.method, r.path.split("?")[0]) for r in hub.requests]
    commit, text = hub_content.latest.sha, hub_content.text_tower.refs["main"]
    assert ("hub", "GET", f"/api/models/{BIOMEDCLIP_REPO}/revision/main") == requested[0]
    assert "blobs=" in hub.requests[0].path, "the sha256 of the weights comes from model_info(files_metadata=True)"
    assert ("hub", "GET", f"/api/models/{BIOMEDCLIP_REPO}/tree/{commit}") in requested
    assert ("hub", "HEAD", f"/{BIOMEDCLIP_REPO}/resolve/{commit}/{UPSTREAM_WEIGHTS}") in requested
    assert ("storage", "GET", f"/lfs/{weights.sha256}") in requested
    assert ("hub", "GET", f"/api/models/{TEXT_TOWER_REPO}/revision/main") in requested
    assert ("hub", "GET", f"/{TEXT_TOWER_REPO}/resolve/{text}/{TEXT_CONFIG}") in requested
    fetched = {path.split("/resolve/")[0][1:] + ":" + path.split("/", 5)[-1] for *_, path in requested if "/resolve/" in path}
    wanted = ["LICENSE", OPEN_CLIP_CONFIG, UPSTREAM_WEIGHTS, TOKENIZER_FILE, TOKENIZER_CONFIG, VOCAB_FILE]
    assert fetched == {f"{BIOMEDCLIP_REPO}:{name}" for name in wanted} | {f"{TEXT_TOWER_REPO}:{TEXT_CONFIG}"}
    assert all(r.status < 400 for r in hub.requests)
    print("\n".join(hub.lines()))  # the request log of one fetch (pytest -s shows it)

    # The MAP opens the folder (status research needs no permission) and reports with it.
    study = tmp_path / "in"
    study.mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), study / "ct.dcm")
    out = tmp_path / "out"
    with root_logging_restored():
        code = map_main(["-i", str(study), "-o", str(out), "-m", str(destination.parent), "-w", str(tmp_path / "work"), "--backend", "pytorch"])
    assert code == EXIT_OK
    (report,) = out.glob("SR-*.dcm")
    findings = read_findings(report)
    assert findings.series[0].algorithm_name == manifest.name
    assert findings.series[0].algorithm_version == manifest.version
    assert not any("UNTRAINED" in line for line in findings.narrative)


@pytest.mark.parametrize("revision", ["v1.0", "commit"])
def test_fetch_a_tag_or_a_commit(hub, hub_content, tiny_model_dir, tmp_path, revision: str) -> None:
    wanted = hub_content.tagged.sha if revision == "commit" else revision
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, "--revision", wanted) == 0

    manifest = read_manifest(destination)
    assert manifest.upstream["revision"] == hub_content.tagged.sha
    assert manifest.upstream["weights_sha256"] == hub_content.weights(hub_content.tagged).sha256
    assert manifest.weights_sha256 == read_manifest(tiny_model_dir).weights_sha256, "v1.0 holds the tiny model's weights"
    assert hub.requests[0].path.startswith(f"/api/models/{BIOMEDCLIP_REPO}/revision/{wanted}")
    assert not [r for r in hub.requests if hub_content.latest.sha in r.path], "nothing of main was touched"


# --------------------------------------------------------------------------- refusals and failures


def test_weights_that_do_not_match_the_published_sha256_are_refused(hub, hub_content, tmp_path, caplog) -> None:
    weights = hub_content.weights(hub_content.latest)
    hub.corrupt.add(weights.sha256)
    destination = tmp_path / "models" / "biomedclip"

    assert fetch(destination) == 2

    message = caplog.records[-1].getMessage()
    assert f"{UPSTREAM_WEIGHTS} as downloaded from {hub.url}" in message and weights.sha256 in message
    assert "corrupt" in message and "nothing was installed" in message
    assert ("storage", "GET") in {(r.host, r.method) for r in hub.requests}, "the bytes were downloaded, then refused"
    assert not destination.exists()
    assert_nothing_but(destination.parent)


def test_a_bad_download_kept_in_a_cache_is_dropped_so_the_next_fetch_gets_it_again(hub, hub_content, tmp_path, caplog) -> None:
    """With --cache-dir the download stays in that cache, which never re-downloads a blob it holds:
    weights that fail the sha256 check are removed from it, so running the command again works."""
    weights = hub_content.weights(hub_content.latest)
    hub.corrupt.add(weights.sha256)
    cache = tmp_path / "hub-cache"
    destination = tmp_path / "models" / "biomedclip"

    assert fetch(destination, "--cache-dir", str(cache)) == 2
    assert "removed from the cache" in caplog.records[-1].getMessage()
    assert not list(cache.rglob(weights.sha256)) and not list(cache.rglob(UPSTREAM_WEIGHTS))
    assert list(cache.rglob(OPEN_CLIP_CONFIG)), "the rest of the cache is kept"

    hub.corrupt.clear()
    assert fetch(destination, "--cache-dir", str(cache)) == 0
    assert read_manifest(destination).upstream["weights_sha256"] == weights.sha256
    assert [r.path for r in hub.requests if r.host == "storage"] == [f"/lfs/{weights.sha256}"] * 2
    assert_nothing_but(destination.parent, "biomedclip")


def test_a_server_that_dies_mid_download_leaves_nothing_behind(hub, hub_content, tmp_path, caplog) -> None:
    weights = hub_content.weights(hub_content.latest)
    hub.die_after[weights.sha256] = len(weights.data) // 2
    destination = tmp_path / "models" / "biomedclip"

    assert fetch(destination) == 2

    assert hub.dead, "the server died in the middle of the weights"
    assert hub.requests[-1].host == "storage" and hub.requests[-1].path == f"/lfs/{weights.sha256}"
    message = caplog.records[-1].getMessage()
    assert f"from {hub.url} failed" in message and "Nothing was installed" in message and "run the command again" in message
    assert not destination.exists()
    assert_nothing_but(destination.parent)


def test_a_failed_replace_keeps_the_old_model(hub, hub_content, tiny_model_dir, tmp_path, caplog) -> None:
    """The new folder is built beside the old one; weights that do not fit fail it after that began."""
    destination = tmp_path / "models" / "biomedclip"
    before = _copy_of_old_model(tiny_model_dir, destination)

    assert fetch(destination, "--replace", "--revision", "misfit") == 2

    assert "do not fit the architecture" in caplog.text
    assert tree_digest(destination) == before, "the old model stays intact until a new one is complete"
    assert_nothing_but(destination.parent, "biomedclip")


def test_no_hub_at_the_endpoint(monkeypatch, client_env, loopback_only_network, tmp_path, caplog) -> None:
    with HubServer([]) as server:
        closed = server.url  # a loopback port that nothing listens on once the server stops
    monkeypatch.setenv("HF_ENDPOINT", closed)
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 2
    assert f"from {closed} failed" in caplog.text and "reachable" in caplog.text
    assert_nothing_but(destination.parent)
    assert loopback_only_network == []


@pytest.mark.parametrize("missing", [BIOMEDCLIP_REPO, TEXT_TOWER_REPO])
def test_a_hub_without_the_repository(hub_env, hub_content, tmp_path, caplog, missing: str) -> None:
    repos = [repo for repo in (hub_content.biomedclip, hub_content.text_tower) if repo.repo_id != missing]
    server = hub_env(repos)
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 2
    message = caplog.records[-1].getMessage()
    assert f"{server.url} has no repository {missing}" in message and "HF_ENDPOINT" in message
    assert_nothing_but(destination.parent)


@pytest.mark.parametrize("option", ["--revision", "--text-revision"])
def test_an_unknown_revision(hub, tmp_path, caplog, option: str) -> None:
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, option, "no-such-tag") == 2
    message = caplog.records[-1].getMessage()
    assert "has no revision 'no-such-tag'" in message and option in message
    assert_nothing_but(destination.parent)


def test_an_existing_destination_is_refused_unless_replace(hub, hub_content, tiny_model_dir, tmp_path, caplog) -> None:
    destination = tmp_path / "models" / "biomedclip"
    before = _copy_of_old_model(tiny_model_dir, destination)

    assert fetch(destination) == 2
    assert str(destination) in caplog.text and "--replace" in caplog.text
    assert hub.requests == [], "refused before anything is downloaded"
    assert tree_digest(destination) == before

    assert fetch(destination, "--replace") == 0
    assert read_manifest(destination).upstream["revision"] == hub_content.latest.sha
    assert_nothing_but(destination.parent, "biomedclip")


def test_replace_only_replaces_a_model_folder(hub, tmp_path, caplog) -> None:
    destination = tmp_path / "models" / "biomedclip"
    destination.mkdir(parents=True)
    (destination / "notes.txt").write_text("not a model")
    assert fetch(destination, "--replace") == 2
    assert "not a model folder" in caplog.text and MANIFEST_FILE in caplog.text
    assert (destination / "notes.txt").read_text() == "not a model"
    assert hub.requests == []


# --------------------------------------------------------------------------- gated mirror, token


def test_a_gated_mirror_needs_hf_token_and_never_sees_it_logged(hub_env, hub_content, tmp_path, monkeypatch, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    server = hub_env([hub_content.biomedclip, hub_content.text_tower], token=TOKEN)
    refused = tmp_path / "refused" / "biomedclip"
    assert fetch(refused) == 2
    assert "gated" in caplog.records[-1].getMessage() and "HF_TOKEN" in caplog.records[-1].getMessage()
    assert_nothing_but(refused.parent)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server.requests.clear()
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 0

    hub_requests = [r for r in server.requests if r.host == "hub"]
    assert hub_requests and all(r.headers.get("Authorization") == REDACTED for r in hub_requests)
    assert all("Authorization" not in r.headers for r in server.requests if r.host == "storage"), "never sent to the CDN"
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text
    assert all(TOKEN.encode() not in p.read_bytes() for p in destination.iterdir())


def run_fetch_command(destination: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    """`python -m models fetch biomedclip DESTINATION ...` in a new process that may reach only loopback."""
    command = [sys.executable, "-m", "tests.guarded_run", "models", "fetch", "biomedclip", str(destination), *arguments]
    return subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=100)


def test_fetch_in_a_fresh_process_reads_hf_endpoint_and_hf_token_from_the_environment(hub_env, hub_content, tmp_path) -> None:
    """The administrator's way: HF_ENDPOINT and HF_TOKEN in the environment of a new process.

    The command turns huggingface_hub's telemetry off, so the library asks for nothing but the
    model's files (no AI-agent registry request), all of them at the mirror.
    """
    server = hub_env([hub_content.biomedclip, hub_content.text_tower], token=TOKEN)
    destination = tmp_path / "models" / "biomedclip"
    env = {**clean_environment(tmp_path / "hf-home"), "HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN}
    done = run_fetch_command(destination, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["upstream"]["revision"] == hub_content.latest.sha
    assert TOKEN not in done.stdout + done.stderr
    assert "NetworkAccessAttempted" not in done.stderr
    assert all(r.headers.get("Authorization") == REDACTED for r in server.requests if r.host == "hub")
    assert AGENT_REGISTRY not in {r.path for r in server.requests}
    assert_nothing_but(destination.parent, "biomedclip")


def test_with_telemetry_on_the_library_s_own_request_also_goes_to_hf_endpoint(hub_env, hub_content, tmp_path) -> None:
    """An administrator who turns telemetry on (HF_HUB_DISABLE_TELEMETRY=0) makes huggingface_hub
    fetch its AI-agent registry: that request goes to the mirror too, never to huggingface.co.

    The text tower's revision does not exist, so the command downloads the whole open_clip
    repository and then stops with exit status 2 before converting anything (keeps the test short).
    """
    server = hub_env([hub_content.biomedclip, hub_content.text_tower])
    destination = tmp_path / "models" / "biomedclip"
    env = {**clean_environment(tmp_path / "hf-home"), "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "0"}
    done = run_fetch_command(destination, env, "--text-revision", "no-such-tag")
    assert done.returncode == 2, done.stderr
    assert "NetworkAccessAttempted" not in done.stderr
    assert f"{server.url} has no revision 'no-such-tag' of {TEXT_TOWER_REPO}" in done.stderr
    requested = [(r.host, r.method, r.path) for r in server.requests]
    assert requested[0] == ("hub", "GET", AGENT_REGISTRY), "the library's own request, at the mirror"
    assert ("storage", "GET", f"/lfs/{hub_content.weights(hub_content.latest).sha256}") in requested
    assert_nothing_but(destination.parent)


def test_a_process_whose_huggingface_hub_was_loaded_for_another_hub_is_refused(hub, tmp_path, monkeypatch, caplog) -> None:
    """In-process, the library was imported before HF_ENDPOINT named this hub: with telemetry on it
    would send a request to the hub it was imported with, so the fetch refuses before any request."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.ENDPOINT != hub.url
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 2
    message = caplog.records[-1].getMessage()
    assert f"not to {hub.url}" in message and "new process with HF_ENDPOINT set" in message
    assert hub.requests == []
    assert_nothing_but(destination.parent)


def test_hub_offline_mode_is_named(hub, tmp_path, monkeypatch, caplog) -> None:
    import huggingface_hub.constants

    # HF_HUB_OFFLINE=1 in the environment of `python -m models` sets this when the library is imported.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination) == 2
    message = caplog.records[-1].getMessage()
    assert "HF_HUB_OFFLINE" in message and "--offline --cache-dir" in message
    assert hub.requests == []
    assert_nothing_but(destination.parent)


# --------------------------------------------------------------------------- offline copy (README)


def hf_download(server: HubServer, cache: Path, repo: str, *files: str) -> None:
    """The README's `hf download REPO [FILES] --cache-dir CACHE` on a connected machine (here: the loopback hub)."""
    env = {**clean_environment(cache.parent / "hf-home"), "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    command = [sys.executable, "-m", "tests.guarded_run", "huggingface_hub.cli.hf", "download", repo, *files, "--cache-dir", str(cache)]
    done = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def downloaded_cache(hub_content, tmp_path_factory) -> Path:
    """A Hugging Face cache filled with the README's commands (`hf download`, in a guarded subprocess), once."""
    cache = tmp_path_factory.mktemp("connected") / "hub-cache"
    with HubServer([hub_content.biomedclip, hub_content.text_tower]) as server:
        hf_download(server, cache, BIOMEDCLIP_REPO)
        hf_download(server, cache, TEXT_TOWER_REPO, TEXT_CONFIG)
    return cache


@pytest.fixture
def hub_cache(downloaded_cache, tmp_path) -> Path:
    """That cache, carried to the offline machine as the README says (`tar -cf`, `tar -xf`); the hub is gone."""
    archive = tmp_path / "hub-cache.tar"
    subprocess.run(["tar", "-cf", str(archive), downloaded_cache.name], cwd=downloaded_cache.parent, check=True)
    subprocess.run(["tar", "-xf", str(archive)], cwd=tmp_path, check=True)
    return tmp_path / downloaded_cache.name


def test_offline_copy_of_a_hub_cache_is_converted_without_network(hub_cache, hub_content, client_env, network_guard, tmp_path) -> None:
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, "--offline", "--cache-dir", str(hub_cache)) == 0

    manifest = read_manifest(destination)
    assert manifest.status == "research"
    assert manifest.upstream["revision"] == hub_content.latest.sha
    assert manifest.upstream["weights_sha256"] == hub_content.weights(hub_content.latest).sha256
    assert manifest.upstream["text_config_revision"] == hub_content.text_tower.refs["main"]
    assert "endpoint" not in manifest.upstream
    assert network_guard == [], "the offline path never touches the network"
    assert_nothing_but(destination.parent, "biomedclip")


def test_offline_copy_with_altered_weights_is_refused(hub_cache, hub_content, client_env, network_guard, tmp_path, caplog) -> None:
    weights = hub_content.weights(hub_content.latest)
    blob = hub_cache / f"models--{BIOMEDCLIP_REPO.replace('/', '--')}" / "blobs" / weights.sha256
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, "--offline", "--cache-dir", str(hub_cache)) == 2
    assert weights.sha256 in caplog.text and "corrupt" in caplog.text
    assert_nothing_but(destination.parent)
    assert network_guard == []


def test_offline_without_a_cache(client_env, network_guard, tmp_path, caplog) -> None:
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, "--offline") == 2
    assert "--cache-dir" in caplog.text
    assert fetch(destination, "--offline", "--cache-dir", str(tmp_path / "empty-cache")) == 2
    assert "does not exist" in caplog.text
    (tmp_path / "empty-cache").mkdir()
    assert fetch(destination, "--offline", "--cache-dir", str(tmp_path / "empty-cache")) == 2
    assert "holds no complete download" in caplog.text and "hf download" in caplog.text
    assert not destination.exists()
    assert network_guard == []


def test_offline_copy_without_its_links_is_refused(downloaded_cache, client_env, network_guard, tmp_path, caplog) -> None:
    """A copy that replaced the cache's links by plain files no longer records the published sha256."""
    cache = tmp_path / "hub-cache"
    shutil.copytree(downloaded_cache, cache, symlinks=False)  # what `cp -rL` makes
    destination = tmp_path / "models" / "biomedclip"
    assert fetch(destination, "--offline", "--cache-dir", str(cache)) == 2
    message = caplog.records[-1].getMessage()
    assert UPSTREAM_WEIGHTS in message and "links kept" in message
    assert_nothing_but(destination.parent)
    assert network_guard == []
