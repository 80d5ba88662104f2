"""Labelled synthetic chest radiographs for the site-validation tests, built by code.

Two kinds of image with a real, visible difference: a "normal chest radiograph" (two dark lung
fields in a brighter body) and a "pleural effusion" (the same, with the lower part of one lung
filled by a bright, homogeneous fluid level). Brightness, contrast, noise and the fluid height
vary from case to case, so a model has to see the fluid, not a constant offset. Headers carry
two manufacturers and models, both sexes and two age bands, and obviously synthetic patient
names and IDs that the tests look for in the report.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from tests.fixtures_dicom import write_image

NORMAL, EFFUSION = "normal chest radiograph", "pleural effusion"
SIZE = 96


@dataclass(frozen=True)
class LabelledStudy:
    """One synthetic study: its UIDs, patient identity, true label and header subgroups."""

    study_uid: str
    sop_uid: str
    patient_name: str
    patient_id: str
    label: str
    manufacturer: str
    sex: str
    age: str


def smooth_field(rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: a coarse random grid, bilinearly enlarged to SIZE × SIZE."""
    grid = rng.uniform(-1, 1, (cells, cells))
    positions = np.linspace(0, cells - 1, SIZE)
    rows = np.array([np.interp(positions, np.arange(cells), row) for row in grid])
    return np.array([np.interp(positions, np.arange(cells), column) for column in rows.T]).T


def radiograph(effusion: bool, rng: np.random.Generator, nuisance: float = 1.0) -> np.ndarray:
    """A 12-bit chest-radiograph-like image; with `effusion`, fluid fills the base of one lung.

    Everything else varies at random and survives windowing: the position and size of body and
    lungs, a strong low-frequency texture and a tilt of the exposure across the image. `nuisance`
    scales all of that variation (1: the default; lower: the effusion stands out more). The random
    draws are the same whatever `nuisance` is.
    """
    k = nuisance
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    cx, cy = 0.5 + k * rng.uniform(-0.08, 0.08), 0.55 + k * rng.uniform(-0.06, 0.06)
    body = ((x - cx) / (0.43 + k * (rng.uniform(0.38, 0.48) - 0.43))) ** 2 + ((y - cy) / (0.45 + k * (rng.uniform(0.4, 0.5) - 0.45))) ** 2 < 1
    image = np.where(body, 1800.0, 300.0)
    lungs = []
    for side in (-0.2, 0.2):
        lung = ((x - cx - side) / (0.135 + k * (rng.uniform(0.11, 0.16) - 0.135))) ** 2 + ((y - cy + 0.05) / (0.29 + k * (rng.uniform(0.25, 0.33) - 0.29))) ** 2 < 1
        image[lung] = 700.0
        lungs.append(lung)
    if effusion:
        lung = lungs[int(rng.integers(0, 2))]
        image[lung & (y > cy + rng.uniform(0.0, 0.12))] = 1700.0
    image += k * (600 * smooth_field(rng) + 500 * rng.uniform(-1, 1) * (x - 0.5) + 400 * rng.uniform(-1, 1) * (y - 0.5))
    contrast, offset = 1 + k * (rng.uniform(0.8, 1.2) - 1), k * rng.uniform(-150, 150)
    image = image * contrast + offset + rng.normal(0, 60, image.shape)
    return np.clip(image, 0, 4095).astype(np.int16)


def write_labelled_studies(folder: Path, count: int = 40, seed: int = 0, nuisance: float = 1.0) -> list[LabelledStudy]:
    """`count` one-image CR chest studies into `folder`, alternating the two labels."""
    rng = np.random.default_rng(seed)
    studies = []
    for index in range(count):
        label = EFFUSION if index % 2 else NORMAL
        study = LabelledStudy(
            study_uid=generate_uid(), sop_uid=generate_uid(), patient_name=f"Testpatient^Case{index:03d}",
            patient_id=f"VAL-PID-{index:03d}", label=label, manufacturer=("Acme Imaging", "Borealis Medical")[index // 2 % 2],
            sex=("F", "M")[index // 4 % 2], age=("034Y", "071Y")[index // 8 % 2],
        )
        pixels = radiograph(label == EFFUSION, rng, nuisance)
        write_image(
            folder / f"study{index:03d}" / "IM0001.dcm", modality="CR", rows=SIZE, columns=SIZE,
            study_uid=study.study_uid, SOPInstanceUID=study.sop_uid, PatientName=study.patient_name,
            PatientID=study.patient_id, BodyPartExamined="CHEST", Manufacturer=study.manufacturer,
            ManufacturerModelName=f"{study.manufacturer.split()[0]} DR-1", PatientSex=study.sex, PatientAge=study.age,
            ImageType=["ORIGINAL", "PRIMARY"], PixelData=pixels.tobytes(),
        )
        studies.append(study)
    return studies


def write_labels(path: Path, studies: list[LabelledStudy], *, by_instance_every: int = 3) -> Path:
    """The labels CSV of `studies`: every `by_instance_every`-th case by SOPInstanceUID, the others by study."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["StudyInstanceUID", "SOPInstanceUID", "task", "label"])
        for index, study in enumerate(studies):
            by_instance = by_instance_every and index % by_instance_every == 0
            writer.writerow(["", study.sop_uid, "chest_radiograph", study.label.upper() if index == 1 else study.label]
                            if by_instance else [study.study_uid, "", "chest_radiograph", study.label])
    return path
