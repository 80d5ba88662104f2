"""`python -m engines export`: the ONNX export with its parity check against PyTorch, and `quantize`."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.probe_set import SampleStudyProbes
from engines import export_parity
from engines.onnx_files import onnx_folder_problem
from models.directory import open_model_dir


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "biomedclip"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def test_export_writes_the_onnx_files_and_reports_parity(model_copy: Path, caplog) -> None:
    from app.engine_commands import main

    caplog.set_level(logging.INFO, logger="engines")
    assert main(["export", str(model_copy)]) == 0
    assert onnx_folder_problem(model_copy / "onnx", open_model_dir(model_copy, allow_untrained=True).sha256) is None
    (line,) = [r.getMessage() for r in caplog.records if "parity with PyTorch" in r.getMessage()]
    figures = re.search(r"smallest cosine ([0-9.]+) \(image\), ([0-9.]+) \(text\)", line)
    assert figures and min(float(figures[1]), float(figures[2])) >= 0.9999


def test_parity_figures_cover_both_towers(model_copy: Path) -> None:
    from app.engine_commands import main

    assert main(["export", str(model_copy)]) == 0
    model = open_model_dir(model_copy, allow_untrained=True)
    samples = SampleStudyProbes().calibration_set(model).images
    parity = export_parity.check_export_parity(model, model_copy / "onnx", samples)
    assert parity.images == 4 and parity.texts == len(export_parity.PROBE_TEXTS)
    assert parity.image_min_cosine >= 0.9999 and parity.text_min_cosine >= 0.9999


def test_export_that_fails_the_parity_check_is_removed(model_copy: Path, monkeypatch, caplog) -> None:
    from app.engine_commands import main

    monkeypatch.setattr(export_parity, "EXPORT_MIN_COSINE", 1.5)  # no export can reach it
    caplog.set_level(logging.INFO, logger="engines")
    assert main(["export", str(model_copy)]) == 2
    assert not (model_copy / "onnx").exists()
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "does not reproduce PyTorch" in error and "(image)" in error and "(text)" in error


def test_quantize_ships_the_int8_graphs_and_gate_results_in_the_model_folder(model_copy: Path, tmp_path: Path, capsys) -> None:
    from app.engine_commands import main
    from engines.openvino_quantization import OV_INT8_METADATA, ov_int8_folder_problem
    from engines.quantization import int8_folder_problem

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(5)
    import cv2

    for index in range(3):
        cv2.imwrite(str(calib / f"photo{index}.png"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    assert main(["quantize", "--calib", str(calib), "-m", str(model_copy), "-w", str(tmp_path / "work")]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = open_model_dir(model_copy, allow_untrained=True)
    assert int8_folder_problem(model_copy / "onnx" / "int8", model.sha256) is None
    assert ov_int8_folder_problem(model_copy / "onnx" / "openvino-int8", model.sha256) is None
    metadata = json.loads((model_copy / "onnx" / "openvino-int8" / OV_INT8_METADATA).read_text())
    assert metadata["calibration"].startswith(str(calib)) and metadata["calibration_images"] == 3 * 7  # widened
    records = {json.loads(p.read_text())["path"]: json.loads(p.read_text()) for p in (model_copy / "onnx" / "gates").glob("*.json")}
    for name in ("onnxruntime-int8", "openvino-int8"):
        gate = summary[name]["parity_gate"]
        if gate["passed"] is None:  # this CPU does not offer the path: nothing to ship
            assert name not in records and gate["summary"].startswith("not run")
        else:
            assert records[name]["passed"] == gate["passed"]


def test_quantize_refuses_a_calibration_folder_without_images(model_copy: Path, tmp_path: Path) -> None:
    from app.engine_commands import main

    (tmp_path / "empty").mkdir()
    assert main(["quantize", "--calib", str(tmp_path / "empty"), "-m", str(model_copy), "-w", str(tmp_path / "work")]) == 2
    assert not (model_copy / "onnx" / "openvino-int8").exists()
