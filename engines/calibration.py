"""Preprocessed image sets handed to the engines for INT8 calibration and parity probes.

The engines do not make these images: the application builds them with the product's own
preprocessing (app/probe_set.py: the sample studies, or a folder of DICOM studies or pictures
named with `--calib`) and passes them down, so this layer never reads DICOM or configuration.

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


class CalibrationError(ValueError):
    """A calibration folder cannot be used; the message names it and says what was found."""


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed, normalised images (N, 3, S, S) float32 and where they came from."""

    images: np.ndarray
    source: str
    """Human-readable origin, e.g. 'sample studies' or the folder path."""

    @property
    def digest(self) -> str:
        """sha256 of the image tensors: identifies the calibration data in engine metadata."""
        return hashlib.sha256(np.ascontiguousarray(self.images, dtype=np.float32).tobytes()).hexdigest()

    def __len__(self) -> int:
        return int(self.images.shape[0])
