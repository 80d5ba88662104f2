"""Sample studies built by code, for the demo and the tests: no patient data, no downloads.

Four synthetic studies (a colour photograph of a burn on skin as a VL Photographic Image, a
chest radiograph as a DX image, a small chest CT series, a small brain MR series) plus the CT and MR
files that ship inside the pydicom wheel, each in its own folder, as MONAI Deploy Express would hand
them to the MAP. pydicom's MR file is a derived image (Image Type DERIVED, SECONDARY): it shows that
the MAP leaves such images out and says why.
Pixel content is drawn with simple shapes so that the images look like what they claim to be;
they are not clinical data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

VL_PHOTOGRAPHIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
DX_FOR_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class SampleStudy:
    """One sample study folder and what it holds."""

    name: str
    path: Path
    description: str
    #: False for a sample that shows what the MAP leaves out (the description says why): no report.
    analysed: bool = True


def _uid(*parts: str) -> str:
    """A UID that is stable for the same sample, so repeated demo runs address the same study."""
    return generate_uid(entropy_srcs=["biomedclip-map sample", *parts])


def _base_dataset(sop_class_uid: str, sop_instance_uid: str, patient: tuple[str, str], study_uid: str) -> Dataset:
    """Patient, study and SOP common attributes shared by every sample instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.InstanceCreationDate = datetime.now().strftime("%Y%m%d")
    ds.Manufacturer = "biomedclip-map sample generator"
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    """Image Pixel module for unsigned greyscale (rows, cols) or interleaved RGB (rows, cols, 3)."""
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def skin_photograph(width: int = 640, height: int = 480, seed: int = 7) -> np.ndarray:
    """An RGB photograph-like image: a forearm of skin with a partial-thickness burn, on a drape.

    The burn has a red erythematous rim, a moist pink blistered centre and a small pale patch, the
    colours that the burn specialist's colour analysis looks for.
    """
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    img[:] = (70, 95, 140)  # blue surgical drape (RGB)
    limb = np.zeros((height, width), np.uint8)
    cv2.ellipse(limb, (width // 2, height // 2), (int(width * 0.45), int(height * 0.32)), -8, 0, 360, 255, -1)
    skin = np.array((222, 176, 146), np.float32)
    shade = np.linspace(0.85, 1.05, height, dtype=np.float32)[:, None, None]
    img = np.where(limb[..., None] > 0, skin * shade, img)
    burn = np.zeros((height, width), np.uint8)
    cv2.ellipse(burn, (int(width * 0.55), int(height * 0.5)), (int(width * 0.16), int(height * 0.12)), 15, 0, 360, 255, -1)
    blister = np.zeros((height, width), np.uint8)
    cv2.ellipse(blister, (int(width * 0.56), int(height * 0.5)), (int(width * 0.08), int(height * 0.06)), 15, 0, 360, 255, -1)
    pale = np.zeros((height, width), np.uint8)
    cv2.circle(pale, (int(width * 0.6), int(height * 0.47)), int(height * 0.025), 255, -1)
    img = np.where(burn[..., None] > 0, np.array((196, 62, 58), np.float32), img)
    img = np.where(blister[..., None] > 0, np.array((232, 150, 150), np.float32), img)
    img = np.where(pale[..., None] > 0, np.array((236, 228, 214), np.float32), img)
    img += rng.normal(0, 4.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (5, 5), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


def chest_radiograph(size: int = 512) -> np.ndarray:
    """A 12-bit frontal chest radiograph-like image (MONOCHROME2: air dark, bone bright)."""
    img = np.full((size, size), 300.0, np.float32)
    cv2.ellipse(img, (size // 2, int(size * 0.55)), (int(size * 0.42), int(size * 0.46)), 0, 0, 360, 1900, -1)
    for side in (-1, 1):
        centre = (size // 2 + side * int(size * 0.19), int(size * 0.5))
        cv2.ellipse(img, centre, (int(size * 0.14), int(size * 0.3)), side * 6, 0, 360, 700, -1)
    cv2.ellipse(img, (int(size * 0.54), int(size * 0.62)), (int(size * 0.13), int(size * 0.12)), 0, 0, 360, 2300, -1)
    cv2.rectangle(img, (size // 2 - size // 40, int(size * 0.1)), (size // 2 + size // 40, size), 2700, -1)
    for k in range(9):
        y = int(size * (0.24 + 0.065 * k))
        for side in (-1, 1):
            cv2.ellipse(img, (size // 2, y), (int(size * 0.33), int(size * 0.07)), 0, 200 if side < 0 else 270, 270 if side < 0 else 340, 2500, 3)
    cv2.line(img, (int(size * 0.2), int(size * 0.2)), (int(size * 0.47), int(size * 0.24)), 2800, 6)
    cv2.line(img, (int(size * 0.8), int(size * 0.2)), (int(size * 0.53), int(size * 0.24)), 2800, 6)
    img = cv2.GaussianBlur(img, (0, 0), size / 180)
    img += np.random.default_rng(3).normal(0, 25, img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def chest_ct_slice(z: float, size: int = 256) -> np.ndarray:
    """One axial chest CT slice in Hounsfield units at relative height z in [0, 1]."""
    hu = np.full((size, size), -1000.0, np.float32)
    cv2.ellipse(hu, (size // 2, size // 2), (int(size * 0.42), int(size * 0.3)), 0, 0, 360, 30, -1)
    lung_axes = (int(size * 0.15), int(size * (0.18 + 0.04 * np.sin(np.pi * z))))
    cv2.ellipse(hu, (int(size * 0.33), size // 2), lung_axes, 0, 0, 360, -850, -1)
    cv2.ellipse(hu, (int(size * 0.67), size // 2), lung_axes, 0, 0, 360, -850, -1)
    cv2.circle(hu, (size // 2, int(size * 0.72)), int(size * 0.05), 700, -1)
    cv2.circle(hu, (int(size * 0.52), int(size * 0.45)), int(size * 0.07), 45, -1)
    if 0.4 < z < 0.6:
        cv2.circle(hu, (int(size * 0.3), int(size * 0.45)), int(size * 0.025), 20, -1)
    hu += np.random.default_rng(int(z * 1000)).normal(0, 12, hu.shape).astype(np.float32)
    return hu


def _write_burn_photo(dest: Path) -> None:
    study = _uid("burn", "study")
    series = _uid("burn", "series")
    sop = _uid("burn", "instance")
    ds = _base_dataset(VL_PHOTOGRAPHIC_IMAGE_STORAGE, sop, ("SAMPLE^BURN", "SAMPLE-0001"), study)
    ds.StudyDescription = "Wound photography"
    ds.Modality = "XC"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Clinical photograph"
    ds.BodyPartExamined = "ARM"
    ds.AnatomicRegionSequence = [_code("14975008", "SCT", "Forearm")]
    ds.Laterality = "L"
    ds.PatientOrientation = ""
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.AcquisitionContextSequence = []
    ds.LossyImageCompression = "00"
    _set_pixels(ds, skin_photograph(), bits_stored=8)
    _save(ds, dest / "photo-001.dcm")


def _write_chest_radiograph(dest: Path) -> None:
    study = _uid("cxr", "study")
    ds = _base_dataset(DX_FOR_PRESENTATION_STORAGE, _uid("cxr", "instance"), ("SAMPLE^CHEST", "SAMPLE-0002"), study)
    ds.StudyDescription = "Chest radiograph"
    ds.Modality = "DX"
    ds.SeriesInstanceUID = _uid("cxr", "series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Chest PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = [_code("399348003", "SCT", "postero-anterior")]
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = [_code("43799004", "SCT", "Chest")]
    ds.PresentationLUTShape = "IDENTITY"
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20260101", "120000"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.PixelSpacing = [0.7, 0.7]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 1700, 3000
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.DetectorType = "SCINTILLATOR"
    _set_pixels(ds, chest_radiograph(), bits_stored=12)
    _save(ds, dest / "cxr-001.dcm")


def _write_chest_ct(dest: Path, slices: int = 12, size: int = 256) -> None:
    study = _uid("ct", "study")
    series = _uid("ct", "series")
    frame_of_reference = _uid("ct", "frame-of-reference")
    spacing = 5.0
    for i in range(slices):
        ds = _base_dataset(CT_IMAGE_STORAGE, _uid("ct", "instance", str(i)), ("SAMPLE^CT", "SAMPLE-0003"), study)
        ds.StudyDescription = "CT chest"
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 2
        ds.SeriesDescription = "Axial 5 mm"
        ds.BodyPartExamined = "CHEST"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ContentDate, ds.ContentTime = "20260101", "120000"
        ds.AcquisitionNumber = 1
        ds.KVP = 120
        ds.SliceThickness = spacing
        ds.PixelSpacing = [1.4, 1.4]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-179.2, -179.2, -i * spacing]
        ds.SliceLocation = -i * spacing
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        hu = chest_ct_slice(i / max(slices - 1, 1), size)
        _set_pixels(ds, np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16), bits_stored=12)
        _save(ds, dest / f"ct-{i + 1:03d}.dcm")


def brain_mr_slice(z: float, size: int = 256) -> np.ndarray:
    """One axial T2-weighted brain MR slice (12-bit) at relative height z in [0, 1]: CSF bright, white matter dark."""
    img = np.zeros((size, size), np.float32)
    head = (int(size * 0.36 * (0.8 + 0.2 * np.sin(np.pi * z))), int(size * 0.44 * (0.8 + 0.2 * np.sin(np.pi * z))))
    cv2.ellipse(img, (size // 2, size // 2), head, 0, 0, 360, 900, -1)  # scalp
    cv2.ellipse(img, (size // 2, size // 2), (head[0] - 8, head[1] - 8), 0, 0, 360, 150, -1)  # skull (dark)
    cv2.ellipse(img, (size // 2, size // 2), (head[0] - 14, head[1] - 14), 0, 0, 360, 1700, -1)  # CSF rim
    cv2.ellipse(img, (size // 2, size // 2), (head[0] - 18, head[1] - 18), 0, 0, 360, 1300, -1)  # grey matter
    cv2.ellipse(img, (size // 2, size // 2), (head[0] - 34, head[1] - 34), 0, 0, 360, 900, -1)  # white matter
    if 0.3 < z < 0.8:
        for side in (-1, 1):  # lateral ventricles
            cv2.ellipse(img, (size // 2 + side * int(size * 0.05), size // 2), (int(size * 0.03), int(size * 0.12)),
                        side * 10, 0, 360, 2600, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img += np.random.default_rng(int(z * 1000) + 11).normal(0, 20, img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _write_brain_mr(dest: Path, slices: int = 8, size: int = 256) -> None:
    study = _uid("mr", "study")
    series = _uid("mr", "series")
    frame_of_reference = _uid("mr", "frame-of-reference")
    spacing = 6.0
    for i in range(slices):
        ds = _base_dataset(MR_IMAGE_STORAGE, _uid("mr", "instance", str(i)), ("SAMPLE^MR", "SAMPLE-0004"), study)
        ds.StudyDescription = "MR head"
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 3
        ds.SeriesDescription = "Axial T2"
        ds.BodyPartExamined = "HEAD"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ContentDate, ds.ContentTime = "20260101", "120000"
        ds.AcquisitionNumber = 1
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 4000
        ds.EchoTime = 100
        ds.EchoTrainLength = 16
        ds.MagneticFieldStrength = 1.5
        ds.SliceThickness = 5.0
        ds.SpacingBetweenSlices = spacing
        ds.PixelSpacing = [0.9, 0.9]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-115.2, -115.2, i * spacing]
        ds.SliceLocation = i * spacing
        ds.WindowCenter, ds.WindowWidth = 1300, 2600
        _set_pixels(ds, brain_mr_slice(i / max(slices - 1, 1), size), bits_stored=12)
        _save(ds, dest / f"mr-{i + 1:03d}.dcm")


def build_sample_studies(dest: Path) -> list[SampleStudy]:
    """Write every sample study into its own folder under `dest` and describe them.

    Existing folders of the same name are replaced, so the samples are always as this code draws
    them.
    """
    dest = Path(dest)
    builders = [
        ("burn-photograph", "Colour photograph of a burn on the forearm (XC, VL Photographic)", _write_burn_photo),
        ("chest-radiograph", "Synthetic frontal chest radiograph (DX, MONOCHROME2)", _write_chest_radiograph),
        ("chest-ct", "Synthetic 12-slice chest CT series (CT, HU)", _write_chest_ct),
        ("brain-mr", "Synthetic 8-slice axial T2 brain MR series (MR)", _write_brain_mr),
    ]
    studies: list[SampleStudy] = []
    for name, description, build in builders:
        folder = dest / name
        shutil.rmtree(folder, ignore_errors=True)
        build(folder)
        studies.append(SampleStudy(name, folder, description))
    for name, filename, description, analysed in (
        ("pydicom-ct", "CT_small.dcm", "CT slice shipped with pydicom (CT_small.dcm)", True),
        ("pydicom-mr", "MR_small.dcm", "MR slice shipped with pydicom (MR_small.dcm); its Image Type is DERIVED\\SECONDARY, "
         "so it is left out of analysis as a derived image", False),
    ):
        folder = dest / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copyfile(get_testdata_file(filename), folder / filename)
        studies.append(SampleStudy(name, folder, description, analysed))
    return studies
