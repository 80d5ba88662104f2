"""The viewable image of a study no specialist rendered a capture for: its most probable image and the findings.

The image shown is the analysed image that most supports the study's strongest finding: the series
with the highest top-label probability, and in it the image with the highest probability of that
label. It is displayed the way it is meant to be viewed: colour as is; greyscale through the
header's VOI LUT or window (else between its 1st and 99th percentiles), inverted for MONOCHROME1.
The panel lists the analysed series with the strongest findings, named by series number, with
their top labels and probabilities, and the model.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from operators.dicom_input import pixel_data
from operators.captures.capture_layout import (
    ACCENT_COLOUR,
    PanelLine,
    compose_capture,
    fit_for_display,
)
from operators.messages import (
    ImageFindings,
    InstanceFile,
    SeriesAnalysis,
    StudyAnalysis,
)
from operators.preparation.windowing import (
    frame_pipeline,
    has_header_voi,
    header_voi,
    is_inverted,
    percentile_scale,
)

#: Long side of the image in a findings capture.
DISPLAY_MAX_SIDE = 1024
#: Labels listed per series (when one or two series are listed), and when more are.
TOP_LABELS = 5
TOP_LABELS_MANY_SERIES = 3
#: Series listed at most; the SR holds them all.
MAX_SERIES_LISTED = 6

#: Specialist summary lines listed on a findings capture (the SR holds them all).
MAX_SPECIALIST_LINES = 6


class FindingsCaptureError(RuntimeError):
    """The representative image cannot be shown; the message names the file and why."""


def representative_image(analysis: StudyAnalysis) -> tuple[SeriesAnalysis, ImageFindings]:
    """The series with the highest top-label probability, and its image most probable for that label."""
    series = max(analysis.series, key=lambda s: s.top_probability)
    label = int(np.argmax(series.probabilities))
    image = max(series.images, key=lambda i: float(np.asarray(i.probabilities)[label]))
    return series, image


def _instance(series: SeriesAnalysis, image: ImageFindings) -> InstanceFile:
    for instance in series.selection.series.instances:
        if instance.sop_instance_uid == image.source.sop_instance_uid:
            return instance
    raise FindingsCaptureError("the representative image is not one of the instances of its series")


def _display(dataset: Dataset, array: np.ndarray, frame: int | None, path: object) -> np.ndarray:
    """One frame of the decoded pixels as an RGB uint8 image for viewing."""
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    index = (frame or 1) - 1
    if frames > 1:
        array = array[index]
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples == 3 and array.ndim == 3:
        bits = int(dataset.get("BitsStored", 8) or 8)
        scaled = array.astype(np.float32) / float(2**bits - 1)
    elif photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, dataset)
        scaled = rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max)
    elif array.ndim == 2 and array.dtype.kind in "iu":
        pipeline = frame_pipeline(dataset, index)
        values = apply_modality_lut(array, pipeline)
        grey = header_voi(values, pipeline) if has_header_voi(pipeline) else percentile_scale(values, 1.0, 99.0)
        if is_inverted(pipeline):
            grey = 1.0 - grey
        scaled = np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=-1)
    else:
        raise FindingsCaptureError(f"{path}: pixel data of shape {array.shape} ({array.dtype}) cannot be displayed")
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def display_image(series: SeriesAnalysis, image: ImageFindings) -> tuple[Dataset, np.ndarray]:
    """The source header and the image for viewing (RGB uint8, long side at most DISPLAY_MAX_SIDE)."""
    instance = _instance(series, image)
    try:
        dataset, array = pixel_data.read_pixels(instance)
    except pixel_data.PixelDataError as exc:
        raise FindingsCaptureError(str(exc)) from exc
    shown = _display(dataset, array, image.source.frame, instance.path)
    if "PixelData" in dataset:
        del dataset.PixelData
    return dataset, fit_for_display(shown, DISPLAY_MAX_SIDE)


def _series_label(series: SeriesAnalysis) -> str:
    number = series.selection.series.header.get("SeriesNumber")
    return f"Series {number}" if number not in (None, "") else "Series (no number)"


def findings_panel(analysis: StudyAnalysis, shown: SeriesAnalysis) -> list[PanelLine]:
    """The text panel: the series with the strongest findings (by series number), the image shown, the model.

    At most MAX_SERIES_LISTED series are listed, strongest top finding first (the shown series
    always), with TOP_LABELS labels each, or fewer when many series are listed, so that a study of
    many series still gives a capture of a sensible size; the SR holds every series.
    """
    lines = [PanelLine("BIOMEDCLIP ZERO-SHOT FINDINGS (AI)", bold=True, colour=ACCENT_COLOUR)]
    ranked = sorted(analysis.series, key=lambda s: (s is not shown, -s.top_probability))
    listed = ranked[:MAX_SERIES_LISTED]
    labels_each = TOP_LABELS if len(listed) <= 2 else TOP_LABELS_MANY_SERIES
    for series in listed:
        modality = series.selection.series.modality or "?"
        marker = " - image shown" if series is shown else ""
        lines.append(
            PanelLine(
                f"{_series_label(series)}: {series.task.title} ({modality}, {len(series.images)} image(s)){marker}",
                bold=True,
                space_before=True,
            )
        )
        order = np.argsort(-np.asarray(series.probabilities))[:labels_each]
        for rank, label_index in enumerate(order):
            label = series.task.labels[int(label_index)]
            lines.append(
                PanelLine(f"{label.name}: {100 * float(series.probabilities[label_index]):.1f} %", indent=1, bold=rank == 0)
            )
    if len(ranked) > len(listed):
        rest = ", ".join(_series_label(s).removeprefix("Series ") for s in ranked[len(listed):][:12])
        more = "" if len(ranked) - len(listed) <= 12 else ", ..."
        lines.append(
            PanelLine(f"{len(ranked) - len(listed)} more series in the SR report (series {rest}{more})", space_before=True)
        )
    summaries = [line for found in analysis.specialists for line in found.summary]
    if summaries:
        lines.append(PanelLine("SPECIALISTS (AI)", bold=True, colour=ACCENT_COLOUR, space_before=True))
        lines.extend(PanelLine(f"{line.selection}: {line.text}", indent=1) for line in summaries[:MAX_SPECIALIST_LINES])
        if len(summaries) > MAX_SPECIALIST_LINES:
            lines.append(PanelLine(f"{len(summaries) - MAX_SPECIALIST_LINES} more in the SR report", indent=1))
    model = analysis.model
    lines.append(PanelLine(f"Model: {model.name} {model.version} ({model.status})", space_before=True))
    lines.append(PanelLine(f"Backend: {analysis.backend}"))
    lines.append(PanelLine("Probabilities are zero-shot image-text similarities, not diagnoses.", space_before=True))
    return lines


def render_findings_capture(analysis: StudyAnalysis) -> tuple[np.ndarray, SeriesAnalysis, ImageFindings, Dataset]:
    """The findings capture image, the series and image it shows, and that image's header."""
    series, image = representative_image(analysis)
    header, shown = display_image(series, image)
    pixels = compose_capture(shown, findings_panel(analysis, series), untrained=analysis.model.untrained)
    return pixels, series, image, header
