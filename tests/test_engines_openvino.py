"""The OpenVINO backend: float32, native bfloat16 and NNCF INT8 image towers on the tiny model.

Everything runs the real OpenVINO runtime, the real NNCF quantiser and the real parity gate. As in
the fast-path tests, only the CPU's instruction flags (the `cpu_features` seam) and, where the
choice depends on speed, the gate's clock are substituted.
"""

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

from app.probe_set import SampleStudyProbes
from app.settings import ENV_BACKEND as BACKEND_ENV, engine_settings
from engines import cpu_fast_path, parity_gate
from engines.base import BACKEND_NAMES, BackendUnavailable
from engines.cpu_features import CpuFeatures, read_cpu_features
from engines.onnx_files import onnx_files_for
from engines.openvino_backend import CACHE_SUBDIR, OpenVinoBackend
from engines.openvino_quantization import (
    OV_INT8_METADATA,
    ov_int8_cache_dir,
    ov_int8_folder_problem,
    openvino_int8_graph_for,
    widened_calibration,
)
from engines.parity_gate import GATE_SUBDIR
from engines.selection import open_backend
from models.directory import ModelDirectory, open_model_dir

pytest.importorskip("openvino")

PROBES = SampleStudyProbes()
AVX2 = CpuFeatures("x86_64", frozenset({"sse4_2", "avx", "avx2", "fma"}))
AMX = CpuFeatures("x86_64", frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}))
SSE2_ONLY = CpuFeatures("x86_64", frozenset({"sse2"}))
HOST = read_cpu_features()
needs_native_bf16 = pytest.mark.skipif(HOST.bf16_kernel is None, reason=f"this CPU has no native bfloat16 ({HOST.kernel_signature()})")


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ModelDirectory:
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def prepared(model: ModelDirectory, tmp_path_factory) -> Path:
    """A work folder with the tiny model's ONNX export and OpenVINO INT8 graph (calibrated on the sample studies)."""
    work = tmp_path_factory.mktemp("ov-work")
    files = onnx_files_for(model, work)
    openvino_int8_graph_for(model, files, work, lambda: PROBES.calibration_set(model))
    return work


@pytest.fixture
def work(prepared: Path, tmp_path: Path) -> Path:
    fresh = tmp_path / "work"
    shutil.copytree(prepared, fresh)
    return fresh


@pytest.fixture(scope="module")
def reference(model: ModelDirectory):
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(model, device="cpu")


@pytest.fixture(scope="module")
def probe_images(model: ModelDirectory, prepared: Path) -> np.ndarray:
    return PROBES.probe_set(model, prepared).images


@pytest.fixture
def features(monkeypatch):
    def use(value: CpuFeatures) -> None:
        monkeypatch.setattr(cpu_fast_path, "read_cpu_features", lambda: value)

    return use


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _records(work: Path) -> dict[str, dict]:
    return {r["path"]: r for r in (json.loads(p.read_text()) for p in (work / GATE_SUBDIR).glob("*.json"))}


# --------------------------------------------------------------------------- parity with PyTorch


@pytest.mark.parametrize(
    "precision, min_cosine",
    [
        ("fp32", parity_gate.FP32_ENGINE_THRESHOLDS.min_cosine),
        pytest.param("bf16", parity_gate.BF16_THRESHOLDS.min_cosine, marks=needs_native_bf16),
        ("int8", parity_gate.INT8_THRESHOLDS.min_cosine),
    ],
)
def test_each_precision_matches_pytorch_within_its_tolerance(model, work, reference, probe_images, precision, min_cosine) -> None:
    backend = OpenVinoBackend(model, work, precision)
    expected = reference.encode_images(probe_images)
    got = np.concatenate([backend.encode_images(probe_images[i : i + 8]) for i in range(0, len(probe_images), 8)])
    assert got.shape == expected.shape and got.dtype == np.float32
    assert _cosines(got, expected).min() >= min_cosine
    assert backend.name == {"fp32": "openvino-cpu", "bf16": "openvino-bf16-cpu", "int8": "openvino-int8-cpu"}[precision]
    assert any((work / CACHE_SUBDIR / precision).iterdir())  # OpenVINO's model cache is in the work folder


def test_each_precision_has_its_own_model_cache(model, work) -> None:
    """OpenVINO names cached blobs without the precision hint: a shared folder would hand bf16 the fp32 blob."""
    precisions = ["fp32", "bf16", "int8"] if HOST.bf16_kernel else ["fp32", "int8"]
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import numpy as np
        from models.directory import open_model_dir
        from engines.openvino_backend import OpenVinoBackend
        model = open_model_dir(Path({str(model.path)!r}), allow_untrained=True)
        for run in range(2):  # the second run loads every blob from the cache
            for precision in {precisions!r}:
                backend = OpenVinoBackend(model, Path({str(work)!r}), precision, threads=2)
                backend.encode_images(np.zeros((8, 3, 224, 224), dtype=np.float32))
                print(run, precision, str(backend._image.get_property("INFERENCE_PRECISION_HINT")).replace(" ", ""))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    hints = {"fp32": "<Type:'float32'>", "bf16": "<Type:'bfloat16'>", "int8": "<Type:'float32'>"}
    assert result.stdout.split("\n")[:-1] == [f"{run} {p} {hints[p]}" for run in range(2) for p in precisions]
    assert sorted(p.name for p in (work / CACHE_SUBDIR).iterdir()) == sorted(precisions)


def test_text_tower_is_onnxruntime_float32_opened_on_first_use(model, work, reference) -> None:
    from engines.tokenizer import TextTokenizer

    backend = OpenVinoBackend(model, work, "int8")
    assert backend._text is None
    tokens = TextTokenizer.from_model(model)(["a burn wound on the skin", "pneumothorax"])
    got = backend.encode_texts(tokens.input_ids, tokens.attention_mask)
    assert _cosines(got, reference.encode_texts(tokens.input_ids, tokens.attention_mask)).min() >= 0.99999


def test_int8_graph_is_cached_and_remade_when_damaged(model, work, caplog) -> None:
    files = onnx_files_for(model, work)
    never = lambda: pytest.fail("a cached graph needs no calibration images")  # noqa: E731
    cached = openvino_int8_graph_for(model, files, work, never)
    assert cached.origin == "cached" and cached.xml.parent == ov_int8_cache_dir(work, model.sha256)
    metadata = json.loads((cached.xml.parent / OV_INT8_METADATA).read_text())
    assert metadata["calibration"] == "sample studies, widened with 6 variants per image" and metadata["calibration_images"] == 70
    bin_path = cached.xml.with_suffix(".bin")
    bin_path.write_bytes(bin_path.read_bytes()[:1000])
    assert "truncated" in ov_int8_folder_problem(cached.xml.parent, model.sha256)
    caplog.set_level(logging.INFO, logger="engines")
    remade = openvino_int8_graph_for(model, files, work, lambda: PROBES.calibration_set(model))
    assert remade.origin == "made" and ov_int8_folder_problem(remade.xml.parent, model.sha256) is None
    assert "discarding the unusable cached OpenVINO INT8 graph" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("torch")]


def test_widening_leaves_large_calibration_sets_alone(model) -> None:
    from engines.calibration import CalibrationSet

    small = PROBES.calibration_set(model)
    widened = widened_calibration(small)
    assert len(widened) == 7 * len(small) and np.array_equal(widened.images[0], small.images[0])
    large = CalibrationSet(np.zeros((64, 3, 8, 8), dtype=np.float32), "folder")
    assert widened_calibration(large) is large


def test_int8_path_without_a_graph_or_calibration_images_is_unavailable(model, tmp_path) -> None:
    with pytest.raises(BackendUnavailable, match="no calibration images were given"):
        OpenVinoBackend(model, tmp_path / "empty-work", "int8")


def test_openvino_path_never_imports_torch(model, work) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        from models.directory import open_model_dir
        from engines.openvino_backend import OpenVinoBackend
        backend = OpenVinoBackend(open_model_dir(Path({str(model.path)!r}), allow_untrained=True), Path({str(work)!r}), "int8")
        backend.encode_images(np.zeros((2, 3, 224, 224), dtype=np.float32))
        print(backend.name, "torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["openvino-int8-cpu", "False"]


# --------------------------------------------------------------------------- selection and forcing


def test_backend_names_are_in_the_one_list() -> None:
    assert {"openvino", "openvino-bf16", "openvino-int8"} <= set(BACKEND_NAMES)


@pytest.mark.parametrize(
    "name, cpu, message",
    [
        ("openvino-bf16", AVX2, "openvino-bf16 cannot run on this CPU: bfloat16 is emulated"),
        ("openvino-int8", SSE2_ONLY, "openvino-int8 cannot run on this CPU: OpenVINO needs at least SSE4.2"),
        ("openvino", SSE2_ONLY, "openvino cannot run on this CPU: OpenVINO needs at least SSE4.2"),
    ],
)
def test_forcing_a_path_the_cpu_cannot_run_is_a_clear_error(model, work, features, monkeypatch, name, cpu, message) -> None:
    features(cpu)
    monkeypatch.setattr(cpu_fast_path, "run_gate", lambda *a, **k: pytest.fail("no gate for a path the CPU cannot run"))
    with pytest.raises(BackendUnavailable) as info:
        open_backend(model, engine_settings("auto", {BACKEND_ENV: name}), work_dir=work, probes=PROBES)
    assert f"{BACKEND_ENV}={name}" in str(info.value) and message in str(info.value)


def test_forced_int8_runs_the_gate_and_keeps_its_record(model, work, features) -> None:
    features(AVX2)
    backend = open_backend(model, "openvino-int8", work_dir=work, probes=PROBES)
    assert backend.name == "openvino-int8-cpu"
    record = _records(work)["openvino-int8"]
    assert record["passed"] and record["min_cosine"] >= 0.99 and record["max_prob_change"] <= 0.03
    assert record["details"]["graph"].startswith("calibration ") and record["details"]["runtime"].startswith("openvino ")


def test_auto_chooses_the_fastest_path_that_passes_in_one_line(model, work, features, monkeypatch, caplog) -> None:
    features(AMX if HOST.bf16_kernel else AVX2)
    table = {"float32": 100.0, "openvino-int8-cpu": 600.0, "openvino-bf16-cpu": 400.0, "openvino-cpu": 150.0, "onnxruntime-int8-cpu": 250.0}
    real = parity_gate._timed_embeddings

    def timed(encode, probes, batch_size):
        embeddings, _ = real(encode, probes, batch_size)
        owner = getattr(encode, "__self__", None)
        return embeddings, table.get(getattr(owner, "name", "float32"), table["float32"])

    monkeypatch.setattr(parity_gate, "_timed_embeddings", timed)
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, "auto", work_dir=work, probes=PROBES)
    assert backend.name == "openvino-int8-cpu"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fast CPU path openvino-int8:")]
    assert "600.00 vs 100.00 images/s float32 (6.00×)" in line and "min cosine" in line and "max |Δp|" in line
    assert "not chosen: " in line and "onnxruntime-int8 250.00 images/s" in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_recalibrated_graph_is_gated_again_and_a_poorly_calibrated_one_refused(model, work, features) -> None:
    features(AVX2)
    open_backend(model, "openvino-int8", work_dir=work, probes=PROBES).close()
    first = _records(work)["openvino-int8"]["key"]
    files = onnx_files_for(model, work)
    shutil.rmtree(ov_int8_cache_dir(work, model.sha256))
    from engines.calibration import CalibrationSet

    other = CalibrationSet(PROBES.calibration_set(model).images[:3].copy(), "three images")
    openvino_int8_graph_for(model, files, work, lambda: other)
    # Three images (widened to 21) do not cover the probes' activation ranges: the gate sees it.
    with pytest.raises(BackendUnavailable, match="openvino-int8 failed the parity gate for this model \\(min cosine"):
        open_backend(model, "openvino-int8", work_dir=work, probes=PROBES)
    records = [json.loads(p.read_text()) for p in (work / GATE_SUBDIR).glob("*.json")]
    assert first in {r["key"] for r in records} and len(records) == 2
    assert sorted(r["passed"] for r in records) == [False, True]
