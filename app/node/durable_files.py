"""How the DICOM node's spool writes: every state change durable before it is acknowledged.

The node answers Success to a C-STORE, or moves a study to its next state, only after the file (or
the rename) is on disk: `common.atomic_files` with `Durability.FILE_AND_FOLDER`. Temporary files end
in `.part`, which the spool's recovery removes after a crash (they were never acknowledged).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common.atomic_files import Durability, fsync_directory, move_durably, write_atomically, write_json_atomically
from common.atomic_files import read_json_file as read_json

__all__ = ["fsync_directory", "move_durably", "read_json", "write_file_durably", "write_json_durably"]

PARTIAL_SUFFIX = ".part"


def write_file_durably(target: Path, chunks: Iterable[bytes | memoryview], *, staging_dir: Path | None = None) -> int:
    """Write `chunks` to `target` so that it exists only complete and on disk; return the byte count."""
    buffers = [memoryview(c) for c in chunks if len(c)]
    write_atomically(
        target, buffers, durability=Durability.FILE_AND_FOLDER, mode=0o640, staging_dir=staging_dir,
        temporary_suffix=PARTIAL_SUFFIX,
    )
    return sum(b.nbytes for b in buffers)


def write_json_durably(target: Path, document: Any) -> None:
    """Write a small JSON document durably (see `write_file_durably`)."""
    write_json_atomically(
        target, document, durability=Durability.FILE_AND_FOLDER, indent=1, sort_keys=True, mode=0o640,
        temporary_suffix=PARTIAL_SUFFIX,
    )
