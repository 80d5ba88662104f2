"""The header rules in isolation: patient identity, output identity, provenance, character sets, geometry."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from operators.dicom_input.dicom_read import read_dataset
from operators.dicom_input.image_provenance import exclusion_of, own_output_reason
from operators.messages import InstanceFile
from operators.outputs.output_identity import (
    normalise_age,
    normalise_date,
    normalise_sex,
    normalise_time,
    report_identity,
)
from operators.dicom_input.patient_identity import identity_conflict, identity_of
from operators.dicom_input.slice_geometry import geometry_notes


def header(**attributes: object) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return ds


# --------------------------------------------------------------------------- identity rule


@pytest.mark.parametrize(
    ("a", "b", "conflict"),
    [
        (dict(PatientID="1"), dict(PatientID="1"), None),
        (dict(PatientID="1"), dict(PatientID="2"), "Patient ID"),
        (dict(PatientID="1"), dict(PatientID=""), "Patient ID"),
        (dict(PatientID="1 "), dict(PatientID="1"), None),
        (dict(PatientID="1", IssuerOfPatientID="A"), dict(PatientID="1", IssuerOfPatientID="B"), "Issuer"),
        (dict(PatientID="1", IssuerOfPatientID="A"), dict(PatientID="1"), None),
        (dict(PatientID="1", PatientName="DOE^JOHN"), dict(PatientID="1", PatientName="Doe^John^^^"), None),
        (dict(PatientID="1", PatientName="Doe^John"), dict(PatientID="1", PatientName="Roe^Jane"), "Name"),
        (dict(PatientID="1", PatientName="Doe^John"), dict(PatientID="1"), None),
        (dict(PatientID="1", PatientName="Yamada^Tarou=山田^太郎"), dict(PatientID="1", PatientName="YAMADA^TAROU"), None),
        (dict(PatientID="1", PatientName="=山田^太郎"), dict(PatientID="1", PatientName="=田中^花子"), "Name"),
        (dict(PatientID="1", PatientBirthDate="19550214"), dict(PatientID="1", PatientBirthDate="1955-02-14"), None),
        (dict(PatientID="1", PatientBirthDate="19550214"), dict(PatientID="1", PatientBirthDate="19550215"), "Birth Date"),
        (dict(PatientID="1", PatientBirthDate="19550214"), dict(PatientID="1", PatientBirthDate="unknown"), None),
    ],
)
def test_the_identity_rule(a, b, conflict):
    found = identity_conflict([identity_of(header(**a)), identity_of(header(**b))])
    assert (found is None) if conflict is None else (conflict in found)


def test_names_conflict_even_when_the_first_instance_has_none():
    identities = [identity_of(header(PatientID="1")), identity_of(header(PatientID="1", PatientName="A^B")),
                  identity_of(header(PatientID="1", PatientName="C^D"))]
    assert "Name" in identity_conflict(identities)


def test_a_conflict_names_no_value():
    found = identity_conflict([identity_of(header(PatientID="SECRET-1")), identity_of(header(PatientID="SECRET-2"))])
    assert "SECRET" not in found and "2 distinct values" in found


# --------------------------------------------------------------------------- output identity


@pytest.mark.parametrize(
    ("function", "raw", "expected", "changed"),
    [
        (normalise_date, "20240315", "20240315", False),
        (normalise_date, "2024-03-15", "20240315", True),
        (normalise_date, "2024/3/5", "20240305", True),
        (normalise_date, "15/03/2024", "", True),  # day-first or month-first: ambiguous
        (normalise_date, "20240230", "", True),
        (normalise_date, "unknown", "", True),
        (normalise_time, "10:15:00", "101500", True),
        (normalise_time, "10:15:00.25", "101500.25", True),
        (normalise_time, "101500", "101500", False),
        (normalise_time, "25:00", "", True),
        (normalise_sex, "Female", "F", True),
        (normalise_sex, "u", "", True),
        (normalise_sex, "X", "", True),
        (normalise_sex, "M", "M", False),
        (normalise_age, "54", "", True),
        (normalise_age, "6 months", "006M", True),
        (normalise_age, "054Y", "054Y", False),
    ],
)
def test_value_normalisers(function, raw, expected, changed):
    value, reason = function(raw)
    assert value == expected and (reason is not None) is changed


def test_identity_attributes_are_copied_verbatim_and_free_text_is_not():
    source = header(PatientID="X" * 70, PatientName="Doe^John", AccessionNumber="A" * 20, StudyID="S" * 20,
                    StudyInstanceUID="1.2.3", StudyDescription="Free text", PatientComments="Free text",
                    AdditionalPatientHistory="Free text", StudyDate="2024-03-15")
    identity = report_identity(source)
    ds = identity.dataset
    assert ds.PatientID == "X" * 70 and ds.AccessionNumber == "A" * 20 and ds.StudyID == "S" * 20
    assert ds.StudyDate == "20240315"
    for keyword in ("StudyDescription", "PatientComments", "AdditionalPatientHistory"):
        assert keyword not in ds
    for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "ReferringPhysicianName"):
        assert keyword in ds and ds[keyword].value in ("", None), "Type 2: present, empty"
    assert [fix.keyword for fix in identity.fixes] == ["StudyDate"]


# --------------------------------------------------------------------------- provenance


@pytest.mark.parametrize(
    ("attributes", "excluded", "asked_by"),
    [
        (dict(ImageType=["ORIGINAL", "PRIMARY"]), False, None),
        (dict(), False, None),
        (dict(ImageType=["DERIVED", "PRIMARY"]), True, "ImageType"),
        (dict(ImageType=["ORIGINAL", "SECONDARY"]), True, "ImageType"),
        (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", ConversionType="WSD"), True, "ConversionType"),
        (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", ConversionType="DI"), False, None),
        (dict(BurnedInAnnotation="YES"), True, "BurnedInAnnotation"),
        (dict(SOPClassUID="1.2.3.4.5.6.7"), True, ""),
        (dict(Manufacturer="biomedclip-map project"), True, ""),
        (dict(SeriesDescription="BiomedCLIP findings image (AI) UNTRAINED MODEL"), True, ""),
        (dict(ImageComments="AI-generated. Findings drawn by biomedclip-map 0.1.0; not verified"), True, ""),
        (dict(Manufacturer="biomedclip-map sample generator"), False, None),
    ],
)
def test_what_is_not_an_original_acquisition(attributes, excluded, asked_by):
    attributes.setdefault("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    exclusion = exclusion_of(header(**attributes))
    assert (exclusion is not None) is excluded
    if excluded:
        assert (asked_by in exclusion.attributes) if asked_by else exclusion.never


def test_own_outputs_are_recognised_by_equipment():
    assert own_output_reason(header(ManufacturerModelName="biomedclip-map", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.34"))


# --------------------------------------------------------------------------- character sets


def _file_with_raw_name(raw: bytes, character_set: str | None) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if character_set:
        ds.SpecificCharacterSet = character_set
    ds.PatientName = "Q" * len(raw)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue().replace(b"Q" * len(raw), raw)


@pytest.mark.parametrize(
    ("raw", "character_set", "expected"),
    [
        ("Müller^Jürgen".encode() + b" ", None, "Müller^Jürgen"),
        ("Müller^Jürgen".encode() + b" ", "ISO_IR 6", "Müller^Jürgen"),
        ("Müller^Jürgen".encode("latin-1") + b" ", "ISO_IR 100", "Müller^Jürgen"),
        ("Gómez^Añá".encode("latin-1") + b" ", None, "Gómez^Añá"),  # not valid UTF-8: left to the default reading
        (b"Plain^Ascii ", None, "Plain^Ascii"),
    ],
)
def test_undeclared_utf8_is_read_as_utf8_and_nothing_else_is(tmp_path: Path, raw, character_set, expected):
    path = tmp_path / "x.dcm"
    data = _file_with_raw_name(raw, character_set)
    path.write_bytes(data)
    assert str(read_dataset(path).PatientName) == expected
    assert path.read_bytes() == data, "the file is never changed"


# --------------------------------------------------------------------------- geometry


def _slices(positions, thicknesses=None) -> list[InstanceFile]:
    return [
        InstanceFile(path=Path(f"{i}.dcm"), sop_class_uid="1.2", sop_instance_uid=f"1.{i}", transfer_syntax_uid="1.2",
                     slice_position=z, slice_thickness=(thicknesses[i] if thicknesses else 1.0))
        for i, z in enumerate(positions)
    ]


def test_a_regular_stack_says_nothing():
    assert geometry_notes(_slices([0, 1, 2, 3, 4])) == []


def test_gaps_duplicates_and_mixed_thickness_are_named():
    notes = geometry_notes(_slices([0, 1, 1, 2, 6, 7], [1, 1, 1, 1, 3, 1]))
    assert any("duplicate" in n for n in notes)
    assert any("gap(s)" in n and "4.00 mm" in n for n in notes)
    assert any("different thickness (1, 3 mm)" in n for n in notes)


def test_pydicoms_bundled_mr_is_a_derived_image():
    from pydicom.data import get_testdata_file

    exclusion = exclusion_of(pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True))
    assert exclusion is not None and "derived" in exclusion.reason
