"""The wound map: skin detection and per-pixel wound classes of a burn photograph, by colour.

Plain numpy/OpenCV functions, tested on synthetic photographs with known ground truth
(tests/fixtures_burn.py, tests/test_burn_wound_mechanisms.py) and measured on an independent
evaluation set (bench/burn_scenes.py, `bench/burn.py --accuracy`). The method, every threshold of
which comes from `app/config/burn.yaml`:

1. Work on a copy whose long side is at most `analysis_max_side` pixels (area averaging), so the
   memory and time of the analysis are bounded whatever the photograph's size; blur it lightly to
   remove sensor noise; convert to CIELAB (L*, a*, b*, chroma C*, hue angle h).
2. Skin window: hue, chroma, lightness and a* limits spanned by published measured skin colours
   (the Monk Skin Tone swatches and the ITA° classes' CIELAB range) plus margins
   (`config.skin_window`); colourless light material (gauze, sheets) is excluded.
3. White balance (white patch): near-white surfaces outside the skin window set per-channel
   gains; a cast on them beyond `decline.extreme_cast_chroma` declines the photograph.
4. Illumination flattening: the large-scale luminance of the patient's skin is divided out, so
   gradients and soft shadows are not read as darker wounds.
5. The patient's own skin colour is the reference: the median of the skin-window pixels in the
   centre of the frame, then the skin-window pixels near it (`skin_cluster_radius`), then again
   without the first pass's wound pixels; a *local* L* reference (skin lightness smoothed over
   the image by normalised convolution) for the lightness rules.
6. Wound classes relative to that reference (precedence in configuration order): charred eschar
   (black), white leathery eschar (pale, colourless), brown eschar (much darker than the skin,
   brown hue), moist/blistered (pink-red exposed dermis), erythema (redder than the skin).
   Saturated fabric (chroma above `textile_chroma_min`) that the skin does not enclose is neither
   wound nor skin.
7. A mode filter (each pixel takes the most frequent class in a small box) removes hairs, pores
   and specular highlights.
8. A wound region counts where it lies against the skin: enough of its outline (the image border
   counting as outline that is not skin) is skin; one that reaches the frame, a drape or clothing
   is kept. Eschar-coloured regions, whose colours sheets, shadows and dark fabric share, need
   more skin around them.
9. Declining beats guessing: too little visible skin, an extreme cast or the largest wound mostly
   outside the frame give a map with `decline` set (the reason, in words) and no areas.

Known limits, stated in the report's method text: brown eschar on darker skin, white eschar on
the palest skin and charred eschar on the darkest skin have nearly the skin's own colour and are
under-detected; skin-coloured objects (beige sheets, wood, tan leather) can be taken for skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from operators.specialists.burn.config import ColourSettings

#: Wound classes whose colours backgrounds share (sheets, gauze and paper are white; shadows and
#: dark fabric brown or black): their regions need more skin around them (contact.min_skin_ratio_eschar).
ESCHAR_CLASSES = ("eschar_white", "eschar_brown", "charred")

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
    #: Why nothing is measured although the image was analysed ("" when measured).
    decline: str = ""

    @property
    def skin_found(self) -> bool:
        return self.reference is not None and self.visible_skin_pixels > 0

    @property
    def measured(self) -> bool:
        """True when the map gives wound areas: skin was found and no reason to decline was seen."""
        return self.skin_found and not self.decline

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
        """Wound area as a percentage of the visible skin, or None when nothing is measured."""
        if not self.measured:
            return None
        return 100.0 * self.wound_pixels / self.visible_skin_pixels

    def class_percent_of_skin(self, index: int) -> float | None:
        if not self.measured:
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


def _blurred(rgb: np.ndarray, blur_sigma: float) -> np.ndarray:
    """`rgb` (uint8) as float 0-1, lightly blurred against sensor noise."""
    image = rgb.astype(np.float32) * (1.0 / 255.0)
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    return image


def _cielab(rgb: np.ndarray, blur_sigma: float) -> _Colour:
    return _cielab_of_float(_blurred(rgb, blur_sigma))


def _cielab_of_float(image: np.ndarray) -> _Colour:
    lightness, a, b = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2Lab))  # contiguous planes
    chroma, hue = cv2.cartToPolar(a, b, angleInDegrees=True)
    hue = np.where(hue > 180.0, hue - 360.0, hue).astype(np.float32)
    return _Colour(lightness, a, b, chroma, hue)


def _flatten_illumination(rgb: np.ndarray, candidates: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """`rgb` (float 0-1) divided by the large-scale illumination estimated on the skin candidates.

    Skin reflectance varies over millimetres, the light over a limb or a frame: the illumination is
    the skin's log-luminance smoothed at the scale `sigma_fraction` × long side (normalised
    convolution over the candidate pixels, on an eighth-size grid), relative to its median. Dividing
    by it (a gain limited to 0.5-2) removes gradients and soft shadows before any colour is judged,
    in every channel alike, so hue is kept. Away from the skin the gain falls back to 1.
    """
    height, width = candidates.shape
    if not candidates.any():
        return rgb
    luminance = np.maximum(rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32), 1e-3)
    log_y = np.log(luminance)
    reference = float(np.median(log_y[candidates]))
    factor = 8
    small = (max(1, width // factor), max(1, height // factor))
    weight = candidates.astype(np.float32)
    num = cv2.resize(log_y * weight, small, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, small, interpolation=cv2.INTER_AREA)
    sigma = max(1.0, sigma_fraction * max(height, width) / factor)
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    trust = np.clip(den / 0.2, 0.0, 1.0)  # little skin nearby: little correction
    local = np.where(den > 1e-4, num / np.maximum(den, 1e-6), reference)
    log_gain = np.clip(trust * (reference - local), np.log(0.5), np.log(2.0)).astype(np.float32)
    gain = np.exp(cv2.resize(log_gain, (width, height), interpolation=cv2.INTER_LINEAR))
    return np.clip(rgb * gain[..., None], 0.0, 1.0)


def _white_patch(image: np.ndarray, colour: _Colour, not_candidates: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Per-channel gains that make the image's near-white surfaces neutral, and their cast (C*); None if none.

    White-patch correction: gauze, sheets, paper tape, a ruler or a colour card's white patch are
    near-neutral whatever the scene, so their mean colour is the colour of the light. Candidates
    are very light (L* ≥ 85), not strongly coloured (C* ≤ 30) and outside the skin window
    (`not_candidates`: the palest skin tones and white eschar are nearly as light and colourless
    as gauze, so a surface that could be skin or eschar never sets the balance; a warm cast, which keeps skin in the window,
    is then left to the skin-relative classification). At least 1 % of the image must be such a
    surface (a clipped channel makes the cast look smaller than it is, never larger); otherwise
    nothing is corrected and the
    analysis relies on classifying every colour relative to the patient's own skin, which a cast
    shifts alike.
    """
    candidates = (colour.lightness >= 85.0) & (colour.chroma <= 30.0) & ~not_candidates
    if int(candidates.sum()) < 0.01 * candidates.size:
        return None
    mean = image[candidates].mean(axis=0)
    cast = float(np.hypot(colour.a[candidates].mean(), colour.b[candidates].mean()))
    gains = (float(mean.mean()) / np.maximum(mean, 1e-3)).astype(np.float32)
    return gains, cast


def _skin_colour(colour: _Colour, settings: ColourSettings) -> np.ndarray:
    s, w = settings.skin, settings.white_material
    return (
        (colour.hue >= s["hue_min"]) & (colour.hue <= s["hue_max"])
        & (colour.chroma >= s["chroma_min"]) & (colour.chroma <= s["chroma_max"])
        & (colour.lightness >= s["lightness_min"]) & (colour.lightness <= s["lightness_max"])
        & (colour.a <= s["a_max"])
        & ~((colour.lightness >= w["lightness_min"]) & (colour.chroma <= w["chroma_max"]))
    )


def _patient_skin(colour: _Colour, window: np.ndarray, reference: SkinReference, radius: float) -> np.ndarray:
    """The skin-window pixels within `radius` (a*, b*) and 3 × radius (L*) of the patient's own skin colour.

    A beige sheet, a wooden table or a pale drape can fall inside the window of *some* skin tone;
    they are rarely as close as this to the colour of the skin actually in the photograph.
    """
    return (
        window
        & (np.hypot(colour.a - reference.a, colour.b - reference.b) <= radius)
        & (np.abs(colour.lightness - reference.lightness) <= 3.0 * radius)
    )


def _central_reference(colour: _Colour, window: np.ndarray, min_pixels: int) -> SkinReference:
    """The median colour of the skin-window pixels in the central half of the frame (all of them if too few).

    The photographed body part is framed in the middle; a sheet or drape of skin-like colour in
    the margins must not become the patient's reference.
    """
    height, width = window.shape
    central = np.zeros_like(window)
    central[height // 4: height - height // 4, width // 4: width - width // 4] = True
    picked = window & central
    return _median_reference(colour, picked if int(picked.sum()) >= min_pixels else window)


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


def _on_skin(
    wound: np.ndarray, skin: np.ndarray, settings: ColourSettings, min_pixels: int, strict: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """The wound regions against the patient's skin, and the largest kept region's share of outline on the frame.

    A region is kept when at least `min_skin_ratio` of its outline (a ring of `ring_px` pixels of
    non-wound neighbours, plus the image border it runs along) is skin: a wound that also reaches
    a drape, clothing or the frame is kept. Regions mostly of eschar colour (ESCHAR_CLASSES: the
    colours of sheets, gauze, paper, shadows and dark backgrounds) need `min_skin_ratio_eschar`.
    Regions with no skin around them (red clothing alone, a card's patches) are dropped. The
    outline share on the frame compares the region's border pixels with its ring length.
    """
    if not wound.any():
        return wound, 0.0
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
    # The frame counts as outline (ring_px deep) that is not skin: a region that is mostly frame and
    # background (a sheet, a drape, a sleeve) with a strip of skin along one side is not a wound.
    ratio = np.full(count, settings.contact["min_skin_ratio"], np.float64)
    if strict is not None:
        # regions mostly of a colour shared with common backgrounds need more skin around them
        strict_share = np.bincount(components.ravel(), weights=strict.ravel().astype(np.float64), minlength=count)
        ratio[strict_share > 0.5 * stats[:, cv2.CC_STAT_AREA]] = settings.contact["min_skin_ratio_eschar"]
    keep = (
        (skin_contact >= ratio * (skin_contact + other_contact + ring_px * border))
        & (skin_contact > 0)
        & (stats[:, cv2.CC_STAT_AREA] >= min_pixels)
    )
    keep[0] = False
    if not keep.any():
        return np.zeros_like(wound), 0.0
    largest = int(np.argmax(np.where(keep, stats[:, cv2.CC_STAT_AREA], -1)))
    outline = border[largest] + (skin_contact[largest] + other_contact[largest]) / float(ring_px)
    return keep[components], float(border[largest] / outline) if outline else 0.0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with every region it encloses (not connected to the image border) filled."""
    count, components = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([components[0, :], components[-1, :], components[:, 0], components[:, -1]]))
    outside = np.isin(components, edge[edge > 0])
    return mask | ~outside


def _fabric(colour: _Colour, skin: np.ndarray, settings: ColourSettings) -> np.ndarray:
    """Dyed fabric: regions more saturated than `textile_chroma_min` that the skin does not enclose, and their seam.

    Clothing and drapes are more saturated than blood-perfused tissue; a saturated region whose
    outer outline lies mostly on skin (a vivid burn, whatever lies inside it) is still tissue, one
    that reaches the frame or the background (a sleeve, a shirt) is not. The skin is widened by
    the contact ring so the blurred transition at the outline counts as skin; the few pixels along
    the fabric's edge, where blur mixes it with the skin, go with the fabric.
    """
    saturated = colour.chroma >= settings.textile_chroma_min
    if not saturated.any():
        return saturated
    ring = 2 * int(settings.contact["ring_px"]) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (ring, ring))
    filled = _fill_holes(saturated)
    near_skin = (cv2.dilate(skin.astype(np.uint8), kernel) > 0) & ~filled
    enclosed, _ = _on_skin(filled, near_skin, settings, 1, strict=filled)
    fabric = saturated & ~enclosed
    if not fabric.any():
        return fabric
    return cv2.dilate(fabric.astype(np.uint8), kernel) > 0


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

    image = _blurred(small, settings.blur_sigma)
    colour = _cielab_of_float(image)
    decline = settings.decline
    # White balance (white patch on near-white surfaces that are not the patient's skin).
    window = _skin_colour(colour, settings)
    min_skin = max(1, int(settings.min_skin_fraction * total))
    balance = _white_patch(image, colour, window)
    if balance is not None:
        gains, cast = balance
        if cast > decline["extreme_cast_chroma"]:
            return _declined(
                empty,
                f"the colour cast is too strong for a reliable estimate (near-white surfaces have chroma C* "
                f"{cast:.0f}, more than {decline['extreme_cast_chroma']:g}; setting colour.decline.extreme_cast_chroma)",
            )
        image = np.clip(image * gains, 0.0, 1.0)
        colour = _cielab_of_float(image)
        window = _skin_colour(colour, settings)
    # Illumination flattening on the patient's skin (not on everything skin-coloured: black eschar
    # and dark skin share a window, and brightening the eschar would hide it).
    if int(window.sum()) >= min_skin:
        patient = _patient_skin(colour, window, _central_reference(colour, window, min_skin), settings.skin_cluster_radius)
        image = _flatten_illumination(image, patient, settings.illumination_sigma_fraction)
        colour = _cielab_of_float(image)
        window = _skin_colour(colour, settings)
    if int(window.sum()) < min_skin:
        return empty

    # Pass 1: the reference from the central skin-coloured pixels; the patient's skin is the cluster around it.
    first = _central_reference(colour, window, min_skin)
    skin_colour = _patient_skin(colour, window, first, settings.skin_cluster_radius)
    first = _median_reference(colour, skin_colour) if skin_colour.any() else first
    wound = _wound_classes(colour, first, first.lightness, settings)
    normal = skin_colour & (wound == 0)
    if int(normal.sum()) < min_skin:
        return empty
    # Pass 2: reference from the skin without the first pass's wounds, lightness local.
    reference = _median_reference(colour, normal)
    skin_colour = _patient_skin(colour, window, reference, settings.skin_cluster_radius)
    local = _local_lightness(colour, normal, reference.lightness, settings.illumination_sigma_fraction)
    wound = _wound_classes(colour, reference, local, settings)
    fabric = _fabric(colour, skin_colour, settings)
    wound[fabric] = 0
    labels = np.where(wound > 0, wound, np.where(skin_colour & ~fabric, SKIN, NOT_SKIN)).astype(np.uint8)
    labels = _mode_filter(labels, FIRST_WOUND_LABEL + len(keys), box)

    min_pixels = max(1, int(settings.min_component_fraction * total))
    skin = _drop_small(labels == SKIN, min_pixels)
    if int(skin.sum()) < min_skin:
        return empty
    strict_labels = [FIRST_WOUND_LABEL + keys.index(k) for k in ESCHAR_CLASSES if k in keys]
    # The blurred transition between a wound and the skin is neither: count the ring_px next to the skin as skin.
    ring = 2 * int(settings.contact["ring_px"]) + 1
    near_skin = cv2.dilate(skin.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (ring, ring))) > 0
    wound_kept, off_frame = _on_skin(
        labels >= FIRST_WOUND_LABEL, near_skin, settings, min_pixels, np.isin(labels, strict_labels)
    )
    final = np.where(wound_kept, labels, np.where(skin, SKIN, NOT_SKIN)).astype(np.uint8)
    counts = np.bincount(final.ravel(), minlength=FIRST_WOUND_LABEL + len(keys))
    result = WoundMap(
        labels=final,
        class_keys=keys,
        class_pixels=tuple(int(n) for n in counts[FIRST_WOUND_LABEL:]),
        skin_pixels=int(counts[SKIN]),
        reference=reference,
        mode_filter_px=box,
    )
    visible = result.skin_fraction_of_image
    if visible < decline["min_visible_skin_fraction"]:
        return _declined(
            result,
            f"too little skin is visible for a reliable estimate ({100 * visible:.1f} % of the image, at least "
            f"{100 * decline['min_visible_skin_fraction']:g} % needed; setting colour.decline.min_visible_skin_fraction)",
        )
    if off_frame > decline["off_frame_outline_ratio"]:
        return _declined(
            result,
            f"the wound lies mostly outside the frame ({100 * off_frame:.0f} % of its outline on the image border, "
            f"more than {100 * decline['off_frame_outline_ratio']:g} %; setting colour.decline.off_frame_outline_ratio)",
        )
    return result


def _declined(wound: WoundMap, reason: str) -> WoundMap:
    """`wound` marked as not measured for `reason`."""
    return WoundMap(
        wound.labels, wound.class_keys, wound.class_pixels, wound.skin_pixels, wound.reference, wound.mode_filter_px, reason
    )
