"""What a report says about the model that produced it."""

from __future__ import annotations

from dataclasses import dataclass

from common.site_validation import ModelValidation


@dataclass(frozen=True)
class ModelIdentity:
    """What the report says about the model: name, version, weights hash and trust status."""

    name: str
    version: str
    sha256: str
    status: str
    source: str = ""
    validation: ModelValidation | None = None
    """The site validation behind status `validated` (None for other statuses)."""

    @property
    def untrained(self) -> bool:
        return self.status == "untrained"

    @property
    def research(self) -> bool:
        return self.status == "research"
