"""The burn overlay: the photograph with its wound map drawn per class, and the findings beside it.

Each wound class is drawn as a translucent tint with an outline in the class's configured colour
(with a dark edge so it shows on any skin tone); the outline of the skin that was analysed is a
thin white line. The panel beside the image holds the legend (class colours and areas), the most
probable depth class with its confidence and every class's probability, the region and %TBSA
estimate, the flags, and the model's name and version; `capture_layout` adds the banners.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from operators.specialists.burn.config import ColourSettings
from operators.specialists.burn.flags import NOT_ASSESSED
from operators.captures.capture_layout import ACCENT_COLOUR, WARNING_COLOUR, PanelLine, compose_capture
from common.model_identity import ModelIdentity
from operators.specialists.burn.findings import BurnFindings, BurnImageFindings, FlagValue
from common.zero_shot_tasks import ZeroShotTask
from operators.specialists.burn.wound_colour import FIRST_WOUND_LABEL, SKIN

#: Opacity of the per-class tint.
TINT_ALPHA = 0.35


def draw_wound_map(display: np.ndarray, labels: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """`display` (RGB uint8) with the wound map `labels` (any size; enlarged by nearest neighbour) drawn on it."""
    height, width = display.shape[:2]
    if labels.shape != (height, width):
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    lut = np.zeros((256, 1, 3), np.uint8)
    for index, colour in enumerate(colours):
        lut[FIRST_WOUND_LABEL + index, 0] = colour
    out = np.ascontiguousarray(display).copy()
    wound = (labels >= FIRST_WOUND_LABEL).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(wound)  # tint only the wound's bounding box
    if w and h:
        box = (slice(y, y + h), slice(x, x + w))
        colours_of = cv2.LUT(cv2.merge([labels[box]] * 3), lut)  # (much faster than numpy fancy indexing)
        tinted = cv2.addWeighted(out[box], 1.0 - TINT_ALPHA, colours_of, TINT_ALPHA, 0.0)
        cv2.copyTo(tinted, wound[box], out[box])
    thickness = max(2, round(max(height, width) / 600))
    skin, _ = cv2.findContours((labels >= SKIN).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, skin, -1, (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    # Outlines from the last class to the first, so the deeper classes' outlines lie on top.
    for index, colour in reversed(list(enumerate(colours))):
        mask = (labels == FIRST_WOUND_LABEL + index).astype(np.uint8)
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 0, 0), thickness + 2)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def _pct(value: float, decimals: int = 1) -> str:
    return f"{value:.{decimals}f} %"


def _flag_line(name: str, value: FlagValue) -> PanelLine:
    alarming = value is FlagValue.YES and name != "Requires clinician review"
    return PanelLine(f"{name}: {value.value.upper()}", bold=True, indent=1, colour=WARNING_COLOUR if alarming else ACCENT_COLOUR)


def burn_panel(
    findings: BurnImageFindings, task: ZeroShotTask, colour: ColourSettings, model: ModelIdentity
) -> list[PanelLine]:
    """The text panel of a burn overlay."""
    name, probability = BurnFindings.top(task, findings.depth_probabilities)
    lines = [
        PanelLine("BURN ANALYSIS (AI)", bold=True, colour=ACCENT_COLOUR),
        PanelLine(f"Depth: {name} ({probability * 100:.0f} %)", bold=True, space_before=True),
    ]
    lines += [
        PanelLine(f"{label.name}: {_pct(100 * float(p))}", indent=1)
        for label, p in zip(task.labels, findings.depth_probabilities)
    ]
    lines.append(PanelLine("zero-shot classification (BiomedCLIP)", indent=1))
    wound = findings.wound_map
    lines.append(PanelLine("Wound map (colour analysis)", bold=True, space_before=True))
    if wound.measured and wound.wound_percent_of_skin is not None:
        lines.append(PanelLine(f"wound: {_pct(wound.wound_percent_of_skin)} of visible skin", indent=1, bold=True))
        by_key = {area.name: area for area in wound.classes}
        for cls in colour.classes:
            area = by_key.get(cls.name)
            value = _pct(area.percent_of_skin) if area else "-"
            lines.append(PanelLine(f"{cls.name}: {value}", indent=1, swatch=cls.colour))
        lines.append(PanelLine("white outline: visible skin analysed", indent=1))
    else:
        lines.append(PanelLine(f"not measured: {wound.note}", indent=1))
    region = findings.region
    lines.append(PanelLine("Region and %TBSA", bold=True, space_before=True))
    if region is None:
        lines.append(PanelLine("region: not in the image header", indent=1))
    else:
        side = {"L": "left ", "R": "right "}.get(region.laterality, "")
        lines.append(PanelLine(f"region: {side}{region.name} (from {region.source})", indent=1))
    if findings.tbsa.percent is not None:
        lines.append(PanelLine(f"%TBSA estimate: {findings.tbsa.percent:.2f} %", indent=1, bold=True))
        lines.append(PanelLine(findings.tbsa.method.removeprefix("estimate: "), indent=2))
    else:
        lines.append(PanelLine(f"%TBSA: {findings.tbsa.method}", indent=1))
    lines.append(PanelLine("Flags", bold=True, space_before=True))
    for flag in findings.flags:
        lines.append(_flag_line(flag.concept.meaning, flag.value))
        inputs = flag.inputs.replace(f". {NOT_ASSESSED}", "").replace(NOT_ASSESSED, "")
        if inputs:
            lines.append(PanelLine(inputs, indent=2))
        if NOT_ASSESSED in flag.inputs:
            lines.append(PanelLine("other ABA criteria: not assessed (see report)", indent=2))
    lines.append(PanelLine(f"Model: {model.name} {model.version} ({model.status})", space_before=True))
    return lines


def render_burn_capture(
    display: np.ndarray,
    labels: np.ndarray | None,
    findings: BurnImageFindings,
    task: ZeroShotTask,
    colour: ColourSettings,
    model: ModelIdentity,
) -> np.ndarray:
    """The burn overlay Secondary Capture image: banners, overlaid photograph, findings panel."""
    image = display if labels is None else draw_wound_map(display, labels, [c.colour for c in colour.classes])
    return compose_capture(image, burn_panel(findings, task, colour, model), untrained=model.untrained)
