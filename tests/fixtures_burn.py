"""Synthetic burn photographs with known ground truth, for the burn specialist's tests and benchmark.

Each photograph is painted by code: a background (surgical drape, white sheet, black or grey),
a body part of skin in one of six Fitzpatrick tones (with shading, mottling, pores and hairs),
wound regions with the colours and textures of each wound class (mottled erythema, glossy moist
dermis with blisters and specular highlights, cracked white or brown leathery eschar, charred
eschar with ash), and clothing that covers part of the skin. The painter records the true class of
every pixel, so the colour analysis can be scored (IoU, area percentage) against it.

No patient data: everything is drawn from seeded random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, VLPhotographicImageStorage, generate_uid

from operators.specialists.burn.config import load_burn_config
from operators.specialists.burn.wound_colour import FIRST_WOUND_LABEL, NOT_SKIN, SKIN
from tests.fixtures_dicom import set_attributes

#: Approximate skin colours (sRGB) of Fitzpatrick types I-VI.
TONES = {
    "I": (244, 208, 185),
    "II": (231, 184, 152),
    "III": (212, 160, 120),
    "IV": (176, 123, 84),
    "V": (125, 82, 55),
    "VI": (80, 52, 38),
}
BACKGROUNDS = {
    "blue drape": (70, 95, 140),
    "green drape": (60, 130, 90),
    "white sheet": (243, 243, 240),
    "black": (14, 14, 16),
    "grey": (128, 128, 130),
}
CLOTHING = {
    "red": (186, 28, 38),
    "denim": (58, 78, 118),
    "white": (241, 241, 237),
    "black": (20, 20, 22),
}


def wound_labels() -> dict[str, int]:
    """The wound-map label of each wound class key, in the configured order."""
    return {c.key: FIRST_WOUND_LABEL + i for i, c in enumerate(load_burn_config().colour.classes)}


@dataclass
class SyntheticBurn:
    """A painted photograph and the true class of each of its pixels (wound-map label values)."""

    name: str
    rgb: np.ndarray
    truth: np.ndarray
    tone: str
    notes: list[str] = field(default_factory=list)

    @property
    def wound_mask(self) -> np.ndarray:
        return self.truth >= FIRST_WOUND_LABEL

    @property
    def not_skin_mask(self) -> np.ndarray:
        return self.truth == NOT_SKIN

    @property
    def wound_percent(self) -> float:
        visible = int((self.truth >= SKIN).sum())
        return 100.0 * int(self.wound_mask.sum()) / visible if visible else 0.0


# --------------------------------------------------------------------------- texture helpers


def smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid enlarged with bicubic interpolation."""
    height, width = shape
    grid = rng.uniform(-1, 1, (max(2, cells * height // max(height, width)), max(2, cells * width // max(height, width))))
    big = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big / max(1e-6, float(np.abs(big).max())), -1, 1)


def blob(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], angle: float,
         rng: np.random.Generator, roughness: float = 0.25) -> np.ndarray:
    """An organic region: a rotated ellipse whose outline is perturbed by smooth noise (bool mask)."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = np.radians(angle)
    dx, dy = x - centre[0], y - centre[1]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / axes[0]
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / axes[1]
    return (u * u + v * v) + roughness * smooth_noise(shape, 6, rng) < 1.0


def paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple[float, float, float]) -> None:
    canvas[mask] = colour if isinstance(colour, tuple) else colour[mask]


class Painter:
    """Paints one photograph and its truth map together."""

    def __init__(self, width: int, height: int, background: str, tone: str, seed: int):
        self.rng = np.random.default_rng(seed)
        self.shape = (height, width)
        self.tone = tone
        self.image = np.empty((height, width, 3), np.float32)
        self.image[:] = BACKGROUNDS[background]
        # cloth folds: gentle shading of the background
        self.image *= (1.0 + 0.06 * smooth_noise(self.shape, 5, self.rng))[..., None]
        self.truth = np.full(self.shape, NOT_SKIN, np.uint8)
        self.labels = wound_labels()
        self.skin_base = np.array(TONES[tone], np.float32)

    # ---- skin
    def skin(self, mask: np.ndarray, hairs: bool = True) -> None:
        height, width = self.shape
        shade = np.linspace(0.86, 1.04, height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
        mottling = 1.0 + 0.05 * smooth_noise(self.shape, 10, self.rng)
        colour = self.skin_base[None, None, :] * (shade * mottling)[..., None]
        paint(self.image, mask, colour)
        self.truth[mask] = SKIN
        if hairs and self.tone in ("I", "II", "III", "IV"):
            hair_colour = tuple(float(v) for v in self.skin_base * 0.35)
            layer = np.zeros(self.shape, np.uint8)
            ys, xs = np.nonzero(mask)
            for _ in range(40):
                i = self.rng.integers(len(xs))
                angle = self.rng.uniform(0, np.pi)
                length = self.rng.uniform(10, 30)
                end = (int(xs[i] + length * np.cos(angle)), int(ys[i] + length * np.sin(angle)))
                cv2.line(layer, (int(xs[i]), int(ys[i])), end, 255, 1, cv2.LINE_AA)
            hair = (layer > 128) & mask
            paint(self.image, hair, hair_colour)  # hairs are skin in the truth map

    # ---- wounds (each clipped to the skin painted so far)
    def _region(self, mask: np.ndarray, key: str) -> np.ndarray:
        region = mask & (self.truth >= SKIN)
        self.truth[region] = self.labels[key]
        return region

    def erythema(self, mask: np.ndarray) -> None:
        region = self._region(mask, "erythema")
        red = np.array((205, 55, 50), np.float32)
        mottle = 1.0 + 0.07 * smooth_noise(self.shape, 14, self.rng)
        colour = (0.5 * self.image + 0.5 * red) * mottle[..., None]
        paint(self.image, region, colour)

    def moist(self, mask: np.ndarray, blisters: int = 3) -> None:
        region = self._region(mask, "moist")
        base = np.array((226, 118, 122), np.float32)
        colour = base * (1.0 + 0.06 * smooth_noise(self.shape, 16, self.rng))[..., None]
        paint(self.image, region, colour)
        ys, xs = np.nonzero(region)
        if not len(xs):
            return
        for _ in range(blisters):  # blister domes: lighter pink with a bright rim
            i = self.rng.integers(len(xs))
            radius = int(self.rng.uniform(6, 14))
            dome = np.zeros(self.shape, np.uint8)
            cv2.circle(dome, (int(xs[i]), int(ys[i])), radius, 255, -1)
            paint(self.image, (dome > 0) & region, (236, 162, 152))
            rim = np.zeros(self.shape, np.uint8)
            cv2.ellipse(rim, (int(xs[i]), int(ys[i])), (radius - 2, radius - 2), 0, 200, 300, 255, 2)
            paint(self.image, (rim > 0) & region, (250, 246, 244))
        for _ in range(25):  # specular highlights of the wet surface
            i = self.rng.integers(len(xs))
            spot = np.zeros(self.shape, np.uint8)
            cv2.ellipse(spot, (int(xs[i]), int(ys[i])), (int(self.rng.integers(1, 4)), 1), float(self.rng.uniform(0, 180)), 0, 360, 255, -1)
            paint(self.image, (spot > 0) & region, (252, 250, 250))

    def _leathery(self, mask: np.ndarray, key: str, base: tuple, crack: tuple) -> None:
        region = self._region(mask, key)
        colour = np.array(base, np.float32) * (1.0 + 0.05 * smooth_noise(self.shape, 20, self.rng))[..., None]
        paint(self.image, region, colour)
        ys, xs = np.nonzero(region)
        layer = np.zeros(self.shape, np.uint8)
        for _ in range(max(1, len(xs) // 400)):
            i = self.rng.integers(len(xs))
            points = [(int(xs[i]), int(ys[i]))]
            for _ in range(4):
                x, y = points[-1]
                points.append((int(x + self.rng.integers(-8, 9)), int(y + self.rng.integers(-8, 9))))
            cv2.polylines(layer, [np.array(points, np.int32)], False, 255, 1)
        paint(self.image, (layer > 0) & region, crack)

    def eschar_white(self, mask: np.ndarray) -> None:
        self._leathery(mask, "eschar_white", (226, 219, 203), (196, 186, 168))

    def eschar_brown(self, mask: np.ndarray) -> None:
        self._leathery(mask, "eschar_brown", (118, 76, 44), (74, 47, 30))

    def charred(self, mask: np.ndarray) -> None:
        region = self._region(mask, "charred")
        colour = np.array((34, 30, 28), np.float32) * (1.0 + 0.15 * smooth_noise(self.shape, 20, self.rng))[..., None]
        paint(self.image, region, colour)
        ash = (self.rng.random(self.shape) < 0.01) & region
        paint(self.image, ash, (96, 92, 88))

    # ---- clothing (covers whatever is below)
    def clothing(self, mask: np.ndarray, kind: str) -> None:
        colour = np.array(CLOTHING[kind], np.float32) * (1.0 + 0.08 * smooth_noise(self.shape, 12, self.rng))[..., None]
        paint(self.image, mask, colour)
        self.truth[mask] = NOT_SKIN

    def finish(self, name: str, notes: list[str]) -> SyntheticBurn:
        """Camera: slight blur and sensor noise."""
        image = cv2.GaussianBlur(self.image, (0, 0), 0.8)
        image += self.rng.normal(0, 3.0, image.shape).astype(np.float32)
        return SyntheticBurn(name, np.clip(image, 0, 255).astype(np.uint8), self.truth.copy(), self.tone, notes)


# --------------------------------------------------------------------------- scenes


def _limb(p: Painter, angle: float = -8, centre=(0.5, 0.5), axes=(0.58, 0.3)) -> np.ndarray:
    height, width = p.shape
    mask = np.zeros(p.shape, np.uint8)
    cv2.ellipse(mask, (int(width * centre[0]), int(height * centre[1])), (int(width * axes[0]), int(height * axes[1])), angle, 0, 360, 255, -1)
    return mask > 0


def _zoned_burn(p: Painter, centre, size, inner: str | None, middle: str | None, outer: str | None = "erythema") -> None:
    """Jackson's zones: an outer ring (erythema), a middle zone, an inner zone."""
    angle = float(p.rng.uniform(0, 180))
    if outer:
        getattr(p, outer)(blob(p.shape, centre, size, angle, p.rng))
    if middle:
        getattr(p, middle)(blob(p.shape, centre, (size[0] * 0.68, size[1] * 0.68), angle, p.rng))
    if inner:
        getattr(p, inner)(blob(p.shape, centre, (size[0] * 0.35, size[1] * 0.35), angle, p.rng, roughness=0.15))


def burn_scene(name: str, seed: int = 0, width: int = 640, height: int = 480) -> SyntheticBurn:
    """One of the named scenes of `SCENES`, painted at the given size."""
    tone, background, build = SCENES[name]
    p = Painter(width, height, background, tone, seed)
    notes = build(p)
    return p.finish(name, notes)


def _scene_blisters(p: Painter) -> list[str]:
    p.skin(_limb(p))
    _zoned_burn(p, (p.shape[1] * 0.45, p.shape[0] * 0.5), (p.shape[1] * 0.2, p.shape[0] * 0.17), None, "moist")
    return ["superficial partial-thickness: erythema rim, moist blistered centre"]


def _scene_white_eschar_on_sheet(p: Painter) -> list[str]:
    p.skin(_limb(p, angle=12))
    _zoned_burn(p, (p.shape[1] * 0.55, p.shape[0] * 0.5), (p.shape[1] * 0.2, p.shape[0] * 0.18), "eschar_white", "moist")
    return ["deep burn with white leathery eschar, on a white sheet"]


def _scene_brown_eschar_red_sleeve(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p))
    _zoned_burn(p, (width * 0.42, height * 0.5), (width * 0.17, height * 0.16), "eschar_brown", "moist")
    sleeve = np.zeros(p.shape, np.uint8)
    cv2.rectangle(sleeve, (int(width * 0.78), 0), (width, height), 255, -1)
    p.clothing(sleeve > 0, "red")
    return ["brown eschar; red sleeve covering the end of the limb"]


def _scene_charred_black_background(p: Painter) -> list[str]:
    p.skin(_limb(p, angle=-15))
    _zoned_burn(p, (p.shape[1] * 0.5, p.shape[0] * 0.5), (p.shape[1] * 0.22, p.shape[0] * 0.18), "charred", "moist")
    return ["full-thickness charred centre on a black background"]


def _scene_dark_skin_denim(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p, angle=5))
    _zoned_burn(p, (width * 0.4, height * 0.48), (width * 0.18, height * 0.17), "charred", "moist")
    trousers = np.zeros(p.shape, np.uint8)
    cv2.rectangle(trousers, (0, 0), (int(width * 0.16), height), 255, -1)
    p.clothing(trousers > 0, "denim")
    return ["dark skin: moist and charred zones; denim covers one end"]


def _scene_darkest_skin_white_shirt(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p, angle=-6))
    _zoned_burn(p, (width * 0.5, height * 0.52), (width * 0.2, height * 0.18), "eschar_white", "moist")
    shirt = np.zeros(p.shape, np.uint8)
    cv2.ellipse(shirt, (int(width * 0.97), int(height * 0.5)), (int(width * 0.16), int(height * 0.45)), 0, 0, 360, 255, -1)
    p.clothing(shirt > 0, "white")
    return ["darkest skin: moist zone and white eschar; white shirt"]


def _scene_close_up_edge(p: Painter) -> list[str]:
    height, width = p.shape
    body = np.zeros(p.shape, bool)
    body[int(height * 0.12):, :] = True
    p.skin(body)
    # a wound running off the right edge of the frame
    _zoned_burn(p, (width * 0.95, height * 0.6), (width * 0.24, height * 0.24), None, "moist")
    return ["close-up: skin fills the frame below a strip of white sheet; the wound runs off the edge"]


def _scene_two_forearms(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p, angle=-20, centre=(0.5, 0.3), axes=(0.5, 0.14)) | _limb(p, angle=15, centre=(0.5, 0.72), axes=(0.5, 0.14)))
    _zoned_burn(p, (width * 0.4, height * 0.32), (width * 0.12, height * 0.08), None, "moist")
    _zoned_burn(p, (width * 0.62, height * 0.7), (width * 0.1, height * 0.08), None, None)
    return ["two forearms on a white sheet; erythema and a moist zone"]


def _scene_red_shirt(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p, angle=0, axes=(0.62, 0.34)))
    _zoned_burn(p, (width * 0.35, height * 0.5), (width * 0.15, height * 0.17), None, "moist")
    shirt = np.zeros(p.shape, np.uint8)
    cv2.rectangle(shirt, (int(width * 0.7), int(height * 0.05)), (width, height), 255, -1)
    p.clothing(shirt > 0, "red")
    return ["erythema and moist zone; red shirt next to the limb on a black background"]


def _scene_mixed_grey(p: Painter) -> list[str]:
    height, width = p.shape
    p.skin(_limb(p, angle=8))
    _zoned_burn(p, (width * 0.35, height * 0.5), (width * 0.14, height * 0.15), None, "moist")
    _zoned_burn(p, (width * 0.68, height * 0.5), (width * 0.12, height * 0.14), "charred", "eschar_white", "moist")
    return ["two burns: superficial partial-thickness and a deep one with white eschar and char"]


def _scene_healthy(p: Painter) -> list[str]:
    p.skin(_limb(p))
    return ["healthy skin, no burn"]


#: name → (Fitzpatrick tone, background, painter)
SCENES = {
    "blisters-I-blue": ("I", "blue drape", _scene_blisters),
    "white-eschar-II-sheet": ("II", "white sheet", _scene_white_eschar_on_sheet),
    "brown-eschar-III-red-sleeve": ("III", "green drape", _scene_brown_eschar_red_sleeve),
    "charred-IV-black": ("IV", "black", _scene_charred_black_background),
    "charred-V-denim": ("V", "grey", _scene_dark_skin_denim),
    "white-eschar-VI-shirt": ("VI", "blue drape", _scene_darkest_skin_white_shirt),
    "close-up-III-edge": ("III", "white sheet", _scene_close_up_edge),
    "two-forearms-II-sheet": ("II", "white sheet", _scene_two_forearms),
    "red-shirt-IV-black": ("IV", "black", _scene_red_shirt),
    "mixed-I-grey": ("I", "grey", _scene_mixed_grey),
    "brown-eschar-II-green": ("II", "green drape", _scene_brown_eschar_red_sleeve),
    "blisters-V-green": ("V", "green drape", _scene_blisters),
}
HEALTHY_SCENES = {
    "healthy-III-blue": ("III", "blue drape", _scene_healthy),
    "healthy-VI-sheet": ("VI", "white sheet", _scene_healthy),
}
SCENES.update(HEALTHY_SCENES)
BURN_SCENES = [name for name in SCENES if name not in HEALTHY_SCENES]


# --------------------------------------------------------------------------- DICOM


def burn_photo_dataset(
    rgb: np.ndarray,
    *,
    study_uid: str | None = None,
    body_part: str | None = "ARM",
    region: tuple[str, str] | None = ("14975008", "Forearm"),
    laterality: str | None = "L",
    **attributes: object,
) -> Dataset:
    """A VL Photographic Image instance (XC) holding `rgb`, with the given anatomy attributes.

    A 2-D array is written as a MONOCHROME2 photograph (the greyscale case of the burn selection).
    Keyword arguments set further attributes by keyword (None deletes one).
    """
    ds = Dataset()
    ds.SOPClassUID = VLPhotographicImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Burn"
    ds.PatientID = "TEST-BURN-1"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "XC"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.Manufacturer = "synthetic"
    if body_part:
        ds.BodyPartExamined = body_part
    if region:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = region[0], "SCT", region[1]
        ds.AnatomicRegionSequence = [item]
    if laterality:
        ds.Laterality = laterality
    ds.Rows, ds.Columns = rgb.shape[:2]
    if rgb.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()
    set_attributes(ds, attributes)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


@pytest.fixture(scope="session")
def synthetic_burns() -> list[SyntheticBurn]:
    """Every burn scene of `SCENES` (not the healthy ones), painted at 640 × 480 with fixed seeds."""
    return [burn_scene(name, seed=i) for i, name in enumerate(BURN_SCENES)]
