"""Model registry tests: manifests, opening and verifying model folders, building, fetching (offline)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.architecture import BIOMEDCLIP_REPO, CLIP_MEAN, CLIP_STD, TEXT_TOWER_REPO
from models.directory import (
    MODEL_SUBDIR,
    OPEN_CLIP_CONFIG,
    TEXT_CONFIG,
    TOKENIZER_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    open_model_dir,
    sha256_file,
)
from models.errors import ManifestError, ModelBuildError, ModelDirectoryError, UntrainedModelRefused
from models.manifest import MANIFEST_FILE, read_manifest
from tests.network_guard import NetworkAccessAttempted


def _copy_model(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / MODEL_SUBDIR
    shutil.copytree(source, target)
    return target


def _edit_manifest(model_dir: Path, **changes) -> None:
    path = model_dir / MANIFEST_FILE
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


# --------------------------------------------------------------------------- built tiny model


def test_tiny_model_has_the_product_layout_and_settings(tiny_model_dir: Path) -> None:
    for name in (MANIFEST_FILE, OPEN_CLIP_CONFIG, WEIGHTS_FILE, TEXT_CONFIG, TOKENIZER_FILE, VOCAB_FILE):
        assert (tiny_model_dir / name).is_file(), name
    model = open_model_dir(tiny_model_dir, allow_untrained=True)
    assert model.path == tiny_model_dir
    assert model.manifest.status == "untrained"
    assert model.manifest.weights_sha256 == sha256_file(tiny_model_dir / WEIGHTS_FILE)
    assert model.mean == pytest.approx(CLIP_MEAN) and model.std == pytest.approx(CLIP_STD)
    assert (model.image_size, model.context_length, model.embed_dim) == (224, 256, 512)
    identity = model.identity
    assert identity.sha256 == model.manifest.weights_sha256
    assert identity.untrained and identity.name == "biomedclip-tiny"
    config = json.loads((tiny_model_dir / OPEN_CLIP_CONFIG).read_text())
    text_cfg = config["model_cfg"]["text_cfg"]
    assert text_cfg["hf_proj_type"] == "mlp" and text_cfg["hf_pooler_type"] == "cls_last_hidden_state_pooler"
    assert config["model_cfg"]["vision_cfg"]["timm_pool"] == "" and config["model_cfg"]["vision_cfg"]["timm_proj"] == "linear"
    # Nothing machine-specific is written into the folder, so it can be moved.
    for path in tiny_model_dir.iterdir():
        if path.suffix in (".json", ".txt"):
            assert str(tiny_model_dir) not in path.read_text(), path.name


def test_models_folder_or_model_folder_both_open(tiny_model_dir: Path) -> None:
    via_parent = open_model_dir(tiny_model_dir.parent, allow_untrained=True)
    assert via_parent.path == tiny_model_dir


def test_build_is_deterministic_per_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    from models.builders import build_tiny

    again = build_tiny(tmp_path / "same", seed=0)
    other = build_tiny(tmp_path / "other", seed=1)
    reference = read_manifest(tiny_model_dir).weights_sha256
    assert again.sha256 == reference
    assert other.sha256 != reference


def test_build_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    from models.builders import build_tiny

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "something").write_text("x")
    with pytest.raises(ModelBuildError, match="taken"):
        build_tiny(tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no staging folder left behind


def test_tiny_vocabulary_tokenizes_prompts_into_words(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model_dir / TOKENIZER_FILE))
    tokens = tokenizer.encode("This is an image of Pneumothorax").tokens
    assert tokens == ["[CLS]", "this", "is", "an", "image", "of", "pneumothorax", "[SEP]"]
    assert "[UNK]" not in tokenizer.encode("Ünknown wörds & symbols #42!").tokens


# --------------------------------------------------------------------------- opening errors


def test_missing_folder_names_the_path_and_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-models"
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(missing, allow_untrained=True)
    assert str(missing) in str(info.value) and "HOLOSCAN_MODEL_PATH" in str(info.value)


def test_unreadable_folder_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reads (test_model_path_that_is_a_file covers this)")
        with pytest.raises(ModelDirectoryError) as info:
            open_model_dir(locked, allow_untrained=True)
        assert str(locked) in str(info.value) and "cannot be read" in str(info.value)
    finally:
        locked.chmod(0o755)


def test_model_path_that_is_a_file(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "biomedclip"
    not_a_folder.write_text("not a model")
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(not_a_folder, allow_untrained=True)
    assert str(not_a_folder) in str(info.value) and "not a folder" in str(info.value)


def test_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(tmp_path, allow_untrained=True)
    assert str(tmp_path) in str(info.value) and MANIFEST_FILE in str(info.value)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p.write_text("{not json"), "not valid JSON"),
        (lambda p: p.write_text(json.dumps(["a list"])), "JSON object"),
        (lambda p: _drop_field(p, "weights_sha256"), "missing required field"),
        (lambda p: _set_field(p, status="approved"), "'status'"),
        (lambda p: _set_field(p, weights_sha256="abc"), "weights_sha256"),
        (lambda p: _set_field(p, weights_file="../elsewhere.safetensors"), "weights_file"),
        (lambda p: _set_field(p, licence_typo="MIT"), "unknown field"),
    ],
    ids=["not-json", "not-object", "missing-field", "bad-status", "bad-hash", "path-as-weights", "unknown-field"],
)
def test_malformed_manifest_names_the_file(tiny_model_dir: Path, tmp_path: Path, mutate, expected: str) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    mutate(model_dir / MANIFEST_FILE)
    with pytest.raises(ManifestError) as info:
        open_model_dir(model_dir, allow_untrained=True)
    assert str(model_dir / MANIFEST_FILE) in str(info.value)
    assert expected in str(info.value)


def _set_field(path: Path, **changes) -> None:
    _edit_manifest(path.parent, **changes)


def _drop_field(path: Path, name: str) -> None:
    document = json.loads(path.read_text())
    del document[name]
    path.write_text(json.dumps(document))


def test_missing_manifest_names_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    (model_dir / MANIFEST_FILE).unlink()
    (model_dir / "keep").write_text("")  # the folder is not empty but has no manifest
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(model_dir, allow_untrained=True)
    assert str(model_dir) in str(info.value)


@pytest.mark.parametrize("name", [OPEN_CLIP_CONFIG, TEXT_CONFIG, TOKENIZER_FILE, WEIGHTS_FILE])
def test_missing_model_file_names_it(tiny_model_dir: Path, tmp_path: Path, name: str) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    (model_dir / name).unlink()
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(model_dir, allow_untrained=True)
    assert str(model_dir / name) in str(info.value)


def test_malformed_open_clip_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    config = json.loads((model_dir / OPEN_CLIP_CONFIG).read_text())
    config["preprocess_cfg"]["mean"] = [0.5, 0.5]
    (model_dir / OPEN_CLIP_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(model_dir, allow_untrained=True)
    assert str(model_dir / OPEN_CLIP_CONFIG) in str(info.value) and "preprocess_cfg.mean" in str(info.value)


def test_weights_that_do_not_match_the_manifest_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    weights = model_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError) as info:
        open_model_dir(model_dir, allow_untrained=True)
    message = str(info.value)
    assert str(weights) in message and "sha256" in message and read_manifest(model_dir).weights_sha256 in message


def test_untrained_model_is_refused_unless_allowed(tiny_model_dir: Path) -> None:
    with pytest.raises(UntrainedModelRefused) as info:
        open_model_dir(tiny_model_dir, allow_untrained=False)
    message = str(info.value)
    assert str(tiny_model_dir) in message
    assert "--allow-untrained" in message and "BIOMEDCLIP_MAP_ALLOW_UNTRAINED=1" in message
    assert open_model_dir(tiny_model_dir, allow_untrained=True).manifest.untrained


def test_research_model_needs_no_permission(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model(tiny_model_dir, tmp_path)
    _edit_manifest(model_dir, status="research")
    assert open_model_dir(model_dir, allow_untrained=False).identity.status == "research"


@pytest.mark.parametrize("value, allowed", [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_allow_untrained_environment_variable(value: str, allowed: bool, tmp_path, monkeypatch) -> None:
    from app.settings import resolve_run_settings

    monkeypatch.setenv("BIOMEDCLIP_MAP_ALLOW_UNTRAINED", value)
    settings = resolve_run_settings(input_path=tmp_path, output_path=tmp_path / "out", models_path=tmp_path, work_dir=tmp_path / "w")
    assert settings.allow_untrained is allowed


# --------------------------------------------------------------------------- loading offline


def test_plain_open_clip_would_reach_for_the_hub(tiny_model_dir: Path, network_guard: list) -> None:
    """The guard works: open_clip on its own resolves the text tower's config on the hub."""
    import open_clip

    from models.timm_variants import register_timm_variants

    register_timm_variants()
    with pytest.raises(NetworkAccessAttempted):
        open_clip.create_model(f"local-dir:{tiny_model_dir}")
    assert network_guard


def test_model_loads_through_open_clip_without_network(tiny_model_dir: Path, network_guard: list) -> None:
    import open_clip
    import torch

    from models.open_clip_loading import load_open_clip

    model = open_model_dir(tiny_model_dir, allow_untrained=True)
    clip = load_open_clip(model)
    assert isinstance(clip, open_clip.CustomTextCLIP) and not clip.training
    assert clip.visual.trunk.embed_dim == 32 and len(clip.visual.trunk.blocks) == 2
    assert clip.text.config.hidden_size == 32 and clip.text.config.num_hidden_layers == 2
    with torch.inference_mode():
        image = clip.encode_image(torch.zeros(1, 3, 224, 224), normalize=True)
    assert image.shape == (1, 512)
    # Loaded weights are the file's weights, not a fresh initialisation.
    from safetensors.torch import load_file

    stored = load_file(str(tiny_model_dir / WEIGHTS_FILE))
    assert torch.equal(clip.state_dict()["logit_scale"], stored["logit_scale"])
    assert torch.equal(clip.state_dict()["visual.head.proj.weight"], stored["visual.head.proj.weight"])
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")
    assert tokenizer(["a chest X-ray"]).shape == (1, 256)
    assert network_guard == []


# --------------------------------------------------------------------------- command line


def test_cli_build_tiny_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from models.__main__ import main

    destination = tmp_path / "models" / "biomedclip"
    assert main(["build-tiny", str(destination), "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "untrained" and printed["version"] == "seed-3"
    assert main(["verify", str(destination.parent)]) == 0
    assert json.loads(capsys.readouterr().out)["weights_sha256"] == printed["weights_sha256"]


def test_cli_build_replaces_a_model_folder_only_when_asked(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from models.__main__ import main

    destination = _copy_model(tiny_model_dir, tmp_path)
    old = read_manifest(destination).weights_sha256
    assert main(["build-tiny", str(destination), "--seed", "4"]) == 2
    assert "--replace" in caplog.text and read_manifest(destination).weights_sha256 == old

    assert main(["build-tiny", str(destination), "--seed", "4", "--replace"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "seed-4"
    assert read_manifest(destination).weights_sha256 != old
    assert [p.name for p in destination.parent.iterdir()] == [destination.name]  # no staging or old copy left


def test_cli_reports_unusable_folders_with_exit_status_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from models.__main__ import main

    assert main(["verify", str(tmp_path / "absent")]) == 2
    assert str(tmp_path / "absent") in caplog.text


# --------------------------------------------------------------------------- fetch (offline part)


def _snapshot_from(model_dir: Path, folder: Path, *, tokenizer_json: bool = True):
    """A hub-like snapshot folder (open_clip .bin checkpoint, tokenizer) made from a local model."""
    import torch
    from safetensors.torch import load_file

    from models.fetch import Snapshot

    folder.mkdir(parents=True)
    shutil.copyfile(model_dir / OPEN_CLIP_CONFIG, folder / OPEN_CLIP_CONFIG)
    for name in ("tokenizer_config.json", VOCAB_FILE) + ((TOKENIZER_FILE,) if tokenizer_json else ()):
        shutil.copyfile(model_dir / name, folder / name)
    torch.save(load_file(str(model_dir / WEIGHTS_FILE)), folder / "open_clip_pytorch_model.bin")
    text_config = folder.parent / "text-tower" / TEXT_CONFIG
    text_config.parent.mkdir()
    shutil.copyfile(model_dir / TEXT_CONFIG, text_config)
    return Snapshot(
        folder=folder,
        text_config=text_config,
        repository=BIOMEDCLIP_REPO,
        revision="0123456789abcdef0123456789abcdef01234567",
        text_repository=TEXT_TOWER_REPO,
        text_revision="fedcba9876543210fedcba9876543210fedcba98",
        expected_weights_sha256=sha256_file(folder / "open_clip_pytorch_model.bin"),
    )


def test_convert_snapshot_installs_a_research_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from models.fetch import convert_snapshot

    snapshot = _snapshot_from(tiny_model_dir, tmp_path / "snapshot")
    model = convert_snapshot(snapshot, tmp_path / "models" / "biomedclip")
    manifest = model.manifest
    assert manifest.status == "research" and manifest.licence == "MIT"
    assert manifest.source == f"https://huggingface.co/{BIOMEDCLIP_REPO}"
    assert manifest.version == "0123456789ab"
    assert manifest.upstream["revision"] == snapshot.revision
    assert manifest.upstream["weights_sha256"] == snapshot.expected_weights_sha256
    assert manifest.upstream["text_config_repository"] == TEXT_TOWER_REPO
    assert open_model_dir(tmp_path / "models", allow_untrained=False).sha256 == manifest.weights_sha256
    original = load_file(str(tiny_model_dir / WEIGHTS_FILE))
    converted = load_file(str(model.weights_path))
    assert original.keys() == converted.keys()
    assert all(np.array_equal(original[k].numpy(), converted[k].numpy()) for k in original)


def test_convert_snapshot_rejects_corrupted_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from models.fetch import convert_snapshot

    snapshot = _snapshot_from(tiny_model_dir, tmp_path / "snapshot")
    weights = snapshot.folder / "open_clip_pytorch_model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    destination = tmp_path / "models" / "biomedclip"
    with pytest.raises(ModelBuildError) as info:
        convert_snapshot(snapshot, destination)
    assert str(weights) in str(info.value) and snapshot.expected_weights_sha256 in str(info.value)
    assert not destination.exists()


def test_convert_snapshot_rejects_unreadable_weights_without_a_known_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from models.fetch import convert_snapshot

    snapshot = replace(_snapshot_from(tiny_model_dir, tmp_path / "snapshot"), expected_weights_sha256=None)
    weights = snapshot.folder / "open_clip_pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:4096])
    destination = tmp_path / "models" / "biomedclip"
    with pytest.raises(ModelBuildError) as info:
        convert_snapshot(snapshot, destination)
    assert str(weights) in str(info.value)
    assert not destination.exists() and not any(p.name.startswith(".biomedclip") for p in destination.parent.iterdir())


def test_convert_snapshot_rejects_weights_of_another_architecture(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from models.fetch import convert_snapshot

    snapshot = _snapshot_from(tiny_model_dir, tmp_path / "snapshot")
    weights = snapshot.folder / "open_clip_pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    state["visual.head.proj.weight"] = torch.zeros(512, 48)
    torch.save(state, weights)
    with pytest.raises(ModelBuildError, match="do not fit"):
        convert_snapshot(replace_hash(snapshot), tmp_path / "models" / "biomedclip")


def replace_hash(snapshot):
    from dataclasses import replace

    return replace(snapshot, expected_weights_sha256=sha256_file(snapshot.folder / "open_clip_pytorch_model.bin"))


def test_convert_snapshot_builds_tokenizer_json_from_the_vocabulary(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from models.fetch import convert_snapshot

    snapshot = _snapshot_from(tiny_model_dir, tmp_path / "snapshot", tokenizer_json=False)
    model = convert_snapshot(snapshot, tmp_path / "models" / "biomedclip")
    text = "A clinical photograph of a burn wound on the skin"
    rebuilt = Tokenizer.from_file(str(model.tokenizer_path)).encode(text).ids
    original = Tokenizer.from_file(str(tiny_model_dir / TOKENIZER_FILE)).encode(text).ids
    assert rebuilt == original
