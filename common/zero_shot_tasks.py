"""Zero-shot task definitions: which labels BiomedCLIP scores for a named selection, and how.

A task is configuration, not code: hospital IT can edit `app/config/zero_shot_tasks.yaml` to
change labels, prompt templates or codes without touching Python. Each named selection of the
selection rules maps to the task of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.codes import Code


class TaskConfigError(ValueError):
    """The zero-shot task configuration is malformed; the message names the file and key."""


@dataclass(frozen=True)
class Label:
    """One class of a zero-shot task.

    `prompt` is the phrase put into each template ("pneumonia" → "this is an image of pneumonia");
    `descriptions` are extra full sentences averaged into the class embedding (prompt ensembling).
    """

    name: str
    prompt: str
    code: Code
    descriptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZeroShotTask:
    """A named zero-shot classification: labels, prompt templates and the SR concept it reports under."""

    name: str
    title: str
    finding: Code
    labels: tuple[Label, ...]
    templates: tuple[str, ...]
    normal_label: str | None = None

    def prompts_for(self, label: Label) -> list[str]:
        """Every text that is embedded and averaged for `label`: each template, then each description."""
        return [t.format(label.prompt) for t in self.templates] + list(label.descriptions)

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


@dataclass(frozen=True)
class TaskCatalogue:
    """All zero-shot tasks, keyed by the selection name they serve."""

    tasks: dict[str, ZeroShotTask] = field(default_factory=dict)

    def for_selection(self, selection_name: str) -> ZeroShotTask:
        try:
            return self.tasks[selection_name]
        except KeyError:
            raise TaskConfigError(
                f"no zero-shot task is configured for selection {selection_name!r}; "
                f"add a task of that name to the task configuration (known: {sorted(self.tasks)})"
            ) from None


def _code(raw: object, where: str) -> Code:
    if not isinstance(raw, dict) or not {"scheme", "value", "meaning"} <= raw.keys():
        raise TaskConfigError(f"{where}: expected a mapping with scheme, value and meaning")
    return Code(str(raw["scheme"]), str(raw["value"]), str(raw["meaning"]))


def load_tasks(path: Path) -> TaskCatalogue:
    """Read and validate the zero-shot task file; errors name the file and the offending key."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskConfigError(f"cannot read zero-shot task file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TaskConfigError(f"zero-shot task file {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("tasks"), dict):
        raise TaskConfigError(f"{path}: expected a top-level 'tasks' mapping")
    default_templates = tuple(document.get("templates") or ())
    tasks: dict[str, ZeroShotTask] = {}
    for name, raw in document["tasks"].items():
        where = f"{path}: tasks.{name}"
        if not isinstance(raw, dict):
            raise TaskConfigError(f"{where}: expected a mapping")
        templates = tuple(raw.get("templates") or default_templates)
        if not templates or any("{}" not in t for t in templates):
            raise TaskConfigError(f"{where}.templates: every template must contain '{{}}'")
        raw_labels = raw.get("labels")
        if not isinstance(raw_labels, list) or len(raw_labels) < 2:
            raise TaskConfigError(f"{where}.labels: a zero-shot task needs at least two labels")
        labels = []
        for i, item in enumerate(raw_labels):
            lwhere = f"{where}.labels[{i}]"
            if not isinstance(item, dict) or "name" not in item:
                raise TaskConfigError(f"{lwhere}: expected a mapping with at least 'name' and 'code'")
            labels.append(
                Label(
                    name=str(item["name"]),
                    prompt=str(item.get("prompt", item["name"])),
                    code=_code(item.get("code"), f"{lwhere}.code"),
                    descriptions=tuple(str(d) for d in item.get("descriptions", ())),
                )
            )
        names = [label.name for label in labels]
        if len(set(names)) != len(names):
            raise TaskConfigError(f"{where}.labels: label names must be unique")
        normal = raw.get("normal_label")
        if normal is not None and normal not in names:
            raise TaskConfigError(f"{where}.normal_label: {normal!r} is not one of the labels {names}")
        tasks[name] = ZeroShotTask(
            name=name,
            title=str(raw.get("title", name)),
            finding=_code(raw.get("finding"), f"{where}.finding"),
            labels=tuple(labels),
            templates=templates,
            normal_label=normal,
        )
    return TaskCatalogue(tasks)
