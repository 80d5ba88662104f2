"""ModalityPreprocessing logic: the pixels of a selected series → BiomedCLIP's input tensors.

`prepare_series` decides which instances and frames to analyse from the headers alone (a CT
volume of 500 slices is read for its 3 representative slices only), reads just those pixels,
maps intensities the way each modality is meant to be viewed (`operators.preparation.windowing`), fits each
image onto a square without distortion (`operators.preparation.image_geometry`), and normalises with the
model's mean and standard deviation. It also writes one sentence saying how this was done, which
goes into the report so a reader knows what the model saw.

Dispatch is per instance, on what its pixels are, not on the series header alone: colour
(3 samples: RGB, or YBR already converted to RGB by `read_pixels`) and PALETTE COLOR images are
used as colour whatever the modality; greyscale images are handled by Modality (CT: Hounsfield
windows; MR: robust percentiles; CR/DX/MG and the rest: the header's own VOI LUT or window).

A selected instance that cannot be read or holds unsupported pixel data is left out with one
warning line naming the file and the reason, and the method sentence says so; if no selected
instance can be prepared the series fails with a `PreprocessingError` listing the reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from operators.dicom_input import pixel_data
from operators.preparation.image_geometry import (
    fit_and_pad,
    order_instances,
    order_slices,
    sample_indices,
)
from operators.messages import (
    ImageSource,
    InstanceFile,
    PreparedSeries,
    SelectedSeries,
    SeriesHeader,
)
from operators.dicom_input.pixel_data import PixelDataError
from operators.preparation.preprocessing_settings import (
    CtSettings,
    PreprocessingConfigError,
    PreprocessingSettings,
    WindowPreset,
    load_preprocessing_settings,
)
from operators.preparation.windowing import (
    apply_window,
    describe_header_voi,
    frame_pipeline,
    has_header_voi,
    header_voi,
    hounsfield_units,
    is_inverted,
    percentile_scale,
)

__all__ = [
    "PreprocessingConfigError",
    "PreprocessingError",
    "PreprocessingSettings",
    "ct_windows",
    "load_preprocessing_settings",
    "prepare_series",
]

logger = logging.getLogger("biomedclip_map.preprocessing")

_COLOUR_INTERPRETATIONS = (
    "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT",
)
_GREYSCALE_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2")


class PreprocessingError(RuntimeError):
    """A selected series or instance cannot be turned into model input; the message names the file and why.

    This is a property of the data (too small, blank, unsupported or undecodable pixels), not an
    internal error: the image is left out with its reason, and a study none of whose images can be
    used has nothing to analyse (exit code 0). `short` says why in a few words without naming the
    file, for the report.
    """

    def __init__(self, message: str, *, short: str = "unsupported pixel data"):
        super().__init__(message)
        self.short = short


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _PlannedInstance:
    """An instance chosen from the headers, and how many of its frames to sample over which fraction."""

    instance: InstanceFile
    max_frames: int
    frame_coverage: float


@dataclass(frozen=True)
class _Plan:
    """What to read for one series, and the words for how it was chosen."""

    items: list[_PlannedInstance]
    kind: str  # "volume" (slices are instances), "volume_frames" (slices are frames of one object), "images"
    total_instances: int
    order: str = ""


def _plan(series: SeriesHeader, settings: PreprocessingSettings) -> _Plan:
    """Choose instances (and the frame sampling rule) from headers only, before any pixels are read."""
    instances = list(series.instances)
    modality = series.modality.strip().upper()
    multiframe = settings.multiframe.max_frames
    if modality in settings.volume_modalities and len(instances) == 1 and instances[0].number_of_frames > 1:
        volume = settings.volume
        return _Plan([_PlannedInstance(instances[0], volume.slices, volume.coverage)], "volume_frames", 1)
    if modality in settings.volume_modalities and len(instances) > 1:
        ordered, order = order_slices(instances)
        chosen = sample_indices(len(ordered), settings.volume.slices, settings.volume.coverage)
        return _Plan([_PlannedInstance(ordered[i], multiframe, 1.0) for i in chosen], "volume", len(ordered), order)
    ordered = order_instances(instances)
    chosen = sample_indices(len(ordered), settings.max_instances, 1.0)
    return _Plan([_PlannedInstance(ordered[i], multiframe, 1.0) for i in chosen], "images", len(ordered))


# --------------------------------------------------------------------------- intensities


def ct_windows(ct: CtSettings, body_part: str) -> tuple[list[WindowPreset], str]:
    """The CT window(s) for a series and the words for why they were chosen.

    Three channel windows when configured; else the configured window; else the preset listed for
    the series' Body Part Examined; else the default preset.
    """
    if ct.channel_windows:
        presets = [ct.presets[name] for name in ct.channel_windows]
        described = ", ".join(f"{colour} {p.describe()}" for colour, p in zip(("red", "green", "blue"), presets))
        return presets, f"Hounsfield units shown through three windows as the colour channels: {described}"
    if ct.window:
        preset = ct.presets[ct.window]
        return [preset], f"Hounsfield units windowed with the {preset.describe()}, set in the configuration"
    part = body_part.strip().upper()
    if part in ct.body_part_windows:
        preset = ct.presets[ct.body_part_windows[part]]
        return [preset], f"Hounsfield units windowed with the {preset.describe()}, chosen for Body Part Examined {part}"
    reason = f"Body Part Examined {part} has no listed window" if part else "Body Part Examined is absent"
    preset = ct.presets[ct.default_window]
    return [preset], f"Hounsfield units windowed with the default {preset.describe()} ({reason})"


def _ordinal(value: float) -> str:
    text = f"{value:g}"
    if text.endswith("1") and not text.endswith("11"):
        return text + "st"
    if text.endswith("2") and not text.endswith("12"):
        return text + "nd"
    if text.endswith("3") and not text.endswith("13"):
        return text + "rd"
    return text + "th"


def _greyscale(
    frame: np.ndarray, pipeline: Dataset, modality: str, body_part: str, settings: PreprocessingSettings
) -> tuple[np.ndarray, str]:
    """One greyscale frame → an (H, W, 3) image in [0, 1] and the words for how (ValueError if it cannot)."""
    if modality == "CT":
        values = hounsfield_units(frame, pipeline)
        presets, words = ct_windows(settings.ct, body_part)
        channels = [apply_window(values, preset) for preset in presets]
        if len(channels) == 1:  # one window: the same grey in red, green and blue
            channels = channels * 3
        image = np.stack(channels, axis=-1)
    else:
        try:
            values = apply_modality_lut(frame, pipeline)
        except (ValueError, AttributeError, IndexError) as exc:
            raise ValueError(f"the Modality LUT in the image header cannot be applied: {exc}") from exc
        if modality == "MR":
            low, high = settings.mr.percentiles
            grey = percentile_scale(values, low, high)
            words = f"intensities scaled per image between their {_ordinal(low)} and {_ordinal(high)} percentiles"
        elif settings.projection.use_header_window and has_header_voi(pipeline):
            grey = header_voi(values, pipeline)
            words = f"Modality LUT then {describe_header_voi(pipeline)}"
        else:
            low, high = settings.projection.fallback_percentiles
            grey = percentile_scale(values, low, high)
            if (low, high) == (0.0, 100.0):
                span = "minimum and maximum"
            else:
                span = f"{_ordinal(low)} and {_ordinal(high)} percentiles"
            words = f"Modality LUT then scaled between the image's {span} (no window in the header)"
        image = np.repeat(grey[:, :, np.newaxis], 3, axis=-1)
    if is_inverted(pipeline):
        image = 1.0 - image
        interpretation = str(pipeline.get("PhotometricInterpretation", "")).strip().upper()
        inverted_by = "MONOCHROME1" if interpretation == "MONOCHROME1" else "Presentation LUT Shape INVERSE"
        words += f", {inverted_by} inverted so that high values (bone) are bright"
    return image.astype(np.float32), words


def _colour(frames: np.ndarray, dataset: Dataset, photometric: str) -> tuple[np.ndarray, str]:
    """Colour frames (F, H, W, 3) as read → floats in [0, 1] and the words for how."""
    bits = int(dataset.get("BitsStored", 8) or 8)
    scaled = frames.astype(np.float32) / float(2**bits - 1)
    if photometric == "RGB":
        return np.clip(scaled, 0.0, 1.0), "colour (RGB)"
    return np.clip(scaled, 0.0, 1.0), f"colour ({photometric} decoded to RGB)"


# --------------------------------------------------------------------------- per instance


def _blank(frame: np.ndarray) -> bool:
    """Whether a frame holds one value only (a placeholder, an empty capture): nothing to analyse."""
    return frame.size == 0 or bool(np.all(frame == frame.flat[0]))


@dataclass
class _InstanceImages:
    """The prepared images of one instance: (H, W, 3) floats in [0, 1], with their sources."""

    images: list[np.ndarray] = field(default_factory=list)
    sources: list[ImageSource] = field(default_factory=list)
    intensity: set[str] = field(default_factory=set)
    frames_total: int = 1
    frames_used: list[int] = field(default_factory=list)
    grey: bool = True


def _as_frames(array: np.ndarray, frames_total: int, samples: int) -> np.ndarray:
    """The decoded array as (frames, rows, columns, samples), whatever pydicom returned for one frame."""
    expected = 2 + (samples > 1)
    if frames_total == 1 and array.ndim == expected:
        array = array[np.newaxis]
    if samples == 1 and array.ndim == 3:
        array = array[..., np.newaxis]
    return array


def _prepare_instance(
    planned: _PlannedInstance, dataset: Dataset, array: np.ndarray, modality: str, body_part: str,
    settings: PreprocessingSettings,
) -> _InstanceImages:
    """Turn one instance's decoded pixels into model images; PreprocessingError names the file and why."""
    instance = planned.instance
    path = instance.path
    if "PixelData" not in dataset or array.dtype.kind == "f":
        raise PreprocessingError(
            f"{path}: has floating-point pixel data (Float Pixel Data / Double Float Pixel Data, as in parametric "
            "maps), which the model cannot be given meaningfully; only integer pixel data is supported"
        )
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples not in (1, 3):
        raise PreprocessingError(
            f"{path}: has {samples} samples per pixel (Photometric Interpretation {photometric or 'absent'}); "
            "only greyscale (1 sample) and colour (3 samples) images are supported"
        )
    if samples == 3 and photometric not in _COLOUR_INTERPRETATIONS:
        raise PreprocessingError(
            f"{path}: colour Photometric Interpretation {photometric or 'absent'} is not supported "
            f"(expected one of {', '.join(_COLOUR_INTERPRETATIONS)})"
        )
    if samples == 1 and photometric not in _GREYSCALE_INTERPRETATIONS + ("PALETTE COLOR",):
        raise PreprocessingError(
            f"{path}: Photometric Interpretation {photometric or 'absent'} with one sample per pixel is not supported "
            "(expected MONOCHROME1, MONOCHROME2 or PALETTE COLOR)"
        )
    frames_total = int(dataset.get("NumberOfFrames", 1) or 1)
    frames = _as_frames(array, frames_total, samples)
    if frames.ndim != 4 or frames.shape[0] != frames_total or frames.shape[3] != samples:
        raise PreprocessingError(
            f"{path}: decoded pixel data has shape {array.shape}, which does not match Number of Frames "
            f"{frames_total} and Samples per Pixel {samples}"
        )
    rows, cols = frames.shape[1:3]
    if min(rows, cols) < settings.min_image_side:
        raise PreprocessingError(
            f"{path}: image is {rows}×{cols} pixels, smaller than the {settings.min_image_side} pixels per side "
            "the analysis needs (setting min_image_side)",
            short=f"image of {rows}×{cols} pixels, smaller than {settings.min_image_side} pixels per side",
        )

    chosen = [i for i in sample_indices(frames_total, planned.max_frames, planned.frame_coverage) if not _blank(frames[i])]
    if not chosen:
        raise PreprocessingError(
            f"{path}: {'every sampled frame is' if frames_total > 1 else 'the image is'} blank (all pixels have "
            "the same value)",
            short="blank image (all pixels have the same value)",
        )
    result = _InstanceImages(frames_total=frames_total, frames_used=[i + 1 for i in chosen])
    frame_numbers: list[int | None] = [i + 1 if frames_total > 1 else None for i in chosen]

    if samples == 3 or photometric == "PALETTE COLOR":
        subset = frames[chosen]
        if photometric == "PALETTE COLOR":
            try:
                rgb = apply_color_lut(subset[..., 0], dataset)
            except (ValueError, AttributeError, IndexError) as exc:
                raise PreprocessingError(f"{path}: the palette colour lookup table cannot be applied: {exc}") from exc
            images = rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max)
            result.grey = False
            result.intensity.add("palette colour applied")
        else:
            images, words = _colour(subset, dataset, photometric)
            result.intensity.add(words)
            result.grey = False
        result.images.extend(images[i] for i in range(images.shape[0]))
    else:
        for index in chosen:
            try:
                image, words = _greyscale(
                    frames[index, :, :, 0], frame_pipeline(dataset, index), modality, body_part, settings
                )
            except ValueError as exc:
                raise PreprocessingError(f"{path}: {exc}") from exc
            result.images.append(image)
            result.intensity.add(words)
        result.grey = modality != "CT" or not settings.ct.channel_windows

    result.sources.extend(ImageSource(instance.sop_class_uid, instance.sop_instance_uid, n) for n in frame_numbers)
    return result


# --------------------------------------------------------------------------- the series


def _check_normalisation(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    if mean_arr.shape != (3,) or std_arr.shape != (3,) or not np.all(std_arr > 0):
        raise ValueError(f"the model's mean and std must be three values each, std positive; got {mean!r} and {std!r}")
    return mean_arr, std_arr


def _reasons(shorts: Sequence[str]) -> str:
    """The distinct short reasons, in order of first appearance."""
    return "; ".join(dict.fromkeys(shorts)) or "unsupported pixel data"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _selection_words(plan: _Plan, prepared: list[_InstanceImages], settings: PreprocessingSettings) -> str:
    """Say which slices, instances and frames were analysed."""
    percent = f"{settings.volume.coverage * 100:g}%"
    if plan.kind == "volume_frames":
        item = prepared[0]
        frames = ", ".join(str(n) for n in item.frames_used)
        return (
            f"frames {frames} of the {item.frames_total} frames of one multi-frame volume, "
            f"evenly spaced over the middle {percent}"
        )
    if plan.kind == "volume":
        chosen = len(plan.items)
        if chosen == plan.total_instances:
            words = f"all {_count(chosen, 'slice')} in {plan.order} order"
        else:
            words = (
                f"{chosen} of {plan.total_instances} slices, evenly spaced over the middle {percent} "
                f"of the volume in {plan.order} order"
            )
    else:
        chosen = len(plan.items)
        if chosen == plan.total_instances:
            words = "the single instance" if chosen == 1 else f"all {chosen} instances"
        else:
            words = f"{chosen} of {plan.total_instances} instances, evenly spaced in instance number order"
    multi = [p for p in prepared if p.frames_total > 1]
    if len(multi) == 1:
        frames = ", ".join(str(n) for n in multi[0].frames_used)
        words += f"; frames {frames} of its {multi[0].frames_total} frames"
    elif multi:
        words += f"; up to {settings.multiframe.max_frames} evenly spaced frames of each multi-frame instance"
    return words


def prepare_series(
    selected: SelectedSeries,
    settings: PreprocessingSettings,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    study_ref: str = "",
) -> PreparedSeries:
    """Prepare the model input of one selected series.

    Returns (N, 3, S, S) float32 tensors normalised with the model's `mean`/`std` (S is
    `settings.image_size`, 224 for BiomedCLIP), the source instance (and 1-based frame) of each,
    and a sentence saying how the pixels were prepared. Raises `PreprocessingError` when none of
    the selected instances can be prepared. `study_ref` (the study's salted reference) only
    prefixes the log line of an instance that is left out.
    """
    mean_arr, std_arr = _check_normalisation(mean, std)
    series = selected.series
    modality = series.modality.strip().upper()
    body_part = str(series.header.get("BodyPartExamined", "") or "")
    if not series.instances:
        raise PreprocessingError(
            f"the selected {modality or 'unknown-modality'} series for {selected.selection_name!r} has no instances"
        )
    plan = _plan(series, settings)
    pad = mean_arr if settings.padding == "mean" else np.zeros(3, dtype=np.float32)

    tensors: list[np.ndarray] = []
    sources: list[ImageSource] = []
    prepared: list[_InstanceImages] = []
    intensity: list[str] = []
    failures: list[str] = []
    shorts: list[str] = []
    for planned in plan.items:
        try:
            dataset, array = pixel_data.read_pixels(planned.instance)
            result = _prepare_instance(planned, dataset, array, modality, body_part, settings)
        except (PixelDataError, PreprocessingError) as exc:
            failures.append(str(exc))
            shorts.append(exc.short)
            logger.warning(
                "%sleft out of the %s analysis: %s",
                f"study {study_ref}: " if study_ref else "",
                selected.selection_name,
                exc,
            )
            continue
        prepared.append(result)
        for image in result.images:
            square = fit_and_pad(image, settings.image_size, pad)
            tensors.append(((square - mean_arr) / std_arr).transpose(2, 0, 1))
        sources.extend(result.sources)
        intensity.extend(words for words in sorted(result.intensity) if words not in intensity)

    if not tensors:
        shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        series_words = f"the {modality or 'unknown-modality'} series for {selected.selection_name!r}"
        if len(plan.items) == 1:
            summary = f"the selected instance of {series_words} could not be prepared"
        else:
            summary = f"none of the {len(plan.items)} selected instances of {series_words} could be prepared"
        raise PreprocessingError(f"{summary}: {shown}", short=_reasons(shorts))

    size = settings.image_size
    padding = "the model's mean colour" if settings.padding == "mean" else "black"
    method = (
        f"{modality or 'Unknown modality'} series, {_selection_words(plan, prepared, settings)}: "
        f"{'; '.join(intensity)}; {'grey copied into all three channels, ' if all(p.grey for p in prepared) else ''}"
        f"resized keeping the aspect ratio and padded to {size}×{size} with {padding}."
    )
    if failures:
        verb = "was" if len(failures) == 1 else "were"
        method += f" {_count(len(failures), 'selected instance')} could not be used ({_reasons(shorts)}) and {verb} left out."
    return PreparedSeries(
        selection=selected,
        tensors=np.ascontiguousarray(np.stack(tensors), dtype=np.float32),
        sources=sources,
        method=method,
    )

