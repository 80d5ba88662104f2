"""DICOM Secondary Capture images: the viewable image of a study's findings, filed into the same study.

Built with highdicom's `SCImage` (Secondary Capture Image Storage, true colour RGB, 8 bits,
uncompressed): patient and study identity from the source study's header, a new series of this
application, the evaluated source image referenced in Source Image Sequence (purpose DCM 121322
"Source image for image processing operation"), Image Type DERIVED\\SECONDARY, Conversion Type
WSD (workstation), and the AI notice in Image Comments and Derivation Description. No identifier
is drawn into the pixels (Burned In Annotation NO); Recognizable Visual Features is copied from
the source, since a photograph of a face stays recognisable under the overlay.

`write_png_preview` turns a written capture into a PNG for people without a DICOM viewer (the demo).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import cv2
import numpy as np
import pydicom
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from operators.messages import ImageSource
from operators.sr_content import DeviceIdentity

#: Series number of the captures (the SR uses 9001).
CAPTURE_SERIES_NUMBER = 9002

AI_COMMENT = (
    "AI-generated \u2014 requires clinician review. Findings drawn by {app}; not verified by a clinician."
)
UNTRAINED_COMMENT = " UNTRAINED MODEL \u2014 NOT MEANINGFUL: the model has random weights; the findings are meaningless."

_BIPED = {"A", "P", "R", "L", "H", "F"}


class CaptureBuildError(ValueError):
    """A Secondary Capture cannot be built; the message names the study reference and why."""


def _text(header: Dataset, keyword: str) -> str | None:
    value = header.get(keyword)
    return None if value in (None, "") else str(value)


def _patient_orientation(source: Dataset) -> list[str] | str:
    """The source's Patient Orientation when it is a valid pair of biped directions, else empty (Type 2)."""
    value = source.get("PatientOrientation")
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value] if value else []
    if len(values) == 2 and all(v and set(str(v).upper()) <= _BIPED for v in values):
        return [str(v).upper() for v in values]
    return ""


def _source_reference(source: ImageSource) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class_uid
    item.ReferencedSOPInstanceUID = source.sop_instance_uid
    if source.frame is not None:
        item.ReferencedFrameNumber = source.frame
    purpose = Dataset()
    concept = codes.DCM.SourceImageForImageProcessingOperation
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = concept.value, concept.scheme_designator, concept.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def build_secondary_capture(
    pixels: np.ndarray,
    *,
    study_ref: str,
    study_header: Dataset,
    source_header: Dataset,
    source: ImageSource,
    device: DeviceIdentity,
    series_instance_uid: str,
    instance_number: int,
    series_description: str,
    derivation: str,
    untrained: bool,
) -> SCImage:
    """A true-colour Secondary Capture of `pixels` (RGB uint8) in the source study, in a new series.

    Raises CaptureBuildError (naming the study reference) when the study header lacks its Study
    Instance UID or holds values highdicom refuses.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise CaptureBuildError(f"study {study_ref}: a capture needs an 8-bit RGB image, got {pixels.dtype} {pixels.shape}")
    study_uid = _text(study_header, "StudyInstanceUID")
    if not study_uid:
        raise CaptureBuildError(f"study {study_ref}: the source header lacks StudyInstanceUID; the capture cannot be filed")
    sex = str(study_header.get("PatientSex", "") or "").strip().upper()
    laterality = str(source_header.get("Laterality", "") or "").strip().upper()
    try:
        capture = SCImage(
            pixel_array=np.ascontiguousarray(pixels),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=study_uid,
            series_instance_uid=series_instance_uid,
            series_number=CAPTURE_SERIES_NUMBER,
            sop_instance_uid=pydicom.uid.generate_uid(),
            instance_number=instance_number,
            manufacturer=device.manufacturer,
            patient_id=_text(study_header, "PatientID"),
            patient_name=study_header.get("PatientName") or None,
            patient_birth_date=_text(study_header, "PatientBirthDate"),
            patient_sex=sex if sex in ("M", "F", "O") else None,
            accession_number=_text(study_header, "AccessionNumber"),
            study_id=_text(study_header, "StudyID"),
            study_date=_text(study_header, "StudyDate"),
            study_time=_text(study_header, "StudyTime"),
            referring_physician_name=study_header.get("ReferringPhysicianName") or None,
            laterality=laterality if laterality in ("L", "R") else None,
            # highdicom asks for an orientation in the patient coordinate system; the true value
            # (or an empty Type 2 value) is set below, as a photograph's orientation is often unknown.
            patient_orientation=("L", "F"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            manufacturer_model_name=device.model_name,
            software_versions=device.software_version,
            device_serial_number=device.serial_number,
            series_description=series_description,
        )
    except (ValueError, TypeError) as exc:
        raise CaptureBuildError(f"study {study_ref}: the Secondary Capture cannot be built: {exc}") from exc
    capture.SpecificCharacterSet = "ISO_IR 192"
    capture.PatientOrientation = _patient_orientation(source_header)
    capture.ConversionType = "WSD"
    if "Laterality" not in capture:
        capture.Laterality = ""  # Type 2C in General Series: present, empty when the source's is unknown
    capture.BurnedInAnnotation = "NO"
    recognizable = str(source_header.get("RecognizableVisualFeatures", "") or "").strip().upper()
    if recognizable in ("YES", "NO"):
        capture.RecognizableVisualFeatures = recognizable
    comment = AI_COMMENT.format(app=device.observer_name) + (UNTRAINED_COMMENT if untrained else "")
    capture.ImageComments = comment
    capture.DerivationDescription = f"{derivation} {comment}"[:1024]
    capture.SourceImageSequence = [_source_reference(source)]
    return capture


def write_png_preview(capture_path: Path, png_path: Path) -> Path:
    """Write the pixels of a written Secondary Capture as a PNG (atomically); return its path."""
    dataset = pydicom.dcmread(capture_path)
    rgb = np.asarray(dataset.pixel_array)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {capture_path} as PNG")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = png_path.with_name(f".{png_path.name}.{secrets.token_hex(6)}.tmp")
    try:
        temporary.write_bytes(encoded.tobytes())
        os.replace(temporary, png_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return png_path
