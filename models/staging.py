"""Folders that appear whole or not at all: build beside the destination, then rename into place."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def staging_folder_beside(destination: Path, *, purpose: str = "partial") -> Path:
    """Create and return a new, empty, uniquely named hidden folder next to `destination`.

    It sits on the same filesystem as `destination`, so the finished folder can be moved into place
    with one atomic rename and a crash never leaves a half-written model, export or repository
    under the real name. `purpose` goes into the name (`.NAME.partial-...`, `.NAME.download-...`)
    so an administrator can tell what a leftover from a killed process was. Raises OSError when
    the folder cannot be created.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.{purpose}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging
