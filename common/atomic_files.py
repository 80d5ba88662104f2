"""Writing a file so that no reader ever sees it half-written, with an explicit durability choice.

Every file the product writes goes through `write_atomically`: the bytes go to a hidden temporary
file in the same folder (same file system), which is renamed onto the target with `os.replace`
(atomic on POSIX), and removed if anything fails, so the target is either the old file, the new
one, or absent. What a power cut may lose is the caller's choice, stated at every call site:

- `Durability.REPLACE_ONLY`: nothing is flushed. For caches and previews that are rebuilt when
  missing (text embeddings, ONNX exports, PNG previews).
- `Durability.FILE`: the data is flushed (`fdatasync`) before the rename, so a file that exists
  after a crash is complete. For things worth keeping but whose rename may be lost (manifests,
  engine sidecars, gate records).
- `Durability.FILE_AND_FOLDER`: the folder is flushed too after the rename, so the file itself
  survives a crash once the call returns. For results handed to others (DICOM outputs picked up by
  MONAI Deploy Express, the DICOM node's spool and outbox, which acknowledge on it).
"""

from __future__ import annotations

import enum
import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO


class Durability(enum.Enum):
    """What survives a power cut once `write_atomically` has returned (see the module docstring)."""

    REPLACE_ONLY = "replace-only"
    FILE = "file"
    FILE_AND_FOLDER = "file-and-folder"


def fsync_directory(directory: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows, where directories cannot be opened for fsync
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_buffers(descriptor: int, buffers: list[memoryview]) -> int:
    """Write every buffer to the descriptor (one writev, then plain writes for what it left)."""
    buffers = [b for b in buffers if b.nbytes]
    total = sum(b.nbytes for b in buffers)
    written = os.writev(descriptor, buffers) if buffers else 0
    if written < total:  # writev may write less than asked (large buffers, signals)
        rest = memoryview(b"".join(bytes(b) for b in buffers))[written:]
        while rest:
            count = os.write(descriptor, rest)
            rest = rest[count:]
            written += count
    return written


def write_atomically(
    target: Path,
    content: bytes | memoryview | Iterable[bytes | memoryview] | Callable[[BinaryIO], object],
    *,
    durability: Durability,
    mode: int = 0o644,
    staging_dir: Path | None = None,
    temporary_suffix: str = ".tmp",
) -> Path:
    """Write `content` to `target` atomically with the given durability; return `target`.

    `content` is bytes, an iterable of byte chunks, or a function that writes into the open binary
    file. The folder is created if missing. `staging_dir` (same file system) holds the temporary
    file instead of the target's folder; `temporary_suffix` ends its name (the DICOM node's
    recovery removes its own `.part` files). Raises what the writing raises (OSError, ...), after
    removing the temporary file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(staging_dir) if staging_dir is not None else target.parent
    temporary = staging / f".{target.name}.{secrets.token_hex(6)}{temporary_suffix}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if callable(content):
            with os.fdopen(descriptor, "wb") as handle:
                content(handle)
                handle.flush()
                if durability is not Durability.REPLACE_ONLY:
                    os.fdatasync(handle.fileno())
        else:
            try:
                chunks = [content] if isinstance(content, (bytes, bytearray, memoryview)) else list(content)
                _write_buffers(descriptor, [memoryview(c) for c in chunks])
                if durability is not Durability.REPLACE_ONLY:
                    os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durability is Durability.FILE_AND_FOLDER:
        fsync_directory(target.parent)
    return target


def write_text_atomically(
    target: Path, text: str, *, durability: Durability, mode: int = 0o644, temporary_suffix: str = ".tmp"
) -> Path:
    """`write_atomically` of UTF-8 text."""
    return write_atomically(target, text.encode("utf-8"), durability=durability, mode=mode, temporary_suffix=temporary_suffix)


def write_json_atomically(
    target: Path,
    document: Any,
    *,
    durability: Durability,
    indent: int | None = 2,
    sort_keys: bool = False,
    mode: int = 0o644,
    temporary_suffix: str = ".tmp",
) -> Path:
    """`write_atomically` of a JSON document (UTF-8, with a final newline)."""
    text = json.dumps(document, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return write_text_atomically(target, text, durability=durability, mode=mode, temporary_suffix=temporary_suffix)


def read_json_file(path: Path, default: Any = None) -> Any:
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
