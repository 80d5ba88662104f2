"""Cold start: the model folder the MAP staging prepares, and a run on it that makes nothing at run time.

The staging (deploy/stage_map.py, what deploy/build-map.sh runs) is given the tiny model; the
staged model folder must hold the ONNX export, both INT8 graphs, the parity gate records of every
fast CPU path this CPU offers and the bundled tasks' text embeddings. A MAP run on that folder
with an empty work folder must then export, quantise, gate and embed no text at all: the test runs
it in a fresh interpreter in which those functions raise if called, and checks that torch was
never imported for a path that does not need it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.sample_studies import build_sample_studies
from deploy.stage_map import MODEL_NAME, stage_models
from engines.cpu_fast_path import FAST_PATHS
from engines.cpu_features import CpuFeatures, read_cpu_features
from engines.parity_gate import SHIPPED_GATES_SUBDIR

REPO_ROOT = Path(__file__).resolve().parents[1]
OTHER_CPU = CpuFeatures("x86_64", frozenset({"sse4_2", "avx", "avx2", "fma"}))


@pytest.fixture(scope="module")
def staged_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model staged as the MAP build stages it."""
    models = stage_models(tiny_model_dir, tmp_path_factory.mktemp("stage") / "models", allow_untrained=True)
    return models / MODEL_NAME


@pytest.fixture(scope="module")
def photograph(tmp_path_factory) -> Path:
    studies = {s.name: s.path for s in build_sample_studies(tmp_path_factory.mktemp("samples"))}
    return studies["burn-photograph"]


def test_staged_model_folder_holds_export_int8_graphs_gate_records_and_text_embeddings(staged_model) -> None:
    onnx = staged_model / "onnx"
    assert (onnx / "image_encoder.onnx").is_file() and (onnx / "text_encoder.onnx").is_file()
    assert any((onnx / "int8").glob("*.onnx")), "the ONNX Runtime INT8 graph is not shipped"
    assert (onnx / "openvino-int8" / "image_encoder.int8.xml").is_file(), "the OpenVINO INT8 graph is not shipped"
    records = [json.loads(p.read_text()) for p in (onnx / SHIPPED_GATES_SUBDIR).glob("*.json")]
    here = read_cpu_features()
    offered = {path.name for path in FAST_PATHS if path.not_offered(here) is None}
    assert offered, "this CPU offers no fast path; the test needs one to check the shipped records"
    assert {r["path"] for r in records} == offered
    assert {r["details"]["cpu"] for r in records} == {here.kernel_signature()}
    assert list((onnx / "text-embeddings").glob("*.npy")), "the bundled tasks' text embeddings are not shipped"


RUN_WITHOUT_MAKING = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path

    def refuse(what):
        def refused(*args, **kwargs):
            raise AssertionError(f"{what} was called at run time on a prepared model folder")
        return refused

    import engines.onnx_export, engines.quantization, engines.openvino_quantization, engines.parity_gate
    import engines.cpu_fast_path, operators.inference.zero_shot
    engines.onnx_export.export_onnx = refuse("the ONNX export")
    engines.quantization.quantize_image_graph = refuse("ONNX Runtime INT8 quantisation")
    engines.openvino_quantization.quantize_openvino_image_graph = refuse("OpenVINO INT8 quantisation")
    engines.parity_gate.evaluate_gate = engines.cpu_fast_path.evaluate_gate = refuse("the parity gate")
    operators.inference.zero_shot.ensemble_prompts = refuse("the text tower")

    from app.analyzer import open_analyzer
    from app.run import run
    from app.settings import resolve_run_settings

    study, models, work, out, backend = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    settings = resolve_run_settings(
        input_path=study, output_path=out, models_path=models, work_dir=work, allow_untrained=True,
        backend=None if backend == "auto" else backend,
    )
    analyzer = open_analyzer(settings)
    result = run(settings, analyzer)
    print(json.dumps({"exit": result.exit_code, "backend": analyzer.backend.name, "torch": "torch" in sys.modules}))
    """
)


def run_cold(staged_model: Path, study: Path, tmp_path: Path, backend: str) -> tuple[dict, str]:
    """One MAP run in a fresh interpreter with an empty work folder; its summary and its log."""
    work = tmp_path / f"work-{backend}"
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_MAKING, str(study), str(staged_model), str(work), str(tmp_path / f"out-{backend}"), backend],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_auto_on_a_prepared_folder_exports_quantises_gates_and_embeds_nothing(staged_model, photograph, tmp_path) -> None:
    summary, log = run_cold(staged_model, photograph, tmp_path, "auto")
    assert summary["exit"] == 0
    assert "fast CPU path" in log  # the one line with the figures (or why float32 is used)
    if not summary["backend"].startswith("pytorch"):
        assert summary["torch"] is False, "torch was imported for a path that does not need it"


def test_forced_openvino_int8_on_a_prepared_folder_never_imports_torch(staged_model, photograph, tmp_path) -> None:
    summary, _ = run_cold(staged_model, photograph, tmp_path, "openvino-int8")
    assert summary == {"exit": 0, "backend": "openvino-int8-cpu", "torch": False}


def test_records_of_another_cpu_kind_are_said_in_one_line_and_gated_now(staged_model, tmp_path, caplog) -> None:
    from app.probe_set import SampleStudyProbes
    from engines.cpu_fast_path import open_fastest_cpu_backend
    from models.directory import open_model_dir

    model = open_model_dir(staged_model, allow_untrained=True)
    with caplog.at_level(logging.INFO, logger="engines.cpu_fast_path"):
        backend = open_fastest_cpu_backend(model, tmp_path / "work", probes=SampleStudyProbes(), features=OTHER_CPU)
    backend.close()
    lines = [r.getMessage() for r in caplog.records if "parity gate records are for other CPU kinds" in r.getMessage()]
    assert len(lines) == 1 and OTHER_CPU.kernel_signature() in lines[0]
    assert any("checking the" in r.getMessage() for r in caplog.records), "the paths were not gated on the other CPU"


def test_a_pytorch_path_is_preferred_only_when_clearly_faster(staged_model) -> None:
    import dataclasses

    from engines.cpu_fast_path import TORCH_PATH_MIN_ADVANTAGE, preferred_result
    from engines.parity_gate import GateResult

    record = GateResult(**json.loads(next((staged_model / "onnx" / SHIPPED_GATES_SUBDIR).glob("*.json")).read_text()))
    openvino = dataclasses.replace(record, path="openvino-int8", images_per_s=20.0)
    torch_path = dataclasses.replace(record, path="pytorch-bf16", images_per_s=20.0 * TORCH_PATH_MIN_ADVANTAGE * 0.9)
    chosen, why = preferred_result([openvino, torch_path])
    assert chosen is openvino and "needs torch" in why
    clearly = dataclasses.replace(torch_path, images_per_s=20.0 * TORCH_PATH_MIN_ADVANTAGE)
    assert preferred_result([openvino, clearly]) == (clearly, "")
    assert preferred_result([torch_path]) == (torch_path, "")


def test_an_empty_openvino_model_cache_is_seeded_from_the_shipped_blob_and_a_filled_one_left_alone(tmp_path) -> None:
    from engines.openvino_backend import seed_model_cache

    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    cache.mkdir()
    (shipped / "123.blob").write_bytes(b"compiled")
    assert seed_model_cache(cache, shipped) and (cache / "123.blob").read_bytes() == b"compiled"
    (cache / "123.blob").write_bytes(b"newer")
    assert not seed_model_cache(cache, shipped) and (cache / "123.blob").read_bytes() == b"newer"
    assert not seed_model_cache(tmp_path / "other", tmp_path / "absent")
