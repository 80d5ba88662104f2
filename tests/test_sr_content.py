"""The structured report: content, DICOM validity (dciodvfy), read-back, identity, atomic writing.

Studies are built in code from pydicom's bundled test files, with synthetic probabilities.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from operators.sr import coding
from operators.outputs.dicom_output import OutputWriteError, write_dataset_atomically
from operators.outputs.output_identity import report_identity
from common.model_identity import ModelIdentity
from operators.messages import (
    ImageFindings,
    ImageSource,
    InstanceFile,
    SelectedSeries,
    SeriesAnalysis,
    SeriesHeader,
    StudyAnalysis,
    StudyHeader,
)
from operators.sr.sr_content import (
    AI_NOTICE,
    UNTRAINED_NOTICE,
    DeviceIdentity,
    LabelProbability,
    ReportBuildError,
    build_report,
    report_findings,
)
from operators.sr.sr_readback import read_findings
from common.codes import Code
from common.zero_shot_tasks import Label, ZeroShotTask
from tests.dicom_validation import run_dciodvfy

DEVICE = DeviceIdentity(
    manufacturer="biomedclip-map project",
    model_name="biomedclip-map",
    software_version="0.1.0",
    device_uid="1.2.826.0.1.3680043.10.511.3.424242",
)

FINDING = Code("DCM", "121071", "Finding")
CT_TASK = ZeroShotTask(
    name="ct",
    title="Computed tomography",
    finding=FINDING,
    labels=(
        Label("no abnormality", "a normal CT scan", Code("SCT", "17621005", "Normal")),
        Label("mass", "a mass", Code("SCT", "4147007", "Mass")),
        Label("other lesion", "a lesion", Code("99BMCLIP", "SKIN-LESION-OTHER", "Skin lesion other than burn")),
    ),
    templates=("this is an image of {}",),
    normal_label="no abnormality",
)
# A task reporting under a concept other than TID 1501's own "Finding" row.
PHOTO_TASK = ZeroShotTask(
    name="burn_photograph",
    title="Skin photograph",
    finding=Code("SCT", "404684003", "Clinical finding"),
    labels=(
        Label("burn wound", "a burn", Code("99BMCLIP", "BURN-WOUND", "Burn wound")),
        Label("healthy skin", "healthy skin", Code("SCT", "17621005", "Normal")),
    ),
    templates=("this is a photo of {}",),
)
IDENTITY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)


def _instance(path: str | Path) -> tuple[Dataset, InstanceFile]:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return header, InstanceFile(
        path=Path(path),
        sop_class_uid=header.SOPClassUID,
        sop_instance_uid=header.SOPInstanceUID,
        transfer_syntax_uid=header.file_meta.TransferSyntaxUID,
        number_of_frames=int(header.get("NumberOfFrames") or 1),
    )


def _analysis(
    path: str | Path,
    task: ZeroShotTask,
    probabilities: list[float],
    *,
    frames: list[int | None] = (None,),
    status: str = "validated",
) -> StudyAnalysis:
    """One study, one series, one instance of `path`, evaluated at `frames`, with given probabilities."""
    header, instance = _instance(path)
    series = SeriesHeader(header.SeriesInstanceUID, header, [instance])
    study = StudyHeader(header.StudyInstanceUID, "st-3f9a", header, [series])
    series_probabilities = np.asarray(probabilities, dtype=np.float32)
    images = [
        ImageFindings(
            ImageSource(instance.sop_class_uid, instance.sop_instance_uid, frame),
            series_probabilities,
            np.zeros(8, dtype=np.float32),
        )
        for frame in frames
    ]
    analysis = SeriesAnalysis(
        selection=SelectedSeries(task.name, series),
        task=task,
        images=images,
        probabilities=series_probabilities,
        preprocessing="Window centre 40, width 400 from the header; resized to 224 x 224.",
    )
    model = ModelIdentity("BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "1.0", "0123abcd" * 8, status)
    return StudyAnalysis(study=study, series=[analysis], model=model, backend="onnxruntime-cpu")


def _write(analysis: StudyAnalysis, tmp_path: Path, **kwargs) -> tuple[Dataset, Path]:
    report = build_report(analysis, device=DEVICE, **kwargs)
    return report, write_dataset_atomically(report, tmp_path / "out", "SR-st-3f9a.dcm")


def _assert_valid(path: Path) -> None:
    verdict = run_dciodvfy(path)
    for warning in verdict.warnings:
        print(f"dciodvfy {path.name}: {warning}")
    assert verdict.errors == (), verdict.output


# --------------------------------------------------------------------------- content and validity


def test_ct_report_validates_and_reads_back_what_was_written(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.123456, 0.654321, 0.222223])
    _, path = _write(analysis, tmp_path)

    _assert_valid(path)
    findings = read_findings(path)
    assert findings == report_findings(analysis)

    (group,) = findings.series
    header = analysis.study.header
    assert group.finding == FINDING
    assert group.top_label == Code("SCT", "4147007", "Mass")
    assert group.probabilities == (
        LabelProbability(Code("99BMCLIP", "P-SCT-17621005", "Probability of Normal"), 12.35),
        LabelProbability(Code("99BMCLIP", "P-SCT-4147007", "Probability of Mass"), 65.43),
        LabelProbability(
            Code("99BMCLIP", "P-99BMCLIP-SKIN-LESION-OTHER", "Probability of Skin lesion other than burn"), 22.22
        ),
    )
    assert group.source_images == (ImageSource(header.SOPClassUID, header.SOPInstanceUID, None),)
    assert findings.evidence == {(header.SOPClassUID, header.SOPInstanceUID)}
    assert group.algorithm_name == "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert group.algorithm_version == "1.0"
    assert "weights sha256 " + "0123abcd" * 8 in group.algorithm_parameters
    assert "inference backend onnxruntime-cpu" in group.algorithm_parameters
    assert findings.narrative[0] == AI_NOTICE
    assert any(analysis.series[0].preprocessing in line for line in findings.narrative)


def test_multiframe_colour_report_references_the_evaluated_frames(tmp_path):
    source = get_testdata_file("examples_ybr_color.dcm")  # US multi-frame, YBR_FULL_422, 30 frames
    analysis = _analysis(source, PHOTO_TASK, [0.25, 0.75], frames=[5, 1, 30])
    report, path = _write(analysis, tmp_path)

    _assert_valid(path)
    findings = read_findings(path)
    assert findings == report_findings(analysis)
    (group,) = findings.series
    uid = analysis.study.header.SOPInstanceUID
    sop_class = analysis.study.header.SOPClassUID
    assert group.source_images == tuple(ImageSource(sop_class, uid, n) for n in (1, 5, 30))
    # reported under the task's own concept, as a qualitative evaluation
    assert group.finding == Code("SCT", "404684003", "Clinical finding")
    assert group.top_label == Code("SCT", "17621005", "Normal")
    assert [p.percent for p in group.probabilities] == [25.0, 75.0]
    procedures = [
        item.ConceptCodeSequence[0].CodeValue
        for item in report.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures == ["363679005"]  # SCT "Imaging procedure": CID 100 has no ultrasound code


def test_frames_of_a_single_frame_sop_class_reference_the_whole_instance(tmp_path):
    # Secondary Capture's IOD has no Number of Frames, so DICOM forbids frame references to it
    # even though this (non-conformant) file holds two frames.
    analysis = _analysis(get_testdata_file("SC_rgb_rle_2frame.dcm"), PHOTO_TASK, [0.9, 0.1], frames=[1, 2])
    _, path = _write(analysis, tmp_path)

    _assert_valid(path)
    (group,) = read_findings(path).series
    header = analysis.study.header
    assert group.source_images == (ImageSource(header.SOPClassUID, header.SOPInstanceUID, None),)
    assert group.top_label == Code("99BMCLIP", "BURN-WOUND", "Burn wound")


def test_report_files_into_the_source_study_as_a_new_unverified_series(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    _, path = _write(analysis, tmp_path, series_number=9100)
    written = pydicom.dcmread(path)
    source = analysis.study.header

    for keyword in IDENTITY:
        assert written.get(keyword) == source.get(keyword), keyword
    assert written.StudyInstanceUID == source.StudyInstanceUID
    assert written.SeriesInstanceUID != source.SeriesInstanceUID
    assert written.SOPInstanceUID != source.SOPInstanceUID
    assert written.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert written.Modality == "SR"
    assert written.SeriesNumber == 9100
    assert written.SeriesDescription == "BiomedCLIP zero-shot analysis (AI)"
    assert written.VerificationFlag == "UNVERIFIED"
    assert written.CompletionFlag == "COMPLETE"
    assert written.PreliminaryFlag == "PRELIMINARY"
    assert written.SpecificCharacterSet == "ISO_IR 192"
    (evidence,) = written.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    (scheme,) = [s for s in written.CodingSchemeIdentificationSequence if s.CodingSchemeDesignator == "99BMCLIP"]
    assert scheme.CodingSchemeName == coding.LOCAL_SCHEME_NAME
    assert scheme.CodingSchemeResponsibleOrganization == coding.LOCAL_SCHEME_ORGANIZATION
    assert written.Manufacturer == DEVICE.manufacturer
    assert written.SoftwareVersions == DEVICE.software_version
    # the device observer of the observation context is this application
    observer_uids = [
        item.UID for item in written.ContentSequence if item.get("ValueType") == "UIDREF"
    ]
    assert observer_uids == [DEVICE.device_uid]
    procedures = [
        item.ConceptCodeSequence[0].CodeValue
        for item in written.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures == ["25045-6"]  # LOINC "CT unspecified body region"


def test_partial_analysis_is_flagged_partial(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    _, path = _write(analysis, tmp_path, complete=False)
    assert pydicom.dcmread(path).CompletionFlag == "PARTIAL"


@pytest.mark.parametrize("status", ["untrained", "validated", "research"])
def test_untrained_notice_is_written_exactly_when_the_model_is_untrained(tmp_path, status):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.5, 0.3, 0.2], status=status)
    _, path = _write(analysis, tmp_path, extra_text=["Burn specialist not applicable."])
    _assert_valid(path)
    narrative = read_findings(path).narrative
    untrained = status == "untrained"
    assert narrative[0] == AI_NOTICE
    assert (UNTRAINED_NOTICE in narrative) is untrained
    assert ("UNTRAINED" in pydicom.dcmread(path).SeriesDescription) is untrained
    assert narrative[-1] == "Burn specialist not applicable."


def test_non_ascii_patient_name_from_a_latin1_source_is_kept(tmp_path):
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    source.SpecificCharacterSet = "ISO_IR 100"
    source.PatientName = "Müller^Jürgen"
    source_path = tmp_path / "latin1.dcm"
    source.save_as(source_path)
    analysis = _analysis(source_path, CT_TASK, [0.1, 0.2, 0.7])
    _, path = _write(analysis, tmp_path)

    _assert_valid(path)
    assert str(pydicom.dcmread(path).PatientName) == "Müller^Jürgen"


def test_building_logs_no_patient_data_or_uids(tmp_path, caplog):
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    source.PatientName = "Solo"  # single component: highdicom would warn with the name
    source.PatientSex = "U"  # not a DICOM enumerated value: reported empty, with a warning
    source_path = tmp_path / "solo.dcm"
    source.save_as(source_path)
    analysis = _analysis(source_path, CT_TASK, [0.1, 0.2, 0.7])
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning quoting the name would fail the build here
        _, path = _write(analysis, tmp_path)

    _assert_valid(path)
    written = pydicom.dcmread(path)
    assert written.PatientName == "Solo"
    assert written.PatientSex == ""
    # The change is recorded by attribute name (the SR writer logs it once per study), never by value.
    assert [fix.keyword for fix in report_identity(analysis.study.header).fixes] == ["PatientSex"]
    for secret in (source.PatientName, source.PatientID, source.SOPInstanceUID, source.StudyInstanceUID):
        assert str(secret) not in caplog.text


def test_a_study_header_without_study_instance_uid_is_refused_by_name(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    header = copy.deepcopy(analysis.study.header)
    del header.StudyInstanceUID
    analysis.study.header = header
    with pytest.raises(ReportBuildError, match="StudyInstanceUID") as raised:
        build_report(analysis, device=DEVICE)
    assert "st-3f9a" in str(raised.value)
    assert analysis.study.study_instance_uid not in str(raised.value)


def test_an_unambiguous_invalid_study_date_is_normalised_not_refused(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    analysis.study.header = copy.deepcopy(analysis.study.header)
    with warnings.catch_warnings():  # pydicom warns when an invalid DA is assigned; that is the point
        warnings.simplefilter("ignore")
        analysis.study.header.StudyDate = "2004-01-19"
    report = build_report(analysis, device=DEVICE)
    assert report.StudyDate == "20040119"


def test_probabilities_that_do_not_match_the_labels_are_refused():
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.5, 0.5])
    with pytest.raises(ReportBuildError, match="2 probabilities for 3 labels"):
        build_report(analysis, device=DEVICE)


def test_an_evaluated_file_that_vanished_is_named(tmp_path):
    copy_path = tmp_path / "ct.dcm"
    copy_path.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    analysis = _analysis(copy_path, CT_TASK, [0.1, 0.2, 0.7])
    copy_path.unlink()
    with pytest.raises(ReportBuildError, match="ct.dcm"):
        build_report(analysis, device=DEVICE)


def test_dciodvfy_reports_errors_in_a_broken_report(tmp_path):
    # Guards the zero-error assertions above: the validator does see a missing type 1 attribute.
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    report = build_report(analysis, device=DEVICE)
    del report.VerificationFlag
    path = write_dataset_atomically(report, tmp_path, "broken.dcm")
    assert any("VerificationFlag" in line for line in run_dciodvfy(path).errors)


# --------------------------------------------------------------------------- coding


def test_local_codes_and_standard_procedure_codes():
    assert coding.probability_concept(Code("SCT", "233604007", "Pneumonia")) == Code(
        "99BMCLIP", "P-SCT-233604007", "Probability of Pneumonia"
    )
    assert coding.procedure_reported("CT").value == "25045-6"
    assert coding.procedure_reported("DX").value == "43468-8"
    assert coding.procedure_reported("XC").value == "363679005"
    assert coding.coded_modality("DMS").meaning == "Dermoscopy"
    assert coding.coded_modality("").value == "OT"


# --------------------------------------------------------------------------- atomic writing


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    report = build_report(analysis, device=DEVICE)
    path = write_dataset_atomically(report, tmp_path / "output", "SR-st-3f9a.dcm")
    assert path == tmp_path / "output" / "SR-st-3f9a.dcm"
    assert os.listdir(tmp_path / "output") == ["SR-st-3f9a.dcm"]
    assert pydicom.dcmread(path).SOPInstanceUID == report.SOPInstanceUID


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), RuntimeError("encoder bug")])
def test_an_interrupted_write_leaves_no_dcm_and_keeps_the_previous_file(tmp_path, monkeypatch, failure):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    report = build_report(analysis, device=DEVICE)
    previous = write_dataset_atomically(report, tmp_path, "SR-st-3f9a.dcm").read_bytes()

    def fail_half_way(self, handle, **kwargs):
        handle.write(b"\0" * 128 + b"DICM")  # part of a file, then the failure
        raise failure

    monkeypatch.setattr(Dataset, "save_as", fail_half_way)
    expected = OutputWriteError if isinstance(failure, OSError) else type(failure)
    with pytest.raises(expected) as raised:
        write_dataset_atomically(report, tmp_path, "SR-st-3f9a.dcm")
    if expected is OutputWriteError:
        assert "SR-st-3f9a.dcm" in str(raised.value)
    assert os.listdir(tmp_path) == ["SR-st-3f9a.dcm"]
    assert (tmp_path / "SR-st-3f9a.dcm").read_bytes() == previous


def test_an_interrupted_first_write_leaves_an_empty_folder(tmp_path, monkeypatch):
    analysis = _analysis(get_testdata_file("CT_small.dcm"), CT_TASK, [0.1, 0.2, 0.7])
    report = build_report(analysis, device=DEVICE)

    def fail(self, handle, **kwargs):
        handle.write(b"partial")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Dataset, "save_as", fail)
    with pytest.raises(OutputWriteError):
        write_dataset_atomically(report, tmp_path, "SR-st-3f9a.dcm")
    assert os.listdir(tmp_path) == []


def test_a_file_name_with_a_folder_part_is_refused(tmp_path):
    with pytest.raises(OutputWriteError, match="plain file name"):
        write_dataset_atomically(Dataset(), tmp_path, "../SR.dcm")
