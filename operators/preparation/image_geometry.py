"""Image geometry for the model input: slice order, slice/frame sampling, resize and pad.

The model sees square images; medical images rarely are. Images are resized so that their longer
side fits, keeping the aspect ratio (a stretched chest or skull changes what the model sees), and
the rest is padded. Shrinking uses OpenCV's area interpolation (averages the pixels each output
pixel covers, no aliasing); enlarging uses bicubic interpolation, clipped back to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from operators.messages import InstanceFile


def order_slices(instances: Sequence[InstanceFile]) -> tuple[list[InstanceFile], str]:
    """Order the instances of a volume and say how they were ordered.

    By position along the slice normal (`InstanceFile.slice_position`, i.e. Image Position
    (Patient) · normal, filled in by the loader) when every instance has one; else by Instance
    Number when every instance has one; else by file name, so the order is at least repeatable.
    """
    if instances and all(i.slice_position is not None for i in instances):
        return sorted(instances, key=lambda i: (i.slice_position, str(i.path))), "slice position"
    if instances and all(i.instance_number is not None for i in instances):
        return sorted(instances, key=lambda i: (i.instance_number, str(i.path))), "instance number"
    return sorted(instances, key=lambda i: str(i.path)), "file name"


def order_instances(instances: Sequence[InstanceFile]) -> list[InstanceFile]:
    """Order the instances of a series that is not a volume: by Instance Number, else file name."""
    if instances and all(i.instance_number is not None for i in instances):
        return sorted(instances, key=lambda i: (i.instance_number, str(i.path)))
    return sorted(instances, key=lambda i: str(i.path))


def sample_indices(total: int, count: int, coverage: float = 1.0) -> list[int]:
    """Up to `count` indices out of `total`, evenly spaced over the central `coverage` fraction.

    With coverage 0.8 and count 3 of 101 slices this gives 10, 50 and 90: the ends of the middle
    80% and its centre. A single index is the middle one. When `total` is small, indices that
    round to the same item are returned once, so fewer than `count` may come back.
    """
    if total <= 0 or count <= 0:
        return []
    if count == 1:
        return [(total - 1) // 2]
    margin = (1.0 - coverage) / 2.0 * (total - 1)
    positions = np.linspace(margin, (total - 1) - margin, count)
    return sorted({int(math.floor(p + 0.5)) for p in positions})


def fit_and_pad(image: np.ndarray, size: int, pad_value: Sequence[float]) -> np.ndarray:
    """Resize an (H, W, C) float image in [0, 1] so its longer side is `size`, centred on a square.

    The aspect ratio is kept (each side is scaled by the same factor, rounded to whole pixels);
    the uncovered rows or columns are filled with `pad_value` (one value per channel). Returns a
    (size, size, C) float32 array.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (rows, columns, channels) image, got shape {image.shape}")
    rows, cols, channels = image.shape
    scale = size / max(rows, cols)
    new_rows = max(1, min(size, int(round(rows * scale))))
    new_cols = max(1, min(size, int(round(cols * scale))))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    source = np.ascontiguousarray(image, dtype=np.float32)
    resized = cv2.resize(source, (new_cols, new_rows), interpolation=interpolation)
    if resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, np.newaxis]
    np.clip(resized, 0.0, 1.0, out=resized)
    canvas = np.empty((size, size, channels), dtype=np.float32)
    canvas[...] = np.asarray(pad_value, dtype=np.float32).reshape(1, 1, -1)
    top = (size - new_rows) // 2
    left = (size - new_cols) // 2
    canvas[top : top + new_rows, left : left + new_cols] = resized
    return canvas
