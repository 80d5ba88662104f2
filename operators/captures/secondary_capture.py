"""DICOM Secondary Capture images: the viewable image of a study's findings, filed into the same study.

Built with highdicom's `SCImage` (Secondary Capture Image Storage, true colour RGB, 8 bits,
uncompressed): patient and study identity from the source study's header, a new series of this
application, the evaluated source image referenced in Source Image Sequence (purpose DCM 121322
"Source image for image processing operation"), Image Type DERIVED\\SECONDARY, Conversion Type
WSD (workstation), and the AI notice in Image Comments and Derivation Description. The product
draws no identifier into the pixels, but the capture shows its source image, so Burned In
Annotation and Recognizable Visual Features follow the source (`capture_content_flags`).

`write_png_preview` turns a written capture into a PNG for people without a DICOM viewer (the demo).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from common.atomic_files import Durability, write_atomically
from operators.messages import ImageSource
from operators.outputs.output_identity import ReportIdentity
from operators.sr.sr_content import DeviceIdentity, allows_frame_references

#: Series number of the captures (the SR uses 9001).
CAPTURE_SERIES_NUMBER = 9002

AI_COMMENT = (
    "AI-generated \u2014 requires clinician review. Findings drawn by {app}; not verified by a clinician."
)
UNTRAINED_COMMENT = " UNTRAINED MODEL \u2014 NOT MEANINGFUL: the model has random weights; the findings are meaningless."

_BIPED = {"A", "P", "R", "L", "H", "F"}
#: SOP classes of the Visible Light image family (photographic, dermoscopic, endoscopic, ...).
VL_IMAGE_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1."
#: Modalities of visible-light photographs.
PHOTOGRAPHIC_MODALITIES = frozenset({"XC", "DMS", "ES", "GM", "IO", "OP", "SM"})


class CaptureBuildError(ValueError):
    """A Secondary Capture cannot be built; the message names the study reference and why."""


def _text(header: Dataset, keyword: str) -> str | None:
    value = header.get(keyword)
    return None if value in (None, "") else str(value)


def patient_orientation(source: Dataset) -> list[str] | str:
    """The source's Patient Orientation when it is a valid pair of biped directions, else empty (Type 2)."""
    value = source.get("PatientOrientation")
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value] if value else []
    if len(values) == 2 and all(v and set(str(v).upper()) <= _BIPED for v in values):
        return [str(v).upper() for v in values]
    return ""


def is_photograph(header: Dataset) -> bool:
    """Whether an image is a visible-light photograph (VL image classes, photographic modalities, colour OT)."""
    sop_class = str(header.get("SOPClassUID", "") or "")
    modality = str(header.get("Modality", "") or "").strip().upper()
    colour = int(header.get("SamplesPerPixel", 1) or 1) == 3
    return sop_class.startswith(VL_IMAGE_CLASS_PREFIX) or modality in PHOTOGRAPHIC_MODALITIES or (modality == "OT" and colour)


def capture_content_flags(source: Dataset) -> tuple[str, str]:
    """Burned In Annotation and Recognizable Visual Features of a capture that shows `source`'s pixels.

    A capture copies what its source image shows, text and faces included, so it declares what the
    source declares. Where a **photograph** (or a colour image that may be one) says nothing, both
    are declared YES: a photograph can show a wristband, a chart, a name on a whiteboard or a face,
    and nothing here reads its pixels to rule that out; declaring YES keeps such captures out of
    de-identified exports. Other images that say nothing are declared NO for both: their pixels are
    what the modality acquired, and a capture shows one slice or projection, from which no face can
    be reconstructed. Both are always declared, since the capture is itself a colour image that
    readers (the de-identified export among them) would otherwise take for a photograph that says
    nothing. Returns (burned-in, recognizable).
    """
    burned = str(source.get("BurnedInAnnotation", "") or "").strip().upper()
    recognizable = str(source.get("RecognizableVisualFeatures", "") or "").strip().upper()
    unknown = "YES" if is_photograph(source) else "NO"
    return (burned if burned in ("YES", "NO") else unknown), (recognizable if recognizable in ("YES", "NO") else unknown)


def _source_reference(source: ImageSource) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class_uid
    item.ReferencedSOPInstanceUID = source.sop_instance_uid
    if source.frame is not None and allows_frame_references(source.sop_class_uid):
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
    identity: ReportIdentity,
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

    Patient and study attributes are `identity` (`operators.outputs.output_identity`): identifying values
    exactly as received, the rest conformant. What the pixels may show is declared from the source
    (`capture_content_flags`). Raises CaptureBuildError (naming the study reference) when the
    identity lacks its Study Instance UID or highdicom refuses a value.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise CaptureBuildError(f"study {study_ref}: a capture needs an 8-bit RGB image, got {pixels.dtype} {pixels.shape}")
    study_uid = _text(identity.dataset, "StudyInstanceUID")
    if not study_uid:
        raise CaptureBuildError(f"study {study_ref}: the source header lacks StudyInstanceUID; the capture cannot be filed")
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
    identity.apply_to(capture)
    capture.SpecificCharacterSet = "ISO_IR 192"
    capture.PatientOrientation = patient_orientation(source_header)
    capture.ConversionType = "WSD"
    if "Laterality" not in capture:
        capture.Laterality = ""  # Type 2C in General Series: present, empty when the source's is unknown
    capture.BurnedInAnnotation, capture.RecognizableVisualFeatures = capture_content_flags(source_header)
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
    return write_atomically(Path(png_path), encoded.tobytes(), durability=Durability.REPLACE_ONLY)
