"""Greyscale intensity handling: stored values → display values in [0, 1], per modality.

CT is windowed in Hounsfield units with named presets; MR is scaled between robust percentiles
(its signal has no absolute scale); CR/DX/MG and other greyscale images go through the DICOM
greyscale pipeline as the modality intended (Modality LUT, then the VOI LUT or window from the
header) with pydicom's implementations. MONOCHROME1 images are inverted at the end, so a high
value is always bright and bone is white, as a radiologist sees it.

The functions here know nothing about files; they raise `ValueError` with the reason, and the
caller adds which file it was.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from operators.preparation.preprocessing_settings import WindowPreset

# Attributes of the greyscale pipeline, as they appear at the top level of a (classic) image.
_PIPELINE_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "WindowCenterWidthExplanation",
    "VOILUTSequence",
    "PresentationLUTShape",
)

# Where enhanced multi-frame objects keep the same attributes, per frame or shared by all frames.
_FUNCTIONAL_GROUP_MACROS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation"),
}


def frame_pipeline(dataset: Dataset, frame_index: int) -> Dataset:
    """The greyscale pipeline attributes that apply to one frame (0-based) of `dataset`.

    pydicom's LUT functions read the top level of a dataset only; enhanced multi-frame objects
    (Enhanced CT/MR, many modern scanners) keep rescale and window in the Shared and Per-frame
    Functional Groups. This returns a new dataset holding the top-level values overridden by the
    shared group, then by the frame's own group, so the LUT functions see what applies to that
    frame. `dataset` itself is not changed.
    """
    view = Dataset()
    for keyword in _PIPELINE_KEYWORDS:
        if keyword in dataset:
            _copy_element(dataset, view, keyword)
    groups: list[Dataset] = []
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame_index < len(per_frame):
        groups.append(per_frame[frame_index])
    for group in groups:
        for macro, keywords in _FUNCTIONAL_GROUP_MACROS.items():
            items = group.get(macro)
            if not items:
                continue
            for keyword in keywords:
                if keyword in items[0]:
                    _copy_element(items[0], view, keyword)
    if hasattr(dataset, "file_meta"):
        view.file_meta = dataset.file_meta
    return view


def _copy_element(source: Dataset, target: Dataset, keyword: str) -> None:
    element = source[keyword]
    target[element.tag] = DataElement(element.tag, element.VR, element.value)


def is_inverted(pipeline: Dataset) -> bool:
    """Whether low values are displayed bright: MONOCHROME1, or a Presentation LUT Shape INVERSE.

    For MONOCHROME1 the IODs require Presentation LUT Shape INVERSE, which *is* that one inversion,
    so the two are not applied twice.
    """
    photometric = str(pipeline.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(pipeline.get("PresentationLUTShape", "")).strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def hounsfield_units(stored: np.ndarray, pipeline: Dataset) -> np.ndarray:
    """CT stored values → Hounsfield units via the Modality LUT (Rescale Slope and Intercept).

    A CT image without rescale attributes has stored values that already are Hounsfield units.
    """
    try:
        return np.asarray(apply_modality_lut(stored, pipeline), dtype=np.float64)
    except (ValueError, AttributeError, IndexError) as exc:
        raise ValueError(f"the rescale / Modality LUT in the image header cannot be applied: {exc}") from exc


def apply_window(values: np.ndarray, preset: WindowPreset) -> np.ndarray:
    """Map `values` linearly so the window's lower limit is 0 and its upper limit 1, clipped."""
    scaled = (np.asarray(values, dtype=np.float64) - preset.lower) / preset.width
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def percentile_scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the `low` percentile of `values` to 0 and the `high` percentile to 1, clipped.

    An image whose percentiles coincide (a blank image) becomes all 0: it has no contrast to show.
    """
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def has_header_voi(pipeline: Dataset) -> bool:
    """Whether the image carries its own VOI LUT Sequence or Window Center/Width."""
    has_lut = _has_voi_lut_sequence(pipeline)
    has_window = pipeline.get("WindowCenter") not in (None, "") and pipeline.get("WindowWidth") not in (None, "")
    return has_lut or has_window


def describe_header_voi(pipeline: Dataset) -> str:
    """Say which header VOI transform `header_voi` applies (the VOI LUT is preferred, as pydicom does)."""
    if _has_voi_lut_sequence(pipeline):
        return "the VOI LUT from the image header"
    center, width = _first(pipeline.WindowCenter), _first(pipeline.WindowWidth)
    function = str(pipeline.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    shape = "" if function == "LINEAR" else f", {function.lower()}"
    return f"the window from the image header (W{width:g}/L{center:g}{shape})"


def _has_voi_lut_sequence(pipeline: Dataset) -> bool:
    sequence = pipeline.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def _first(value: object) -> float:
    """The first value of a possibly multi-valued DS element (the default view), as a float."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def header_voi(modality_values: np.ndarray, pipeline: Dataset) -> np.ndarray:
    """Apply the header's VOI LUT or window (pydicom's `apply_voi_lut`) and scale its output to [0, 1].

    The output range of the VOI transform is not fixed (it depends on bits stored, rescale and
    the LUT's entries), so it is measured by passing the transform's extreme inputs through the
    same function: the whole LUT for a VOI LUT Sequence, values far outside the window otherwise.
    """
    if _has_voi_lut_sequence(pipeline) and np.all(np.mod(modality_values, 1) == 0):
        # A LUT is indexed by whole numbers; rescaled values that are whole are passed as such.
        modality_values = np.asarray(modality_values).astype(np.int64)
    try:
        out = np.asarray(apply_voi_lut(modality_values, pipeline, index=0), dtype=np.float64)
        lo, hi = _voi_output_range(pipeline)
    except (ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        raise ValueError(f"the VOI LUT / window in the image header cannot be applied: {exc}") from exc
    if hi <= lo:
        raise ValueError(f"the VOI LUT / window in the image header has an empty output range ({lo:g} to {hi:g})")
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _voi_output_range(pipeline: Dataset) -> tuple[float, float]:
    if _has_voi_lut_sequence(pipeline):
        entries, first_mapped, _ = (int(v) for v in pipeline.VOILUTSequence[0].LUTDescriptor)
        probe = np.arange(first_mapped, first_mapped + (entries or 2**16))
    else:
        probe = np.array([-1e15, 1e15])
    out = np.asarray(apply_voi_lut(probe, pipeline, index=0), dtype=np.float64)
    return float(out.min()), float(out.max())
