"""Inference backend tests: ONNX Runtime vs PyTorch parity, token trimming, ONNX caching, selection."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engines.base import BackendUnavailable
from engines.onnx_export import ONNX_METADATA
from engines.onnx_files import onnx_cache_dir
from app.settings import ENV_BACKEND as BACKEND_ENV, engine_settings
from engines.selection import BackendConfigError, open_backend
from engines.tokenizer import TextTokenizer
from models.directory import ModelDirectory, open_model_dir

PARITY_COSINE = 0.99999

TEXTS = [
    "this is an image of pneumonia",
    "a medical image showing a burn wound on the skin",
    "x",
    "a clinical photograph of healthy intact skin, with no lesion, no burn and no other abnormality at all",
]


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ModelDirectory:
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def onnx_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def torch_backend(model: ModelDirectory):
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model, device="cpu")


@pytest.fixture(scope="module")
def ort_backend(model: ModelDirectory, onnx_work_dir: Path):
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, onnx_work_dir, allow_cuda=False)


@pytest.fixture(scope="module")
def tokenizer(model: ModelDirectory) -> TextTokenizer:
    return TextTokenizer.from_model(model)


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 224, 224)).astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --------------------------------------------------------------------------- parity


def test_backend_names_and_logit_scale(torch_backend, ort_backend) -> None:
    assert torch_backend.name == "pytorch-cpu"
    assert ort_backend.name == "onnxruntime-cpu"
    assert ort_backend.logit_scale == pytest.approx(torch_backend.logit_scale, rel=1e-6)
    assert torch_backend.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial temperature


def test_image_tower_parity(torch_backend, ort_backend) -> None:
    images = _images(3)
    reference = torch_backend.encode_images(images)
    candidate = ort_backend.encode_images(images)
    assert reference.shape == candidate.shape == (3, 512)
    assert np.allclose(np.linalg.norm(candidate, axis=1), 1.0, atol=1e-5)
    assert _cosines(reference, candidate).min() >= PARITY_COSINE
    # Dynamic batch: one image alone gives the same embedding as inside a batch.
    assert _cosines(ort_backend.encode_images(images[1:2]), candidate[1:2]).min() >= PARITY_COSINE


def test_text_tower_parity_over_batch_and_length(torch_backend, ort_backend, tokenizer) -> None:
    for texts in (TEXTS, TEXTS[:1], TEXTS[2:3]):
        tokens = tokenizer(texts)
        reference = torch_backend.encode_texts(tokens.input_ids, tokens.attention_mask)
        candidate = ort_backend.encode_texts(tokens.input_ids, tokens.attention_mask)
        assert candidate.shape == (len(texts), 512)
        assert _cosines(reference, candidate).min() >= PARITY_COSINE


def test_backend_rejects_wrong_image_shape(ort_backend) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        ort_backend.encode_images(np.zeros((1, 3, 112, 112), dtype=np.float32))


# --------------------------------------------------------------------------- tokenizer and trimming


def test_tokens_are_trimmed_to_the_longest_text(tokenizer) -> None:
    tokens = tokenizer(TEXTS)
    lengths = tokens.attention_mask.sum(axis=1)
    assert tokens.input_ids.shape[1] == lengths.max() < 256
    assert tokens.input_ids.dtype == np.int64
    assert np.all(tokens.input_ids[tokens.attention_mask == 0] == tokenizer.pad_id)


def test_long_text_is_truncated_to_the_context_length(tokenizer) -> None:
    tokens = tokenizer(["skin " * 400])
    assert tokens.input_ids.shape == (1, 256)
    assert tokens.attention_mask.all()


@pytest.mark.parametrize("texts", [TEXTS, ["a  chest\tX-ray\n", "skin " * 400]], ids=["prompts", "whitespace-and-truncation"])
def test_tokenizer_matches_open_clip(tiny_model_dir: Path, tokenizer, texts: list[str]) -> None:
    import open_clip

    reference = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")(texts).numpy()
    tokens = tokenizer(texts)
    width = tokens.input_ids.shape[1]
    assert np.array_equal(reference[:, :width], tokens.input_ids)
    assert np.all(reference[:, width:] == tokenizer.pad_id)


def test_trimmed_tokens_give_the_same_embeddings_as_full_padding(tiny_model_dir: Path, torch_backend, tokenizer) -> None:
    """Our trimmed batch through the backend equals open_clip's own 256-token reference path."""
    import open_clip
    import torch

    from models.open_clip_loading import load_open_clip

    clip = load_open_clip(open_model_dir(tiny_model_dir, allow_untrained=True))
    full = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")(TEXTS)
    assert full.shape[1] == 256
    with torch.inference_mode():
        reference = clip.encode_text(full, normalize=True).numpy()
    tokens = tokenizer(TEXTS)
    trimmed = torch_backend.encode_texts(tokens.input_ids, tokens.attention_mask)
    assert np.abs(trimmed - reference).max() <= 1e-5
    padded_ids = np.full((len(TEXTS), 256), tokenizer.pad_id, dtype=np.int64)
    padded_ids[:, : tokens.input_ids.shape[1]] = tokens.input_ids
    padded = torch_backend.encode_texts(padded_ids, (padded_ids != tokenizer.pad_id).astype(np.int64))
    assert np.abs(trimmed - padded).max() <= 1e-5


# --------------------------------------------------------------------------- ONNX files


def test_onnx_export_is_cached_by_weights_hash(model, ort_backend, onnx_work_dir: Path, monkeypatch) -> None:
    from engines import onnx_export
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    cached = onnx_cache_dir(onnx_work_dir, model.sha256)
    assert ort_backend.files.folder == cached and ort_backend.files.origin == "exported"
    assert json.loads((cached / ONNX_METADATA).read_text())["weights_sha256"] == model.sha256
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(onnx_export, "_export_towers", no_export)
    again = OnnxRuntimeBackend(model, onnx_work_dir, allow_cuda=False)
    assert again.files.origin == "cached"


def test_shipped_onnx_files_are_used_when_their_hash_matches(
    tiny_model_dir: Path, model, ort_backend, tmp_path: Path, monkeypatch, caplog
) -> None:
    from engines import onnx_export
    from engines.onnxruntime_backend import OnnxRuntimeBackend

    copy = tmp_path / "biomedclip"
    shutil.copytree(tiny_model_dir, copy)
    shutil.copytree(ort_backend.files.folder, copy / "onnx")
    shipped_model = open_model_dir(copy, allow_untrained=True)
    monkeypatch.setattr(onnx_export, "_export_towers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("export")))
    backend = OnnxRuntimeBackend(shipped_model, tmp_path / "work", allow_cuda=False)
    assert backend.files.origin == "shipped"
    assert not (tmp_path / "work").exists()

    metadata = copy / "onnx" / ONNX_METADATA
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "weights_sha256": "0" * 64}))
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="engines")
    backend = OnnxRuntimeBackend(shipped_model, tmp_path / "work", allow_cuda=False)
    assert backend.files.origin == "exported"
    assert "ignoring the ONNX files shipped with the model" in caplog.text and "0" * 64 in caplog.text


def test_onnx_runtime_path_never_imports_torch(model, ort_backend, onnx_work_dir: Path) -> None:
    """With cached ONNX files a run opens the model, tokenizes and infers without importing torch."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        import engines, models
        from models.directory import open_model_dir
        from engines.selection import open_backend
        from engines.tokenizer import TextTokenizer
        model = open_model_dir(Path({str(model.path)!r}), allow_untrained=True)
        backend = open_backend(model, "onnxruntime", work_dir=Path({str(onnx_work_dir)!r}))
        tokens = TextTokenizer.from_model(model)(["a chest X-ray"])
        backend.encode_texts(tokens.input_ids, tokens.attention_mask)
        backend.encode_images(np.zeros((1, 3, 224, 224), dtype=np.float32))
        print(backend.name, "torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnxruntime-cpu", "False"]


def test_failed_export_leaves_no_partial_files(model, tmp_path: Path, monkeypatch) -> None:
    from engines import onnx_export

    def broken(model, folder):
        (folder / "image_encoder.onnx").write_bytes(b"half")
        raise RuntimeError("simulated exporter failure")

    monkeypatch.setattr(onnx_export, "_export_towers", broken)
    with pytest.raises(onnx_export.OnnxExportError, match="simulated exporter failure"):
        onnx_export.export_onnx(model, tmp_path / "onnx" / model.sha256)
    assert list((tmp_path / "onnx").iterdir()) == []


def test_cli_exports_onnx_into_the_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    from app.engine_commands import main
    from engines.onnx_files import onnx_folder_problem

    copy = tmp_path / "biomedclip"
    shutil.copytree(tiny_model_dir, copy)
    assert main(["export-onnx", str(copy)]) == 0
    assert onnx_folder_problem(copy / "onnx", open_model_dir(copy, allow_untrained=True).sha256) is None


# --------------------------------------------------------------------------- selection


def test_environment_variable_forces_pytorch(model, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, engine_settings("onnxruntime", {BACKEND_ENV: "pytorch"}), work_dir=tmp_path)
    assert backend.name.startswith("pytorch-")
    assert f"forced by {BACKEND_ENV}=pytorch" in caplog.text
    assert not (tmp_path / "onnx").exists()  # ONNX Runtime was not tried


def test_configured_backend_applies_without_environment_variable(model, ort_backend, onnx_work_dir: Path) -> None:
    backend = open_backend(model, engine_settings("onnxruntime", {}), work_dir=onnx_work_dir)
    assert backend.name.startswith("onnxruntime-")


def test_unknown_backend_name_is_a_configuration_error(model, tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError) as info:
        open_backend(model, engine_settings("auto", {BACKEND_ENV: "tensorflow"}), work_dir=tmp_path)
    assert f"{BACKEND_ENV}=tensorflow" in str(info.value) and "onnxruntime" in str(info.value)


def test_auto_falls_back_to_pytorch_with_one_log_line(model, tmp_path: Path, monkeypatch, caplog) -> None:
    from engines import onnx_export

    def broken(model, folder):
        raise RuntimeError("simulated exporter failure")

    monkeypatch.setattr(onnx_export, "_export_towers", broken)
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, "auto", work_dir=tmp_path)
    assert backend.name.startswith("pytorch-")
    fallbacks = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(fallbacks) == 1
    message = fallbacks[0].getMessage()
    assert message.startswith("ONNX Runtime backend not used")
    assert "simulated exporter failure" in message and message.endswith("falling back to PyTorch")


def test_forced_backend_that_cannot_be_used_is_an_error(model, tmp_path: Path, monkeypatch) -> None:
    from engines import onnx_export

    monkeypatch.setattr(onnx_export, "_export_towers", lambda m, f: (_ for _ in ()).throw(ImportError("no torch")))
    with pytest.raises(BackendUnavailable) as info:
        open_backend(model, engine_settings("auto", {BACKEND_ENV: "onnxruntime"}), work_dir=tmp_path)
    message = str(info.value)
    assert f"{BACKEND_ENV}=onnxruntime" in message and "export-onnx" in message
