"""The wound map: skin detection and per-pixel wound classes of a burn photograph, by colour.

Plain numpy/OpenCV functions, tested on synthetic photographs with known ground truth
(tests/fixtures_burn.py). The method, every threshold of which comes from `app/config/burn.yaml`:

1. Work on a copy whose long side is at most `analysis_max_side` pixels (area averaging), so the
   memory and time of the analysis are bounded whatever the photograph's size; blur it lightly to
   remove sensor noise; convert to CIELAB (L*, a*, b*, chroma C*, hue angle h).
2. Skin colour: hue between orange-red and yellow with moderate chroma, which holds for every
   skin tone (Fitzpatrick I-VI) and excludes blue/green drapes and grey, white or black material.
3. The patient's own skin colour is the reference: the median a*, b* of the skin, and a *local*
   L* reference (skin lightness smoothed over the image by normalised convolution), so shading
   across a limb is not read as a darker wound. The reference is estimated twice: from all
   skin-coloured pixels, then from the skin left after removing the first pass's wound pixels.
4. Wound classes relative to that reference (precedence in configuration order): charred eschar
   (black), white leathery eschar (pale, colourless), brown eschar (much darker than the skin,
   brown hue), moist/blistered (pink-red exposed dermis), erythema (redder than the skin).
5. A mode filter (each pixel takes the most frequent class in a small box) removes hairs, pores
   and specular highlights.
6. Wound regions count only where they lie on the skin: the ring around each connected region
   must be mostly skin, and a region touching the image border must touch more skin than border.
   This keeps red clothing, white sheets and dark backgrounds out of the wound area.

Known limits, stated in the report's method text: brown eschar on very dark skin (Fitzpatrick
V-VI) and white eschar on very pale skin have nearly the skin's own colour and are under-detected;
skin-coloured objects (wood, tan leather) are taken for skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from operators.specialists.burn.config import ColourSettings

#: Label values of the wound map: 0 not skin, 1 normal skin, 2 + i the i-th configured wound class.
NOT_SKIN = 0
SKIN = 1
FIRST_WOUND_LABEL = 2


class WoundMapError(ValueError):
    """The image cannot be colour-analysed (wrong shape or type); the message says why."""


@dataclass(frozen=True)
class SkinReference:
    """The patient's skin colour in CIELAB: median L*, a*, b* of the detected normal skin."""

    lightness: float
    a: float
    b: float

    @property
    def chroma(self) -> float:
        return float(np.hypot(self.a, self.b))

    @property
    def hue(self) -> float:
        return float(np.degrees(np.arctan2(self.b, self.a)))


@dataclass
class WoundMap:
    """The result of the colour analysis of one (analysis-sized) photograph.

    `labels` holds NOT_SKIN, SKIN or FIRST_WOUND_LABEL + i per pixel; `class_pixels[i]` counts the
    pixels of wound class i (configuration order). `skin_found` is False when less skin than the
    configured minimum was seen, in which case nothing is measured.
    """

    labels: np.ndarray
    class_keys: tuple[str, ...]
    class_pixels: tuple[int, ...]
    skin_pixels: int
    reference: SkinReference | None
    mode_filter_px: int

    @property
    def skin_found(self) -> bool:
        return self.reference is not None and self.visible_skin_pixels > 0

    @property
    def wound_pixels(self) -> int:
        return int(sum(self.class_pixels))

    @property
    def visible_skin_pixels(self) -> int:
        """Normal skin plus wound: the denominator of every area percentage."""
        return self.skin_pixels + self.wound_pixels

    @property
    def wound_mask(self) -> np.ndarray:
        return self.labels >= FIRST_WOUND_LABEL

    @property
    def skin_fraction_of_image(self) -> float:
        return self.visible_skin_pixels / float(self.labels.size)

    @property
    def wound_percent_of_skin(self) -> float | None:
        """Wound area as a percentage of the visible skin, or None when no skin was found."""
        if not self.skin_found:
            return None
        return 100.0 * self.wound_pixels / self.visible_skin_pixels

    def class_percent_of_skin(self, index: int) -> float | None:
        if not self.skin_found:
            return None
        return 100.0 * self.class_pixels[index] / self.visible_skin_pixels


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """`rgb` reduced by area averaging so that its long side is at most `max_side` (returned as is if already)."""
    height, width = rgb.shape[:2]
    scale = max_side / float(max(height, width))
    if scale >= 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@dataclass
class _Colour:
    """Per-pixel CIELAB values of the analysis copy (float32)."""

    lightness: np.ndarray
    a: np.ndarray
    b: np.ndarray
    chroma: np.ndarray
    hue: np.ndarray  # degrees, -180..180


def _cielab(rgb: np.ndarray, blur_sigma: float) -> _Colour:
    image = rgb.astype(np.float32) * (1.0 / 255.0)
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    lightness, a, b = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2Lab))  # contiguous planes
    chroma, hue = cv2.cartToPolar(a, b, angleInDegrees=True)
    hue = np.where(hue > 180.0, hue - 360.0, hue).astype(np.float32)
    return _Colour(lightness, a, b, chroma, hue)


def _skin_colour(colour: _Colour, settings: ColourSettings) -> np.ndarray:
    s, w = settings.skin, settings.white_material
    return (
        (colour.hue >= s["hue_min"]) & (colour.hue <= s["hue_max"])
        & (colour.chroma >= s["chroma_min"]) & (colour.chroma <= s["chroma_max"])
        & (colour.lightness >= s["lightness_min"]) & (colour.lightness <= s["lightness_max"])
        & ~((colour.lightness >= w["lightness_min"]) & (colour.chroma <= w["chroma_max"]))
    )


def _median_reference(colour: _Colour, mask: np.ndarray) -> SkinReference:
    """Median L*, a*, b* over `mask` (every 4th pixel of it is enough for a median)."""
    picked = np.flatnonzero(mask.ravel())[::4]
    return SkinReference(
        lightness=float(np.median(colour.lightness.ravel()[picked])),
        a=float(np.median(colour.a.ravel()[picked])),
        b=float(np.median(colour.b.ravel()[picked])),
    )


def _local_lightness(colour: _Colour, skin: np.ndarray, fallback: float, sigma_fraction: float) -> np.ndarray:
    """Skin lightness smoothed over the image (normalised convolution on an eighth-size grid)."""
    height, width = skin.shape
    factor = 8
    small = (max(1, width // factor), max(1, height // factor))
    weight = skin.astype(np.float32)
    num = cv2.resize(colour.lightness * weight, small, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, small, interpolation=cv2.INTER_AREA)
    sigma = max(1.0, sigma_fraction * max(height, width) / factor)
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    local = np.where(den > 1e-3, num / np.maximum(den, 1e-6), fallback).astype(np.float32)
    return cv2.resize(local, (width, height), interpolation=cv2.INTER_LINEAR)


def _wound_classes(
    colour: _Colour, reference: SkinReference, local_lightness: np.ndarray | float, settings: ColourSettings
) -> np.ndarray:
    """Per-pixel wound class (FIRST_WOUND_LABEL + i) or 0, relative to the skin reference."""
    c, ref = colour, reference
    white = settings.white_material
    material = (c.lightness >= white["lightness_min"]) & (c.chroma <= white["chroma_max"])
    rules = {
        "charred": lambda t: (c.lightness <= np.minimum(t["lightness_max"], local_lightness - t["darker_than_skin"]))
        & (c.chroma <= t["chroma_max"]),
        "eschar_white": lambda t: (c.lightness >= t["lightness_min"])
        & (c.chroma <= min(t["chroma_max"], t["chroma_ratio_to_skin"] * ref.chroma))
        & ~material,
        "eschar_brown": lambda t: (c.lightness <= local_lightness - t["darker_than_skin"])
        & (c.hue >= t["hue_min"]) & (c.hue <= t["hue_max"]) & (c.chroma >= t["chroma_min"]),
        "moist": lambda t: (c.a >= ref.a + t["redder_than_skin"]) & (c.hue <= t["hue_max"]),
        "erythema": lambda t: (c.a >= ref.a + t["redder_than_skin"])
        & (c.hue > t["hue_min"]) & (c.hue <= ref.hue - t["hue_below_skin"]),
    }
    conditions = [rules[cls.key](cls.thresholds) for cls in settings.classes]
    values = [FIRST_WOUND_LABEL + i for i in range(len(settings.classes))]
    return np.select(conditions, values, default=0).astype(np.uint8)


def _mode_filter(labels: np.ndarray, count: int, box: int) -> np.ndarray:
    """Each pixel takes the most frequent label in the box around it (ties: the lower label)."""
    if box < 3:
        return labels
    best_votes = np.full(labels.shape, -1, np.int16)
    best = np.zeros(labels.shape, np.uint8)
    for value in range(count):
        votes = cv2.boxFilter(
            (labels == value).astype(np.uint8), -1, (box, box), normalize=False, borderType=cv2.BORDER_REFLECT
        ).astype(np.int16)
        more = votes > best_votes  # strictly more: ties keep the lower label
        best[more] = value
        np.maximum(best_votes, votes, out=best_votes)
    return best


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """`mask` without its 8-connected components smaller than `min_pixels`."""
    if min_pixels <= 1 or not mask.any():
        return mask
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    return keep[components]


def _on_skin(wound: np.ndarray, skin: np.ndarray, settings: ColourSettings, min_pixels: int) -> np.ndarray:
    """The wound regions that lie on the skin (see the module docstring, step 6)."""
    if not wound.any():
        return wound
    count, components, stats, _ = cv2.connectedComponentsWithStats(wound.astype(np.uint8), connectivity=8)
    ring_px = int(settings.contact["ring_px"])
    depth = np.uint16 if count < 65535 else np.float32
    grown = cv2.dilate(components.astype(depth), cv2.getStructuringElement(cv2.MORPH_RECT, (2 * ring_px + 1,) * 2))
    ring = (components == 0) & (grown > 0)
    owners = grown[ring].astype(np.int64)
    skin_contact = np.bincount(owners[skin[ring]], minlength=count)
    other_contact = np.bincount(owners[~skin[ring]], minlength=count)
    edge = np.concatenate([components[0, :], components[-1, :], components[1:-1, 0], components[1:-1, -1]])
    border = np.bincount(edge.astype(np.int64), minlength=count)
    contact = settings.contact
    # The ring is ring_px pixels thick and the border count one pixel: compare lengths.
    keep = (
        (skin_contact >= contact["min_skin_ratio"] * (skin_contact + other_contact))
        & (skin_contact >= contact["min_skin_to_border"] * ring_px * border)
        & (skin_contact > 0)
        & (stats[:, cv2.CC_STAT_AREA] >= min_pixels)
    )
    keep[0] = False
    return keep[components]


def map_wounds(rgb: np.ndarray, settings: ColourSettings) -> WoundMap:
    """The wound map of an RGB photograph (uint8, (H, W, 3)), analysed at most analysis_max_side.

    Returns a WoundMap whose labels have the size of the analysis copy. When less skin than
    `min_skin_fraction` of the image is seen (an all-black image, a photograph of a drape), the
    map has no reference and measures nothing. Raises WoundMapError for arrays that are not
    8-bit RGB.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise WoundMapError(f"the wound map needs an 8-bit RGB image (H, W, 3); got {rgb.dtype} {rgb.shape}")
    small = downscale(rgb, settings.analysis_max_side)
    height, width = small.shape[:2]
    total = height * width
    keys = tuple(c.key for c in settings.classes)
    box = int(round(settings.mode_filter_fraction * max(height, width)))
    box = min(15, box + 1 - box % 2) if box >= 3 else 0
    empty = WoundMap(np.zeros((height, width), np.uint8), keys, (0,) * len(keys), 0, None, box)

    colour = _cielab(small, settings.blur_sigma)
    skin_colour = _skin_colour(colour, settings)
    min_skin = max(1, int(settings.min_skin_fraction * total))
    if int(skin_colour.sum()) < min_skin:
        return empty

    # Pass 1: a global reference from every skin-coloured pixel.
    first = _median_reference(colour, skin_colour)
    wound = _wound_classes(colour, first, first.lightness, settings)
    normal = skin_colour & (wound == 0)
    if int(normal.sum()) < min_skin:
        return empty
    # Pass 2: reference from the skin without the first pass's wounds, lightness local.
    reference = _median_reference(colour, normal)
    local = _local_lightness(colour, normal, reference.lightness, settings.illumination_sigma_fraction)
    wound = _wound_classes(colour, reference, local, settings)
    labels = np.where(wound > 0, wound, np.where(skin_colour, SKIN, NOT_SKIN)).astype(np.uint8)
    labels = _mode_filter(labels, FIRST_WOUND_LABEL + len(keys), box)

    min_pixels = max(1, int(settings.min_component_fraction * total))
    skin = _drop_small(labels == SKIN, min_pixels)
    if int(skin.sum()) < min_skin:
        return empty
    wound_kept = _on_skin(labels >= FIRST_WOUND_LABEL, skin, settings, min_pixels)
    final = np.where(wound_kept, labels, np.where(skin, SKIN, NOT_SKIN)).astype(np.uint8)
    counts = np.bincount(final.ravel(), minlength=FIRST_WOUND_LABEL + len(keys))
    return WoundMap(
        labels=final,
        class_keys=keys,
        class_pixels=tuple(int(n) for n in counts[FIRST_WOUND_LABEL:]),
        skin_pixels=int(counts[SKIN]),
        reference=reference,
        mode_filter_px=box,
    )
