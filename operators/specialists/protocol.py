"""What a specialist is, and what the product needs to know to configure and build one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from operators.messages import SpecialistFindings, StudyAnalysis
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer


class Specialist(Protocol):
    """Turns a study's analysed series into findings; None when none of its selections is in the study.

    It may read the analysed images' files again (headers, pixels) but must not change the
    analysis it receives. Errors it raises fail the study (with the message as the reason), so
    they must name the file or series and say why.
    """

    name: str

    def analyse(self, analysis: StudyAnalysis) -> SpecialistFindings | None: ...


@dataclass(frozen=True)
class SpecialistKind:
    """How the product configures and builds one specialist.

    `load_config(path)` reads and validates the specialist's configuration file (raising
    `common.configuration.ConfigurationError` naming the file and key); `selections(config)` names
    the selections it serves, which the start-up check requires to exist in the selection rules;
    `build(config, analyzer)` makes the specialist for a run (it may reuse the analyzer's backend,
    tokenizer and text-embedding cache).
    """

    name: str
    default_config: Path
    load_config: Callable[[Path], Any]
    selections: Callable[[Any], Sequence[str]]
    build: Callable[[Any, ZeroShotAnalyzer], Specialist]
