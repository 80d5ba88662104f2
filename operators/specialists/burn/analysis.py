"""The burn specialist's step: burn findings for every series of a burn-photograph selection.

For each analysed photograph of such a series:

1. depth: zero-shot probabilities of the configured depth classes from the image embedding the
   inference step already computed (`operators.specialists.burn.depth`);
2. wound map: the photograph's pixels are read again (`operators.dicom_input.pixel_data.read_pixels`),
   reduced at once to a display copy (long side ≤ `display_max_side`) so the full-size array is
   released, and colour-analysed on a copy of long side ≤ `analysis_max_side`
   (`operators.specialists.burn.wound_colour`);
3. region and %TBSA from the header (`operators.specialists.burn.tbsa`), flags (`operators.specialists.burn.flags`);
4. the overlay image for the Secondary Capture (`operators.specialists.burn.overlay`); the wound
   map's labels are kept for the photograph's DICOM Segmentation (`operators.specialists.burn.report`).

Series of other selections are not burn photographs and get no burn findings. A photograph that cannot be colour-analysed
(greyscale, too small, too large to decode, no skin in view) still gets its depth, flags and a
capture, with the reason in place of the wound map.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut

from engines.base import InferenceBackend
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from operators.dicom_input import pixel_data
from operators.specialists.burn.config import BurnConfig, ColourSettings
from operators.specialists.burn.depth import depth_class_embeddings, depth_method, depth_probabilities
from operators.specialists.burn.flags import burn_flags
from operators.specialists.burn.overlay import render_burn_capture
from operators.captures.capture_layout import fit_for_display
from common.model_identity import ModelIdentity
from operators.messages import ImageFindings, InstanceFile, SeriesAnalysis, StudyAnalysis
from operators.specialists.burn.findings import BurnFindings, BurnImageFindings, WoundArea, WoundMapSummary
from operators.specialists.burn.report import AnalysedBurnSeries
from operators.specialists.burn.tbsa import estimate_tbsa, imaged_region
from operators.specialists.burn.wound_colour import WoundMap, downscale, map_wounds

logger = logging.getLogger("biomedclip_map.burn_specialist")


class BurnAnalysisError(RuntimeError):
    """A burn photograph cannot be analysed at all; the message names the file and why."""


def _to_uint8(array: np.ndarray, bits_stored: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(2 ** max(1, min(bits_stored, 16)) - 1)
    return np.clip(np.rint(array.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


def _grey_for_display(grey: np.ndarray) -> np.ndarray:
    """A greyscale frame stretched between its 1st and 99th percentiles, as RGB uint8."""
    values = grey.astype(np.float32)
    low, high = np.percentile(values, [1, 99])
    scaled = np.clip((values - low) / max(float(high - low), 1e-6), 0, 1) * 255.0
    return np.repeat(np.rint(scaled).astype(np.uint8)[..., None], 3, axis=-1)


def read_photograph(instance: InstanceFile, frame: int | None, colour: ColourSettings) -> tuple[Dataset, np.ndarray, str]:
    """The photograph's header, a display copy (RGB uint8, long side ≤ display_max_side) and, if it
    cannot be colour-analysed, why (else "").

    The header is read first, so a photograph above `max_megapixels` is never decoded (its display
    copy is then a plain grey panel). Raises BurnAnalysisError naming the file if it cannot be read.
    """
    path = instance.path
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise BurnAnalysisError(f"{path}: cannot read the photograph again: {exc}") from exc
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    megapixels = rows * columns / 1e6
    if megapixels > colour.max_megapixels:
        grey_panel = np.full((colour.min_side * 8, colour.min_side * 8, 3), 96, np.uint8)
        return header, grey_panel, (
            f"the photograph is {columns} x {rows} pixels ({megapixels:.0f} megapixels), more than the "
            f"{colour.max_megapixels:g} megapixels the colour analysis decodes (setting colour.max_megapixels)"
        )
    try:
        dataset, array = pixel_data.read_pixels(instance)
    except pixel_data.PixelDataError as exc:
        raise BurnAnalysisError(str(exc)) from exc
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if frames > 1:
        array = array[(frame or 1) - 1]
    bits = int(dataset.get("BitsStored", 8) or 8)
    reason = ""
    if samples == 3 and array.ndim == 3:
        rgb = _to_uint8(array, bits)
    elif photometric == "PALETTE COLOR":
        lut = apply_color_lut(array, dataset)
        rgb = _to_uint8(lut, 8 * lut.dtype.itemsize)
    elif array.ndim == 2:
        rgb = _grey_for_display(array)
        if photometric == "MONOCHROME1":
            rgb = 255 - rgb
        reason = (
            f"the photograph is greyscale ({photometric or 'no Photometric Interpretation'}); "
            "the wound map needs a colour photograph"
        )
    else:
        raise BurnAnalysisError(f"{path}: pixel data of shape {array.shape} is not an image this analysis reads")
    if "PixelData" in dataset:
        del dataset.PixelData  # the header stays; the encoded pixels are released
    display = np.ascontiguousarray(downscale(rgb, colour.display_max_side))
    del rgb, array
    if not reason and min(rows, columns) < colour.min_side:
        reason = (
            f"the photograph is too small ({columns} x {rows} pixels; the wound map needs at least "
            f"{colour.min_side} pixels per side)"
        )
    return dataset, display, reason


def summarise_wound_map(wound: WoundMap, colour: ColourSettings) -> WoundMapSummary:
    """What the report says about a wound map (percentages of the visible skin)."""
    height, width = wound.labels.shape
    size = (width, height)
    if wound.decline:
        return WoundMapSummary(measured=False, note=wound.decline, analysed_size=size)
    if not wound.skin_found:
        return WoundMapSummary(
            measured=False,
            note=f"no skin detected (less than {colour.min_skin_fraction * 100:g} % of the image has skin colour)",
            analysed_size=size,
        )
    classes = tuple(
        WoundArea(concept=cls.code, name=cls.name, percent_of_skin=float(wound.class_percent_of_skin(i)))
        for i, cls in enumerate(colour.classes)
    )
    return WoundMapSummary(
        measured=True,
        note=(
            f"per-pixel colour classification in CIELAB relative to the patient's own skin colour, on a "
            f"{width} x {height} copy of the photograph (long side at most {colour.analysis_max_side} pixels); "
            f"areas are percentages of the visible skin (skin and wound pixels); mode filter {wound.mode_filter_px} px"
        ),
        skin_percent_of_image=100.0 * wound.skin_fraction_of_image,
        wound_percent_of_skin=wound.wound_percent_of_skin,
        classes=classes,
        analysed_size=size,
    )


def _instance_of(series: SeriesAnalysis, image: ImageFindings) -> InstanceFile:
    for instance in series.selection.series.instances:
        if instance.sop_instance_uid == image.source.sop_instance_uid:
            return instance
    raise BurnAnalysisError("an analysed photograph is not one of the instances of its series")


def analyse_photograph(
    series: SeriesAnalysis,
    image: ImageFindings,
    probabilities: np.ndarray,
    config: BurnConfig,
    model: ModelIdentity,
) -> BurnImageFindings:
    """Wound map, region, %TBSA, flags and overlay of one photograph whose depth probabilities are known."""
    colour = config.colour
    header, display, reason = read_photograph(_instance_of(series, image), image.source.frame, colour)
    labels = None
    if reason:
        summary = WoundMapSummary(measured=False, note=reason)
    else:
        wound = map_wounds(display, colour)
        summary = summarise_wound_map(wound, colour)
        labels = wound.labels if wound.measured else None
    region = imaged_region(header, config.tbsa) or imaged_region(series.selection.series.header, config.tbsa)
    tbsa = estimate_tbsa(
        region, summary.wound_percent_of_skin, header, config.tbsa, "" if summary.measured else summary.note
    )
    flags = burn_flags(probabilities, config.depth, config.flags, region, tbsa)
    findings = BurnImageFindings(
        source=image.source,
        depth_probabilities=np.asarray(probabilities, dtype=np.float32),
        wound_map=summary,
        region=region,
        tbsa=tbsa,
        flags=flags,
    )
    shown = fit_for_display(display, colour.display_max_side)
    findings.overlay = render_burn_capture(shown, labels, findings, config.depth.task, colour, model)
    findings.wound_labels = labels  # carried out as the photograph's Segmentation (report.py)
    return findings


def burn_findings(
    analysis: StudyAnalysis,
    *,
    backend: InferenceBackend,
    tokenizer: TextTokenizer,
    cache: TextEmbeddingCache,
    config: BurnConfig,
) -> list[AnalysedBurnSeries]:
    """The burn findings of every analysed series of a burn selection of the study (others: none)."""
    task = config.depth.task
    analysed = []
    for series_index, series in enumerate(analysis.series, start=1):
        if series.selection.selection_name not in config.selections or not series.images:
            continue
        classes = depth_class_embeddings(backend, tokenizer, task, cache)
        probabilities = depth_probabilities(np.stack([i.embedding for i in series.images]), classes, backend.logit_scale)
        images = [
            analyse_photograph(series, image, probabilities[index], config, analysis.model)
            for index, image in enumerate(series.images)
        ]
        analysed.append(AnalysedBurnSeries(series_index, series, BurnFindings(task, images, depth_method(task))))
        for number, found in enumerate(images, start=1):
            top, p = BurnFindings.top(task, found.depth_probabilities)
            wound = found.wound_map.wound_percent_of_skin
            logger.info(
                "study %s: burn photograph %d: depth %s (%.0f%%), wound %s, %%TBSA %s, flags %s",
                analysis.study.ref,
                number,
                top,
                100 * p,
                f"{wound:.1f}% of visible skin" if wound is not None else f"not measured ({found.wound_map.note})",
                f"{found.tbsa.percent:.2f}%" if found.tbsa.percent is not None else "not estimable",
                ", ".join(f"{f.concept.value.lower()}={f.value.value}" for f in found.flags),
            )
    return analysed
