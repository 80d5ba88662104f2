"""The fast CPU path: CPU feature detection, INT8 graph cache, parity gate, automatic choice and fallback.

Everything runs the real quantiser, the real ONNX Runtime sessions and the real gate on the tiny
model. Only two things are substituted where the host would make a test nondeterministic: the
CPU's instruction flags (so the test does not depend on the machine it runs on) and, where the
choice depends on speed, the gate's clock (the tiny model is too small to time reliably).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engines import cpu_fast_path, parity_gate
from engines.base import BackendUnavailable
from engines.cpu_features import CpuFeatures, parse_cpuinfo
from engines.cpu_fast_path import INT8_PATH, open_fastest_cpu_backend, open_forced_fast_path
from engines.onnx_files import onnx_files_for
from engines.parity_gate import GATE_SUBDIR, GateThresholds, gate_key
from engines.quantization import INT8_IMAGE_ONNX, int8_cache_dir, int8_folder_problem, int8_image_graph_for
from app.probe_set import PROBE_SET_NAME, SampleStudyProbes
from app.settings import ENV_BACKEND as BACKEND_ENV, engine_settings
from engines.selection import open_backend
from models.directory import ModelDirectory, open_model_dir

AVX2 = CpuFeatures("x86_64", frozenset({"sse4_2", "avx", "avx2", "fma"}))
AVX2_AMX = CpuFeatures("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}))
NO_SIMD = CpuFeatures("x86_64", frozenset({"sse2"}))
PROBES = SampleStudyProbes()


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ModelDirectory:
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def prepared(model: ModelDirectory, tmp_path_factory) -> Path:
    """A work folder holding the tiny model's ONNX export and INT8 graph, made once for the module."""
    work = tmp_path_factory.mktemp("prepared-work")
    files = onnx_files_for(model, work)
    int8_image_graph_for(model, files, work)
    return work


@pytest.fixture
def work(prepared: Path, tmp_path: Path) -> Path:
    """A fresh work folder per test with the module's exports copied in (no gate records)."""
    fresh = tmp_path / "work"
    shutil.copytree(prepared, fresh)
    return fresh


@pytest.fixture
def features(monkeypatch):
    """Set the CPU flags the fast path sees: `features(AVX2)`."""

    def use(value: CpuFeatures) -> None:
        monkeypatch.setattr(cpu_fast_path, "read_cpu_features", lambda: value)

    return use


@pytest.fixture
def speeds(monkeypatch):
    """Replace the gate's clock: `speeds({"float32": 100, "onnxruntime-int8-cpu": 250})` (images/s by backend name).

    Embeddings are still computed by the real backends; only the reported speed is fixed.
    """

    def use(table: dict[str, float]) -> None:
        real = parity_gate._timed_embeddings

        def timed(encode, probes, batch_size):
            embeddings, _ = real(encode, probes, batch_size)
            owner = getattr(encode, "__self__", None)
            return embeddings, table.get(getattr(owner, "name", "float32"), table["float32"])

        monkeypatch.setattr(parity_gate, "_timed_embeddings", timed)

    return use


def _no_gate(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the stored gate result should have been used")

    monkeypatch.setattr(cpu_fast_path, "run_gate", refuse)


def _records(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / GATE_SUBDIR).glob("*.json"))]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --------------------------------------------------------------------------- CPU features


def test_cpu_flags_decide_which_paths_are_offered() -> None:
    amx = parse_cpuinfo("processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8\n", "x86_64")
    assert amx.int8_kernel == "amx_int8" and amx.bf16_kernel == "amx_bf16"
    zen3 = parse_cpuinfo("flags : fpu sse2 avx avx2 fma vaes\nflags : ignored second cpu\n", "x86_64")
    assert zen3.int8_kernel == "avx2" and zen3.bf16_kernel is None
    assert zen3.kernel_signature() == "x86_64:avx2"
    arm = parse_cpuinfo("Features\t: fp asimd asimddp i8mm\n", "aarch64")
    assert arm.int8_kernel == "i8mm" and arm.bf16_kernel is None
    assert parse_cpuinfo("", "x86_64").int8_kernel is None
    assert cpu_fast_path._int8_not_offered(NO_SIMD) and cpu_fast_path._int8_not_offered(AVX2) is None
    assert "emulated" in cpu_fast_path._bf16_not_offered(AVX2) and cpu_fast_path._bf16_not_offered(AVX2_AMX) is None


def test_gate_key_changes_with_everything_that_changes_the_answers(model) -> None:
    path = cpu_fast_path.PATHS_BY_NAME[INT8_PATH]
    base = cpu_fast_path.gate_ingredients(path, AVX2)
    key = gate_key(model.sha256, INT8_PATH, base, probe_set=PROBE_SET_NAME)
    assert key == gate_key(model.sha256, INT8_PATH, dict(base), probe_set=PROBE_SET_NAME)
    assert key != gate_key("0" * 64, INT8_PATH, base, probe_set=PROBE_SET_NAME)
    assert key != gate_key(model.sha256, "pytorch-bf16", base, probe_set=PROBE_SET_NAME)
    assert key != gate_key(model.sha256, INT8_PATH, cpu_fast_path.gate_ingredients(path, AVX2_AMX), probe_set=PROBE_SET_NAME)
    assert key != gate_key(model.sha256, INT8_PATH, {**base, "runtime": "onnxruntime 0.0.1"}, probe_set=PROBE_SET_NAME)
    assert key != gate_key(model.sha256, INT8_PATH, {**base, "recipe": "another"}, probe_set=PROBE_SET_NAME)
    assert key != gate_key(model.sha256, INT8_PATH, base, probe_set="another-probe-set")


# --------------------------------------------------------------------------- INT8 graph


def test_int8_graph_is_cached_by_weights_hash_and_remade_when_damaged(model, work: Path, caplog) -> None:
    files = onnx_files_for(model, work)
    cached = int8_image_graph_for(model, files, work)
    assert cached.origin == "cached" and cached.path == int8_cache_dir(work, model.sha256) / INT8_IMAGE_ONNX
    assert int8_folder_problem(cached.path.parent, "f" * 64) is not None  # other weights

    cached.path.write_bytes(cached.path.read_bytes()[:1000])  # truncated
    problem = int8_folder_problem(cached.path.parent, model.sha256)
    assert problem is not None and "truncated" in problem
    caplog.set_level(logging.INFO, logger="engines")
    remade = int8_image_graph_for(model, files, work)
    assert remade.origin == "made" and int8_folder_problem(remade.path.parent, model.sha256) is None
    assert "discarding the unusable cached INT8 graph" in caplog.text
    assert "pre-processing" not in caplog.text  # the quantiser's generic advice is not passed on
    assert not [p for p in remade.path.parent.parent.iterdir() if p.name.startswith(".")]  # no staging folders


def test_int8_backend_keeps_the_text_tower_float32_and_opens_it_lazily(model, work: Path) -> None:
    from engines.onnxruntime_backend import OnnxRuntimeBackend
    from engines.onnxruntime_int8_backend import OnnxRuntimeInt8Backend
    from engines.tokenizer import TextTokenizer

    int8 = OnnxRuntimeInt8Backend(model, work)
    assert int8.name == "onnxruntime-int8-cpu" and int8._text is None
    fp32 = OnnxRuntimeBackend(model, work, allow_cuda=False)
    tokens = TextTokenizer.from_model(model)(["a burn wound on the skin", "pneumothorax"])
    assert np.abs(int8.encode_texts(tokens.input_ids, tokens.attention_mask) - fp32.encode_texts(tokens.input_ids, tokens.attention_mask)).max() < 1e-6
    images = np.random.default_rng(3).standard_normal((4, 3, 224, 224)).astype(np.float32)
    assert _cosines(int8.encode_images(images), fp32.encode_images(images)).min() >= 0.99


def test_int8_path_never_imports_torch(model, work: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        from models.directory import open_model_dir
        from engines.onnxruntime_int8_backend import OnnxRuntimeInt8Backend
        backend = OnnxRuntimeInt8Backend(open_model_dir(Path({str(model.path)!r}), allow_untrained=True), Path({str(work)!r}))
        backend.encode_images(np.zeros((2, 3, 224, 224), dtype=np.float32))
        print(backend.name, "torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnxruntime-int8-cpu", "False"]


# --------------------------------------------------------------------------- automatic choice


def test_auto_chooses_int8_when_the_gate_passes_and_keeps_the_result(model, work, features, speeds, monkeypatch, caplog) -> None:
    features(AVX2)
    speeds({"float32": 100.0, "onnxruntime-int8-cpu": 260.0})
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, "auto", work_dir=work, probes=PROBES)
    assert backend.name == "onnxruntime-int8-cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "fast CPU path onnxruntime-int8: min cosine" in caplog.text
    records = {r["path"]: r for r in _records(work)}
    assert set(records) == {"onnxruntime-int8", "openvino-int8", "openvino"}  # bf16 is not offered on AVX2
    record = records[INT8_PATH]
    assert record["passed"] and record["path"] == INT8_PATH and record["probes"] == 56
    assert record["min_cosine"] >= 0.99 and record["max_prob_change"] <= 0.03 and record["decisions"] == 56 * 4
    # The random-weight model decides nothing clearly: its agreement cannot be judged, and the record says so.
    assert record["decisive_decisions"] < parity_gate.MIN_DECISIVE_DECISIONS and record["decisive_agreement"] is None
    assert "not judged" in record["note"]
    assert record["details"]["cpu"] == "x86_64:avx2"
    # The gate warmed the shared text-embedding cache with float32 class embeddings of every task.
    assert len(list((work / "text-embeddings").glob("*.npy"))) == 4

    _no_gate(monkeypatch)
    again = open_fastest_cpu_backend(model, work, probes=PROBES)
    assert again.name == "onnxruntime-int8-cpu"


def test_auto_picks_the_fastest_path_that_passes(model, work, features, speeds) -> None:
    features(AVX2_AMX)
    speeds({"float32": 100.0, "onnxruntime-int8-cpu": 200.0, "pytorch-bf16-cpu": 320.0})
    backend = open_fastest_cpu_backend(model, work, probes=PROBES)
    assert backend.name == "pytorch-bf16-cpu"
    records = {r["path"]: r for r in _records(work)}
    assert set(records) == {"onnxruntime-int8", "pytorch-bf16"}  # no SSE4.2 flag in AVX2_AMX: OpenVINO not offered
    assert records["pytorch-bf16"]["passed"] and records["pytorch-bf16"]["min_cosine"] >= 0.999
    assert records["pytorch-bf16"]["max_prob_change"] <= 0.01
    assert records["pytorch-bf16"]["thresholds"] == dataclasses.asdict(parity_gate.BF16_THRESHOLDS)


def test_failed_gate_falls_back_to_float32_with_one_warning(model, work, features, speeds, monkeypatch, caplog) -> None:
    features(AVX2)
    speeds({"float32": 100.0, "onnxruntime-int8-cpu": 260.0})
    strict = dataclasses.replace(cpu_fast_path.PATHS_BY_NAME[INT8_PATH], thresholds=GateThresholds(min_cosine=0.9999999))
    monkeypatch.setattr(cpu_fast_path, "FAST_PATHS", (strict, cpu_fast_path.PATHS_BY_NAME["pytorch-bf16"]))
    monkeypatch.setitem(cpu_fast_path.PATHS_BY_NAME, INT8_PATH, strict)
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, "auto", work_dir=work, probes=PROBES)
    assert backend.name == "onnxruntime-cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("fast CPU path not used (onnxruntime-int8 failed the parity gate (min cosine")
    assert "pytorch-bf16: bfloat16 is emulated" in warnings[0] and warnings[0].endswith("using ONNX Runtime float32")
    (record,) = _records(work)
    assert not record["passed"] and "min cosine" in record["reason"]

    caplog.clear()
    _no_gate(monkeypatch)
    assert open_fastest_cpu_backend(model, work, probes=PROBES).name == "onnxruntime-cpu"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_cpu_without_int8_instructions_uses_float32_with_one_info_line(model, work, features, monkeypatch, caplog) -> None:
    features(NO_SIMD)
    _no_gate(monkeypatch)
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_fastest_cpu_backend(model, work, probes=PROBES)
    assert backend.name == "onnxruntime-cpu"
    lines = [r for r in caplog.records if r.getMessage().startswith("fast CPU path not used")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "no INT8 dot-product instructions" in lines[0].getMessage()
    assert not (work / GATE_SUBDIR).exists()


def test_a_path_that_is_not_clearly_faster_is_not_used(model, work, features, speeds, caplog) -> None:
    features(AVX2)
    speeds({"float32": 100.0, "onnxruntime-int8-cpu": 105.0})
    caplog.set_level(logging.INFO, logger="engines")
    assert open_fastest_cpu_backend(model, work, probes=PROBES).name == "onnxruntime-cpu"
    assert "onnxruntime-int8 is not clearly faster than float32" in caplog.text
    assert _records(work)[0]["passed"]  # accurate, just not worth it here


def test_unreadable_gate_record_is_reported_and_the_gate_runs_again(model, work, features, speeds, caplog) -> None:
    features(AVX2)
    speeds({"float32": 100.0, "onnxruntime-int8-cpu": 260.0})
    open_fastest_cpu_backend(model, work, probes=PROBES)
    (path,) = [p for p in (work / GATE_SUBDIR).glob("*.json") if json.loads(p.read_text())["path"] == INT8_PATH]
    path.write_text("{not json")
    caplog.set_level(logging.INFO, logger="engines")
    assert open_fastest_cpu_backend(model, work, probes=PROBES).name == "onnxruntime-int8-cpu"
    assert "is unreadable" in caplog.text and json.loads(path.read_text())["passed"]


def test_gate_that_cannot_run_falls_back_with_the_reason(model, work, features, monkeypatch, caplog) -> None:
    features(AVX2)

    def broken(*args, **kwargs):
        raise OSError("simulated: no space left for the sample studies")

    monkeypatch.setattr(cpu_fast_path, "run_gate", broken)
    caplog.set_level(logging.INFO, logger="engines")
    assert open_fastest_cpu_backend(model, work, probes=PROBES).name == "onnxruntime-cpu"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "the parity gate could not run (OSError: simulated" in warning


def test_without_a_probe_set_no_reduced_precision_path_is_used(model, work, features, monkeypatch, caplog) -> None:
    features(AVX2)
    _no_gate(monkeypatch)
    caplog.set_level(logging.INFO, logger="engines")
    assert open_backend(model, "auto", work_dir=work).name == "onnxruntime-cpu"
    (line,) = [r for r in caplog.records if r.getMessage().startswith("fast CPU path not used")]
    assert line.levelno == logging.INFO and "no probe set" in line.getMessage()
    with pytest.raises(BackendUnavailable, match="no probe set was given"):
        open_backend(model, "onnxruntime-int8", work_dir=work)


# --------------------------------------------------------------------------- forced paths


def test_forced_int8_that_fails_the_gate_is_an_error_naming_the_figures(model, work, features, monkeypatch) -> None:
    features(AVX2)
    strict = dataclasses.replace(cpu_fast_path.PATHS_BY_NAME[INT8_PATH], thresholds=GateThresholds(min_cosine=0.9999999))
    monkeypatch.setitem(cpu_fast_path.PATHS_BY_NAME, INT8_PATH, strict)
    with pytest.raises(BackendUnavailable) as info:
        open_backend(model, engine_settings("auto", {BACKEND_ENV: "onnxruntime-int8"}), work_dir=work, probes=PROBES)
    message = str(info.value)
    assert f"{BACKEND_ENV}=onnxruntime-int8" in message and "failed the parity gate" in message and "min cosine" in message


def test_forced_bf16_runs_its_gate_even_where_bf16_is_emulated(model, work, features, caplog) -> None:
    features(AVX2)
    caplog.set_level(logging.INFO, logger="engines")
    backend = open_forced_fast_path("pytorch-bf16", model, work, probes=PROBES)
    assert backend.name == "pytorch-bf16-cpu"
    assert "pytorch-bf16 is forced although bfloat16 is emulated" in caplog.text
    (record,) = _records(work)
    assert record["path"] == "pytorch-bf16" and record["passed"] and record["min_cosine"] >= 0.999
