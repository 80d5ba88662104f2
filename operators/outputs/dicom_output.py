"""Writing a DICOM dataset into the output folder atomically.

MONAI Deploy Express and PACS gateways pick files up from the output folder as soon as they
appear, so a reader must never see a half-written `.dcm`: `common.atomic_files` writes it under a
hidden temporary name, flushes it and its folder (`Durability.FILE_AND_FOLDER`: others act on it)
and renames it into place. If anything fails, the temporary file is removed and the error names
the target file.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from common.atomic_files import Durability, write_atomically


class OutputWriteError(OSError):
    """The output file could not be written; the message names the file and why."""


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

    try:
        write_atomically(
            target,
            lambda handle: dataset.save_as(handle, enforce_file_format=True),
            durability=Durability.FILE_AND_FOLDER,
            mode=0o666,
        )
    except OSError as exc:
        raise OutputWriteError(f"cannot write output file {target}: {exc.strerror or exc}") from exc
    return target
