"""The burn specialist's findings as generic findings: one measurement group per analysed photograph.

Each group (method 99BMCLIP BURN-ANALYSIS) holds the algorithm; the finding site from the
photograph's anatomy tags (with laterality); the depth probabilities (method: zero-shot), the
visible skin, wound and per-class areas (method: colour wound map), the region's share of the body
surface and the %TBSA estimate (method: the rule the share comes from) as numeric measurements in
UCUM percent; the most probable depth, every flag, and "not measured" / "not estimable" where a
number could not be obtained, as coded qualitative evaluations. The narrative says how each number
was obtained and which inputs each flag used; the summary has one line per photograph; each
photograph with an overlay gives one capture, and each photograph whose wound map measured skin
gives one segmentation (`burn_segmentation`): segment 1 the normal skin, segments 2... the wound
classes in configuration order, each with its coded property category and type, the colour
wound map as algorithm and the class's area as its measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.codes import Code
from common.model_identity import ModelIdentity
from common.product import BURN_CAPTURE_SERIES_DESCRIPTION, BURN_SEGMENTATION_SERIES_DESCRIPTION, SOFTWARE_VERSION
from operators.sr import coding
from operators.messages import (
    FindingGroup,
    FindingSummary,
    MeasuredValue,
    SegmentDefinition,
    SeriesAnalysis,
    SpecialistCapture,
    SpecialistFindings,
    SpecialistSegmentation,
)
from operators.specialists.burn.config import ColourSettings
from operators.specialists.burn.findings import BurnFindings, BurnImageFindings
from operators.specialists.burn import wound_colour

#: The specialist's name in findings and logs.
SPECIALIST_NAME = "burn"

#: The known limits of the colour wound map, stated with every wound area.
WOUND_MAP_LIMITS = (
    "Limits: brown eschar on darker skin, white eschar on very pale skin and charred eschar on the darkest skin have "
    "nearly the skin's own colour and are under-detected; skin-coloured objects (beige sheets, wood) can be taken for "
    "skin and red clothing in shade for erythema; the photograph shows only part of the body."
)

#: What a burn capture shows (its Derivation Description).
BURN_DERIVATION = (
    "Burn photograph with the burn specialist's colour wound map (per-class tint and outline) and, beside it, "
    "the burn depth probabilities, wound areas, region, %TBSA estimate, flags and model."
)

#: The wound map as a Segmentation: its algorithm and family (CID 7162: per-pixel classification of
#: the colour channels), Content Label, and the normal-skin segment (Okabe-Ito blue, a colour no
#: wound class uses).
WOUND_MAP_ALGORITHM = "biomedclip-map colour wound map (CIELAB)"
WOUND_MAP_FAMILY = coding.MULTISPECTRAL_PROCESSING
WOUND_MAP_CONTENT_LABEL = "WOUND_MAP"
SKIN_SEGMENT_LABEL = "skin without wound"
SKIN_SEGMENT_COLOUR = (0, 114, 178)

_FLAG_VALUE_CODES = {"yes": coding.YES, "no": coding.NO, "unknown": coding.UNKNOWN}
_PERCENT = coding.as_code(coding.PERCENT)


class BurnReportError(ValueError):
    """The burn findings of a series are inconsistent (the message names the series)."""


@dataclass(frozen=True)
class AnalysedBurnSeries:
    """The burn findings of one series and its 1-based position among the study's analysed series."""

    index: int
    series: SeriesAnalysis
    burn: BurnFindings


def tracking_identifier(series_index: int, image_index: int, series: SeriesAnalysis) -> str:
    """`#<series>.<image> Burn analysis, source series <n>`: names one photograph's group."""
    number = series.selection.series.header.get("SeriesNumber")
    source = f", source series {number}" if number not in (None, "") else ""
    return f"#{series_index}.{image_index} Burn analysis{source}"


def _percent(concept: Code, value: float, method: Code) -> MeasuredValue:
    return MeasuredValue(concept, round(float(value), coding.PERCENT_DECIMALS), _PERCENT, method)


def _image_group(
    analysed: AnalysedBurnSeries, image_index: int, image: BurnImageFindings, model: ModelIdentity
) -> FindingGroup:
    task = analysed.burn.depth_task
    probabilities = np.clip(np.asarray(image.depth_probabilities, dtype=np.float64), 0.0, 1.0)
    if probabilities.shape != (len(task.labels),) or not np.all(np.isfinite(probabilities)):
        raise BurnReportError(
            f"burn depth probabilities of series #{analysed.index} do not match its {len(task.labels)} depth classes"
        )
    zero_shot = coding.as_code(coding.ZERO_SHOT_METHOD)
    colour_map = coding.as_code(coding.COLOUR_WOUND_MAP)
    depth = task.labels[int(np.argmax(probabilities))].code
    measurements = [
        MeasuredValue(coding.probability_concept(label.code), coding.stored_percent(p), _PERCENT, zero_shot)
        for label, p in zip(task.labels, probabilities)
    ]
    evaluations: list[tuple[Code, Code]] = [(coding.BURN_DEPTH, depth)]
    wound = image.wound_map
    if wound.measured and wound.wound_percent_of_skin is not None:
        measurements.append(_percent(coding.SKIN_AREA, wound.skin_percent_of_image, colour_map))
        measurements.append(_percent(coding.WOUND_AREA, wound.wound_percent_of_skin, colour_map))
        measurements.extend(_percent(coding.area_concept(area.concept), area.percent_of_skin, colour_map) for area in wound.classes)
    else:
        evaluations.append((coding.WOUND_AREA, coding.NOT_MEASURED))
    region = image.region
    if region is not None and region.share_percent is not None:
        rule = coding.as_code(coding.tbsa_method(region.share_rule))
        measurements.append(_percent(coding.REGION_SHARE, region.share_percent, rule))
        if image.tbsa.percent is not None:
            measurements.append(_percent(coding.TBSA_ESTIMATE, image.tbsa.percent, rule))
    if image.tbsa.percent is None:
        evaluations.append((coding.TBSA_ESTIMATE, coding.NOT_ESTIMABLE))
    evaluations.extend((flag.concept, _FLAG_VALUE_CODES[flag.value.value]) for flag in image.flags)
    return FindingGroup(
        tracking_identifier=tracking_identifier(analysed.index, image_index, analysed.series),
        method=coding.as_code(coding.BURN_METHOD),
        source_images=(image.source,),
        measurements=tuple(measurements),
        evaluations=tuple(evaluations),
        algorithm_name=model.name,
        algorithm_version=model.version,
        finding_site=region.site if region is not None else None,
        laterality=coding.LATERALITY.get(region.laterality) if region is not None else None,
    )


def _narrative(analysed: AnalysedBurnSeries) -> list[str]:
    """How each burn number of a series was obtained and the inputs of each flag."""
    burn = analysed.burn
    lines = [burn.depth_method]
    for image_index, image in enumerate(burn.images, start=1):
        where = tracking_identifier(analysed.index, image_index, analysed.series)
        name, probability = burn.top(burn.depth_task, image.depth_probabilities)
        lines.append(f"{where}: most probable burn depth {name} ({coding.stored_percent(probability):.2f} %).")
        if image.wound_map.measured:
            lines.append(f"{where}: wound areas by {image.wound_map.note}. {WOUND_MAP_LIMITS}")
        else:
            lines.append(f"{where}: wound area not measured: {image.wound_map.note}.")
        lines.append(f"{where}: %TBSA {image.tbsa.method}.")
        for flag in image.flags:
            lines.append(f"{where}: flag '{flag.concept.meaning}' {flag.value.value.upper()}; inputs: {flag.inputs}.")
    return lines


def _summary(analysed: AnalysedBurnSeries) -> list[FindingSummary]:
    """One finding line per analysed photograph, for the run's summary (no identifiers)."""
    lines = []
    burn = analysed.burn
    for found in burn.images:
        top, p = burn.top(burn.depth_task, found.depth_probabilities)
        wound = found.wound_map.wound_percent_of_skin
        raised = [f.concept.meaning.lower() for f in found.flags if f.value.value == "yes" and f.concept.value != "FLAG-REVIEW"]
        text = (
            f"burn depth {top} {p:.0%}, "
            + (f"wound {wound:.1f}% of visible skin" if wound is not None else "wound not measured")
            + (f", TBSA ~{found.tbsa.percent:.2f}%" if found.tbsa.percent is not None else "")
            + (f", flags: {', '.join(raised)}" if raised else "")
        )
        lines.append(FindingSummary(analysed.series.selection.selection_name, text))
    return lines


def segment_definitions(colour: ColourSettings, image: BurnImageFindings) -> tuple[SegmentDefinition, ...]:
    """The segments of a photograph's wound map: normal skin, then every wound class in configuration order."""
    areas = {area.concept: area.percent_of_skin for area in image.wound_map.classes}
    colour_map = coding.as_code(coding.COLOUR_WOUND_MAP)
    common = dict(algorithm_name=WOUND_MAP_ALGORITHM, algorithm_version=SOFTWARE_VERSION, algorithm_family=WOUND_MAP_FAMILY)
    skin = SegmentDefinition(SKIN_SEGMENT_LABEL, coding.ANATOMICAL_STRUCTURE, coding.SKIN, display_colour=SKIN_SEGMENT_COLOUR, **common)
    wounds = tuple(
        SegmentDefinition(
            cls.name,
            coding.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            cls.code,
            display_colour=tuple(cls.colour),
            measurements=(
                (_percent(coding.area_concept(cls.code), areas[cls.code], colour_map),) if cls.code in areas else ()
            ),
            **common,
        )
        for cls in colour.classes
    )
    return (skin, *wounds)


def segment_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    """The wound map's labels as segment numbers: 0 not skin, 1 normal skin, 2 + i the i-th wound class."""
    lut = np.zeros(max(int(labels.max(initial=0)) + 1, wound_colour.FIRST_WOUND_LABEL + classes), np.uint8)
    lut[wound_colour.SKIN] = 1
    lut[wound_colour.FIRST_WOUND_LABEL : wound_colour.FIRST_WOUND_LABEL + classes] = np.arange(2, 2 + classes)
    lut[wound_colour.NOT_SKIN] = 0
    return lut[labels]


def burn_segmentation(
    analysed: AnalysedBurnSeries, image_index: int, image: BurnImageFindings, colour: ColourSettings
) -> SpecialistSegmentation | None:
    """The photograph's wound map as a segmentation (None where the wound map measured nothing).

    The labels stay on the analysis copy; the Segmentation is written at the photograph's own size
    (`operators.segmentations.segmentation.resample_labels`).
    """
    if image.wound_labels is None or not image.wound_map.measured:
        return None
    return SpecialistSegmentation(
        source=image.source,
        labels=segment_labels(image.wound_labels, len(colour.classes)),
        segments=segment_definitions(colour, image),
        series_description=BURN_SEGMENTATION_SERIES_DESCRIPTION,
        content_label=WOUND_MAP_CONTENT_LABEL,
        tracking_identifier=tracking_identifier(analysed.index, image_index, analysed.series),
    )


def burn_specialist_findings(
    analysed: Sequence[AnalysedBurnSeries], model: ModelIdentity, colour: ColourSettings
) -> SpecialistFindings:
    """The generic findings of every analysed burn series of a study."""
    groups = [
        _image_group(series, image_index, image, model)
        for series in analysed
        for image_index, image in enumerate(series.burn.images, start=1)
    ]
    captures = [
        SpecialistCapture(image.source, image.overlay, BURN_CAPTURE_SERIES_DESCRIPTION, BURN_DERIVATION)
        for series in analysed
        for image in series.burn.images
        if image.overlay is not None
    ]
    segmentations = [
        found
        for series in analysed
        for image_index, image in enumerate(series.burn.images, start=1)
        if (found := burn_segmentation(series, image_index, image, colour)) is not None
    ]
    return SpecialistFindings(
        specialist=SPECIALIST_NAME,
        groups=tuple(groups),
        narrative=tuple(line for series in analysed for line in _narrative(series)),
        summary=tuple(line for series in analysed for line in _summary(series)),
        captures=tuple(captures),
        segmentations=tuple(segmentations),
    )
