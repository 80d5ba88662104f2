"""Reading DICOM files the one way the product reads them: undeclared UTF-8 text repaired.

Every place that reads an input file (the header-first scan, the report's image library, the
captures, pixel decoding) goes through `read_dataset`, so the same instance always decodes to the
same text (`operators.dicom_input.dicom_charset` says why that needs care).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset

from operators.dicom_input.dicom_charset import repair_undeclared_utf8


def read_dataset(
    source: Path | str | BinaryIO,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[str] | None = None,
) -> Dataset:
    """`pydicom.dcmread` of a Part 10 file, with undeclared UTF-8 text read as UTF-8.

    Raises what `pydicom.dcmread` raises (InvalidDicomError, OSError, EOFError, ValueError, ...).
    """
    dataset = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags)
    repair_undeclared_utf8(dataset)
    return dataset
