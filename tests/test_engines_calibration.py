"""Calibration and probe images: the sample studies, user folders (DICOM and pictures), bad folders."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from app.probe_set import folder_images, probe_images, sample_study_images
from engines.calibration import CalibrationError, CalibrationSet

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def test_sample_studies_give_one_image_per_prepared_view() -> None:
    samples = sample_study_images(size=224, mean=MEAN, std=STD)
    assert samples.source == "sample studies"
    # burn photograph, chest radiograph, three CT slices, three MR slices, pydicom's CT and MR
    assert samples.images.shape == (10, 3, 224, 224) and samples.images.dtype == np.float32
    assert not samples.images.flags.writeable  # shared across callers in one process
    assert len(set(np.round(samples.images.reshape(10, -1).mean(axis=1), 4))) == 10


def test_probe_set_is_deterministic_and_made_of_distinct_variants() -> None:
    base = sample_study_images(size=224, mean=MEAN, std=STD)
    probes = probe_images(base, size=224, mean=MEAN, std=STD)
    assert probes.shape == (56, 3, 224, 224)
    assert np.array_equal(probes, probe_images(base, size=224, mean=MEAN, std=STD))
    assert len({probe.tobytes() for probe in probes}) == 56
    assert np.allclose(probes[0], base.images[0], atol=1e-5)  # the first variant is the image itself
    with pytest.raises(CalibrationError):
        probe_images(CalibrationSet(np.zeros((0, 3, 224, 224), np.float32), "empty"), size=224, mean=MEAN, std=STD)


def test_folder_of_pictures_and_dicom_files_is_preprocessed(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    (folder / "photos").mkdir(parents=True)
    grey = np.full((60, 120, 3), 128, dtype=np.uint8)
    cv2.imwrite(str(folder / "photos" / "grey.png"), grey)
    cv2.imwrite(str(folder / "photos" / "red.jpg"), np.dstack([np.zeros((50, 50)), np.zeros((50, 50)), np.full((50, 50), 255)]).astype(np.uint8))
    shutil.copyfile(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    found = folder_images(folder, size=224, mean=MEAN, std=STD)
    assert found.images.shape == (3, 3, 224, 224) and found.source == str(folder)
    grey_tensor = found.images[1]  # DICOM first, then pictures in path order
    centre = grey_tensor[:, 112, 112]
    assert np.allclose(centre, (128 / 255 - np.array(MEAN)) / np.array(STD), atol=1e-4)
    red = found.images[2][:, 112, 112]
    assert red[0] > 1.5 and red[1] < -1.5  # RGB order: BGR pictures are converted
    assert found.digest != folder_images(folder / "photos", size=224, mean=MEAN, std=STD).digest


def test_folder_without_usable_images_is_refused_saying_what_was_found(tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CalibrationError) as info:
        folder_images(folder, size=224, mean=MEAN, std=STD)
    message = str(info.value)
    assert str(folder) in message and "holds no usable images" in message
    assert "1 not analysable as DICOM" in message and "1 unreadable or tiny picture files" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no usable images \\(no files\\)"):
        folder_images(empty, size=224, mean=MEAN, std=STD)
    with pytest.raises(CalibrationError, match="does not exist or is not a folder"):
        folder_images(tmp_path / "missing", size=224, mean=MEAN, std=STD)


def test_large_folders_are_thinned_evenly(tmp_path: Path, caplog) -> None:
    for index in range(6):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.full((16, 16, 3), index * 40, dtype=np.uint8))
    found = folder_images(tmp_path, size=32, mean=MEAN, std=STD, limit=3)
    assert found.images.shape == (3, 3, 32, 32)
    levels = found.images[:, 0, 16, 16] * STD[0] + MEAN[0]
    assert np.allclose(levels * 255, [0, 80, 200], atol=1)  # pictures 0, 2 (2.5 rounds to even) and 5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # pictures are not "skipped DICOM"
