"""Scale-out through Triton: the repository export, the remote backend against a KServe v2 server, failures.

The server is tests/kserve_v2_server.py, started on 127.0.0.1 in the test and serving the exported
repository through ONNX Runtime, as Triton's ONNX Runtime backend would.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from app.cli import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, map_main
from app.sample_studies import build_sample_studies
from app.engine_commands import main as engines_main
from engines.base import BackendUnavailable
from engines.onnx_export import IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUTS, TEXT_OUTPUT
from engines.onnx_files import onnx_files_for
from engines.onnxruntime_backend import OnnxRuntimeBackend
from engines.selection import BackendConfigError, EngineSettings, open_backend
from engines.tokenizer import TextTokenizer
from engines.triton_backend import TritonBackend, TritonInferenceError, parse_triton_target
from engines.triton_repository import (
    CONFIG_FILE,
    IMAGE_MODEL,
    MODEL_FILE,
    MODEL_VERSION_DIR,
    PARAM_WEIGHTS_SHA256,
    TEXT_MODEL,
    TritonRepositoryError,
    TritonRepositoryOptions,
    read_config,
    write_triton_repository,
)
from models.directory import open_model_dir
from tests.dicom_validation import run_dciodvfy
from tests.kserve_v2_server import KServeV2Server

IMAGE_MAX_BATCH = 4
TEXT_MAX_BATCH = 8


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return open_model_dir(tiny_model_dir, allow_untrained=True)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """Shared so the ONNX export is made once for the module."""
    return tmp_path_factory.mktemp("triton-work")


@pytest.fixture(scope="module")
def repository(tiny_model, work_dir, tmp_path_factory) -> Path:
    """The Triton repository of the tiny model, with small batch limits so requests get split."""
    options = TritonRepositoryOptions(image_max_batch_size=IMAGE_MAX_BATCH, text_max_batch_size=TEXT_MAX_BATCH, instance_kind="cpu")
    return write_triton_repository(tiny_model, tmp_path_factory.mktemp("triton") / "repository", work_dir=work_dir, options=options)


@pytest.fixture()
def server(repository):
    served = KServeV2Server(repository).start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One chest radiograph study (one DX instance) from the sample studies."""
    root = tmp_path_factory.mktemp("samples")
    build_sample_studies(root)
    return root / "chest-radiograph"


@pytest.fixture(scope="module")
def local_result(study, tiny_model_dir, work_dir, tmp_path_factory) -> dict:
    """The JSON result of the study inferred locally with ONNX Runtime: the reference."""
    out, json_dir = tmp_path_factory.mktemp("local-out"), tmp_path_factory.mktemp("local-json")
    code = map_main(["-i", str(study), "-o", str(out), "-m", str(tiny_model_dir.parent), "-w", str(work_dir),
                     "--allow-untrained", "--backend", "onnxruntime", "--results-json", str(json_dir)])
    assert code == EXIT_OK
    return _only_result(json_dir)


def _only_result(json_dir: Path) -> dict:
    results = list(json_dir.glob("*.json"))
    assert len(results) == 1, results
    return json.loads(results[0].read_text())


def _free_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_map(study: Path, model_dir: Path, tmp_path: Path, *extra: str, work: Path | None = None) -> tuple[int, Path, Path]:
    """One MAP run; a fallback run forces `--backend onnxruntime`, the reference's full-precision local backend."""
    out, json_dir = tmp_path / "out", tmp_path / "json"
    code = map_main(["-i", str(study), "-o", str(out), "-m", str(model_dir.parent), "-w", str(work or tmp_path / "work"),
                     "--allow-untrained", "--results-json", str(json_dir), *extra])
    return code, out, json_dir


# --- the repository export -------------------------------------------------------------------


def test_repository_holds_both_encoders_with_batching_instances_and_the_weights_hash(repository, tiny_model, work_dir):
    onnx = onnx_files_for(tiny_model, work_dir)
    expected = {
        IMAGE_MODEL: ([IMAGE_INPUT], [3, tiny_model.image_size, tiny_model.image_size], IMAGE_OUTPUT, IMAGE_MAX_BATCH, onnx.image_model),
        TEXT_MODEL: (list(TEXT_INPUTS), [-1], TEXT_OUTPUT, TEXT_MAX_BATCH, onnx.text_model),
    }
    assert sorted(p.name for p in repository.iterdir()) == sorted(expected)
    for name, (inputs, dims, output, max_batch, graph) in expected.items():
        config = read_config(repository / name / CONFIG_FILE)
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == max_batch
        assert [i.name for i in config.input] == inputs and all(list(i.dims) == dims for i in config.input)
        assert [o.name for o in config.output] == [output] and list(config.output[0].dims) == [tiny_model.embed_dim]
        assert list(config.dynamic_batching.preferred_batch_size) and max(config.dynamic_batching.preferred_batch_size) <= max_batch
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert len(config.instance_group) == 1 and config.instance_group[0].count == 1
        assert config.parameters[PARAM_WEIGHTS_SHA256].string_value == tiny_model.sha256
        assert (repository / name / MODEL_VERSION_DIR / MODEL_FILE).read_bytes() == graph.read_bytes()


def test_tensorrt_accelerator_and_gpu_instances_are_declared(tiny_model, work_dir, tmp_path):
    options = TritonRepositoryOptions(instance_count=2, accelerator="tensorrt-fp16")
    repo = write_triton_repository(tiny_model, tmp_path / "repo", work_dir=work_dir, options=options)
    config = read_config(repo / IMAGE_MODEL / CONFIG_FILE)
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def test_bad_options_and_an_existing_destination_are_refused_without_writing(tiny_model, work_dir, tmp_path):
    with pytest.raises(TritonRepositoryError, match="GPU instances"):
        write_triton_repository(tiny_model, tmp_path / "a", work_dir=work_dir,
                                options=TritonRepositoryOptions(instance_kind="cpu", accelerator="tensorrt"))
    with pytest.raises(TritonRepositoryError, match="image-max-batch-size"):
        write_triton_repository(tiny_model, tmp_path / "b", work_dir=work_dir, options=TritonRepositoryOptions(image_max_batch_size=0))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("site data")
    with pytest.raises(TritonRepositoryError, match="already exists"):
        write_triton_repository(tiny_model, existing, work_dir=work_dir)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"], "nothing half-written may be left behind"


def test_triton_repo_command(tiny_model_dir, work_dir, tmp_path):
    out = tmp_path / "repo"
    args = ["triton-repo", str(out), "-m", str(tiny_model_dir.parent), "-w", str(work_dir), "--instance-kind", "cpu", "--instances", "3"]
    assert engines_main(args) == 0
    assert read_config(out / TEXT_MODEL / CONFIG_FILE).instance_group[0].count == 3
    assert engines_main(args) == 2, "an existing repository must not be overwritten"
    assert engines_main(["triton-repo", str(tmp_path / "other"), "-m", str(tmp_path / "no-model")]) == 2
    assert not (tmp_path / "other").exists()


# --- the client path -------------------------------------------------------------------------


def test_remote_embeddings_equal_local_onnxruntime(server, tiny_model, work_dir):
    remote = open_backend(tiny_model, EngineSettings(triton_server_netloc=server.netloc), work_dir=work_dir)
    local = OnnxRuntimeBackend(tiny_model, work_dir, allow_cuda=False)
    assert isinstance(remote, TritonBackend) and remote.name == "triton-onnxruntime"
    assert remote.logit_scale == pytest.approx(local.logit_scale)
    rng = np.random.default_rng(7)
    images = rng.normal(size=(IMAGE_MAX_BATCH * 2 + 1, 3, tiny_model.image_size, tiny_model.image_size)).astype(np.float32)
    before = server.infer_requests
    np.testing.assert_allclose(remote.encode_images(images), local.encode_images(images), rtol=0, atol=1e-5)
    assert server.infer_requests - before == 3, "a batch larger than the server's max_batch_size is split"
    tokens = TextTokenizer.from_model(tiny_model)([f"a chest radiograph showing finding {i}" for i in range(TEXT_MAX_BATCH + 3)])
    np.testing.assert_allclose(
        remote.encode_texts(tokens.input_ids, tokens.attention_mask),
        local.encode_texts(tokens.input_ids, tokens.attention_mask),
        rtol=0, atol=1e-5,
    )
    remote.close()


def zero_shot_values(result: dict) -> list:
    """Each series group's top label and probabilities from a JSON result (the backend name differs by design)."""
    return [(s["top_label"], s["probabilities"]) for s in result["findings"]["series"]]


def test_map_run_through_triton_equals_local_inference_and_writes_a_valid_sr(server, study, tiny_model_dir, local_result, tmp_path):
    code, out, json_dir = _run_map(study, tiny_model_dir, tmp_path, "-t", server.netloc)
    assert code == EXIT_OK
    assert server.infer_requests >= 2, "both towers must have been asked over the network"
    result = _only_result(json_dir)
    assert result["backend"] == "triton-onnxruntime"
    assert zero_shot_values(result) == zero_shot_values(local_result)
    (report,) = out.glob("SR-*.dcm")
    assert not run_dciodvfy(report).errors


def test_triton_server_netloc_environment_variable_selects_the_server(server, study, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_SERVER_NETLOC", server.netloc)
    code, _, json_dir = _run_map(study, tiny_model_dir, tmp_path)
    assert code == EXIT_OK
    assert _only_result(json_dir)["backend"] == "triton-onnxruntime"


# --- failures --------------------------------------------------------------------------------


def test_unreachable_server_stops_the_run_with_exit_2_and_names_the_server(study, tiny_model_dir, tmp_path, capfd):
    address = f"127.0.0.1:{_free_port()}"
    code, out, _ = _run_map(study, tiny_model_dir, tmp_path, "-t", address)
    log = capfd.readouterr().err
    assert code == EXIT_CANNOT_START
    assert address in log and "BIOMEDCLIP_MAP_TRITON_FALLBACK=local" in log
    assert not out.exists() or not any(out.iterdir())


def test_unreachable_server_falls_back_to_local_inference_when_configured(study, tiny_model_dir, local_result, tmp_path, capfd):
    code, out, json_dir = _run_map(study, tiny_model_dir, tmp_path, "-t", f"127.0.0.1:{_free_port()}", "--triton-fallback", "local", "--backend", "onnxruntime")
    log = capfd.readouterr().err
    assert code == EXIT_OK
    assert "falling back to local inference" in log
    result = _only_result(json_dir)
    assert not result["backend"].startswith("triton")
    assert zero_shot_values(result) == zero_shot_values(local_result)


def test_server_error_mid_study_fails_the_study_and_writes_nothing(server, study, tiny_model_dir, tmp_path, capfd):
    server.fail_requests_after(1)  # the first request is answered, the next ones get HTTP 500
    code, out, json_dir = _run_map(study, tiny_model_dir, tmp_path, "-t", server.netloc)
    log = capfd.readouterr().err
    assert code == EXIT_STUDY_FAILED
    assert server.infer_requests >= 2
    assert f"http://{server.netloc}" in log and "Nothing was written for this study" in log
    assert not out.exists() or not any(out.iterdir()), "no report (and no partial file) for a failed study"
    assert not json_dir.exists() or not any(json_dir.iterdir())


def test_server_going_down_mid_study_falls_back_to_local_when_configured(server, study, tiny_model_dir, local_result, tmp_path, capfd):
    server.fail_requests_after(1)
    code, out, json_dir = _run_map(study, tiny_model_dir, tmp_path, "-t", server.netloc, "--triton-fallback", "local", "--backend", "onnxruntime")
    log = capfd.readouterr().err
    assert code == EXIT_OK
    assert "falling back to local inference for the rest of this run" in log
    result = _only_result(json_dir)
    assert "fallback from triton" in result["backend"]
    assert zero_shot_values(result) == zero_shot_values(local_result)
    assert len(list(out.glob("SR-*.dcm"))) == 1


def test_stopped_server_raises_a_clear_error_naming_server_and_model(server, tiny_model, work_dir):
    backend = open_backend(tiny_model, EngineSettings(triton_server_netloc=server.netloc, triton_fallback=False), work_dir=work_dir)
    server.stop()
    images = np.zeros((1, 3, tiny_model.image_size, tiny_model.image_size), dtype=np.float32)
    with pytest.raises(TritonInferenceError, match=IMAGE_MODEL) as caught:
        backend.encode_images(images)
    assert server.netloc in str(caught.value)


def test_server_with_other_weights_is_refused(repository, tiny_model, work_dir, tmp_path):
    other = tmp_path / "other-weights"
    shutil.copytree(repository, other)
    for config in other.glob(f"*/{CONFIG_FILE}"):
        config.write_text(config.read_text().replace(tiny_model.sha256, "0" * 64))
    served = KServeV2Server(other).start()
    try:
        with pytest.raises(BackendUnavailable, match="weights sha256 0{64}"):
            open_backend(tiny_model, EngineSettings(triton_server_netloc=served.netloc, triton_fallback=False), work_dir=work_dir)
    finally:
        served.stop()


@pytest.mark.parametrize("value", ["triton", "host:port", "http://host", "host:70000", "host:8000/v2"])
def test_malformed_server_address_is_a_configuration_error(value, tiny_model, work_dir):
    with pytest.raises(BackendConfigError, match="TRITON_SERVER_NETLOC"):
        open_backend(tiny_model, EngineSettings(triton_server_netloc=value), work_dir=work_dir)


def test_server_address_forms():
    assert parse_triton_target("triton.example.org:8000").netloc == "triton.example.org:8000"
    secure = parse_triton_target("https://triton.example.org:8443/")
    assert secure.ssl and secure.netloc == "triton.example.org:8443"
    assert not parse_triton_target("http://10.0.0.5:8000").ssl


def test_unknown_fallback_setting_stops_the_run(study, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOMEDCLIP_MAP_TRITON_FALLBACK", "sometimes")
    code, _, _ = _run_map(study, tiny_model_dir, tmp_path, "-t", "127.0.0.1:8000")
    assert code == EXIT_CANNOT_START
