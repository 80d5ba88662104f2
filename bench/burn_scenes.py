"""An independent evaluation set for the burn wound map: painted photographs with exact truth masks.

Written separately from the wound-map code (`operators.specialists.burn.wound_colour`) and from
the test scenes it was tuned on (`tests/fixtures_burn.py`); it imports neither, and shares no
colour, shape or texture with them. How it differs from the test fixtures:

- **Skin colours are colorimetric, not eyeballed sRGB.** Two palettes:

  * *ITA° classes* (individual typology angle, ITA° = arctan((L* − 50) / b*) · 180/π; classes of
    Chardon, Cretois & Hourseau, Int J Cosmet Sci 13:191-208, 1991, as used by Del Bino et al.,
    Pigment Cell Res 19:606-614, 2006 and Del Bino & Bernerd, Br J Dermatol 169 Suppl 3:33-40,
    2013): very light > 55°, light 41-55°, intermediate 28-41°, tan 10-28°, brown −30-10°,
    dark < −30°. Each class is painted with a CIELAB (D65) colour inside its ITA° bounds and inside
    the L* 30-75, a* 5-16, b* 10-22 ranges those in-vivo spectrophotometric studies report
    (representative values chosen here, not a table copied from the papers).
  * *Monk Skin Tone scale* (Monk, 2019; published by Google as sRGB swatches, skintone.google):
    #f6ede4 #f3e7db #f7ead0 #eadaba #d7bd96 #a07e56 #825c43 #604134 #3a312a #292420 — tones 1-2
    and 9-10 are nearly colourless (C* < 8), tones 3-4 very yellow (hue ≈ 89°).

  Every tone is reported under the ITA° class its colour belongs to (the Monk swatches by their
  own ITA°), and per palette.
- **Skin texture**: per-pixel variation of the CIELAB colour (melanin and haemoglobin mottling at
  two scales, pores, freckles/naevi, hairs) and a cylindrical shading across the limb.
- **Wounds** in CIELAB relative to the skin (erythema: a* raised 12-24 above the skin, with a
  soft halo; moist/blistered: glossy pink-red dermis with blister domes and specular highlights;
  white eschar; brown eschar; charred eschar with cracks), as single wounds or Jackson zones,
  anywhere on the skin — also reaching the frame, a drape or clothing.
- **Capture conditions** applied after painting (one per photograph): none, uneven light (a
  strong illumination gradient), a hard shadow, a colour cast (per-channel gains of ±10-15 %),
  blur (Gaussian σ 2.5 px), JPEG quality 60 (OpenCV's encoder).
- **Backgrounds and objects**: blue and green drapes, beige sheets, white gauze on the skin, red
  clothing touching the skin, a ruler, a colour card (24 patches in a black frame).
- **Healthy controls**: seeds ending in 0 or 1 (one in five photographs, every tone), half of
  them beside red clothing.

Scenes are indexed by seed: the skin tone cycles with seed // 2 and the capture condition with
seed // 32, so the dev half (even seeds) and the held-out half (odd seeds) both hold every tone
under every condition; everything else is drawn from a generator seeded with the seed.

Truth: per pixel 0 not skin, 1 healthy skin, 2 + i wound class `WOUND_CLASSES[i]`.
No patient data: everything is drawn from seeded random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NOT_SKIN, SKIN = 0, 1
WOUND_CLASSES = ("charred", "eschar_white", "eschar_brown", "moist", "erythema")

#: ITA° class → representative CIELAB (D65) skin colour inside the class's ITA° bounds (see docstring).
ITA_TONES: dict[str, tuple[float, float, float]] = {
    "very light": (72.0, 7.0, 13.0),   # ITA 59°
    "light": (65.0, 9.0, 16.0),        # ITA 43°
    "intermediate": (61.0, 11.0, 17.0),  # ITA 33°
    "tan": (55.0, 12.0, 19.0),         # ITA 15°
    "brown": (45.0, 13.0, 19.0),       # ITA −15°
    "dark": (33.0, 11.0, 14.0),        # ITA −51°
}
#: The Monk Skin Tone scale's published sRGB swatches (tones 1-10).
MONK_SWATCHES = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96", "a07e56", "825c43", "604134", "3a312a", "292420")
ITA_CLASSES = ("very light", "light", "intermediate", "tan", "brown", "dark")
CONDITIONS = ("none", "uneven light", "shadow", "colour cast", "blur", "jpeg q60")
BACKGROUNDS = ("blue drape", "green drape", "beige sheet", "white gauze", "red clothing", "ruler", "colour card")
BURN_KINDS = ("erythema", "moist", "eschar_white", "eschar_brown", "charred", "zoned")


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (float, L* 0-100) → sRGB float 0-255 (OpenCV's D65 conversion)."""
    rgb = cv2.cvtColor(np.asarray(lab, np.float32).reshape(-1, 1, 3), cv2.COLOR_Lab2RGB)
    return (np.clip(rgb, 0, 1) * 255.0).reshape(np.shape(lab))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB float 0-255 → CIELAB float."""
    flat = (np.asarray(rgb, np.float32) / 255.0).reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(np.shape(rgb))


def ita_degrees(lab: tuple[float, float, float]) -> float:
    """The individual typology angle of a CIELAB colour."""
    return float(np.degrees(np.arctan2(lab[0] - 50.0, lab[2])))


def ita_class(lab: tuple[float, float, float]) -> str:
    """The ITA° class (Chardon et al. 1991) of a CIELAB colour."""
    ita = ita_degrees(lab)
    for name, low in (("very light", 55), ("light", 41), ("intermediate", 28), ("tan", 10), ("brown", -30)):
        if ita > low:
            return name
    return "dark"


def _monk_lab(hex_code: str) -> tuple[float, float, float]:
    rgb = np.array([[int(hex_code[i:i + 2], 16) for i in (0, 2, 4)]], np.float32)
    return tuple(float(v) for v in rgb_to_lab(rgb)[0])  # type: ignore[return-value]


@dataclass(frozen=True)
class Tone:
    """A skin tone of the evaluation: its palette, name, CIELAB colour and ITA° class."""

    palette: str
    name: str
    lab: tuple[float, float, float]

    @property
    def ita_class(self) -> str:
        return ita_class(self.lab)


TONES: tuple[Tone, ...] = tuple(Tone("ITA", name, lab) for name, lab in ITA_TONES.items()) + tuple(
    Tone("Monk", f"Monk {i}", _monk_lab(h)) for i, h in enumerate(MONK_SWATCHES, start=1)
)


@dataclass
class EvalScene:
    """One evaluation photograph: RGB uint8, per-pixel truth and what it shows."""

    seed: int
    rgb: np.ndarray
    truth: np.ndarray
    tone: Tone
    condition: str
    background: str
    burn: str | None  # None: a healthy control
    objects: tuple[str, ...]
    capture: str = ""  # the condition with its parameters (e.g. the cast's gains)

    @property
    def split(self) -> str:
        return split_of(self.seed)

    @property
    def wound_mask(self) -> np.ndarray:
        return self.truth >= 2

    @property
    def wound_percent(self) -> float:
        visible = int((self.truth >= SKIN).sum())
        return 100.0 * int(self.wound_mask.sum()) / visible if visible else 0.0


def split_of(seed: int) -> str:
    """'dev' for even seeds (tuning allowed), 'held-out' for odd seeds (reporting only)."""
    return "dev" if seed % 2 == 0 else "held-out"


# --------------------------------------------------------------------------- painting helpers


def _noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise of roughly unit standard deviation, features about `scale` pixels wide."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale) + 2), max(2, int(w / scale) + 2))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    big = cv2.GaussianBlur(big, (0, 0), max(0.5, scale / 3))
    return (big - big.mean()) / max(float(big.std()), 1e-6)


def _shape(shape: tuple[int, int], centre: tuple[float, float], radius: tuple[float, float], rng: np.random.Generator,
           wobble: float = 0.3) -> np.ndarray:
    """An irregular region: a polygon of 24 vertices whose radii wobble, rotated at random."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    jitter = 1.0 + wobble * np.convolve(rng.uniform(-1, 1, 30), np.ones(5) / 5, "same")[3:27]
    turn = rng.uniform(0, np.pi)
    xs = centre[0] + radius[0] * jitter * np.cos(angles) * np.cos(turn) - radius[1] * jitter * np.sin(angles) * np.sin(turn)
    ys = centre[1] + radius[0] * jitter * np.cos(angles) * np.sin(turn) + radius[1] * jitter * np.sin(angles) * np.cos(turn)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.stack([xs, ys], 1).astype(np.int32)], 1, cv2.LINE_8)
    return mask.astype(bool)


class _Canvas:
    """The photograph in CIELAB while it is painted, and its truth."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator):
        self.shape = shape
        self.rng = rng
        self.lab = np.zeros(shape + (3,), np.float32)
        self.truth = np.zeros(shape, np.uint8)

    def fill(self, mask: np.ndarray, lab: np.ndarray) -> None:
        self.lab[mask] = lab[mask] if lab.ndim == 3 else lab

    def textile(self, mask: np.ndarray, lab: tuple[float, float, float], weave: float = 1.5) -> None:
        """Fabric: folds (large-scale lightness) and a fine weave."""
        folds = 5.0 * _noise(self.shape, 60, self.rng)
        fine = weave * self.rng.standard_normal(self.shape).astype(np.float32)
        colour = np.empty(self.shape + (3,), np.float32)
        colour[..., 0] = lab[0] + folds + fine
        colour[..., 1] = lab[1] * (1 + 0.02 * folds)
        colour[..., 2] = lab[2] * (1 + 0.02 * folds)
        self.fill(mask, colour)
        self.truth[mask] = NOT_SKIN


def _skin(canvas: _Canvas, mask: np.ndarray, tone: Tone, axis_angle: float) -> None:
    """Skin of `tone`: two-scale mottling, pores, naevi, hairs and a cylindrical shading."""
    rng, (h, w) = canvas.rng, canvas.shape
    L0, a0, b0 = tone.lab
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    across = (-(x - w / 2) * np.sin(axis_angle) + (y - h / 2) * np.cos(axis_angle)) / (0.5 * max(h, w))
    shading = 1.0 - 0.10 * np.clip(across, -1.5, 1.5) ** 2
    melanin = _noise(canvas.shape, 40, rng) * 0.8 + _noise(canvas.shape, 8, rng) * 0.5
    haem = _noise(canvas.shape, 25, rng)
    colour = np.empty(canvas.shape + (3,), np.float32)
    colour[..., 0] = L0 * shading - 1.2 * melanin
    colour[..., 1] = a0 + 1.0 * haem + 0.2 * melanin
    colour[..., 2] = b0 * (1 + 0.04 * melanin)
    pores = rng.random(canvas.shape) < 0.004
    colour[..., 0][pores] -= 5.0
    for _ in range(int(rng.integers(0, 6))):  # naevi / freckles
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        spot = np.zeros(canvas.shape, np.uint8)
        cv2.circle(spot, (cx, cy), int(rng.integers(1, 4)), 1, -1)
        colour[spot > 0] = (max(8.0, L0 - 18), a0 + 2, b0 + 3)
    canvas.fill(mask, colour)
    canvas.truth[mask] = SKIN
    if L0 > 40:  # visible hairs on lighter skin
        layer = np.zeros(canvas.shape, np.uint8)
        ys, xs = np.nonzero(mask)
        for _ in range(60):
            i = int(rng.integers(len(xs)))
            t = axis_angle + rng.normal(0, 0.4)
            n = rng.uniform(8, 22)
            cv2.line(layer, (int(xs[i]), int(ys[i])), (int(xs[i] + n * np.cos(t)), int(ys[i] + n * np.sin(t))), 1, 1)
        hair = (layer > 0) & mask
        canvas.lab[hair] = (max(10.0, L0 * 0.45), a0 * 0.6, b0 * 0.6)  # hairs are skin in the truth


def _wound(canvas: _Canvas, region: np.ndarray, kind: str, skin_lab: tuple[float, float, float]) -> None:
    """Paint wound `kind` over `region` (clipped to the skin already painted) and record it."""
    rng = canvas.rng
    region = region & (canvas.truth >= SKIN)
    if not region.any():
        return
    canvas.truth[region] = 2 + WOUND_CLASSES.index(kind)
    L0, a0, b0 = skin_lab
    n = _noise(canvas.shape, 10, rng)
    colour = canvas.lab.copy()
    if kind == "erythema":
        rise = rng.uniform(12, 24)
        # erythema keeps the skin's lightness structure, reddens and darkens a little
        colour[..., 0] = canvas.lab[..., 0] - rng.uniform(2, 7) + 1.5 * n
        colour[..., 1] = canvas.lab[..., 1] + rise + 2.0 * n
        colour[..., 2] = canvas.lab[..., 2] + rng.uniform(-2, 3)
    elif kind == "moist":
        colour[..., 0] = rng.uniform(52, 66) + 2.5 * n
        colour[..., 1] = rng.uniform(28, 40) + 2.5 * n
        colour[..., 2] = rng.uniform(12, 22) + 2.0 * n
    elif kind == "eschar_white":
        colour[..., 0] = rng.uniform(76, 88) + 2.0 * n
        colour[..., 1] = rng.uniform(1.5, 5) + 0.8 * n
        colour[..., 2] = rng.uniform(8, 15) + 1.0 * n
    elif kind == "eschar_brown":
        colour[..., 0] = rng.uniform(28, 42) + 2.0 * n
        colour[..., 1] = rng.uniform(9, 16) + 1.0 * n
        colour[..., 2] = rng.uniform(16, 28) + 1.5 * n
    elif kind == "charred":
        colour[..., 0] = rng.uniform(9, 19) + 2.0 * n
        colour[..., 1] = rng.uniform(0, 3) + 0.6 * n
        colour[..., 2] = rng.uniform(0, 4) + 0.6 * n
    canvas.fill(region, colour)
    if kind in ("eschar_white", "eschar_brown", "charred"):  # cracks
        layer = np.zeros(canvas.shape, np.uint8)
        ys, xs = np.nonzero(region)
        for _ in range(max(2, len(xs) // 1500)):
            i = int(rng.integers(len(xs)))
            pts = np.cumsum(rng.integers(-9, 10, (6, 2)), 0) + (xs[i], ys[i])
            cv2.polylines(layer, [pts.astype(np.int32)], False, 1, 1)
        crack = (layer > 0) & region
        canvas.lab[crack, 0] *= 0.7
    if kind == "moist":  # blister domes and specular highlights
        ys, xs = np.nonzero(region)
        for _ in range(int(rng.integers(2, 6))):
            i = int(rng.integers(len(xs)))
            dome = np.zeros(canvas.shape, np.uint8)
            cv2.circle(dome, (int(xs[i]), int(ys[i])), int(rng.integers(5, 12)), 1, -1)
            canvas.lab[(dome > 0) & region] = (rng.uniform(68, 76), rng.uniform(18, 26), rng.uniform(12, 18))
        glints = (rng.random(canvas.shape) < 0.003) & region
        canvas.lab[(cv2.dilate(glints.astype(np.uint8), np.ones((2, 3), np.uint8)) > 0) & region] = (97, 0, 2)


def _burn(canvas: _Canvas, skin: np.ndarray, kind: str, skin_lab: tuple[float, float, float], centre, size) -> None:
    rng = canvas.rng
    if kind == "zoned":  # Jackson's zones: erythema halo, moist middle, eschar or char centre
        core = str(rng.choice(["eschar_white", "eschar_brown", "charred", "moist"]))
        _wound(canvas, _shape(canvas.shape, centre, size, rng), "erythema", skin_lab)
        _wound(canvas, _shape(canvas.shape, centre, (size[0] * 0.7, size[1] * 0.7), rng), "moist", skin_lab)
        if core != "moist":
            _wound(canvas, _shape(canvas.shape, centre, (size[0] * 0.38, size[1] * 0.38), rng, 0.2), core, skin_lab)
        return
    _wound(canvas, _shape(canvas.shape, centre, size, rng), kind, skin_lab)


def _ruler(canvas: _Canvas, rng: np.random.Generator) -> None:
    h, w = canvas.shape
    y0 = int(rng.uniform(0.02, 0.1) * h)
    x0, x1 = int(0.05 * w), int(0.6 * w)
    mask = np.zeros(canvas.shape, bool)
    mask[y0:y0 + int(0.06 * h), x0:x1] = True
    canvas.textile(mask, (90.0, 0.0, 4.0) if rng.random() < 0.5 else (84.0, 2.0, 60.0), weave=0.5)
    for x in range(x0, x1, max(4, w // 80)):
        canvas.lab[y0:y0 + int(0.025 * h), x:x + 1] = (15.0, 0.0, 0.0)


def _colour_card(canvas: _Canvas, rng: np.random.Generator) -> None:
    """A 6 × 4 colour checker (patches of the familiar chart) in a black frame, in a corner."""
    patches = ["735244", "c29682", "627a9d", "576c43", "8580b1", "67bdaa", "d67e2c", "505ba6", "c15a63", "5e3c6c",
               "9dbc40", "e0a32e", "383d96", "469449", "af363c", "e7c71f", "bb5695", "0885a1", "f3f3f2", "c8c8c8",
               "a0a0a0", "7a7a79", "555555", "343434"]
    h, w = canvas.shape
    cell = max(6, int(0.035 * w))
    x0 = int(w - 6.6 * cell) if rng.random() < 0.5 else int(0.02 * w)
    y0 = int(h - 4.6 * cell)
    frame = np.zeros(canvas.shape, bool)
    frame[y0:y0 + int(4.4 * cell), x0:x0 + int(6.4 * cell)] = True
    canvas.textile(frame, (12.0, 0.0, 0.0), weave=0.3)
    for i, code in enumerate(patches):
        r, c = divmod(i, 6)
        ys, xs = y0 + int((0.2 + r * 1.05) * cell), x0 + int((0.2 + c * 1.05) * cell)
        lab = rgb_to_lab(np.array([[int(code[k:k + 2], 16) for k in (0, 2, 4)]], np.float32))[0]
        canvas.lab[ys:ys + int(0.9 * cell), xs:xs + int(0.9 * cell)] = lab


# --------------------------------------------------------------------------- capture conditions


def _capture(rgb: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Apply one capture condition to a linear-ish sRGB float image; returns uint8 and a description."""
    h, w = rgb.shape[:2]
    detail = condition
    if condition == "uneven light":
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        t = rng.uniform(0, 2 * np.pi)
        ramp = ((x - w / 2) * np.cos(t) + (y - h / 2) * np.sin(t)) / (0.5 * max(h, w))
        rgb = rgb * (1.0 + 0.30 * np.clip(ramp, -1.2, 1.2))[..., None]
    elif condition == "shadow":
        mask = np.zeros((h, w), np.float32)
        pts = np.array([(rng.uniform(0, w), 0), (rng.uniform(0, w), h), (w, h), (w, 0)], np.int32)
        cv2.fillPoly(mask, [pts], 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), 6)
        rgb = rgb * (1.0 - rng.uniform(0.35, 0.5) * mask)[..., None]
    elif condition == "colour cast":
        gains = np.ones(3, np.float32)
        k = rng.uniform(0.10, 0.15)
        warm = rng.random() < 0.5
        gains[0], gains[2] = (1 + k, 1 - k) if warm else (1 - k, 1 + k)
        if rng.random() < 0.5:
            gains[1] = 1 + rng.uniform(-0.1, 0.1)
        rgb = rgb * gains
        detail = "colour cast " + ",".join(f"{g:.2f}" for g in gains)
    elif condition == "blur":
        rgb = cv2.GaussianBlur(rgb, (0, 0), 2.5)
    rgb = rgb + rng.normal(0, 2.0, rgb.shape).astype(np.float32)
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    if condition == "jpeg q60":
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
        if not ok:
            raise RuntimeError("OpenCV could not encode the evaluation photograph as JPEG")
        out = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out, detail


# --------------------------------------------------------------------------- scenes


def make_scene(seed: int, width: int = 640, height: int = 480) -> EvalScene:
    """The evaluation photograph of `seed` (see the module docstring for the design)."""
    tone = TONES[(seed // 2) % len(TONES)]
    condition = CONDITIONS[(seed // 32) % len(CONDITIONS)]
    rng = np.random.default_rng(10_000 + seed)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    healthy = seed % 10 in (0, 1)
    if healthy and (seed // 10) % 2 == 0:
        background = "red clothing"  # half of the healthy controls lie beside red clothing
    burn = None if healthy else BURN_KINDS[int(rng.integers(len(BURN_KINDS)))]
    shape = (height, width)
    canvas = _Canvas(shape, rng)
    drape = {"blue drape": (42.0, -2.0, -30.0), "green drape": (48.0, -32.0, 8.0), "beige sheet": (86.0, 2.0, 12.0)}
    base = drape.get(background, drape[str(rng.choice(["blue drape", "green drape", "beige sheet"]))])
    canvas.textile(np.ones(shape, bool), base)

    # the body part: a limb across the frame, or a close-up filling most of it
    close_up = rng.random() < 0.3
    angle = rng.uniform(-0.5, 0.5)
    if close_up:
        skin = np.ones(shape, bool)
        cut = int(rng.uniform(0.05, 0.25) * height)
        skin[:cut] = False
    else:
        thickness = rng.uniform(0.45, 0.7) * height
        limb = np.zeros(shape, np.uint8)
        cx, cy = width / 2 + rng.uniform(-40, 40), height / 2 + rng.uniform(-30, 30)
        dx, dy = np.cos(angle) * width, np.sin(angle) * width
        cv2.line(limb, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, int(thickness))
        skin = limb.astype(bool)
    _skin(canvas, skin, tone, angle)

    objects: list[str] = []
    if background == "red clothing":
        # a sleeve or shirt over one end of the limb, touching skin (and any wound there)
        red = (rng.uniform(35, 50), rng.uniform(50, 68), rng.uniform(28, 45))
        sleeve = np.zeros(shape, bool)
        if rng.random() < 0.5:
            sleeve[:, int(rng.uniform(0.72, 0.85) * width):] = True
        else:
            sleeve[:, :int(rng.uniform(0.15, 0.28) * width)] = True
        canvas.textile(sleeve, red)
        objects.append("red clothing")
    if background == "white gauze":
        ys, xs = np.nonzero(canvas.truth == SKIN)
        i = int(rng.integers(len(xs)))
        gauze = _shape(shape, (float(xs[i]), float(ys[i])), (0.12 * width, 0.08 * width), rng, 0.1)
        canvas.textile(gauze, (94.0, 0.0, 1.5), weave=2.5)
        objects.append("white gauze")
    if burn is not None:
        ys, xs = np.nonzero(canvas.truth == SKIN)
        # the wound may lie anywhere on the visible skin, also against its edge, the frame, clothing or gauze
        i = int(rng.integers(len(xs)))
        centre = (float(xs[i]), float(ys[i]))
        size = (rng.uniform(0.08, 0.2) * width, rng.uniform(0.07, 0.17) * width)
        _burn(canvas, skin, burn, tone.lab, centre, size)
    if background == "ruler":
        _ruler(canvas, rng)
        objects.append("ruler")
    if background == "colour card":
        _colour_card(canvas, rng)
        objects.append("colour card")

    rgb = lab_to_rgb(canvas.lab)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.7)
    out, detail = _capture(rgb, condition, rng)
    return EvalScene(seed, out, canvas.truth.copy(), tone, condition, background, burn, tuple(objects), detail)


def scene_seeds(count: int, split: str) -> list[int]:
    """The seeds of one split ('dev' or 'held-out') among the first `count` scenes."""
    return [s for s in range(count) if split_of(s) == split]
