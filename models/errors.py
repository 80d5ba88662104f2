"""Exceptions raised when a model directory cannot be used.

Every message names the folder, file or setting involved, so the PACS administrator who installed
the model can act on it without reading code.
"""

from __future__ import annotations

from pathlib import Path

ALLOW_UNTRAINED_ENV = "BIOMEDCLIP_MAP_ALLOW_UNTRAINED"
"""Environment variable that, set to 1, lets the product run a model whose status is `untrained`."""

ALLOW_UNTRAINED_FLAG = "--allow-untrained"
"""Command-line flag with the same effect as `BIOMEDCLIP_MAP_ALLOW_UNTRAINED=1`."""


class ModelDirectoryError(RuntimeError):
    """The model folder is missing, unreadable, incomplete, or its weights do not match its manifest."""


class ManifestError(ModelDirectoryError):
    """A model's `manifest.json` is missing, not JSON, or lacks/misstates a required field."""


class UntrainedModelRefused(ModelDirectoryError):
    """The model's manifest says `untrained` and running untrained models was not explicitly allowed."""


class ModelBuildError(RuntimeError):
    """Building or converting a model directory failed; the message names the destination or source."""


class ModelFetchError(ModelBuildError):
    """The hub or mirror could not deliver the model: the message names the endpoint, repository,
    revision and what to change (HF_ENDPOINT, HF_TOKEN, --revision, the connection)."""


class WeightsHashMismatch(ModelBuildError):
    """Upstream weights whose sha256 is not the one the hub publishes for them; `path` is that file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = Path(path)
