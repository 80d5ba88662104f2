"""Reading DICOM files the one way the product reads them: undeclared UTF-8 text repaired.

Every place that reads an input file (the header-first scan, the report's image library, the
captures, pixel decoding) goes through `read_dataset`, so the same instance always decodes to the
same text (`operators.dicom_input.dicom_charset` says why that needs care).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from operators.dicom_input.dicom_charset import repair_undeclared_utf8

if TYPE_CHECKING:
    from operators.messages import ImageSource, StudyAnalysis


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


def analysed_instance_header(
    analysis: StudyAnalysis, source: ImageSource, error: type[Exception], made: str
) -> Dataset:
    """The header (no pixels) of the analysed instance `source` of the study, read again.

    `made` says what was made from it ("a capture", "a segmentation"), for the message of `error`,
    which is raised when the file cannot be read again or `source` is not an analysed instance.
    """
    ref = analysis.study.ref
    for series in analysis.series:
        for instance in series.selection.series.instances:
            if instance.sop_instance_uid == source.sop_instance_uid:
                try:
                    return read_dataset(instance.path, stop_before_pixels=True)
                except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                    raise error(f"study {ref}: cannot read {instance.path} again: {exc}") from exc
    raise error(f"study {ref}: {made} was made from an image that is not one of the study's analysed instances")

