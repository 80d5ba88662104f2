"""What a report says about the model that produced it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    """What the report says about the model: name, version, weights hash and trust status."""

    name: str
    version: str
    sha256: str
    status: str
    source: str = ""

    @property
    def untrained(self) -> bool:
        return self.status == "untrained"
