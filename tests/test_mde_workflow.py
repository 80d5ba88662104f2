"""The MONAI Deploy Express workflow (deploy/mde/workflow.json): MDE's validation rules and the MAP's paths."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from deploy.mde_workflow import main as check_command
from deploy.mde_workflow import map_consistency_problems, validate_workflow
from deploy.stage_map import IMAGE_NAME, REPO_ROOT, install_build_context, package_arguments, render_build_context, stage_map

WORKFLOW = REPO_ROOT / "deploy" / "mde" / "workflow.json"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return json.loads(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def rendered_map(tmp_path_factory):
    """The MAP's build context as holoscan-cli generates it (app.json, Dockerfile) and its HOLOSCAN_* environment."""
    root = tmp_path_factory.mktemp("mde-map")
    staged = stage_map(root / "stage", model_path=None)
    context = render_build_context(staged, root / "context")
    installed = install_build_context(context, root / "image")
    arguments = package_arguments(staged, tag="unused:0")
    uid, gid = int(arguments[arguments.index("--uid") + 1]), int(arguments[arguments.index("--gid") + 1])
    return context, installed, uid, gid


def docker_task(workflow: dict) -> dict:
    (task,) = [t for t in workflow["tasks"] if t["type"] == "docker"]
    return task


def test_the_workflow_passes_mdes_validation_rules(workflow):
    assert validate_workflow(workflow) == []
    assert check_command([str(WORKFLOW)]) == 0


def test_the_docker_task_runs_the_map_with_its_user_command_and_paths(workflow, rendered_map):
    context, installed, uid, gid = rendered_map
    task = docker_task(workflow)
    assert map_consistency_problems(task, app_json=context.app_json, container_env=installed.environment, uid=uid, gid=gid) == []
    assert task["artifacts"]["input"] == [{"name": "env_HOLOSCAN_INPUT_PATH", "value": "{{ context.input.dicom }}"}]
    assert [o["name"] for o in task["artifacts"]["output"]] == ["env_HOLOSCAN_OUTPUT_PATH"]


def test_the_container_image_is_the_tag_the_packager_gives(workflow):
    from holoscan_cli.common.enum_types import Platform
    from holoscan_cli.packager.parameters import PlatformParameters

    version = yaml.safe_load((REPO_ROOT / "app.yaml").read_text())["application"]["version"]
    expected = PlatformParameters(Platform.x86_64, f"{IMAGE_NAME}:{version}", version, 13).tag
    assert docker_task(workflow)["args"]["container_image"] == expected
    build_script = (REPO_ROOT / "deploy" / "build-map.sh").read_text()
    assert IMAGE_NAME in build_script and "app.yaml" in build_script


def test_the_report_is_exported_to_the_declared_workstation(workflow):
    (export,) = [t for t in workflow["tasks"] if t["type"] == "export"]
    assert [d["Name"] for d in export["export_destinations"]] == ["WORKSTATION"]
    assert "WORKSTATION" in workflow["informatics_gateway"]["export_destinations"]
    (source,) = export["artifacts"]["input"]
    assert source["value"] == f"{{{{ context.executions.{docker_task(workflow)['id']}.artifacts.env_HOLOSCAN_OUTPUT_PATH }}}}"
    assert export["id"] in [d["name"] for d in docker_task(workflow)["task_destinations"]]


def _mutated(workflow: dict, change) -> dict:
    document = copy.deepcopy(workflow)
    change(document)
    return document


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda w: w["informatics_gateway"].update(ae_title="BIOMEDCLIPMAP-001"), "at most 15 characters"),
        (lambda w: w["informatics_gateway"].update(ae_title=""), "AeTitle"),
        (lambda w: w["tasks"][1].update(id=w["tasks"][0]["id"]), "duplicate task id"),
        (lambda w: w["tasks"][0].update(id="biomed clip"), "Invalid Characters"),
        (lambda w: w["informatics_gateway"].update(export_destinations=["PACS"]), "must be registered in the informatics_gateway"),
        (lambda w: w["tasks"][0]["args"].pop("container_image"), "'container_image' is required"),
        (lambda w: w["tasks"][0]["args"].pop("temp_storage_container_path"), "'temp_storage_container_path' is required"),
        (lambda w: w["tasks"][0].update(task_destinations=[]), "without any task destinations"),
        (lambda w: w["tasks"][0]["artifacts"]["input"][0].update(name="env_INPUT"), "must be one of the task's env_ arguments"),
        (lambda w: w["tasks"][1].update(type="dicom-export"), "invalid type"),
        (lambda w: w.update(version=""), "Missing Workflow Version"),
    ],
)
def test_each_rule_catches_its_mistake(workflow, change, expected):
    problems = validate_workflow(_mutated(workflow, change))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("user", "root", "runs as 1000:1000"),
        ("env_HOLOSCAN_INPUT_PATH", "/var/monai/input/", "HOLOSCAN_INPUT_PATH"),
        ("env_HOLOSCAN_MODEL_PATH", "/opt/monai/models/", "HOLOSCAN_MODEL_PATH"),
        ("command", "python3 -u /opt/monai/app/app.py", "app.json's command"),
    ],
)
def test_paths_that_differ_from_the_map_are_reported(workflow, rendered_map, key, value, expected):
    context, installed, uid, gid = rendered_map
    task = _mutated(docker_task(workflow), lambda t: t["args"].update({key: value}))
    problems = map_consistency_problems(task, app_json=context.app_json, container_env=installed.environment, uid=uid, gid=gid)
    assert any(expected in p for p in problems), problems


def test_the_check_command_reports_problems_with_exit_status_1(workflow, tmp_path, capsys):
    broken = tmp_path / "workflow.json"
    broken.write_text(json.dumps(_mutated(workflow, lambda w: w["informatics_gateway"].update(ae_title="A" * 16))))
    assert check_command([str(broken)]) == 1
    assert "15 characters" in capsys.readouterr().out
    assert check_command([str(tmp_path / "missing.json")]) == 2
