"""The product's configuration, read and cross-checked once, before any study is touched.

The files that configure a run: the selection rules (SDK JSON), the zero-shot tasks, preprocessing
and one file per registered specialist (`operators.specialists.registry`; the burn specialist's
`burn.yaml`). Each is checked by its own schema (`common.configuration`); this module adds
the checks that span files, because a selection name joins them:

- every selection of the rules has a zero-shot task of the same name, and every task serves a
  selection (a task whose name matches no selection is almost always a typo of one);
- every selection a specialist is configured for exists in the rules.

A problem raises `ConfigurationError` naming the file and the key; the run then exits with code 2
(`app.run`), and `serve --check-config` lists it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.configuration import ConfigurationError
from common.zero_shot_tasks import TaskCatalogue, load_tasks
from operators.preparation.preprocessing_settings import (
    PreprocessingSettings,
    load_preprocessing_settings,
)
from operators.dicom_input.selection_rules import SelectionRules, load_selection_rules
from operators.specialists.protocol import Specialist, SpecialistKind
from operators.specialists.registry import specialist_kinds
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer


@dataclass(frozen=True)
class ConfiguredSpecialist:
    """A registered specialist kind, the file its configuration came from and that configuration."""

    kind: SpecialistKind
    source: Path
    config: Any


@dataclass(frozen=True)
class ProductConfiguration:
    """Every configuration file of a run, checked on its own and against the others."""

    rules: SelectionRules
    tasks: TaskCatalogue
    preprocessing: PreprocessingSettings
    #: Each registered specialist with its checked configuration, in the order they run.
    specialists: tuple[ConfiguredSpecialist, ...] = ()

    def build_specialists(self, analyzer: ZeroShotAnalyzer) -> list[Specialist]:
        """The run's specialists, built from their configurations (they may reuse the analyzer)."""
        return [entry.kind.build(entry.config, analyzer) for entry in self.specialists]

    def specialist_config(self, name: str) -> Any:
        """The configuration of the specialist `name` (KeyError: no such specialist)."""
        for entry in self.specialists:
            if entry.kind.name == name:
                return entry.config
        raise KeyError(name)


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cross_check(configuration: ProductConfiguration, *, tasks_file: Path) -> None:
    """Raise ConfigurationError when the files do not agree on the selection names."""
    selections = configuration.rules.names
    tasks = sorted(configuration.tasks.tasks)
    problems = []
    for name in tasks:
        if name not in selections:
            problems.append(
                f"{tasks_file}: tasks.{name}: no selection of that name in {configuration.rules.source} "
                f"(selections: {', '.join(selections)}){_did_you_mean(name, selections)}"
            )
    for name in selections:
        if name not in tasks:
            problems.append(
                f"{configuration.rules.source}: selection '{name}' has no zero-shot task in {tasks_file} "
                f"(add tasks.{name}){_did_you_mean(name, tasks)}"
            )
    for entry in configuration.specialists:
        for index, name in enumerate(entry.kind.selections(entry.config)):
            if name not in selections:
                problems.append(
                    f"{entry.source}: selections[{index}]: '{name}' is not a selection of {configuration.rules.source}"
                    f"{_did_you_mean(name, selections)}"
                )
    if problems:
        raise ConfigurationError("the configuration files do not agree:\n  " + "\n  ".join(problems))


def load_product_configuration(
    *, selection_rules: Path, tasks: Path, preprocessing: Path, specialist_files: Mapping[str, Path] | None = None
) -> ProductConfiguration:
    """Read and check every configuration file; ConfigurationError names the file and key.

    `specialist_files` overrides a specialist's configuration file by its name (default: the
    file its kind names); a name no registered specialist has is an error.
    """
    files = dict(specialist_files or {})
    kinds = specialist_kinds()
    unknown = sorted(set(files) - {kind.name for kind in kinds})
    if unknown:
        raise ConfigurationError(
            f"no specialist named {', '.join(unknown)} (specialists: {', '.join(k.name for k in kinds)})"
        )
    specialists = []
    for kind in kinds:
        source = Path(files.get(kind.name, kind.default_config))
        specialists.append(ConfiguredSpecialist(kind, source, kind.load_config(source)))
    configuration = ProductConfiguration(
        rules=load_selection_rules(selection_rules),
        tasks=load_tasks(tasks),
        preprocessing=load_preprocessing_settings(preprocessing),
        specialists=tuple(specialists),
    )
    cross_check(configuration, tasks_file=Path(tasks))
    return configuration
