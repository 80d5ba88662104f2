"""The images the engines are calibrated and gated on, built with the product's own preprocessing.

Reduced-precision paths are calibrated (TensorRT INT8) and checked (the parity gate) on the same
kind of input the MAP feeds the image tower: images preprocessed by the product's own pipeline
(`operators.preparation.preprocessing.prepare_series`, with its default settings) and normalised with the
model's mean and standard deviation. Building them needs the sample studies and the operators'
DICOM reading, so it happens here, above the engines, which receive plain arrays
(`engines.calibration.CalibrationSet`, `engines.parity_gate.ProbeSet`).

- `sample_study_images`: the sample studies (`app/sample_studies.py`: a burn photograph, a chest
  radiograph, a chest CT, pydicom's CT and MR slices), built by code into a temporary folder.
- `folder_images`: a folder you point at (`python -m app.engine_commands build --calib DIR`):
  DICOM files of any series the preprocessing can prepare, and ordinary PNG/JPEG/TIFF/BMP images
  (treated as colour photographs). A folder with no usable image is a `CalibrationError` naming
  the folder and what was found there.
- `probe_images`: a deterministic probe set for parity checks: the sample images plus flipped,
  rotated, zoomed, gamma- and noise-altered variants, so that a few base images give a few dozen
  different inputs.
- `SampleStudyProbes`: the `engines.parity_gate.ProbeSource` every run and engine command passes
  to the engines; it builds the images only when a gate or a calibration needs them.

Nothing here imports torch.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from common.configuration import CONFIG_DIR
from engines.base import InferenceBackend
from engines.calibration import CalibrationError, CalibrationSet
from engines.parity_gate import ProbeSet
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CALIBRATION_SALT = "biomedclip-map calibration"
"""Salt of the study references of calibration folders (they only appear in debug logs)."""
PROBE_SET_NAME = "sample-studies-x8-v1"
"""Names the probe set construction (`probe_images` of the sample studies); part of every gate key."""
BUNDLED_TASKS = CONFIG_DIR / "zero_shot_tasks.yaml"


def _normalise(rgb: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] -> (3, size, size) normalised tensor, padded with the mean colour."""
    from operators.preparation.image_geometry import fit_and_pad

    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    square = fit_and_pad(rgb.astype(np.float32), size, mean_arr)
    return ((square - mean_arr) / std_arr).transpose(2, 0, 1).astype(np.float32)


class _PictureSkipFilter(logging.Filter):
    """Keeps the DICOM scan quiet about picture files (read next, as pictures) and about finding no DICOM."""

    def filter(self, record: logging.LogRecord) -> bool:
        if any(isinstance(arg, Path) and arg.suffix.lower() in IMAGE_SUFFIXES for arg in record.args or ()):
            return False
        return not str(record.msg).startswith("No analysable DICOM instance")


def _dicom_tensors(folder: Path, size: int, mean, std, problems: Counter) -> list[np.ndarray]:
    """Every series under `folder` that the product's preprocessing can prepare, as normalised tensors."""
    from operators.dicom_input.dicom_scan import scan_input
    from operators.messages import SelectedSeries
    from operators.preparation.preprocessing import PreprocessingError, PreprocessingSettings, prepare_series

    settings = replace(PreprocessingSettings(), image_size=size)
    scan_log = logging.getLogger("biomedclip_map.loader")
    level = scan_log.level
    scan_log.setLevel(max(level, logging.WARNING))  # per-study lines are about MAP runs, not calibration folders
    quiet = _PictureSkipFilter()
    scan_log.addFilter(quiet)
    try:
        scan = scan_input(folder, salt=CALIBRATION_SALT)
    finally:
        scan_log.removeFilter(quiet)
        scan_log.setLevel(level)
    for skipped in scan.skipped:
        if skipped.path.suffix.lower() not in IMAGE_SUFFIXES:
            problems["not analysable as DICOM"] += 1
    tensors: list[np.ndarray] = []
    for study in scan.studies:
        for series in study.series:
            selected = SelectedSeries(selection_name="calibration", series=series)
            try:
                prepared = prepare_series(selected, settings, tuple(mean), tuple(std), study_ref=study.ref)
            except PreprocessingError as exc:
                log.info("calibration: a %s series is left out: %s", series.modality or "DICOM", exc)
                problems["DICOM series that cannot be prepared"] += 1
                continue
            tensors.extend(prepared.tensors)
    return tensors


def _picture_tensors(folder: Path, size: int, mean, std, problems: Counter) -> list[np.ndarray]:
    """Every readable PNG/JPEG/TIFF/BMP under `folder` as a normalised colour tensor."""
    import cv2

    tensors: list[np.ndarray] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if picture is None or min(picture.shape[:2]) < 8:
            log.info("calibration: %s is not a readable image of at least 8×8 pixels; left out", path)
            problems["unreadable or tiny picture files"] += 1
            continue
        rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        tensors.append(_normalise(rgb, size, mean, std))
    return tensors


def folder_images(folder: Path, *, size: int, mean: Sequence[float], std: Sequence[float], limit: int = 512) -> CalibrationSet:
    """Preprocessed images from the DICOM files and pictures under `folder` (at most `limit`, evenly spread).

    Raises CalibrationError when `folder` is not a readable folder or holds no usable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(
            f"calibration folder {folder} does not exist or is not a folder; give a folder of DICOM files or PNG/JPEG images"
        )
    problems: Counter = Counter()
    try:
        tensors = _dicom_tensors(folder, size, mean, std, problems) + _picture_tensors(folder, size, mean, std, problems)
    except OSError as exc:
        raise CalibrationError(f"calibration folder {folder} cannot be read: {exc.strerror or exc}") from exc
    if not tensors:
        found = ", ".join(f"{count} {what}" for what, count in sorted(problems.items())) or "no files"
        raise CalibrationError(
            f"calibration folder {folder} holds no usable images ({found}); give a folder of DICOM "
            f"studies the MAP can analyse or of PNG/JPEG images"
        )
    if len(tensors) > limit:
        keep = np.linspace(0, len(tensors) - 1, limit).round().astype(int)
        tensors = [tensors[i] for i in keep]
    return CalibrationSet(np.stack(tensors).astype(np.float32), str(folder))


@functools.lru_cache(maxsize=4)
def _sample_study_tensors(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    from app.sample_studies import build_sample_studies

    with tempfile.TemporaryDirectory(prefix="biomedclip-calibration-") as tmp:
        build_sample_studies(Path(tmp))
        images = folder_images(Path(tmp), size=size, mean=mean, std=std).images
    images.setflags(write=False)
    return images


def sample_study_images(*, size: int, mean: Sequence[float], std: Sequence[float]) -> CalibrationSet:
    """Preprocessed images of the sample studies, built by code into a temporary folder and removed after.

    Built once per process and normalisation (the array is read-only), since the parity gate and
    INT8 calibration may both ask for it.
    """
    return CalibrationSet(_sample_study_tensors(int(size), tuple(map(float, mean)), tuple(map(float, std))), "sample studies")


def _variants(rgb: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Eight deterministic variants of an (H, W, 3) image in [0, 1] (the original first)."""
    import cv2

    rows, cols = rgb.shape[:2]
    r0, c0 = rows // 8, cols // 8
    zoomed = cv2.resize(rgb[r0 : rows - r0, c0 : cols - c0], (cols, rows), interpolation=cv2.INTER_LINEAR)
    noisy = np.clip(rgb + rng.normal(0.0, 0.04, rgb.shape), 0.0, 1.0)
    return [
        rgb,
        rgb[:, ::-1],
        np.rot90(rgb, 1),
        zoomed,
        np.power(rgb, 0.7),
        np.power(rgb, 1.4),
        noisy,
        np.clip((rgb - 0.5) * 1.3 + 0.5, 0.0, 1.0),
    ]


def probe_images(
    base: CalibrationSet, *, size: int, mean: Sequence[float], std: Sequence[float], count: int = 56, seed: int = 0
) -> np.ndarray:
    """(count, 3, S, S) probe images: each base image and its variants, cycling through the bases.

    Deterministic for the same base set, count and seed.
    """
    if len(base) == 0:
        raise CalibrationError("no base images to build a probe set from")
    rng = np.random.default_rng(seed)
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    per_base = [
        _variants(np.clip(image * std_arr + mean_arr, 0.0, 1.0).transpose(1, 2, 0), rng) for image in base.images
    ]
    probes: list[np.ndarray] = []
    variant = 0
    while len(probes) < count:
        for variants in per_base:
            if len(probes) == count:
                break
            probes.append(_normalise(np.ascontiguousarray(variants[variant % len(variants)]), size, mean, std))
        variant += 1
    return np.stack(probes).astype(np.float32)


def bundled_class_sets(backend: InferenceBackend, model: ModelDirectory, work_dir: Path) -> list[np.ndarray]:
    """Class embeddings of every task in the bundled task file, through the work folder's text cache."""
    from common.zero_shot_tasks import load_tasks
    from engines.text_cache import TextEmbeddingCache
    from engines.tokenizer import TextTokenizer
    from operators.inference.zero_shot import class_embeddings

    tasks = load_tasks(BUNDLED_TASKS)
    tokenizer = TextTokenizer.from_model(model)
    cache = TextEmbeddingCache.in_work_dir(work_dir, model.shipped_onnx_dir)
    return [class_embeddings(backend, tokenizer, task, cache) for _, task in sorted(tasks.tasks.items())]


class SampleStudyProbes:
    """The probe source of every run and engine command: the sample studies, preprocessed (an `engines.parity_gate.ProbeSource`).

    Nothing is built until an engine asks: a stored gate result needs no images at all.
    """

    name = PROBE_SET_NAME

    def calibration_set(self, model: ModelDirectory) -> CalibrationSet:
        """The sample studies preprocessed for `model` (INT8 calibration without --calib)."""
        return sample_study_images(size=model.image_size, mean=model.mean, std=model.std)

    def probe_set(self, model: ModelDirectory, work_dir: Path) -> ProbeSet:
        """The sample studies and their variants, and the bundled tasks' class embeddings per backend."""
        base = self.calibration_set(model)
        images = probe_images(base, size=model.image_size, mean=model.mean, std=model.std)
        return ProbeSet(images, lambda backend: bundled_class_sets(backend, model, work_dir))
