"""Checking a MONAI Deploy Express workflow definition before it is registered.

`validate_workflow` applies the static rules of MDE's Workflow Manager validator
(`WorkflowValidator`: name and version present, the informatics gateway's AE title present and
at most 15 characters, at least one task, task ids of letters, digits, '-' and '_' only and
unique, known task types, every task but the first reached by a task destination, no two tasks
sending to the same task, input artifacts with a name and a value on every task but routers,
unique output artifact names, export tasks with distinct destinations that are all declared in
`informatics_gateway.export_destinations`) plus the Docker task plug-in's required arguments
(`server_url`, `entrypoint`, `command`, `container_image`, `temp_storage_container_path`) and
that every docker artifact names one of the task's `env_` arguments. The checks that need a
running gateway (data origins registered as sources) are left to MDE itself.

`map_consistency_problems` checks a docker task against the MAP it runs: the user is the
package's uid:gid, the command is app.json's command, and the `env_HOLOSCAN_*` paths are those
the MAP's Dockerfile and app.json use.

    python deploy/mde_workflow.py deploy/mde/workflow.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping

VALID_TASK_TYPES = ("argo", "aide_clinical_review", "router", "export", "docker", "email", "remote_app_execution", "export_hl7")
TASK_ID = re.compile(r"^[a-zA-Z0-9-_]+$")
AE_TITLE_MAX = 15
DOCKER_REQUIRED_ARGS = ("server_url", "entrypoint", "command", "container_image", "temp_storage_container_path")
ENV_PREFIX = "env_"
MAP_PATH_VARIABLES = ("HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH", "HOLOSCAN_WORKDIR")


def _destinations(task: Mapping) -> list[str]:
    return [d.get("name", "") for d in task.get("task_destinations") or []]


def _export_names(task: Mapping) -> list[str]:
    return [d.get("Name", d.get("name", "")) for d in task.get("export_destinations") or []]


def validate_workflow(workflow: Mapping) -> list[str]:
    """The problems MDE's Workflow Manager would report for `workflow` (empty when it would accept it)."""
    errors: list[str] = []
    if not str(workflow.get("name") or "").strip():
        errors.append("Missing Workflow Name.")
    if not str(workflow.get("version") or "").strip():
        errors.append("Missing Workflow Version.")
    gateway = workflow.get("informatics_gateway")
    if not isinstance(gateway, Mapping):
        errors.append("Missing InformaticsGateway section.")
        gateway = {}
    else:
        ae_title = str(gateway.get("ae_title") or "")
        if not ae_title.strip() or len(ae_title) > AE_TITLE_MAX:
            errors.append(f"AeTitle {ae_title!r} is required in the informatics_gateway section and must be at most {AE_TITLE_MAX} characters.")
    tasks = list(workflow.get("tasks") or [])
    if not tasks:
        errors.append("Workflow does not contain Tasks, please review Workflow.")
        return errors
    ids = [str(t.get("id", "")) for t in tasks]
    errors += [f"TaskId: '{i}' Contains Invalid Characters." for i in ids if not TASK_ID.match(i)]
    errors += [f"Found duplicate task id '{i}'" for i, n in Counter(ids).items() if n > 1]
    declared_exports = list(gateway.get("export_destinations") or [])
    all_destinations: list[str] = []
    for task in tasks:
        errors += _task_problems(task, ids, declared_exports)
        if ids[0] in _destinations(task):
            errors.append(f"Converging Tasks Destinations in task: {task.get('id')} on root task: {ids[0]}")
        all_destinations += _destinations(task)
    for name, count in Counter(all_destinations).items():
        if count > 1:
            errors.append(f"Converging Tasks Destinations on task: {name}")
    unreferenced = [i for i in ids[1:] if i not in all_destinations]
    if unreferenced:
        errors.append(f"Found Task(s) without any task destinations to it: {', '.join(unreferenced)}")
    return errors


def _task_problems(task: Mapping, ids: list[str], declared_exports: list[str]) -> list[str]:
    errors: list[str] = []
    task_id = task.get("id")
    task_type = str(task.get("type", "")).lower()
    if task_type not in VALID_TASK_TYPES:
        return [f"Task: '{task_id}' has an invalid type, please specify: {', '.join(VALID_TASK_TYPES)}"]
    artifacts = task.get("artifacts") or {}
    outputs = [o.get("name") for o in artifacts.get("output") or []]
    if len(outputs) != len(set(outputs)):
        errors.append(f"Task: '{task_id}' has multiple output names with the same value.")
    if task_type != "router":
        inputs = artifacts.get("input") or []
        if not inputs:
            errors.append(f"Task: '{task_id}' must have Input Artifacts specified.")
        if any(not str(i.get("name") or "").strip() for i in inputs):
            errors.append(f"Task: '{task_id}' Input Artifacts must have a Name.")
        if any(not str(i.get("value") or "").strip() for i in inputs):
            errors.append(f"Task: '{task_id}' Input Artifacts must have a Value.")
    for destination in _destinations(task):
        if destination not in ids:
            errors.append(f"Task: '{task_id}' task destination '{destination}' is not a task of this workflow.")
    if task_type in ("export", "remote_app_execution"):
        exports = _export_names(task)
        if not exports:
            errors.append(f"Task: '{task_id}' does not contain a destination.")
        if len(exports) != len(set(exports)):
            errors.append(f"Task: '{task_id}' contains duplicate destinations.")
    exports = _export_names(task)
    if exports and not declared_exports:
        errors.append("InformaticsGateway ExportDestinations destinations can not be null with an Export Task.")
    errors += [
        f"Task: '{task_id}' export_destination: '{name}' must be registered in the informatics_gateway object."
        for name in exports if declared_exports and name not in declared_exports
    ]
    if task_type == "docker":
        errors += _docker_task_problems(task)
    return errors


def _docker_task_problems(task: Mapping) -> list[str]:
    """The Docker plug-in's required arguments, and artifacts that map onto the task's env_ arguments."""
    task_id = task.get("id")
    args = task.get("args") or {}
    errors = [f"Task: '{task_id}' docker argument '{key}' is required." for key in DOCKER_REQUIRED_ARGS if not str(args.get(key) or "").strip()]
    timeout = str(args.get("task_timeout_minutes", "")).strip()
    if timeout and (not timeout.isdigit() or int(timeout) < 1):
        errors.append(f"Task: '{task_id}' task_timeout_minutes must be a whole number of minutes, got {timeout!r}.")
    artifacts = task.get("artifacts") or {}
    for kind in ("input", "output"):
        for artifact in artifacts.get(kind) or []:
            name = str(artifact.get("name") or "")
            if not name.startswith(ENV_PREFIX) or name not in args:
                errors.append(f"Task: '{task_id}' {kind} artifact '{name}' must be one of the task's env_ arguments (the path it is mounted at).")
    return errors


def _normal(path: str) -> str:
    return path.rstrip("/") or "/"


def map_consistency_problems(task: Mapping, *, app_json: Mapping, container_env: Mapping[str, str], uid: int, gid: int) -> list[str]:
    """Differences between a docker task and the MAP: user, command and the HOLOSCAN_* paths.

    `container_env` is the HOLOSCAN_* environment of the image (the Dockerfile's ENV lines);
    `app_json` the MAP's app.json (its command and working directory).
    """
    args = task.get("args") or {}
    errors: list[str] = []
    if args.get("user") != f"{uid}:{gid}":
        errors.append(f"docker user is {args.get('user')!r}; the MAP runs as {uid}:{gid} (its packaged user)")
    command = json.loads(app_json["command"])
    given = [word for word in str(args.get("command", "")).split() if word != "-u"]
    if given != command:
        errors.append(f"docker command {args.get('command')!r} does not run app.json's command {' '.join(command)!r}")
    for variable in MAP_PATH_VARIABLES:
        value = args.get(ENV_PREFIX + variable)
        if value is None:
            errors.append(f"docker argument {ENV_PREFIX + variable} is missing")
        elif _normal(value) != _normal(container_env[variable]):
            errors.append(f"{ENV_PREFIX + variable} is {value!r} but the MAP's {variable} is {container_env[variable]!r}")
    if _normal(args.get(ENV_PREFIX + "HOLOSCAN_WORKDIR", "")) != _normal(str(app_json.get("workingDirectory", ""))):
        errors.append(f"{ENV_PREFIX}HOLOSCAN_WORKDIR differs from app.json's workingDirectory {app_json.get('workingDirectory')!r}")
    return errors


def main(argv: list[str] | None = None) -> int:
    """`python deploy/mde_workflow.py WORKFLOW.json`: print the problems; exit 0 if none, 1 otherwise."""
    paths = argv if argv is not None else sys.argv[1:]
    if len(paths) != 1:
        print("usage: python deploy/mde_workflow.py WORKFLOW.json", file=sys.stderr)
        return 2
    try:
        workflow = json.loads(Path(paths[0]).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{paths[0]}: cannot read the workflow: {exc}", file=sys.stderr)
        return 2
    problems = validate_workflow(workflow)
    for problem in problems:
        print(f"{paths[0]}: {problem}")
    if not problems:
        print(f"{paths[0]}: no problems found by the static checks")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
