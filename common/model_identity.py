"""What a report says about the model that produced it."""

from __future__ import annotations

from dataclasses import dataclass

from common.site_validation import ModelValidation


@dataclass(frozen=True)
class AdapterIdentity:
    """A site adapter (linear probes on the frozen embeddings) used with the model."""

    name: str
    version: str
    sha256: str
    """SHA-256 of the adapter file."""
    base_sha256: str
    """Weights SHA-256 of the model it was fitted on."""
    created: str
    training_set_sha256: str
    tasks: tuple[str, ...] = ()
    """The tasks whose zero-shot probabilities its probes replace."""


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
    adapter: AdapterIdentity | None = None
    """The site adapter whose probes replace the zero-shot probabilities of its tasks (None: zero-shot)."""

    @property
    def untrained(self) -> bool:
        return self.status == "untrained"

    @property
    def research(self) -> bool:
        return self.status == "research"
