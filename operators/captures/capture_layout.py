"""Layout of the viewable images (Secondary Captures): banners, an image, a text panel.

Text is drawn with OpenCV's Hershey fonts, which have ASCII glyphs only, so every text is first
reduced to ASCII (`ascii_text`: "—" becomes "-", accents are dropped). Every capture carries the
banner "AI-generated - requires clinician review" across its top, and a second, red banner
"UNTRAINED MODEL - NOT MEANINGFUL" when the model is untrained. No patient or study identifier is
ever drawn: captures show findings, the model and the notices only.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

AI_BANNER = "AI-generated - requires clinician review"
UNTRAINED_BANNER = "UNTRAINED MODEL - NOT MEANINGFUL"

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.55
LINE_HEIGHT = 24
MARGIN = 16
INDENT = 18
SWATCH = 14
PANEL_WIDTH = 600
BANNER_SCALE = 0.9
BANNER_HEIGHT = 44
MIN_IMAGE_SIDE = 512

PANEL_BACKGROUND = (28, 28, 30)
TEXT_COLOUR = (232, 232, 232)
ACCENT_COLOUR = (255, 214, 10)
WARNING_COLOUR = (255, 110, 90)
AI_BANNER_COLOURS = ((255, 214, 10), (0, 0, 0))  # background, text
UNTRAINED_BANNER_COLOURS = ((190, 20, 20), (255, 255, 255))

_REPLACEMENTS = {
    "\u2014": "-", "\u2013": "-", "\u2212": "-", "\u00d7": "x", "\u2265": ">=", "\u2264": "<=", "\u2248": "~",
    "\u00b2": "2", "\u00b3": "3", "\u00b5": "u", "\u00b0": " deg", "\u2019": "'", "\u2018": "'",
    "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00b7": ".",
}


def ascii_text(text: str) -> str:
    """`text` in printable ASCII, the only characters the Hershey fonts draw."""
    for char, replacement in _REPLACEMENTS.items():
        text = text.replace(char, replacement)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)


@dataclass(frozen=True)
class PanelLine:
    """One line (wrapped if too long) of the text panel beside the image."""

    text: str
    bold: bool = False
    indent: int = 0
    swatch: tuple[int, int, int] | None = None
    colour: tuple[int, int, int] = TEXT_COLOUR
    space_before: bool = False


def _width(text: str, thickness: int, scale: float = TEXT_SCALE) -> int:
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def wrap(text: str, width: int, thickness: int = 1) -> list[str]:
    """Greedy word wrap of `text` (ASCII) into lines at most `width` pixels wide."""
    words = ascii_text(text).split()
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if current and _width(candidate, thickness) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


def _layout(lines: list[PanelLine], width: int) -> list[tuple[PanelLine, str, int, bool, int]]:
    """(line, text of one row, baseline y, first row of its line?, left x) for every row of the panel."""
    rows = []
    y = MARGIN + LINE_HEIGHT - 6
    for line in lines:
        if line.space_before:
            y += LINE_HEIGHT // 2
        left = MARGIN + line.indent * INDENT + (SWATCH + 8 if line.swatch else 0)
        for i, text in enumerate(wrap(line.text, width - left - MARGIN, 2 if line.bold else 1)):
            rows.append((line, text, y, i == 0, left))
            y += LINE_HEIGHT
    return rows


def _banner(width: int, text: str, colours: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
    strip = np.empty((BANNER_HEIGHT, width, 3), np.uint8)
    strip[:] = colours[0]
    size = cv2.getTextSize(text, FONT, BANNER_SCALE, 2)[0]
    x = max(MARGIN, (width - size[0]) // 2)
    cv2.putText(strip, text, (x, (BANNER_HEIGHT + size[1]) // 2), FONT, BANNER_SCALE, colours[1], 2, cv2.LINE_AA)
    return strip


def fit_for_display(image: np.ndarray, max_side: int, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """`image` reduced (area averaging) to at most `max_side`, or enlarged (nearest neighbour, so
    single pixels stay visible) to at least `min_side`, on its long side."""
    height, width = image.shape[:2]
    long_side = max(height, width)
    if long_side > max_side:
        scale, method = max_side / long_side, cv2.INTER_AREA
    elif long_side < min_side:
        scale, method = min_side / long_side, cv2.INTER_NEAREST
    else:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=method)


def compose_capture(image: np.ndarray, lines: list[PanelLine], *, untrained: bool, panel_width: int = PANEL_WIDTH) -> np.ndarray:
    """The viewable image: banners on top, `image` (RGB uint8) on the left, the text panel on the right."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a capture needs an 8-bit RGB image, got {image.dtype} {image.shape}")
    rows = _layout(lines, panel_width)
    panel_height = (rows[-1][2] + MARGIN + 6) if rows else 0
    body_height = max(image.shape[0], panel_height)
    width = image.shape[1] + panel_width
    banners = [_banner(width, AI_BANNER, AI_BANNER_COLOURS)]
    if untrained:
        banners.append(_banner(width, UNTRAINED_BANNER, UNTRAINED_BANNER_COLOURS))
    top = BANNER_HEIGHT * len(banners)
    canvas = np.empty((top + body_height, width, 3), np.uint8)
    for index, banner in enumerate(banners):
        canvas[index * BANNER_HEIGHT : (index + 1) * BANNER_HEIGHT] = banner
    body = canvas[top:]
    body[:] = PANEL_BACKGROUND
    body[: image.shape[0], : image.shape[1]] = image
    x0 = image.shape[1]
    for line, text, y, first, left in rows:
        thickness = 2 if line.bold else 1
        if line.swatch and first:
            top = y - SWATCH + 2
            cv2.rectangle(body, (x0 + left - SWATCH - 8, top), (x0 + left - 8, top + SWATCH), line.swatch, -1)
            cv2.rectangle(body, (x0 + left - SWATCH - 8, top), (x0 + left - 8, top + SWATCH), TEXT_COLOUR, 1)
        cv2.putText(body, text, (x0 + left, y), FONT, TEXT_SCALE, line.colour, thickness, cv2.LINE_AA)
    return canvas
