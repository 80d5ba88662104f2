"""The TensorRT backend's pure-Python parts, on any machine: cache keys and checks, build policy,
recovery from what TensorRT refuses, batching, progress display, and the CPU-host behaviour.

TensorRT itself is not needed: the build and the deserialisation are passed in as callables, so
these tests use small fakes in their place and exercise the real cache and recovery logic.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.base import BackendNotApplicable, BackendUnavailable
from engines.tensorrt_backend import load_tower, tensorrt_precision
from engines.tensorrt_build import (
    BuildProgress,
    BuildRequest,
    EngineBuildError,
    EngineBuildOutOfMemory,
    calibration_batches,
    ensure_engine,
    image_profile,
    looks_like_out_of_memory,
    profile_max_batch,
    text_profile,
    with_max_batch,
)
from engines.tensorrt_cache import (
    EngineCacheError,
    EngineKey,
    cached_engine_problem,
    engine_paths,
    key_differences,
    store_engine,
)
from engines.tensorrt_runtime import ContextOutOfMemory, batch_slices


def _key(**changes) -> EngineKey:
    values = dict(
        model_sha256="a" * 64,
        tower="image",
        precision="fp16",
        profile=image_profile(224),
        tensorrt_version="10.13.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
    )
    values.update(changes)
    return EngineKey(**values)


class FakeBuilder:
    """Stands in for TensorRT's builder: records each build's profile; fails for batches above `fits`."""

    def __init__(self, fits: int = 32) -> None:
        self.fits = fits
        self.built: list[int] = []

    def __call__(self, profile) -> bytes:
        largest = profile_max_batch(profile)
        self.built.append(largest)
        if largest > self.fits:
            raise EngineBuildOutOfMemory(f"simulated: out of memory for batch {largest}")
        return f"engine for batches up to {largest}".encode() * 100


def _request(key: EngineKey, builder: FakeBuilder) -> BuildRequest:
    return BuildRequest(key=key, onnx_path=Path("image_encoder.onnx"), build=builder, metadata={"model_name": "test"})


# --------------------------------------------------------------------------- keys and shapes


def test_profiles_cover_the_documented_shapes() -> None:
    assert image_profile(224) == (("images", ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))),)
    ids = dict(text_profile(max_sequence=256))["input_ids"]
    assert ids == ((1, 1), (8, 64), (32, 256))
    assert dict(text_profile())["attention_mask"] == ids
    assert profile_max_batch(text_profile()) == 32
    capped = with_max_batch(image_profile(224), 4)
    assert capped[0][1] == ((1, 3, 224, 224), (4, 3, 224, 224), (4, 3, 224, 224))


def test_engine_key_round_trips_and_names_its_differences() -> None:
    key = _key(tower="text", precision="fp32", profile=text_profile())
    assert EngineKey.from_dict(json.loads(json.dumps(key.as_dict()))) == key
    assert key.digest() == EngineKey.from_dict(key.as_dict()).digest()
    other = _key(gpu_name="NVIDIA A100-SXM4-40GB", compute_capability="8.0", tensorrt_version="10.3.0")
    words = " ".join(key_differences(other, _key()))
    assert "TensorRT 10.3.0, this is TensorRT 10.13.0" in words
    assert "NVIDIA A100-SXM4-40GB (compute capability 8.0), this GPU is NVIDIA H100 80GB HBM3 (9.0)" in words
    assert key_differences(_key(), _key()) == []


def test_out_of_memory_messages_are_recognised() -> None:
    assert looks_like_out_of_memory(["[virtualMemoryBuffer.cpp::resizePhysical] Error Code 2: OutOfMemory (no further information)"])
    assert looks_like_out_of_memory(["Requested amount of GPU memory (8589934592 bytes) could not be allocated"])
    assert not looks_like_out_of_memory(["Network has dynamic or shape inputs, but no optimization profile has been defined."])


# --------------------------------------------------------------------------- cache files


def test_stored_engine_is_found_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    key = _key()
    stored = store_engine(tmp_path, key, b"serialized engine", {"built_max_batch": 32})
    cached, problem = cached_engine_problem(tmp_path, key)
    assert problem is None and cached.engine_path == stored.engine_path and cached.max_batch == 32
    assert cached.engine_path.read_bytes() == b"serialized engine"
    assert sorted(p.name for p in stored.engine_path.parent.iterdir()) == ["image-fp16.engine", "image-fp16.json"]


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda engine, meta: engine.write_bytes(engine.read_bytes()[:7]), "truncated or replaced"),
        (lambda engine, meta: engine.write_bytes(b"X" * engine.stat().st_size), "the file is corrupt"),
        (lambda engine, meta: meta.unlink(), "has no sidecar"),
        (lambda engine, meta: meta.write_text("{broken"), "is unreadable"),
        (lambda engine, meta: engine.unlink(), "is missing although its sidecar exists"),
    ],
    ids=["truncated", "corrupt", "no-sidecar", "bad-sidecar", "no-engine"],
)
def test_damaged_cache_entries_are_detected(tmp_path: Path, damage, expected: str) -> None:
    key = _key()
    stored = store_engine(tmp_path, key, b"serialized engine bytes", {"built_max_batch": 32})
    damage(stored.engine_path, stored.metadata_path)
    cached, problem = cached_engine_problem(tmp_path, key)
    assert cached is None and expected in problem


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"tensorrt_version": "10.14.1"}, "built with TensorRT 10.13.0, this is TensorRT 10.14.1"),
        ({"gpu_name": "NVIDIA H200", "compute_capability": "9.0"}, "this GPU is NVIDIA H200"),
        ({"compute_capability": "8.9"}, "this GPU is NVIDIA H100 80GB HBM3 (8.9)"),
        ({"profile": image_profile(224, max_batch=64)}, "other input shapes"),
    ],
    ids=["tensorrt-version", "gpu", "compute-capability", "profile"],
)
def test_engine_for_another_gpu_or_tensorrt_version_does_not_fit(tmp_path: Path, changes: dict, expected: str) -> None:
    store_engine(tmp_path, _key(), b"engine", {})
    cached, problem = cached_engine_problem(tmp_path, _key(**changes))
    assert cached is None and expected in problem


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "work"
    blocker.write_text("a file where the work folder should be")
    with pytest.raises(EngineCacheError, match="cannot write the TensorRT engine cache in"):
        store_engine(blocker, _key(), b"engine", {})


# --------------------------------------------------------------------------- build policy


def test_engine_is_built_once_then_served_from_the_cache(tmp_path: Path, caplog) -> None:
    builder = FakeBuilder()
    caplog.set_level(logging.INFO, logger="engines")
    first = ensure_engine(tmp_path, _request(_key(), builder))
    second = ensure_engine(tmp_path, _request(_key(), builder))
    assert builder.built == [32] and first.engine_path == second.engine_path
    assert "takes minutes, once" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a first build is not a problem


def test_changed_key_or_damaged_engine_is_rebuilt_with_one_line_saying_why(tmp_path: Path, caplog) -> None:
    builder = FakeBuilder()
    ensure_engine(tmp_path, _request(_key(), builder))
    caplog.set_level(logging.INFO, logger="engines")
    upgraded = _key(tensorrt_version="10.14.1")
    rebuilt = ensure_engine(tmp_path, _request(upgraded, builder))
    assert builder.built == [32, 32]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "will be rebuilt" in warning and "built with TensorRT 10.13.0, this is TensorRT 10.14.1" in warning
    assert cached_engine_problem(tmp_path, upgraded)[1] is None and rebuilt.metadata["key"]["tensorrt_version"] == "10.14.1"

    rebuilt.engine_path.write_bytes(rebuilt.engine_path.read_bytes()[:10])
    ensure_engine(tmp_path, _request(upgraded, builder))
    assert builder.built == [32, 32, 32]
    assert "truncated or replaced" in caplog.text


def test_out_of_memory_at_the_largest_profile_builds_for_smaller_batches(tmp_path: Path, caplog) -> None:
    builder = FakeBuilder(fits=8)
    caplog.set_level(logging.INFO, logger="engines")
    cached = ensure_engine(tmp_path, _request(_key(), builder))
    assert builder.built == [32, 16, 8] and cached.max_batch == 8
    assert cached.metadata["key"]["profile"]["images"][2][0] == 32  # the key is what was asked for
    assert len([r for r in caplog.records if "GPU out of memory building" in r.getMessage()]) == 2
    assert ensure_engine(tmp_path, _request(_key(), builder)).max_batch == 8 and builder.built == [32, 16, 8]


def test_out_of_memory_even_at_batch_one_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="even a batch of 1 does not fit"):
        ensure_engine(tmp_path, _request(_key(), FakeBuilder(fits=0)))
    assert not engine_paths(tmp_path, _key())[0].exists()


# --------------------------------------------------------------------------- recovery when loading


def test_engine_tensorrt_refuses_to_load_is_rebuilt_once(tmp_path: Path, caplog) -> None:
    builder = FakeBuilder()
    loads: list[bytes] = []

    def deserialize(data: bytes):
        loads.append(data)
        return None if len(loads) == 1 else ("engine", data)

    caplog.set_level(logging.INFO, logger="engines")
    runner = load_tower(tmp_path, _request(_key(), builder), deserialize, lambda engine, batch: (engine, batch))
    assert runner[1] == 32 and builder.built == [32, 32] and len(loads) == 2
    assert "TensorRT cannot load the cached image engine" in caplog.text

    with pytest.raises(BackendUnavailable, match="even after rebuilding it"):
        load_tower(tmp_path, _request(_key(), builder), lambda data: None, lambda engine, batch: engine)


def test_context_out_of_memory_rebuilds_for_half_the_batch(tmp_path: Path, caplog) -> None:
    builder = FakeBuilder()

    def make_runner(engine, max_batch):
        if max_batch > 8:
            raise ContextOutOfMemory("TensorRT could not create an execution context for the image engine (GPU memory)")
        return max_batch

    caplog.set_level(logging.INFO, logger="engines")
    assert load_tower(tmp_path, _request(_key(), builder), lambda data: data, make_runner) == 8
    assert builder.built == [32, 16, 8]
    assert "rebuilding the engine for batches up to 16" in caplog.text

    with pytest.raises(BackendUnavailable, match="even for a batch of 1"):
        load_tower(tmp_path / "other", _request(_key(), FakeBuilder()), lambda data: data,
                   lambda engine, batch: (_ for _ in ()).throw(ContextOutOfMemory("no context")))


# --------------------------------------------------------------------------- batching and progress


def test_batches_are_split_to_the_engine_size() -> None:
    assert batch_slices(70, 32) == [slice(0, 32), slice(32, 64), slice(64, 70)]
    assert batch_slices(3, 32) == [slice(0, 3)]
    assert batch_slices(0, 8) == []
    with pytest.raises(ValueError):
        batch_slices(4, 0)


def test_calibration_batches_have_the_calibrator_batch_size() -> None:
    images = np.arange(10 * 3 * 2 * 2, dtype=np.float32).reshape(10, 3, 2, 2)
    batches = calibration_batches(images, 4)
    assert [b.shape[0] for b in batches] == [4, 4, 4]
    assert np.array_equal(batches[2][:2], images[8:]) and np.array_equal(batches[2][2:], images[:2])
    with pytest.raises(ValueError):
        calibration_batches(images[:0], 4)


def test_build_progress_shows_phases() -> None:
    plain = io.StringIO()
    progress = BuildProgress("TensorRT image fp16", plain, interactive=False)
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic selection", "Building engine", 40)
    assert progress.step_complete("Tactic selection", 0) is True
    progress.phase_finish("Tactic selection")
    progress.phase_finish("Building engine")
    progress.finish("built, 172 MB")
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("TensorRT image fp16 [0:00] Building engine 0/3")
    assert len(lines) == 2 and lines[1].endswith("built, 172 MB")  # nested phases only on a terminal

    terminal = io.StringIO()
    live = BuildProgress("TensorRT image fp16", terminal, interactive=True)
    live.phase_start("Building engine", None, 3)
    live.phase_start("Tactic selection", "Building engine", 40)
    live.step_complete("Tactic selection", 9)
    assert "Building engine 0/3 › Tactic selection 10/40" in terminal.getvalue().split("\r")[-1]


# --------------------------------------------------------------------------- the CPU host


def test_precision_setting_is_checked() -> None:
    assert tensorrt_precision("") == "fp16"
    assert tensorrt_precision("INT8") == "int8"
    with pytest.raises(BackendUnavailable, match="BIOMEDCLIP_MAP_TENSORRT_PRECISION='fp8' is not one of fp16, int8"):
        tensorrt_precision("fp8")


def test_importing_the_tensorrt_modules_needs_neither_tensorrt_nor_torch() -> None:
    script = (
        "import sys; import engines.tensorrt_backend, engines.tensorrt_build, engines.tensorrt_cache, "
        "engines.tensorrt_cuda, engines.tensorrt_runtime, engines.selection, engines.build_commands; "
        "print('tensorrt' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def _tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401

        from engines.tensorrt_cuda import open_cuda_runtime

        open_cuda_runtime()
    except Exception:  # any import or CUDA failure means this host cannot run TensorRT
        return False
    return True


@pytest.mark.skipif(_tensorrt_usable(), reason="this host has TensorRT and a GPU; tests/test_tensorrt.py covers it")
def test_without_tensorrt_or_gpu_the_backend_does_not_apply(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    from app.settings import ENV_BACKEND as BACKEND_ENV, engine_settings
    from engines.selection import open_backend
    from engines.tensorrt_backend import open_tensorrt_backend
    from models.directory import open_model_dir

    model = open_model_dir(tiny_model_dir, allow_untrained=True)
    with pytest.raises(BackendNotApplicable) as info:
        open_tensorrt_backend(model, tmp_path)
    assert "TensorRT is not installed" in str(info.value) or "no CUDA GPU" in str(info.value)
    assert not (tmp_path / "tensorrt").exists()

    caplog.set_level(logging.INFO, logger="engines")
    backend = open_backend(model, "auto", work_dir=tmp_path)
    assert not backend.name.startswith("tensorrt")
    (line,) = [r for r in caplog.records if r.getMessage().startswith("TensorRT backend not used")]
    assert line.levelno == logging.INFO and line.getMessage().endswith("falling back to ONNX Runtime")

    with pytest.raises(BackendUnavailable, match=f"{BACKEND_ENV}=tensorrt forces the TensorRT backend"):
        open_backend(model, engine_settings("auto", {BACKEND_ENV: "tensorrt"}), work_dir=tmp_path)


@pytest.mark.skipif(_tensorrt_usable(), reason="this host has TensorRT and a GPU; tests/test_tensorrt.py covers it")
def test_build_command_on_a_cpu_host_says_why_in_one_line(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    from app.engine_commands import main

    caplog.set_level(logging.INFO, logger="engines")
    assert main(["build", "--precision", "fp16", "-m", str(tiny_model_dir), "-w", str(tmp_path / "work")]) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "TensorRT is not installed" in error or "no CUDA GPU" in error


def test_build_command_refuses_an_unusable_calibration_folder_first(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    from app.engine_commands import main

    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    caplog.set_level(logging.INFO, logger="engines")
    code = main(["build", "--precision", "int8", "--calib", str(empty), "-m", str(tiny_model_dir), "-w", str(tmp_path / "work")])
    assert code == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"calibration folder {empty} holds no usable images" in error
    assert main(["build", "--precision", "fp16", "--calib", str(empty), "-m", str(tiny_model_dir)]) == 2
    assert "--calib is only used with --precision int8" in caplog.text
