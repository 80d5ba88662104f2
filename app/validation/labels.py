"""The labels file of a validation: which study (or instance) shows which label of which task.

Format (CSV, UTF-8, comma-separated, a header line first):

    StudyInstanceUID,SOPInstanceUID,task,label[,skin_type]

Each row names one case by exactly one of `StudyInstanceUID` (the whole study's result for the
task) or `SOPInstanceUID` (one image's result); either column may be left out of the header if
it is never used. `task` is a task name of the zero-shot task file (e.g. `chest_radiograph`) and
`label` one of that task's label names (case and surrounding spaces do not matter). An optional
`skin_type` column (for burn photographs, e.g. Fitzpatrick I–VI) becomes a subgroup of the
report. Blank lines and lines starting with `#` are skipped.

A problem raises `LabelsFileError` naming the file, the line and the column, so a site can fix
its file; the command then exits with code 2.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from common.zero_shot_tasks import TaskCatalogue

STUDY_COLUMN = "StudyInstanceUID"
INSTANCE_COLUMN = "SOPInstanceUID"
TASK_COLUMN = "task"
LABEL_COLUMN = "label"
SKIN_TYPE_COLUMN = "skin_type"
KNOWN_COLUMNS = (STUDY_COLUMN, INSTANCE_COLUMN, TASK_COLUMN, LABEL_COLUMN, SKIN_TYPE_COLUMN)


class LabelsFileError(ValueError):
    """The labels file cannot be used; the message names the file, line and column to fix."""


class CaseLevel(str, Enum):
    """Whether a case is a whole study or one image (instance) of it."""

    STUDY = "study"
    INSTANCE = "instance"


@dataclass(frozen=True)
class CaseLabel:
    """One labelled case: which study or instance, for which task, its true label (task label order)."""

    line: int
    level: CaseLevel
    uid: str
    task: str
    label: str
    label_index: int
    skin_type: str = ""


@dataclass(frozen=True)
class LabelSet:
    """Every case of a labels file, and the SHA-256 of the file's bytes (the data set's identity)."""

    source: Path
    cases: tuple[CaseLabel, ...]
    sha256: str

    def tasks(self) -> list[str]:
        """The tasks the file labels, in first-seen order."""
        return list(dict.fromkeys(case.task for case in self.cases))


def _where(path: Path, line: int, column: str | None = None) -> str:
    return f"{path}, line {line}" + (f", column {column!r}" if column else "")


def _header(path: Path, header: list[str] | None) -> list[str]:
    """The header's column names, checked: task and label present, a UID column, nothing unknown."""
    if not header:
        raise LabelsFileError(f"{path}, line 1: the labels file is empty; expected a header line such as "
                              f"'{STUDY_COLUMN},{TASK_COLUMN},{LABEL_COLUMN}'")
    names = [name.strip() for name in header]
    for index, name in enumerate(names, start=1):
        if name not in KNOWN_COLUMNS:
            raise LabelsFileError(
                f"{path}, line 1, column {index}: unknown column {name!r} (columns: {', '.join(KNOWN_COLUMNS)})"
            )
    if len(set(names)) != len(names):
        raise LabelsFileError(f"{path}, line 1: a column name appears twice ({', '.join(names)})")
    missing = [name for name in (TASK_COLUMN, LABEL_COLUMN) if name not in names]
    if missing:
        raise LabelsFileError(f"{path}, line 1: the header lacks the column(s) {', '.join(missing)}")
    if STUDY_COLUMN not in names and INSTANCE_COLUMN not in names:
        raise LabelsFileError(f"{path}, line 1: the header needs a {STUDY_COLUMN} or a {INSTANCE_COLUMN} column")
    return names


def _case(path: Path, line: int, row: dict[str, str], tasks: TaskCatalogue) -> CaseLabel:
    """One row as a case; LabelsFileError names the line and column of what is wrong."""
    study, instance = row.get(STUDY_COLUMN, ""), row.get(INSTANCE_COLUMN, "")
    if bool(study) == bool(instance):
        raise LabelsFileError(
            f"{_where(path, line)}: give exactly one of {STUDY_COLUMN} and {INSTANCE_COLUMN}"
            + (" (both are set)" if study else " (both are empty)")
        )
    column = STUDY_COLUMN if study else INSTANCE_COLUMN
    uid = study or instance
    if len(uid) > 64 or not all(part.isdigit() for part in uid.split(".")):
        raise LabelsFileError(f"{_where(path, line, column)}: not a DICOM UID (digits and dots, at most 64 characters)")
    task_name = row.get(TASK_COLUMN, "")
    if task_name not in tasks.tasks:
        raise LabelsFileError(
            f"{_where(path, line, TASK_COLUMN)}: unknown task {task_name!r} (tasks: {', '.join(sorted(tasks.tasks))})"
        )
    task = tasks.tasks[task_name]
    given = row.get(LABEL_COLUMN, "")
    folded = [name.casefold() for name in task.label_names]
    if given.casefold() not in folded:
        raise LabelsFileError(
            f"{_where(path, line, LABEL_COLUMN)}: {given!r} is not a label of task {task_name!r} "
            f"(labels: {', '.join(task.label_names)})"
        )
    index = folded.index(given.casefold())
    return CaseLabel(
        line=line,
        level=CaseLevel.STUDY if study else CaseLevel.INSTANCE,
        uid=uid,
        task=task_name,
        label=task.label_names[index],
        label_index=index,
        skin_type=row.get(SKIN_TYPE_COLUMN, ""),
    )


def read_labels(path: Path, tasks: TaskCatalogue) -> LabelSet:
    """Read and check the labels file against the run's tasks (see the module docstring).

    A case labelled twice for the same task, or a file without any case, is an error too.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabelsFileError(f"{path}: the labels file cannot be read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabelsFileError(f"{path}, line {line}: not UTF-8 text") from exc
    lines = [(number, raw) for number, raw in enumerate(text.splitlines(), start=1)
             if raw.strip() and not raw.lstrip().startswith("#")]
    if not lines:
        raise LabelsFileError(f"{path}, line 1: the labels file is empty")
    rows = list(csv.reader(io.StringIO("\n".join(raw for _, raw in lines))))
    names = _header(path, rows[0])
    cases: list[CaseLabel] = []
    seen: dict[tuple[str, str], int] = {}
    for (line, _), values in zip(lines[1:], rows[1:]):
        if len(values) != len(names):
            raise LabelsFileError(f"{_where(path, line)}: {len(values)} value(s), the header has {len(names)} column(s)")
        case = _case(path, line, {name: value.strip() for name, value in zip(names, values)}, tasks)
        key = (case.uid, case.task)
        if key in seen:
            raise LabelsFileError(
                f"{_where(path, line)}: this {case.level.value} is already labelled for task {case.task!r} on line {seen[key]}"
            )
        seen[key] = line
        cases.append(case)
    if not cases:
        raise LabelsFileError(f"{path}, line {lines[0][0]}: the labels file has a header but no case")
    return LabelSet(source=path, cases=tuple(cases), sha256=hashlib.sha256(data).hexdigest())
