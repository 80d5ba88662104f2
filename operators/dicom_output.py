"""Writing a DICOM dataset into the output folder atomically.

MONAI Deploy Express and PACS gateways pick files up from the output folder as soon as they
appear, so a reader must never see a half-written `.dcm`: the dataset is written under a hidden
temporary name in the same folder (same file system), flushed to disk, and renamed into place
with `os.replace`, which is atomic on POSIX. If anything fails, the temporary file is removed and
the error names the target file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydicom.dataset import Dataset


class OutputWriteError(OSError):
    """The output file could not be written; the message names the file and why."""


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened for fsync
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_dataset_atomically(dataset: Dataset, output_dir: Path, filename: str) -> Path:
    """Write `dataset` as a DICOM file `output_dir/filename`; return the final path.

    `filename` must be a plain file name (no folder part). The folder is created if missing. An
    existing file of the same name is replaced. Raises OutputWriteError naming the file if the
    folder cannot be created or the file cannot be written; no partial file is left behind.
    """
    if not filename or Path(filename).name != filename or filename in {".", ".."}:
        raise OutputWriteError(f"output file name {filename!r} must be a plain file name without a folder")
    directory = Path(output_dir)
    target = directory / filename
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create output folder {directory}: {exc.strerror or exc}") from exc

    temporary = directory / f".{filename}.{secrets.token_hex(6)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            dataset.save_as(handle, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputWriteError(f"cannot write output file {target}: {exc.strerror or exc}") from exc
        raise
    _fsync_directory(directory)
    return target
