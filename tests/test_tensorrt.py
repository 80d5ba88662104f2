"""TensorRT on a real GPU: engine builds, parity with PyTorch, cache reuse and recovery, the build command.

These tests need TensorRT and a CUDA GPU. Elsewhere (every CPU-only development and CI machine)
they are skipped with the reason; the pure-Python parts are covered by tests/test_tensorrt_cache.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from app.probe_set import SampleStudyProbes, bundled_class_sets, probe_images, sample_study_images
from engines.parity_gate import top1_agreement
from models.directory import ModelDirectory, open_model_dir


def _skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"TensorRT is not installed here ({exc})"
    from engines.tensorrt_cuda import CudaUnavailable, open_cuda_runtime

    try:
        open_cuda_runtime()
    except CudaUnavailable as exc:
        return f"no CUDA GPU here ({exc})"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ModelDirectory:
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt-work")


@pytest.fixture(scope="module")
def reference(model: ModelDirectory):
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model, device="cpu")


@pytest.fixture(scope="module")
def probes(model: ModelDirectory) -> np.ndarray:
    base = sample_study_images(size=model.image_size, mean=model.mean, std=model.std)
    return probe_images(base, size=model.image_size, mean=model.mean, std=model.std)


def _open(model: ModelDirectory, work: Path, precision: str):
    from engines.tensorrt_backend import TensorRTBackend
    from engines.tensorrt_build import TensorRTBuilder
    from engines.tensorrt_cuda import open_cuda_runtime

    return TensorRTBackend(model, work, precision, builder=TensorRTBuilder(), cuda=open_cuda_runtime(), probes=SampleStudyProbes())


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _class_sets(reference, model: ModelDirectory, work: Path) -> list[np.ndarray]:
    return bundled_class_sets(reference, model, work)


def test_fp16_engine_matches_pytorch(model, work, reference, probes) -> None:
    backend = _open(model, work, "fp16")
    assert backend.name == "tensorrt-fp16" and backend.gate.passed
    expected = reference.encode_images(probes)
    got = backend.encode_images(probes)
    assert _cosines(expected, got).min() >= 0.999
    from engines.tokenizer import TextTokenizer

    tokens = TextTokenizer.from_model(model)(["a burn wound on the skin", "pneumothorax", "a normal chest X-ray"])
    text = backend.encode_texts(tokens.input_ids, tokens.attention_mask)
    assert _cosines(reference.encode_texts(tokens.input_ids, tokens.attention_mask), text).min() >= 0.9999  # float32 text
    assert backend.logit_scale == pytest.approx(reference.logit_scale, rel=1e-6)
    backend.close()


def test_int8_engine_keeps_cosine_and_top1_labels(model, work, reference, probes) -> None:
    backend = _open(model, work, "int8")
    assert backend.name == "tensorrt-int8"
    expected = reference.encode_images(probes)
    got = backend.encode_images(probes)
    assert _cosines(expected, got).min() >= 0.99
    agreement, decisions = top1_agreement(expected, got, _class_sets(reference, model, work))
    assert decisions == len(probes) * 4 and agreement >= 0.98
    backend.close()


def test_batches_larger_than_the_profile_are_split(model, work, reference) -> None:
    backend = _open(model, work, "fp16")
    images = np.random.default_rng(1).standard_normal((40, 3, 224, 224)).astype(np.float32)
    got = backend.encode_images(images)
    assert got.shape == (40, 512)
    assert _cosines(reference.encode_images(images[:4]), got[:4]).min() >= 0.999
    assert _cosines(backend.encode_images(images[33:34]), got[33:34]).min() >= 0.9999  # batch 1 equals in-batch
    backend.close()


def test_cached_engines_are_reused_and_a_corrupt_one_is_rebuilt(model, work, caplog) -> None:
    from engines.tensorrt_cache import engine_cache_dir

    _open(model, work, "fp16").close()
    folder = engine_cache_dir(work, model.sha256)
    engine = folder / "image-fp16.engine"
    built_at = engine.stat().st_mtime_ns
    _open(model, work, "fp16").close()
    assert engine.stat().st_mtime_ns == built_at  # served from the cache

    engine.write_bytes(b"\0" * engine.stat().st_size)  # same size, wrong bytes
    caplog.set_level(logging.INFO, logger="engines")
    backend = _open(model, work, "fp16")
    assert "the file is corrupt" in caplog.text and engine.stat().st_mtime_ns != built_at
    backend.close()

    sidecar = folder / "image-fp16.json"
    metadata = json.loads(sidecar.read_text())
    metadata["key"]["tensorrt_version"] = "9.0.0"
    sidecar.write_text(json.dumps(metadata))
    caplog.clear()
    _open(model, work, "fp16").close()
    assert "built with TensorRT 9.0.0" in caplog.text


def test_auto_selects_tensorrt_first(model, work) -> None:
    from engines.selection import open_backend

    backend = open_backend(model, "auto", work_dir=work, probes=SampleStudyProbes())
    assert backend.name == "tensorrt-fp16"
    backend.close()


def test_build_command_prints_the_engines_and_the_gate(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from app.engine_commands import main

    assert main(["build", "--precision", "fp16", "-m", str(tiny_model_dir), "-w", str(tmp_path / "work")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["engines"]) == {"image", "text"}
    assert summary["engines"]["image"]["max_batch"] == 32 and summary["parity_gate"]["passed"]
