"""The de-identified export (PS3.15 Annex E Basic Profile) on its own, without the application."""

from __future__ import annotations

from datetime import date

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from operators.deidentify import ExportSettingsError, annex_e_action, check_export_dir, export_study, result_files
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_dicom import image_dataset, write_dataset


def ct_small(path, **attributes):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_annex_e_table_is_the_standards():
    assert annex_e_action(0x00100010) == "Z"  # Patient's Name
    assert annex_e_action(0x00081030) == "X"  # Study Description
    assert annex_e_action(0x0020000D) == "U"  # Study Instance UID
    assert annex_e_action(0x60004000) == "X"  # Overlay Comments, a repeating group


def test_basic_profile_actions_and_markers(tmp_path):
    source = ct_small(
        tmp_path / "ct.dcm", StudyDescription="CT for Jane Roe", PatientComments="likes tea",
        PatientBirthDate="19500101", StudyDate="20240311", AcquisitionDate="20240312", PatientAge="074Y",
    )
    original = pydicom.dcmread(source)
    export = export_study("st-test", [], [source], tmp_path / "deid")
    assert export.left_out == [] and len(export.written) == 1
    ds = pydicom.dcmread(export.written[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert "StudyDescription" not in ds and "PatientComments" not in ds and "PatientAge" not in ds
    assert ds.PatientBirthDate == "" and ds.PatientName == "" and ds.PatientID == ""
    assert not any(e.tag.is_private for e in ds.iterall()), "private elements are removed"
    assert original.InstitutionName and "InstitutionName" not in ds, "type 3 X/Z/D attributes are removed"
    study, acquisition = (date.fromisoformat(f"{v[:4]}-{v[4:6]}-{v[6:]}") for v in (ds.StudyDate, ds.AcquisitionDate))
    # dicognito shifts date and time together by a whole number of hours, so a date may move by one
    # day more or less than another when their times of day differ
    assert ds.StudyDate != "20240311" and 0 <= (acquisition - study).days <= 2, "dates shifted, intervals kept"
    assert ds.SOPInstanceUID.startswith("2.25.") and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == original.SOPClassUID and ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert not run_dciodvfy(export.written[0]).errors


def test_uids_are_consistent_within_a_study_and_differ_between_studies(tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = [
        write_dataset(tmp_path / f"{i}.dcm", image_dataset(study_uid=study_uid, series_uid=series_uid, FrameOfReferenceUID="1.2.3.4.5.6.7"))
        for i in range(2)
    ]
    one = export_study("st-a", [], paths, tmp_path / "one")
    again = export_study("st-a", [], paths[:1], tmp_path / "two")
    first, second = (pydicom.dcmread(p) for p in one.written)
    assert first.StudyInstanceUID == second.StudyInstanceUID != study_uid
    assert first.SeriesInstanceUID == second.SeriesInstanceUID and first.FrameOfReferenceUID == second.FrameOfReferenceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert pydicom.dcmread(again.written[0]).StudyInstanceUID != first.StudyInstanceUID, "a new mapping per export"


def test_instances_with_burned_in_annotation_are_left_out(tmp_path):
    burned = write_dataset(tmp_path / "b.dcm", image_dataset(BurnedInAnnotation="YES"))
    clean = write_dataset(tmp_path / "c.dcm", image_dataset(BurnedInAnnotation="NO"))
    export = export_study("st-b", [], [burned, clean], tmp_path / "deid")
    assert len(export.written) == 1 and len(export.left_out) == 1
    assert "BurnedInAnnotation is YES" in export.left_out[0] and "b.dcm" not in export.left_out[0]


def test_export_folder_must_be_outside_output_and_input(tmp_path):
    with pytest.raises(ExportSettingsError, match="outside the DICOM output folder"):
        check_export_dir(tmp_path / "out" / "deid", tmp_path / "out", tmp_path / "in")
    with pytest.raises(ExportSettingsError, match="input folder"):
        check_export_dir(tmp_path / "in", tmp_path / "out", tmp_path / "in")
    assert check_export_dir(tmp_path / "deid", tmp_path / "out", tmp_path / "in").is_dir()


def test_result_files_include_every_dicom_file_of_the_study(tmp_path):
    sr = write_dataset(tmp_path / "SR-st-abc.dcm", image_dataset())
    sc = write_dataset(tmp_path / "SC-st-abc-1.dcm", image_dataset())
    write_dataset(tmp_path / "SC-st-other-1.dcm", image_dataset())
    (tmp_path / "st-abc.json").write_text("{}")
    assert result_files("st-abc", [sr, tmp_path / "st-abc.json"], tmp_path) == [sr, sc]
