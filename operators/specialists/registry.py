"""The specialists this product ships: one line per specialist, in the order they run."""

from __future__ import annotations

from operators.specialists.burn.specialist import BURN
from operators.specialists.protocol import SpecialistKind

#: Every specialist kind, in the order they run on a study. Add a specialist with one line here.
SPECIALISTS: list[SpecialistKind] = [
    BURN,
]


def specialist_kinds() -> tuple[SpecialistKind, ...]:
    """The registered specialist kinds (a snapshot, so a run sees one consistent list)."""
    return tuple(SPECIALISTS)
