"""File operations that survive `kill -9` and power loss: write, sync, rename, sync the folder.

The node's whole on-disk state machine (see `app.node.spool`) is built from two primitives:

- a file is written under a temporary name, its data flushed to the device (`fdatasync`), then
  renamed to its final name, and the folder holding it flushed, so the name appears only once the
  whole content is on disk;
- a folder moves from one state folder to another with one `rename` (atomic on POSIX), and both
  parent folders are flushed so the move itself is on disk.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fsync_directory(directory: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_durably(target: Path, chunks: Iterable[bytes | memoryview], *, staging_dir: Path | None = None) -> int:
    """Write `chunks` to `target` so that it exists only complete and on disk; return the byte count.

    The data goes to a temporary file (in `staging_dir`, which must be on the same file system, or
    next to the target), is flushed with `fdatasync`, renamed onto `target` (replacing it), and the
    target's folder is flushed. On any error the temporary file is removed and the error re-raised.
    """
    target = Path(target)
    staging = Path(staging_dir) if staging_dir is not None else target.parent
    temporary = staging / f".{target.name}.{secrets.token_hex(4)}.part"
    written = 0
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        try:
            buffers = [c for c in chunks if len(c)]
            # os.writev may write less than asked (large buffers, signals): finish with plain writes.
            total = sum(len(b) for b in buffers)
            written = os.writev(descriptor, buffers) if buffers else 0
            if written < total:
                rest = memoryview(b"".join(bytes(b) for b in buffers))[written:]
                while rest:
                    count = os.write(descriptor, rest)
                    rest = rest[count:]
                    written += count
            os.fdatasync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return written


def write_json_durably(target: Path, document: Any) -> None:
    """Write a small JSON document durably (see `write_file_durably`)."""
    data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
    write_file_durably(target, [data])


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON document, or `default` when the file does not exist."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def move_durably(source: Path, target: Path) -> None:
    """Rename `source` to `target` (same file system) and flush both parent folders."""
    os.replace(source, target)
    fsync_directory(Path(target).parent)
    if Path(source).parent != Path(target).parent:
        fsync_directory(Path(source).parent)
