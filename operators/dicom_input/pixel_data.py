"""Reading pixel data of instances that a selection picked (the header-first scan never does).

Decoding uses pydicom's pixel backends; compressed transfer syntaxes (JPEG baseline/extended/
lossless, JPEG-LS, JPEG 2000, RLE) are decoded by the pylibjpeg plugins pinned in requirements.txt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from operators.dicom_input.dicom_read import read_dataset
from operators.messages import InstanceFile


class PixelDataError(RuntimeError):
    """An instance's pixel data cannot be read or decoded; the message names the file and why."""

    #: Why, in a few words without the file, for the report.
    short = "pixel data that could not be read or decoded"


def decoder_problem(transfer_syntax_uid: str) -> str | None:
    """Say why pixel data in `transfer_syntax_uid` cannot be decoded here, or None if it can."""
    try:
        decoder = get_decoder(transfer_syntax_uid)
    except NotImplementedError:
        name = pydicom.uid.UID(transfer_syntax_uid).name
        return f"no pixel data decoder exists for transfer syntax {name} ({transfer_syntax_uid})"
    if not decoder.is_available:
        name = pydicom.uid.UID(transfer_syntax_uid).name
        return (
            f"no installed pixel data plugin decodes transfer syntax {name} ({transfer_syntax_uid}); "
            + "; ".join(decoder.missing_dependencies)
        )
    return None


def read_pixels(instance: InstanceFile) -> tuple[Dataset, np.ndarray]:
    """Read one instance in full and decode its pixels as pydicom returns them.

    Returns the dataset (for per-instance attributes such as rescale and window values) and the
    array: (rows, cols) or (rows, cols, samples) for one frame, with a leading frame axis for
    multi-frame instances. Colour data in a YBR photometric interpretation is converted to RGB
    (pydicom's default), so callers always receive RGB for colour images.
    """
    path = Path(instance.path)
    try:
        dataset = read_dataset(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise PixelDataError(f"{path}: cannot read the file again for its pixel data: {exc}") from exc
    if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        raise PixelDataError(f"{path}: has no pixel data")
    problem = decoder_problem(dataset.file_meta.TransferSyntaxUID)
    if problem:
        raise PixelDataError(f"{path}: {problem}")
    try:
        array = dataset.pixel_array
    except Exception as exc:  # decoders raise many types (ValueError, RuntimeError, plugin errors)
        detail = " ".join(str(exc).split())  # decoders give several lines (one per plugin tried): keep one
        raise PixelDataError(f"{path}: pixel data could not be decoded ({type(exc).__name__}: {detail})") from exc
    return dataset, np.asarray(array)
