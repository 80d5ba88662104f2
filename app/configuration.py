"""The product's configuration, read and cross-checked once, before any study is touched.

Four files configure a run: the selection rules (SDK JSON), the zero-shot tasks, preprocessing and
the burn specialist. Each is checked by its own schema (`common.configuration`); this module adds
the checks that span files, because a selection name joins them:

- every selection of the rules has a zero-shot task of the same name, and every task serves a
  selection (a task whose name matches no selection is almost always a typo of one);
- every selection the burn specialist is configured for exists in the rules.

A problem raises `ConfigurationError` naming the file and the key; the run then exits with code 2
(`app.run`), and `serve --check-config` lists it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from common.configuration import ConfigurationError
from common.zero_shot_tasks import TaskCatalogue, load_tasks
from operators.burn_config import BurnConfig, load_burn_config
from operators.preprocessing_settings import (
    PreprocessingSettings,
    load_preprocessing_settings,
)
from operators.selection_rules import SelectionRules, load_selection_rules


@dataclass(frozen=True)
class ProductConfiguration:
    """Every configuration file of a run, checked on its own and against the others."""

    rules: SelectionRules
    tasks: TaskCatalogue
    preprocessing: PreprocessingSettings
    burn: BurnConfig


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cross_check(configuration: ProductConfiguration, *, tasks_file: Path, burn_file: Path) -> None:
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
    for index, name in enumerate(configuration.burn.selections):
        if name not in selections:
            problems.append(
                f"{burn_file}: selections[{index}]: '{name}' is not a selection of {configuration.rules.source}"
                f"{_did_you_mean(name, selections)}"
            )
    if problems:
        raise ConfigurationError("the configuration files do not agree:\n  " + "\n  ".join(problems))


def load_product_configuration(
    *, selection_rules: Path, tasks: Path, preprocessing: Path, burn: Path
) -> ProductConfiguration:
    """Read and check the four configuration files; ConfigurationError names the file and key."""
    configuration = ProductConfiguration(
        rules=load_selection_rules(selection_rules),
        tasks=load_tasks(tasks),
        preprocessing=load_preprocessing_settings(preprocessing),
        burn=load_burn_config(burn),
    )
    cross_check(configuration, tasks_file=Path(tasks), burn_file=Path(burn))
    return configuration
