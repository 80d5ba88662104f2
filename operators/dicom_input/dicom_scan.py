"""Header-first scan of an input folder into studies and series (the DICOMLoader's logic).

Why not the SDK's `DICOMDataLoaderOperator`: it reads every file in full, pixel data included,
and keeps every dataset in memory, so memory grows with the study (a 1,500-slice CT holds
~750 MB of pixels before anything is selected), and a file it cannot parse for other reasons than
`InvalidDicomError` stops the load. This scan reads headers only (`stop_before_pixels`), keeps
one header dataset per series, and pixel data are read later only for the series a selection
picked (`operators.dicom_input.pixel_data.read_pixels`). `bench/loader.py` measures the difference.

Behaviour, file by file (deterministic: folders and files are visited in sorted name order):

- Every file that cannot be analysed is skipped with one log line (logger
  ``biomedclip_map.loader``) naming the file and the reason, and is returned as a `SkippedFile`;
  one bad file never stops the scan. Skipped: empty files, files that are not DICOM Part 10
  (no ``DICM`` prefix), unreadable headers, DICOMDIR files, MDE ``*.dcm.json`` sidecars (by name,
  not read), instances without pixel data (SR, RT Plan, ...), instances whose pixel data is
  truncated or shorter than their Rows × Columns × ... need, whose transfer syntax cannot be
  decoded here, that lack a Study, Series or SOP Instance UID, and second copies of a SOP Instance
  UID already seen.
- Hidden entries (name starting with ``.``: ``.DS_Store``, macOS ``._*`` AppleDouble files, tool
  folders such as ``.git``) are skipped without being read: they are never DICOM instances a PACS
  or MDE placed there, and AppleDouble files would otherwise fail as "not DICOM" one by one. A
  hidden folder is reported once, as one `SkippedFile`, and not descended into.
- Links to folders are followed once (a folder reached twice is not scanned again, so link loops
  end). Anything that is not a regular file (FIFO, socket, device) is skipped without being opened.
- Input files are opened read-only and never written, moved or touched.

Log lines name files and studies by their salted `ref`, never by UIDs or patient attributes.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from operators.dicom_input.dicom_charset import repair_undeclared_utf8
from operators.dicom_input.image_provenance import own_output_reason
from operators.messages import (
    DocumentReference,
    InstanceFile,
    SeriesHeader,
    SkippedFile,
    StudyHeader,
)
from operators.dicom_input.patient_identity import PatientIdentity, identity_of
from operators.dicom_input.pixel_data import decoder_problem
from operators.dicom_input.study_refs import study_ref

log = logging.getLogger("biomedclip_map.loader")

MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
#: SOP Class UIDs of the structured report storage classes start with this.
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
SIDECAR_SUFFIX = ".dcm.json"
PIXEL_DATA_TAGS = {
    0x7FE00008: "Float Pixel Data",
    0x7FE00009: "Double Float Pixel Data",
    0x7FE00010: "Pixel Data",
}
ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
# The VRs a pixel data element may have in explicit VR; all have 2 reserved bytes and a 4-byte
# length in the element header (PS3.5 7.1.2).
PIXEL_DATA_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}
REQUIRED_UIDS = (
    ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
    ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
)
IMAGE_PIXEL_ATTRIBUTES = (
    ("Rows", "Rows (0028,0010)"),
    ("Columns", "Columns (0028,0011)"),
    ("BitsAllocated", "Bits Allocated (0028,0100)"),
)


class InputFolderError(RuntimeError):
    """The input folder is missing or is not a folder; the message names the path."""


class NotAnalysable(Exception):
    """One input file cannot be analysed; the message is the reason recorded in its `SkippedFile`.

    `header` is the file's header when it could be read (a report, an instance without usable pixel
    data), so that the scan can still check its patient identity and recognise our own reports.
    """

    def __init__(self, reason: str, header: Dataset | None = None):
        super().__init__(reason)
        self.header = header


@dataclass
class ScanResult:
    """What an input folder holds: its studies (in the order first seen) and the files skipped."""

    studies: list[StudyHeader] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass
class InstanceHeader:
    """One readable instance: where it is on disk, and its header (pixel data not read)."""

    instance: InstanceFile
    header: Dataset


# --------------------------------------------------------------------------- walking the folder


def iter_input_files(root: Path) -> Iterator[Path | SkippedFile]:
    """Yield every regular file under `root` in sorted order, or a `SkippedFile` for what is not read.

    Hidden entries, MDE sidecars and non-regular files come back as `SkippedFile` (see the module
    docstring for why); folders reached twice through links are scanned once.
    """
    seen_folders: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, topdown=True, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_folders:
            dirnames[:] = []
            continue
        seen_folders.add(real)
        kept = []
        for name in sorted(dirnames):
            if name.startswith("."):
                yield SkippedFile(Path(folder, name), "hidden folder (name starts with '.'), not scanned")
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = Path(folder, name)
            if name.startswith("."):
                yield SkippedFile(path, "hidden file (name starts with '.'), not read")
            elif name.lower().endswith(SIDECAR_SUFFIX):
                yield SkippedFile(path, "MONAI Deploy Express metadata sidecar (*.dcm.json), not a DICOM instance")
            elif not path.is_file():
                yield SkippedFile(path, "not a regular file (link to nothing, FIFO, socket or device), not read")
            else:
                yield path


# --------------------------------------------------------------------------- one file


def read_instance_header(path: Path) -> InstanceHeader:
    """Read the header of one file and check that its pixel data can be analysed.

    Reads up to the pixel data element only; the pixel data element's own header (8 or 12 bytes,
    plus the item headers of encapsulated data) is then read to prove that the pixel data is
    present and complete, without reading the pixel values.

    Raises `NotAnalysable` with the reason the file must be skipped.
    """
    try:
        size = path.stat().st_size
        fp = path.open("rb")
    except OSError as exc:
        raise NotAnalysable(f"cannot be opened for reading ({exc.strerror or exc})") from exc
    if size == 0:
        fp.close()
        raise NotAnalysable("empty file (0 bytes)")
    with fp:
        try:
            header = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            raise NotAnalysable(
                "not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble)"
            ) from None
        except (EOFError, OSError, ValueError, struct.error, zlib.error) as exc:
            # the parser's message may quote the bytes it choked on (header values): only its type is said
            raise NotAnalysable(f"DICOM header cannot be read ({type(exc).__name__})") from exc
        repair_undeclared_utf8(header)
        try:
            instance = _checked_instance(path, fp, size, header)
        except NotAnalysable as exc:
            exc.header = header
            raise
    return InstanceHeader(instance=instance, header=header)


def _checked_instance(path: Path, fp, size: int, header: Dataset) -> InstanceFile:
    """The instance record of a readable header, or NotAnalysable saying why its pixels cannot be used."""
    pixel_position = fp.tell()
    meta = header.file_meta
    sop_class_uid = str(header.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "") or "")
    if sop_class_uid == MEDIA_STORAGE_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in header:
        raise NotAnalysable("DICOMDIR (media storage directory), an index of other files, not an instance")
    transfer_syntax_uid = str(meta.get("TransferSyntaxUID", "") or "")
    if not transfer_syntax_uid:
        raise NotAnalysable("file meta information lacks Transfer Syntax UID (0002,0010)")
    for keyword, name in REQUIRED_UIDS:
        if not str(header.get(keyword, "") or "").strip():
            raise NotAnalysable(f"lacks {name}")
    if not sop_class_uid:
        raise NotAnalysable("lacks SOP Class UID (0008,0016)")
    syntax = UID(transfer_syntax_uid)
    if syntax.is_deflated:
        # pydicom inflates the whole data set while reading the header, so a truncated file
        # has already failed above (zlib: "incomplete or truncated stream") and file offsets
        # mean nothing here; deflated image objects are rare, so reading again is acceptable.
        has_pixels = "PixelData" in pydicom.dcmread(path, specific_tags=["PixelData"])
        if not has_pixels:
            raise NotAnalysable(f"has no pixel data ({_sop_class_name(sop_class_uid)}), nothing to analyse")
    else:
        element = _read_pixel_element_header(fp, pixel_position, header)
        if element is None:
            raise NotAnalysable(f"has no pixel data ({_sop_class_name(sop_class_uid)}), nothing to analyse")
    for keyword, name in IMAGE_PIXEL_ATTRIBUTES:
        if header.get(keyword) in (None, ""):
            raise NotAnalysable(f"Image Pixel module is incomplete: lacks {name}")
    problem = decoder_problem(transfer_syntax_uid)
    if problem:
        raise NotAnalysable(problem)
    if not syntax.is_deflated:
        problem = _pixel_data_completeness_problem(fp, element, size, header, syntax)
        if problem:
            raise NotAnalysable(problem)

    return InstanceFile(
        path=path,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=str(header.SOPInstanceUID).strip(),
        transfer_syntax_uid=transfer_syntax_uid,
        instance_number=_optional_int(header.get("InstanceNumber")),
        number_of_frames=_optional_int(header.get("NumberOfFrames")) or 1,
        slice_position=slice_position(header),
        slice_thickness=_optional_float(header.get("SliceThickness")),
    )


@dataclass(frozen=True)
class _PixelElement:
    """Where the pixel data element's value starts and how long it says it is."""

    tag: int
    value_offset: int
    length: int
    endianness: str


def _read_pixel_element_header(fp, position: int, header: Dataset) -> _PixelElement | None:
    """Read the element header at `position` (where the header read stopped); None if no pixel data.

    Raises `NotAnalysable` if the file ends inside that element header.
    """
    implicit_vr, little_endian = header.original_encoding
    endianness = "<" if little_endian else ">"
    fp.seek(position)
    head = fp.read(8)
    if len(head) < 4:
        return None
    group, element = struct.unpack(f"{endianness}HH", head[:4])
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    truncated = NotAnalysable(f"truncated: the file ends inside the header of its {PIXEL_DATA_TAGS[tag]} element")
    if len(head) < 8:
        raise truncated
    if implicit_vr or head[4:6] not in PIXEL_DATA_VRS:
        # Implicit VR; also files that declare explicit VR but are written implicit (pydicom
        # detects this while reading and reads them; the pixel data element shows it too).
        (length,) = struct.unpack(f"{endianness}L", head[4:8])
        return _PixelElement(tag, position + 8, length, endianness)
    raw_length = fp.read(4)
    if len(raw_length) < 4:
        raise truncated
    (length,) = struct.unpack(f"{endianness}L", raw_length)
    return _PixelElement(tag, position + 12, length, endianness)


def _pixel_data_completeness_problem(
    fp, element: _PixelElement, size: int, header: Dataset, syntax: UID
) -> str | None:
    """Say why the pixel data is truncated or too short, or None if it is complete.

    Native (uncompressed) pixel data must fit in the file and hold Rows × Columns × Samples ×
    Frames values; encapsulated pixel data must end with its Sequence Delimitation Item inside
    the file (each fragment's item header is read, its bytes are skipped).
    """
    name = PIXEL_DATA_TAGS[element.tag]
    if element.length == UNDEFINED_LENGTH:
        return _encapsulated_problem(fp, element, size, name)
    end = element.value_offset + element.length
    if end > size:
        return (
            f"truncated: {name} declares {element.length} bytes but the file ends "
            f"{end - size} bytes short of them ({size} bytes in all)"
        )
    if syntax.is_encapsulated:
        return f"malformed: {name} in compressed transfer syntax {syntax.name} must have undefined length"
    expected = expected_native_length(header)
    if expected is not None and element.length < expected:
        return (
            f"{name} holds {element.length} bytes but Rows × Columns × Samples per Pixel × "
            f"Bits Allocated × Number of Frames need {expected}"
        )
    return None


def _encapsulated_problem(fp, element: _PixelElement, size: int, name: str) -> str | None:
    """Walk the item headers of encapsulated pixel data; say why it is incomplete, or None."""
    position = element.value_offset
    item = struct.Struct(f"{element.endianness}HHL")
    while True:
        if position + 8 > size:
            return f"truncated: encapsulated {name} ends before its Sequence Delimitation Item ({size} bytes in all)"
        fp.seek(position)
        group, elem, length = item.unpack(fp.read(8))
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER_TAG:
            return None
        if tag != ITEM_TAG or length == UNDEFINED_LENGTH:
            return f"malformed: encapsulated {name} has an unexpected element at byte {position}"
        position += 8 + length
        if position > size:
            return f"truncated: a fragment of encapsulated {name} runs past the end of the file ({size} bytes)"


def expected_native_length(header: Dataset) -> int | None:
    """Bytes that uncompressed pixel data must hold (PS3.5 8.1.1), or None if not computable."""
    try:
        rows = int(header.Rows)
        columns = int(header.Columns)
        bits = int(header.BitsAllocated)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        frames = _optional_int(header.get("NumberOfFrames")) or 1
    except (AttributeError, TypeError, ValueError):
        return None
    values = rows * columns * samples * frames
    if bits == 1:
        return math.ceil(values / 8)
    if header.get("PhotometricInterpretation") == "YBR_FULL_422":
        return values * math.ceil(bits / 8) * 2 // 3
    return values * math.ceil(bits / 8)


def slice_position(header: Dataset) -> float | None:
    """Position of the slice along its normal: ImagePositionPatient · (row cosine × column cosine).

    None when either attribute is absent or malformed (projection images, photographs,
    enhanced multi-frame objects, whose positions are per frame).
    """
    position = header.get("ImagePositionPatient")
    orientation = header.get("ImageOrientationPatient")
    try:
        if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
            return None
        rx, ry, rz, cx, cy, cz = (float(v) for v in orientation)
        px, py, pz = (float(v) for v in position)
    except (TypeError, ValueError):
        return None
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    return px * nx + py * ny + pz * nz


def _optional_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _optional_int(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sop_class_name(sop_class_uid: str) -> str:
    name = UID(sop_class_uid).name
    return name if name != sop_class_uid else f"SOP class {sop_class_uid}"


# --------------------------------------------------------------------------- grouping


def _earlier_report(header: Dataset, study_uid: str) -> DocumentReference | None:
    """The reference of an SR this product wrote earlier for the study, or None for any other object."""
    sop_class = str(header.get("SOPClassUID", "") or "").strip()
    if not study_uid or not sop_class.startswith(SR_SOP_CLASS_PREFIX) or own_output_reason(header) is None:
        return None
    instance = str(header.get("SOPInstanceUID", "") or "").strip()
    series = str(header.get("SeriesInstanceUID", "") or "").strip()
    if not instance or not series:
        return None
    return DocumentReference(sop_class, instance, series, study_uid)


def _unique_reports(reports: list[DocumentReference]) -> list[DocumentReference]:
    return list(dict.fromkeys(reports))


def instance_sort_key(instance: InstanceFile) -> tuple:
    """Order within a series: slice position, then instance number, then path (unknowns last)."""
    return (
        instance.slice_position is None,
        instance.slice_position if instance.slice_position is not None else 0.0,
        instance.instance_number is None,
        instance.instance_number if instance.instance_number is not None else 0,
        str(instance.path),
    )


@dataclass
class _SeriesBuilder:
    series_instance_uid: str
    study_instance_uid: str
    first_seen: int
    series_number: int | None
    instances: list[InstanceFile] = field(default_factory=list)
    header: Dataset | None = None
    header_key: tuple | None = None

    def add(self, read: InstanceHeader) -> None:
        """Add an instance; keep the header of the instance that sorts first (the only one kept)."""
        self.instances.append(read.instance)
        key = instance_sort_key(read.instance)
        if self.header_key is None or key < self.header_key:
            self.header, self.header_key = read.header, key


def scan_input(root: Path, *, salt: str) -> ScanResult:
    """Scan `root` recursively, reading DICOM headers only, and group instances into studies.

    Studies keep the order in which their first file was met; series within a study are ordered
    by Series Number (absent last), then by first file met; instances within a series by slice
    position, then instance number (`instance_sort_key`). Each series keeps only the header of
    its first instance in that order. `salt` keys the study refs used in logs (see
    `operators.dicom_input.study_refs`). Every skipped file is logged here, once; callers need not log them
    again.

    Raises `InputFolderError` if `root` is not an existing folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFolderError(
            f"input folder {root} does not exist or is not a folder" if not root.exists()
            else f"input path {root} is a file, not a folder of DICOM files"
        )
    skipped: list[SkippedFile] = []
    series_by_uid: dict[str, _SeriesBuilder] = {}
    study_order: dict[str, int] = {}
    sop_paths: dict[str, Path] = {}

    def skip(path: Path, reason: str) -> None:
        log.warning("Skipped %s: %s", path, reason)
        skipped.append(SkippedFile(path=path, reason=reason))

    identities: dict[str, list[PatientIdentity]] = {}
    earlier_reports: dict[str, list[DocumentReference]] = {}

    def note_instance(header: Dataset) -> str:
        """Record a read header's patient identity under its study; return the study UID ('' if none)."""
        study_uid = str(header.get("StudyInstanceUID", "") or "").strip()
        if study_uid:
            identities.setdefault(study_uid, []).append(identity_of(header))
        return study_uid

    for index, entry in enumerate(iter_input_files(root)):
        if isinstance(entry, SkippedFile):
            skip(entry.path, entry.reason)
            continue
        try:
            read = read_instance_header(entry)
        except NotAnalysable as exc:
            reason = str(exc)
            if exc.header is not None:
                study_uid = note_instance(exc.header)
                report = _earlier_report(exc.header, study_uid)
                if report is not None:
                    earlier_reports.setdefault(study_uid, []).append(report)
                    reason = f"{own_output_reason(exc.header)}: not analysed; a new report of the study supersedes it"
            skip(entry, reason)
            continue
        except Exception as exc:  # pydicom raises many types on malformed files; one file must not stop the scan
            skip(entry, f"DICOM header cannot be read ({type(exc).__name__})")  # its message may quote values
            continue
        note_instance(read.header)
        sop_uid = read.instance.sop_instance_uid
        if sop_uid in sop_paths:
            skip(entry, f"second copy of the SOP instance already read from {sop_paths[sop_uid]}")
            continue
        study_uid = str(read.header.StudyInstanceUID).strip()
        series_uid = str(read.header.SeriesInstanceUID).strip()
        builder = series_by_uid.get(series_uid)
        if builder is None:
            builder = series_by_uid[series_uid] = _SeriesBuilder(
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                first_seen=index,
                series_number=_optional_int(read.header.get("SeriesNumber")),
            )
        elif builder.study_instance_uid != study_uid:
            skip(entry, "its Series Instance UID belongs to another study in this input; the series is inconsistent")
            continue
        sop_paths[sop_uid] = entry
        study_order.setdefault(study_uid, index)
        builder.add(read)

    studies: dict[str, StudyHeader] = {}
    builders = sorted(
        series_by_uid.values(),
        key=lambda b: (b.series_number is None, b.series_number or 0, b.first_seen),
    )
    for study_uid in sorted(study_order, key=study_order.__getitem__):
        members = [b for b in builders if b.study_instance_uid == study_uid]
        series = [
            SeriesHeader(
                series_instance_uid=b.series_instance_uid,
                header=b.header,
                instances=sorted(b.instances, key=instance_sort_key),
            )
            for b in members
        ]
        study = StudyHeader(
            study_instance_uid=study_uid,
            ref=study_ref(study_uid, salt),
            header=series[0].header,
            series=series,
            identities=identities.get(study_uid, []),
            earlier_reports=_unique_reports(earlier_reports.get(study_uid, [])),
        )
        studies[study_uid] = study
        log.info(
            "Study %s: %d series, %d instances",
            study.ref,
            len(series),
            sum(len(s.instances) for s in series),
        )
    if not studies:
        log.warning("No analysable DICOM instance found under %s (%d files skipped)", root, len(skipped))
    return ScanResult(studies=list(studies.values()), skipped=skipped)
