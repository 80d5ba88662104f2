"""The burn findings in the SR (TID 1500 burn measurement group) and the Secondary Captures.

Studies are built in code around synthetic burn photographs written as VL Photographic Images; the
burn findings come from the real burn analysis (wound map, region, %TBSA, flags, overlay) with
given depth probabilities, so no model is needed. Every written object is checked with dciodvfy
(zero errors) and the SR is read back with highdicom's srread into the findings that were written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from highdicom.sr import srread
from pydicom.data import get_testdata_file

from common.configuration import CONFIG_DIR
from operators.sr import coding
from operators.specialists.burn.analysis import analyse_photograph
from operators.specialists.burn.config import load_burn_config
from operators.specialists.burn.depth import depth_method
from operators.specialists.burn.findings import BurnFindings, BurnImageFindings
from operators.specialists.burn.report import AnalysedBurnSeries, burn_specialist_findings
from operators.captures.capture_layout import AI_BANNER_COLOURS, BANNER_HEIGHT, UNTRAINED_BANNER_COLOURS
from operators.outputs.dicom_output import write_dataset_atomically
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
from operators.captures.secondary_capture import write_png_preview
from operators.sr.sr_content import DeviceIdentity, build_report, report_findings
from operators.sr.sr_readback import read_findings
from operators.captures.study_captures import build_study_captures, write_study_captures
from common.zero_shot_tasks import load_tasks
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_burn import BURN_SCENES, burn_photo_dataset, burn_scene
from tests.fixtures_dicom import write_dataset

CONFIG = load_burn_config()
TASKS = load_tasks(CONFIG_DIR / "zero_shot_tasks.yaml")
DEVICE = DeviceIdentity("biomedclip-map project", "biomedclip-map", "0.1.0", "1.2.826.0.1.3680043.10.511.3.4242")
KEYS = [c.key for c in CONFIG.depth.classes]


def model(status: str = "untrained") -> ModelIdentity:
    return ModelIdentity("BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "1.0", "0123abcd" * 8, status)


def instance_of(path: Path) -> tuple[pydicom.Dataset, InstanceFile]:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return header, InstanceFile(path, header.SOPClassUID, header.SOPInstanceUID, header.file_meta.TransferSyntaxUID)


def burn_study_and_photograph(
    tmp_path: Path, pixels: np.ndarray, depth: list[float], *, status: str = "untrained", config=CONFIG, **anatomy
) -> tuple[StudyAnalysis, BurnImageFindings]:
    """A one-photograph study whose burn findings come from the real analysis with the given depth probabilities."""
    path = write_dataset(tmp_path / "in" / "photo.dcm", burn_photo_dataset(pixels, **anatomy))
    header, instance = instance_of(path)
    series = SeriesHeader(header.SeriesInstanceUID, header, [instance])
    study = StudyHeader(header.StudyInstanceUID, "st-burn0001", header, [series])
    task = TASKS.for_selection("burn_photograph")
    task_probabilities = np.full(len(task.labels), 1.0 / len(task.labels), np.float32)
    image = ImageFindings(ImageSource(instance.sop_class_uid, instance.sop_instance_uid), task_probabilities, np.zeros(8, np.float32))
    analysed = SeriesAnalysis(SelectedSeries("burn_photograph", series), task, [image], task_probabilities, "colour (RGB)")
    identity = model(status)
    found = analyse_photograph(analysed, image, np.asarray(depth, np.float32), config, identity)
    burn = BurnFindings(CONFIG.depth.task, [found], depth_method(CONFIG.depth.task))
    analysis = StudyAnalysis(study=study, series=[analysed], model=identity, backend="onnxruntime-cpu")
    analysis.specialists.append(burn_specialist_findings([AnalysedBurnSeries(1, analysed, burn)], identity, config.colour))
    return analysis, found


def burn_study(tmp_path: Path, pixels: np.ndarray, depth: list[float], **options) -> StudyAnalysis:
    """A one-photograph study with the burn specialist's findings."""
    return burn_study_and_photograph(tmp_path, pixels, depth, **options)[0]


def assert_valid(path: Path) -> None:
    verdict = run_dciodvfy(path)
    assert verdict.errors == (), verdict.output


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return burn_scene(BURN_SCENES[0], seed=0).rgb


def test_burn_group_validates_and_reads_back_what_was_written(tmp_path, photo):
    analysis, found = burn_study_and_photograph(tmp_path, photo, [0.05, 0.1, 0.2, 0.25, 0.4])
    path = write_dataset_atomically(build_report(analysis, device=DEVICE), tmp_path / "out", "SR-st-burn0001.dcm")
    assert_valid(path)
    written = report_findings(analysis)
    assert read_findings(path) == written

    (group,) = written.specialist_groups
    evaluations = dict(group.evaluations)
    assert group.finding_site == coding.Code("SCT", "14975008", "Forearm")
    assert group.laterality == coding.Code("SCT", "7771000", "Left")
    assert evaluations[coding.BURN_DEPTH] == coding.Code("SCT", "403192003", "Full thickness burn of skin")
    concepts = [m.concept for m in group.measurements]
    assert concepts[: len(KEYS)] == [coding.probability_concept(c.code) for c in CONFIG.depth.classes]
    assert [m.value for m in group.measurements[: len(KEYS)]] == [5.0, 10.0, 20.0, 25.0, 40.0]
    by_concept = {m.concept: m for m in group.measurements}
    wound = found.wound_map
    assert by_concept[coding.WOUND_AREA].value == round(wound.wound_percent_of_skin, 2)
    assert by_concept[coding.WOUND_AREA].method == coding.as_code(coding.COLOUR_WOUND_MAP)
    for cls in CONFIG.colour.classes:
        assert coding.area_concept(cls.code) in by_concept
    assert by_concept[coding.REGION_SHARE].value == 3.0
    assert by_concept[coding.TBSA_ESTIMATE].method == coding.as_code(coding.LUND_BROWDER)
    assert evaluations[coding.FLAG_SURGICAL] == coding.YES  # 0.25 + 0.40 ≥ 0.5
    assert evaluations[coding.FLAG_SPECIAL_AREA] == coding.NO
    assert evaluations[coding.FLAG_REFERRAL] == coding.NO  # P(full) 0.4 < 0.5, partial 0.45 < 0.5, forearm
    assert evaluations[coding.FLAG_REVIEW] == coding.YES
    narrative = " ".join(written.narrative)
    for words in ("zero-shot classification", "CIELAB", "Lund and Browder", "flag 'Needs surgical assessment' YES; inputs:"):
        assert words in narrative


def test_units_are_ucum_percent_and_methods_are_coded(tmp_path, photo):
    analysis = burn_study(tmp_path, photo, [0.05, 0.1, 0.2, 0.25, 0.4])
    report = build_report(analysis, device=DEVICE)
    path = write_dataset_atomically(report, tmp_path / "out", "SR.dcm")
    groups = srread(path).content.get_image_measurement_groups()
    burn = [g for g in groups if g.method == coding.BURN_METHOD]
    assert len(burn) == 1 and len(groups) == 2
    for measurement in burn[0].get_measurements():
        assert (measurement.unit.value, measurement.unit.scheme_designator) == ("%", "UCUM")
        assert measurement.method is not None


def test_greyscale_photograph_without_anatomy_says_not_measured_and_not_estimable(tmp_path, photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    analysis = burn_study(tmp_path, grey, [0.2] * 5, body_part="SKIN", region=None, laterality=None)
    path = write_dataset_atomically(build_report(analysis, device=DEVICE), tmp_path / "out", "SR.dcm")
    assert_valid(path)
    findings = read_findings(path)
    assert findings == report_findings(analysis)
    (group,) = findings.specialist_groups
    evaluations = dict(group.evaluations)
    assert evaluations[coding.WOUND_AREA] == coding.NOT_MEASURED
    assert evaluations[coding.TBSA_ESTIMATE] == coding.NOT_ESTIMABLE
    assert group.finding_site is None
    assert coding.WOUND_AREA not in {m.concept for m in group.measurements}
    assert any("greyscale" in line for line in findings.narrative)
    assert any("not estimable from this image" in line for line in findings.narrative)


def test_a_photograph_above_the_size_limit_is_not_decoded_and_says_why(tmp_path, photo, monkeypatch):
    limited = dataclasses.replace(CONFIG, colour=dataclasses.replace(CONFIG.colour, max_megapixels=0.1))
    monkeypatch.setattr(
        "operators.dicom_input.pixel_data.read_pixels", lambda instance: pytest.fail("a photograph above the limit must not be decoded")
    )
    analysis, found = burn_study_and_photograph(tmp_path, photo, [0.2] * 5, config=limited)
    assert not found.wound_map.measured and "colour.max_megapixels" in found.wound_map.note
    assert found.tbsa.percent is None and found.overlay is not None
    (capture,) = build_study_captures(analysis, DEVICE)
    path = write_dataset_atomically(capture, tmp_path / "out", "SC.dcm")
    assert_valid(path)


def test_burn_capture_is_valid_dicom_in_the_same_study(tmp_path, photo):
    analysis = burn_study(tmp_path, photo, [0.05, 0.1, 0.2, 0.25, 0.4])
    (path,) = write_study_captures(build_study_captures(analysis, DEVICE), tmp_path / "out", "st-burn0001")
    assert path.name == "SC-st-burn0001-1.dcm"
    assert_valid(path)
    capture = pydicom.dcmread(path)
    source = analysis.study.header
    assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert capture.StudyInstanceUID == source.StudyInstanceUID and capture.PatientID == source.PatientID
    assert capture.PatientName == source.PatientName
    assert capture.SeriesInstanceUID != source.SeriesInstanceUID
    assert capture.PhotometricInterpretation == "RGB" and capture.SamplesPerPixel == 3
    assert list(capture.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    # The photograph does not say whether it shows text or a face, and the capture shows its pixels.
    assert "BurnedInAnnotation" not in source and capture.BurnedInAnnotation == "YES"
    assert capture.RecognizableVisualFeatures == "YES"
    assert "AI-generated" in capture.ImageComments and "UNTRAINED" in capture.ImageComments
    assert "UNTRAINED" in capture.SeriesDescription
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert capture.Laterality == "L"
    pixels = capture.pixel_array
    assert tuple(pixels[2, pixels.shape[1] // 2 - 300]) == AI_BANNER_COLOURS[0]
    assert tuple(pixels[50, 5]) == UNTRAINED_BANNER_COLOURS[0]
    # the preview PNG holds the same pixels
    preview = write_png_preview(path, tmp_path / "preview" / "SC.png")
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(preview)), cv2.COLOR_BGR2RGB), pixels)


def test_trained_model_capture_has_no_untrained_banner(tmp_path, photo):
    analysis = burn_study(tmp_path, photo, [0.2] * 5, status="research")
    (capture,) = build_study_captures(analysis, DEVICE)
    pixels = capture.pixel_array
    assert tuple(pixels[50, 5]) != UNTRAINED_BANNER_COLOURS[0]
    assert "UNTRAINED" not in capture.ImageComments and "UNTRAINED" not in capture.SeriesDescription


def test_overlay_tints_the_wound_and_leaves_the_rest_of_the_photograph(tmp_path):
    scene = burn_scene(BURN_SCENES[0], seed=0)
    _analysis, found = burn_study_and_photograph(tmp_path, scene.rgb, [0.2] * 5)
    overlay = found.overlay
    shown = overlay[2 * BANNER_HEIGHT : 2 * BANNER_HEIGHT + scene.rgb.shape[0], : scene.rgb.shape[1]]
    assert shown.shape == scene.rgb.shape
    background = scene.truth == 0
    deep_inside = scene.wound_mask & (np.abs(shown.astype(int) - scene.rgb.astype(int)).sum(axis=2) > 0)
    assert deep_inside.sum() > 0.8 * scene.wound_mask.sum(), "the wound must be tinted"
    changed = np.abs(shown.astype(int) - scene.rgb.astype(int)).sum(axis=2) > 0
    assert changed[background].mean() < 0.05, "the background must stay as photographed (outlines aside)"


def test_findings_capture_for_a_study_without_burn_photographs(tmp_path):
    header, instance = instance_of(Path(get_testdata_file("CT_small.dcm")))
    series = SeriesHeader(header.SeriesInstanceUID, header, [instance])
    study = StudyHeader(header.StudyInstanceUID, "st-ct0001", header, [series])
    task = TASKS.for_selection("ct")
    p = np.linspace(1, 2, len(task.labels)).astype(np.float32)
    p /= p.sum()
    image = ImageFindings(ImageSource(instance.sop_class_uid, instance.sop_instance_uid), p, np.zeros(8, np.float32))
    analysis = StudyAnalysis(
        study=study,
        series=[SeriesAnalysis(SelectedSeries("ct", series), task, [image], p, "soft tissue window")],
        model=model("untrained"),
        backend="onnxruntime-cpu",
    )
    (path,) = write_study_captures(build_study_captures(analysis, DEVICE), tmp_path / "out", "st-ct0001")
    assert_valid(path)
    capture = pydicom.dcmread(path)
    assert capture.StudyInstanceUID == header.StudyInstanceUID
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert "findings" in capture.SeriesDescription.lower()
    assert tuple(capture.pixel_array[50, 5]) == UNTRAINED_BANNER_COLOURS[0]
