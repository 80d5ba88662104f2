"""The MAP contract, checked on exactly what the packager puts in the image.

No container engine runs on the build machines, so the test stages the MAP (deploy/stage_map.py,
the same code deploy/build-map.sh uses), renders holoscan-cli's own Docker build context from it
(Dockerfile, app.json, pkg.json; no Docker needed), lays the context out under a temporary root as
the image holds it (/opt/holoscan/app, /opt/holoscan/models, /etc/holoscan, /var/holoscan), and
runs app.json's command (`python3 /opt/holoscan/app`) with the HOLOSCAN_* variables the Dockerfile
sets, as uid 1000, with a read-only input folder and an interpreter that cannot see this
repository. A valid SR coming out proves the package is self-contained.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from app.sample_studies import build_sample_studies
from deploy.stage_map import (
    PRODUCT_PACKAGES,
    REPO_ROOT,
    InstalledMap,
    install_build_context,
    render_build_context,
    stage_map,
    staged_requirements,
)
from tests.dicom_validation import run_dciodvfy
from tests.map_container import (
    APP_UID,
    AppUserPython,
    build_app_user_python,
    can_switch_to_app_user,
    chown_tree,
    make_read_only,
    run_as_app_user,
)

pytestmark = pytest.mark.skipif(can_switch_to_app_user() is not None, reason=str(can_switch_to_app_user()))

STUDIES = ("chest-radiograph", "pydicom-ct")


@dataclass(frozen=True)
class PackagedMap:
    installed: InstalledMap
    python: AppUserPython
    app_json: dict
    pkg_json: dict


@pytest.fixture(scope="module")
def world_readable_tmp():
    """A temporary folder uid 1000 can enter (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="map-contract-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def packaged(world_readable_tmp, tiny_model_dir) -> PackagedMap:
    staged = stage_map(world_readable_tmp / "stage", model_path=tiny_model_dir, cuda=13, allow_untrained=True)
    context = render_build_context(staged, world_readable_tmp / "context")
    installed = install_build_context(context, world_readable_tmp / "image")
    for container_path in installed.owned_by_app_user:
        chown_tree(installed.path(container_path))
    home = installed.path("/home/holoscan")
    home.mkdir(parents=True)
    chown_tree(home)
    python = build_app_user_python(world_readable_tmp / "python")
    return PackagedMap(installed, python, context.app_json, context.pkg_json)


@pytest.fixture(scope="module")
def studies(world_readable_tmp) -> Path:
    root = world_readable_tmp / "samples"
    build_sample_studies(root)
    return root


def container_env(packaged: PackagedMap, **overrides: str) -> dict[str, str]:
    """The Dockerfile's HOLOSCAN_* variables (container paths mapped under the image root), plus overrides."""
    installed = packaged.installed
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(installed.path("/home/holoscan")),
        "LANG": "C.UTF-8",
        "BIOMEDCLIP_MAP_ALLOW_UNTRAINED": "1",
        **packaged.python.env,
    }
    for key, value in {**installed.environment, **overrides}.items():
        env[key] = str(installed.path(value)) if value.startswith("/") else value
    return env


def run_map_command(packaged: PackagedMap, **overrides: str) -> subprocess.CompletedProcess:
    """app.json's command, as uid 1000 in the image's working directory."""
    executable, *arguments = packaged.installed.command
    assert executable == "python3"
    command = [str(packaged.python.executable), *(str(packaged.installed.path(a)) if a.startswith("/") else a for a in arguments)]
    return run_as_app_user(command, cwd=packaged.installed.path(packaged.installed.working_dir), env=container_env(packaged, **overrides))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_image_holds_the_application_folder_and_the_model_where_app_json_says(packaged):
    installed = packaged.installed
    assert installed.command == ["python3", "/opt/holoscan/app"]
    app_dir = installed.path(packaged.app_json["environment"]["HOLOSCAN_APPLICATION"])
    assert (app_dir / "__main__.py").is_file()
    for package in PRODUCT_PACKAGES:
        source = {p.relative_to(REPO_ROOT / package) for p in (REPO_ROOT / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        shipped = {p.relative_to(app_dir / package) for p in (app_dir / package).rglob("*") if p.is_file()}
        assert shipped == source, f"{package}/ in the image differs from the repository"
    requirements = (app_dir / "requirements.txt").read_text()
    assert "holoscan-cu13==" in requirements and "tritonclient[http]==" in requirements
    assert installed.environment["HOLOSCAN_MODEL_PATH"].rstrip("/") == packaged.pkg_json["modelRoot"].rstrip("/")
    model = installed.path(packaged.pkg_json["models"]["biomedclip"])
    assert (model / "manifest.json").is_file() and (model / "onnx" / "onnx.json").is_file(), "the ONNX export ships with the model"
    assert packaged.pkg_json["resources"]["memory"] and packaged.pkg_json["resources"]["cpu"]
    assert packaged.app_json["input"]["formats"] and packaged.app_json["output"]["formats"], "app.yaml's input-formats/output-formats"


def test_the_app_users_python_cannot_import_the_product_from_anywhere_else(packaged):
    probe = run_as_app_user([str(packaged.python.executable), "-c", "import operators.dicom_input.dicom_scan"], cwd=Path("/"), env=container_env(packaged))
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    libraries = run_as_app_user([str(packaged.python.executable), "-c", "import holoscan, onnxruntime, pydicom"], cwd=Path("/"), env=container_env(packaged))
    assert libraries.returncode == 0, libraries.stderr


def test_map_runs_as_uid_1000_on_a_read_only_input_and_writes_valid_srs(packaged, studies):
    installed = packaged.installed
    inputs = installed.path(installed.environment["HOLOSCAN_INPUT_PATH"])
    for name in STUDIES:
        shutil.copytree(studies / name, inputs / name)
    make_read_only(inputs)
    before = digest(inputs)
    result = run_map_command(packaged)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "onnxruntime" in result.stderr and "exporting model" not in result.stderr, "the shipped ONNX export must be used"
    output = installed.path(installed.environment["HOLOSCAN_OUTPUT_PATH"])
    outputs = sorted(output.iterdir())
    assert outputs and all(p.suffix == ".dcm" for p in outputs), "the output folder holds only DICOM"
    reports = [p for p in outputs if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"]
    assert len(reports) == len(STUDIES)
    for written in outputs:
        assert written.stat().st_uid == APP_UID
        assert not run_dciodvfy(written).errors, written.name
    assert digest(inputs) == before, "input files must be untouched"


def _expect_clean_refusal(result: subprocess.CompletedProcess, output: Path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot start" in result.stderr and all(n in result.stderr for n in needles), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not output.exists() or not any(output.iterdir()), "nothing may be written"


def _fresh_output(packaged: PackagedMap, name: str) -> tuple[str, Path]:
    container_path = f"/var/holoscan/{name}"
    folder = packaged.installed.path(container_path)
    folder.mkdir()
    chown_tree(folder)
    return container_path, folder


def test_unwritable_output_folder_is_refused(packaged, studies):
    container_path = "/var/holoscan/locked-output"
    folder = packaged.installed.path(container_path)
    folder.mkdir()
    make_read_only(folder)
    result = run_map_command(packaged, HOLOSCAN_INPUT_PATH="/var/holoscan/input", HOLOSCAN_OUTPUT_PATH=container_path)
    _expect_clean_refusal(result, folder, "HOLOSCAN_OUTPUT_PATH", "not writable")


def test_missing_model_folder_is_refused(packaged):
    container_path, output = _fresh_output(packaged, "output-no-model")
    result = run_map_command(packaged, HOLOSCAN_OUTPUT_PATH=container_path, HOLOSCAN_MODEL_PATH="/opt/holoscan/no-models")
    _expect_clean_refusal(result, output, "HOLOSCAN_MODEL_PATH", "does not exist")


def test_input_path_pointing_at_nothing_is_refused(packaged):
    container_path, output = _fresh_output(packaged, "output-no-input")
    result = run_map_command(packaged, HOLOSCAN_OUTPUT_PATH=container_path, HOLOSCAN_INPUT_PATH="/var/holoscan/no-such-input")
    _expect_clean_refusal(result, output, "HOLOSCAN_INPUT_PATH", "does not exist")


def test_cuda_12_requirements_swap_the_holoscan_wheel_and_leave_out_the_sdk():
    text = (REPO_ROOT / "requirements.txt").read_text()
    cuda12 = staged_requirements(text, 12)
    active = [line for line in cuda12.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("holoscan-cu12==") for line in active)
    assert not any(line.startswith(("holoscan-cu13", "monai-deploy-app-sdk")) for line in active)
    assert staged_requirements(text, 13) == (text if text.endswith("\n") else text + "\n")
