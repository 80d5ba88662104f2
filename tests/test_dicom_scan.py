"""Tests of the header-first input scan (`operators.dicom_input.dicom_scan`) and of study refs."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MPEG2MPML,
    generate_uid,
)

from operators.dicom_input.dicom_scan import InputFolderError, scan_input
from operators.dicom_input.study_refs import StudyRefError, series_ref, study_ref
from tests.fixtures_dicom import image_dataset, write_dataset, write_image, write_series

SALT = "test-salt"
LOGGER = "biomedclip_map.loader"


def bundled(name: str) -> Path:
    """A file bundled with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom's bundled test file {name} is missing"
    return Path(path)


def snapshot(root: Path) -> dict[Path, tuple[str, int]]:
    """sha256 and mtime (ns) of every file under `root`, to prove the scan changes nothing."""
    return {
        path: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def good_study(tmp_path: Path) -> tuple[Path, str, list[Path]]:
    """An input folder with one CT series of 3 slices, file names in reverse slice order."""
    study_uid = generate_uid()
    paths = write_series(tmp_path / "input", 3, study_uid=study_uid, file_order=[2, 1, 0])
    return tmp_path / "input", study_uid, paths


# --------------------------------------------------------------------------- study refs


def test_study_ref_is_salted_short_and_stable():
    uid = "1.2.826.0.1.3680043.8.498.1"
    ref = study_ref(uid, "salt-a")
    assert ref.startswith("st-") and len(ref) == 15
    int(ref[3:], 16)
    assert study_ref(uid, "salt-a") == ref
    assert study_ref(uid, "salt-b") != ref
    assert study_ref(uid + "1", "salt-a") != ref
    assert uid not in ref
    assert series_ref(uid, "salt-a").startswith("se-")


def test_study_ref_refuses_an_empty_salt():
    with pytest.raises(StudyRefError, match="salt is empty"):
        study_ref("1.2.3", "")


# --------------------------------------------------------------------------- good input


def test_scan_groups_orders_and_describes_instances(good_study, caplog):
    root, study_uid, slice_paths = good_study
    caplog.set_level(logging.INFO, logger=LOGGER)
    result = scan_input(root, salt=SALT)

    assert result.skipped == []
    [study] = result.studies
    assert study.study_instance_uid == study_uid
    assert study.ref == study_ref(study_uid, SALT)
    [series] = study.series
    assert [i.path for i in series.instances] == slice_paths
    assert [i.slice_position for i in series.instances] == [0.0, 1.0, 2.0]
    assert [i.instance_number for i in series.instances] == [1, 2, 3]
    first = pydicom.dcmread(slice_paths[0])
    instance = series.instances[0]
    assert instance.sop_instance_uid == first.SOPInstanceUID
    assert instance.sop_class_uid == first.SOPClassUID
    assert instance.transfer_syntax_uid == first.file_meta.TransferSyntaxUID
    assert instance.number_of_frames == 1
    # The series header is the first instance's, without pixel data.
    assert series.header.SOPInstanceUID == first.SOPInstanceUID
    assert "PixelData" not in series.header
    assert study.header.StudyInstanceUID == study_uid
    # Logs name the study by ref only.
    assert study.ref in caplog.text
    assert study_uid not in caplog.text
    assert "Synthetic" not in caplog.text


def test_slice_position_follows_the_slice_normal(tmp_path):
    """Sagittal slices (normal = row × column = -x): ordered along the normal, not by file name."""
    study_uid = generate_uid()
    series_uid = generate_uid()
    for index, x in enumerate([30.0, 10.0, 20.0]):
        write_image(
            tmp_path / f"s{index}.dcm",
            study_uid=study_uid,
            series_uid=series_uid,
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            ImagePositionPatient=[x, -100.0, 50.0],
            InstanceNumber=index + 1,
        )
    [series] = scan_input(tmp_path, salt=SALT).studies[0].series
    assert [i.slice_position for i in series.instances] == [-30.0, -20.0, -10.0]
    assert [i.instance_number for i in series.instances] == [1, 3, 2]


def test_instances_without_position_are_ordered_by_instance_number(tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    for index, number in enumerate([3, 1, 2]):
        write_image(
            tmp_path / f"cr{index}.dcm", modality="CR", study_uid=study_uid, series_uid=series_uid,
            InstanceNumber=number,
        )
    [series] = scan_input(tmp_path, salt=SALT).studies[0].series
    assert [i.instance_number for i in series.instances] == [1, 2, 3]
    assert all(i.slice_position is None for i in series.instances)


def test_several_studies_in_one_folder(tmp_path):
    uids = [generate_uid() for _ in range(3)]
    for index, uid in enumerate(uids):
        write_series(tmp_path, 2, study_uid=uid, prefix=f"st{index}_")
    result = scan_input(tmp_path, salt=SALT)
    assert [s.study_instance_uid for s in result.studies] == uids
    assert len({s.ref for s in result.studies}) == 3
    assert all(len(s.series) == 1 and len(s.series[0].instances) == 2 for s in result.studies)


def test_study_nested_in_subfolders_with_series_in_number_order(tmp_path):
    study_uid = generate_uid()
    write_series(tmp_path / "a" / "b" / "mr", 2, study_uid=study_uid, modality="MR", SeriesNumber=7)
    write_series(tmp_path / "z" / "ct", 3, study_uid=study_uid, modality="CT", SeriesNumber=2)
    [study] = scan_input(tmp_path, salt=SALT).studies
    assert [(s.modality, len(s.instances)) for s in study.series] == [("CT", 3), ("MR", 2)]


def test_empty_folder_gives_no_studies(tmp_path, caplog):
    result = scan_input(tmp_path, salt=SALT)
    assert result.studies == [] and result.skipped == []
    assert "No analysable DICOM instance" in caplog.text


def test_missing_input_folder_is_an_error_that_names_it(tmp_path):
    with pytest.raises(InputFolderError, match="does-not-exist"):
        scan_input(tmp_path / "does-not-exist", salt=SALT)
    (tmp_path / "file.dcm").write_bytes(b"x")
    with pytest.raises(InputFolderError, match="is a file"):
        scan_input(tmp_path / "file.dcm", salt=SALT)


def test_compressed_instances_are_loaded_and_multiframe_counted(tmp_path):
    shutil.copy(bundled("JPEG2000.dcm"), tmp_path / "j2k.dcm")
    shutil.copy(bundled("SC_rgb_rle_2frame.dcm"), tmp_path / "rle.dcm")
    shutil.copy(bundled("image_dfl.dcm"), tmp_path / "deflated.dcm")
    result = scan_input(tmp_path, salt=SALT)
    assert result.skipped == []
    instances = {i.path.name: i for st in result.studies for se in st.series for i in se.instances}
    assert instances["j2k.dcm"].transfer_syntax_uid == JPEG2000
    assert instances["rle.dcm"].number_of_frames == 2
    assert instances["deflated.dcm"].transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def test_truncated_deflated_file_is_skipped(tmp_path):
    data = bundled("image_dfl.dcm").read_bytes()
    (tmp_path / "deflated_truncated.dcm").write_bytes(data[:-500])
    result = scan_input(tmp_path, salt=SALT)
    assert result.studies == []
    assert [s.path.name for s in result.skipped] == ["deflated_truncated.dcm"]
    assert "cannot be read" in result.skipped[0].reason


def test_series_uid_reused_by_another_study_is_skipped(good_study):
    root, study_uid, slice_paths = good_study
    series_uid = pydicom.dcmread(slice_paths[0]).SeriesInstanceUID
    stray = write_image(root / "zz_stray.dcm", study_uid=generate_uid(), series_uid=series_uid)
    result = scan_input(root, salt=SALT)
    assert [s.path for s in result.skipped] == [stray]
    assert "belongs to another study" in result.skipped[0].reason
    assert [s.study_instance_uid for s in result.studies] == [study_uid]


# --------------------------------------------------------------------------- bad input


def _zero_bytes(folder: Path) -> Path:
    path = folder / "empty.dcm"
    path.write_bytes(b"")
    return path


def _random_bytes(folder: Path) -> Path:
    path = folder / "random.dcm"
    path.write_bytes(os.urandom(4096))
    return path


def _text_file(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_text("not an image\n")
    return path


def _broken_sequence(folder: Path) -> Path:
    """Valid file meta, then a sequence whose first item is garbage: pydicom cannot parse it."""
    meta_only = Dataset()
    meta_only.file_meta = FileMetaDataset()
    meta_only.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta_only.file_meta.MediaStorageSOPClassUID = CTImageStorage
    meta_only.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    meta_only.save_as(buffer, enforce_file_format=True)
    path = folder / "broken_sequence.dcm"
    path.write_bytes(
        buffer.getvalue() + b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\x01\x02\x03\x04\x10\x00\x00\x00"
    )
    return path


def _truncated_native(folder: Path) -> Path:
    source = write_image(folder / "tmp_full.dcm", study_uid=generate_uid(), rows=64, columns=64)
    data = source.read_bytes()
    source.unlink()
    path = folder / "truncated.dcm"
    path.write_bytes(data[: len(data) - 1000])
    return path


def _truncated_pydicom_file(folder: Path) -> Path:
    path = folder / "MR_truncated.dcm"
    shutil.copy(bundled("MR_truncated.dcm"), path)
    return path


def _truncated_encapsulated(folder: Path) -> Path:
    data = Path(bundled("JPEG2000.dcm")).read_bytes()
    path = folder / "j2k_truncated.dcm"
    path.write_bytes(data[:-200])
    return path


def _short_native(folder: Path) -> Path:
    ds = image_dataset(study_uid=generate_uid(), rows=16, columns=16)
    ds.PixelData = ds.PixelData[:100]
    return write_dataset(folder / "short_pixels.dcm", ds)


def _rt_plan(folder: Path) -> Path:
    path = folder / "rtplan.dcm"
    shutil.copy(bundled("rtplan.dcm"), path)
    return path


def _structured_report(folder: Path) -> Path:
    path = folder / "report.dcm"
    shutil.copy(bundled("test-SR.dcm"), path)
    return path


def _dicomdir(folder: Path) -> Path:
    path = folder / "DICOMDIR"
    shutil.copy(bundled("DICOMDIR"), path)
    return path


def _sidecar(folder: Path) -> Path:
    """An MDE sidecar that would even load as DICOM if read: proves it is skipped by name."""
    return write_image(folder / "IM0000.dcm.json", study_uid=generate_uid())


def _undecodable(folder: Path) -> Path:
    ds = image_dataset(study_uid=generate_uid(), transfer_syntax=MPEG2MPML)
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    return write_dataset(folder / "mpeg2.dcm", ds)


def _missing_series_uid(folder: Path) -> Path:
    return write_image(folder / "no_series_uid.dcm", study_uid=generate_uid(), SeriesInstanceUID=None)


def _missing_study_uid(folder: Path) -> Path:
    ds = image_dataset()
    del ds.StudyInstanceUID
    return write_dataset(folder / "no_study_uid.dcm", ds)


def _missing_rows(folder: Path) -> Path:
    return write_image(folder / "no_rows.dcm", study_uid=generate_uid(), Rows=None)


def _hidden_file(folder: Path) -> Path:
    return write_image(folder / "._IM0001.dcm", study_uid=generate_uid())


BAD_FILES = {
    "zero-byte file": (_zero_bytes, "empty file"),
    "random bytes named .dcm": (_random_bytes, "not a DICOM Part 10 file"),
    "text file": (_text_file, "not a DICOM Part 10 file"),
    "unparsable header": (_broken_sequence, "DICOM header cannot be read"),
    "truncated native pixel data": (_truncated_native, "truncated: Pixel Data declares"),
    "pydicom's truncated MR": (_truncated_pydicom_file, "truncated"),
    "truncated JPEG 2000": (_truncated_encapsulated, "truncated"),
    "pixel data shorter than the image": (_short_native, "holds 100 bytes but"),
    "RT plan without pixel data": (_rt_plan, "has no pixel data (RT Plan Storage)"),
    "SR without pixel data": (_structured_report, "has no pixel data (Comprehensive SR Storage)"),
    "DICOMDIR": (_dicomdir, "DICOMDIR"),
    "MDE .dcm.json sidecar": (_sidecar, "sidecar"),
    "undecodable transfer syntax": (_undecodable, "MPEG2"),
    "missing Series Instance UID": (_missing_series_uid, "lacks Series Instance UID"),
    "missing Study Instance UID": (_missing_study_uid, "lacks Study Instance UID"),
    "missing Rows": (_missing_rows, "lacks Rows"),
    "hidden file": (_hidden_file, "hidden file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_skipped_once_and_the_study_still_loads(case, good_study, caplog):
    root, study_uid, slice_paths = good_study
    make, expected_reason = BAD_FILES[case]
    bad = make(root)
    before = snapshot(root)
    caplog.set_level(logging.INFO, logger=LOGGER)

    result = scan_input(root, salt=SALT)

    assert [s.path for s in result.skipped] == [bad]
    assert expected_reason in result.skipped[0].reason
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER and str(bad) in r.getMessage()]
    assert len(lines) == 1 and expected_reason in lines[0]
    [study] = result.studies
    assert study.study_instance_uid == study_uid
    assert [i.path for i in study.series[0].instances] == slice_paths
    assert snapshot(root) == before


def test_hidden_folder_is_not_scanned(good_study):
    root, study_uid, _ = good_study
    write_series(root / ".cache", 2, study_uid=generate_uid())
    result = scan_input(root, salt=SALT)
    assert [s.study_instance_uid for s in result.studies] == [study_uid]
    assert [s.path for s in result.skipped] == [root / ".cache"]


def test_second_copy_of_an_instance_is_skipped(good_study):
    root, _, slice_paths = good_study
    copy = root / "zz_copy.dcm"
    shutil.copy(slice_paths[0], copy)
    result = scan_input(root, salt=SALT)
    assert [s.path for s in result.skipped] == [copy]
    assert str(slice_paths[0]) in result.skipped[0].reason
    assert len(result.studies[0].series[0].instances) == 3


def test_many_bad_files_never_stop_the_scan(good_study):
    root, study_uid, slice_paths = good_study
    bad = [make(root) for make, _ in BAD_FILES.values()]
    before = snapshot(root)
    result = scan_input(root, salt=SALT)
    assert sorted(s.path for s in result.skipped) == sorted(bad)
    assert [s.study_instance_uid for s in result.studies] == [study_uid]
    assert [i.path for i in result.studies[0].series[0].instances] == slice_paths
    assert snapshot(root) == before


def test_link_loop_is_scanned_once(good_study):
    root, _, slice_paths = good_study
    (root / "loop").symlink_to(root, target_is_directory=True)
    result = scan_input(root, salt=SALT)
    assert result.skipped == []
    assert [i.path for i in result.studies[0].series[0].instances] == slice_paths
