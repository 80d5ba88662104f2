"""Zero-shot task definitions: which labels BiomedCLIP scores for a named selection, and how.

A task is configuration, not code: hospital IT can edit `app/config/zero_shot_tasks.yaml` to
change labels, prompt templates or codes without touching Python. Each named selection of the
selection rules maps to the task of the same name (checked at start-up by `app.configuration`).
The file is checked by the schema below (`common.configuration`); an error names the file and key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from common.codes import Code
from common.configuration import ConfigModel, ConfigurationError, load_config_file

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class TaskConfigError(ConfigurationError):
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

    @property
    def prompt_set_sha256(self) -> str:
        """SHA-256 of exactly what the task asks the model: each label's name and every text embedded for it.

        Validation reports and operating points are tied to it: any change of a label, a
        template or a description gives another hash.
        """
        canonical = json.dumps(
            {"task": self.name, "labels": [[label.name, *self.prompts_for(label)] for label in self.labels]},
            ensure_ascii=False, separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TaskCatalogue:
    """All zero-shot tasks, keyed by the selection name they serve."""

    tasks: dict[str, ZeroShotTask] = field(default_factory=dict)
    source: Path | None = None

    def for_selection(self, selection_name: str) -> ZeroShotTask:
        try:
            return self.tasks[selection_name]
        except KeyError:
            raise TaskConfigError(
                f"no zero-shot task is configured for selection {selection_name!r}; "
                f"add a task of that name to the task configuration (known: {sorted(self.tasks)})"
            ) from None


class CodeEntry(ConfigModel):
    """A coded concept in a configuration file: `{scheme: SCT, value: "17621005", meaning: Normal}`."""

    scheme: NonEmpty
    value: NonEmpty
    meaning: NonEmpty

    def code(self) -> Code:
        return Code(self.scheme, self.value, self.meaning)


class LabelEntry(ConfigModel):
    name: NonEmpty
    prompt: str | None = None
    code: CodeEntry
    descriptions: list[NonEmpty] = []


class TaskEntry(ConfigModel):
    title: str | None = None
    finding: CodeEntry
    normal_label: str | None = None
    templates: list[str] | None = None
    labels: list[LabelEntry] = Field(min_length=2, description="a zero-shot task needs at least two labels")

    @field_validator("templates")
    @classmethod
    def _templates_have_a_slot(cls, templates: list[str] | None) -> list[str] | None:
        if templates is not None and (not templates or any("{}" not in t for t in templates)):
            raise ValueError("every template must contain '{}'")
        return templates

    @model_validator(mode="after")
    def _labels_are_consistent(self) -> "TaskEntry":
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("labels: label names must be unique")
        if self.normal_label is not None and self.normal_label not in names:
            raise ValueError(f"normal_label: {self.normal_label!r} is not one of the labels {names}")
        return self


class TaskFile(ConfigModel):
    """The zero-shot task file: default templates, and one task per selection name."""

    templates: list[str] = []
    tasks: dict[NonEmpty, TaskEntry]

    @model_validator(mode="after")
    def _every_task_has_templates(self) -> "TaskFile":
        if any("{}" not in t for t in self.templates):
            raise ValueError("templates: every template must contain '{}'")
        missing = [name for name, task in self.tasks.items() if not (task.templates or self.templates)]
        if missing:
            raise ValueError(f"tasks {missing} have no templates and the file gives no default 'templates'")
        return self


def load_tasks(path: Path) -> TaskCatalogue:
    """Read and validate the zero-shot task file; TaskConfigError names the file and the key."""
    document = load_config_file(Path(path), TaskFile, error=TaskConfigError, what="zero-shot task file")
    tasks: dict[str, ZeroShotTask] = {}
    for name, entry in document.tasks.items():
        labels = tuple(
            Label(name=item.name, prompt=item.prompt or item.name, code=item.code.code(), descriptions=tuple(item.descriptions))
            for item in entry.labels
        )
        tasks[name] = ZeroShotTask(
            name=name,
            title=entry.title or name,
            finding=entry.finding.code(),
            labels=labels,
            templates=tuple(entry.templates or document.templates),
            normal_label=entry.normal_label,
        )
    return TaskCatalogue(tasks, source=Path(path))
