"""Run settings: the one place that reads the environment, and the typed engine settings it hands down."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.cli import add_run_arguments
from app.node.config import NodeConfigError, load_node_config
from app.settings import (
    ENV_BACKEND,
    ENV_TENSORRT_PRECISION,
    ENV_TRITON_NETLOC,
    ENV_TRITON_TIMEOUT,
    SettingsError,
    default_work_dir,
    engine_settings,
    resolve_run_settings,
    truthy,
)
from engines.base import BACKEND_CHOICES, BackendConfigError
from engines.selection import OPENERS, EngineSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folders(tmp_path: Path) -> dict:
    (tmp_path / "in").mkdir()
    (tmp_path / "models").mkdir()
    return {"input_path": tmp_path / "in", "output_path": tmp_path / "out", "models_path": tmp_path / "models", "work_dir": tmp_path / "work"}


def test_one_list_of_backend_names_for_openers_cli_and_settings() -> None:
    assert BACKEND_CHOICES == ("auto", *OPENERS)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    (backend,) = [a for a in parser._actions if a.dest == "backend"]
    assert tuple(backend.choices) == BACKEND_CHOICES


def test_environment_backend_wins_over_the_configured_one_and_says_so() -> None:
    chosen = engine_settings("onnxruntime", {ENV_BACKEND: "PyTorch"})
    assert (chosen.backend, chosen.origin) == ("pytorch", f"{ENV_BACKEND}=pytorch")
    configured = engine_settings("onnxruntime", {})
    assert (configured.backend, configured.origin) == ("onnxruntime", "backend setting 'onnxruntime'")
    assert engine_settings(None, {}).backend == "auto"


def test_unknown_backend_is_refused_once_naming_where_it_came_from(folders, monkeypatch) -> None:
    with pytest.raises(BackendConfigError, match=f"{ENV_BACKEND}=tensorflow: unknown inference backend"):
        engine_settings("auto", {ENV_BACKEND: "tensorflow"})
    with pytest.raises(BackendConfigError, match="choose one of auto, tensorrt"):
        EngineSettings("tensorflow")
    monkeypatch.setenv(ENV_BACKEND, "tensorflow")
    with pytest.raises(SettingsError, match=f"{ENV_BACKEND}=tensorflow.*--backend or {ENV_BACKEND}"):
        resolve_run_settings(**folders)


def test_engine_values_come_from_the_environment_into_the_run_settings(folders, monkeypatch) -> None:
    monkeypatch.setenv(ENV_TENSORRT_PRECISION, "int8")
    monkeypatch.setenv(ENV_TRITON_NETLOC, "triton.example.org:8000")
    monkeypatch.setenv(ENV_TRITON_TIMEOUT, "2.5")
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    engines = resolve_run_settings(**folders, backend="onnxruntime", triton_fallback="local").engines
    assert engines == EngineSettings(
        "onnxruntime", "backend setting 'onnxruntime'", "int8", "triton.example.org:8000", True, 2.5
    )
    assert engines.local.triton_server_netloc is None and engines.local.backend == "onnxruntime"


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_malformed_triton_timeout_stops_the_run_naming_the_variable(value) -> None:
    with pytest.raises(SettingsError, match=f"{ENV_TRITON_TIMEOUT}='{value}'"):
        engine_settings(None, {ENV_TRITON_NETLOC: "triton:8000", ENV_TRITON_TIMEOUT: value})
    assert engine_settings(None, {ENV_TRITON_TIMEOUT: value}).triton_timeout_s == 60.0  # unused without a server


def test_one_reading_of_on_off_values() -> None:
    assert all(truthy(v) for v in ("1", "true", "YES", " on "))
    assert not any(truthy(v) for v in (None, "", "0", "no", "off", "enabled"))


def test_default_work_folder_is_the_environments_then_one_in_temp(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOLOSCAN_WORKDIR", str(tmp_path / "w"))
    assert default_work_dir() == tmp_path / "w"
    monkeypatch.delenv("HOLOSCAN_WORKDIR")
    assert default_work_dir().name == "biomedclip-map-work"
    from app.engine_commands import work_folder

    assert work_folder(None) == default_work_dir() and work_folder(tmp_path) == tmp_path


def test_node_configuration_checks_the_backend_against_the_same_list(tmp_path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"spool": {"path": "spool"}, "processing": {"models": "models", "backend": "tensorflow"}}))
    with pytest.raises(NodeConfigError, match="processing.backend: Value error, unknown inference backend 'tensorflow'"):
        load_node_config(path)
    path.write_text(yaml.safe_dump({"spool": {"path": "spool"}, "processing": {"models": "models", "backend": "ONNXRuntime-INT8"}}))
    assert load_node_config(path).processing.backend == "onnxruntime-int8"


def test_old_engine_command_path_says_where_the_commands_went() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "engines", "quantize", "-m", "models"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "python -m app.engine_commands quantize -m models" in result.stderr
