"""The burn wound map as a DICOM Segmentation: valid, the same masks read back, referenced by the SR.

Studies are built in code around synthetic burn photographs (tests/fixtures_burn.py) whose burn
findings come from the real analysis (tests/test_burn_report.py's helper). Every written object is
checked with dciodvfy (zero errors); masks are read back with highdicom's `segread`; the SR is
read back with `operators.sr.sr_readback.read_findings`. The end-to-end test runs the whole MAP
(tiny untrained model) on the burn and chest-radiograph sample studies.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from app.cli import EXIT_OK, map_main
from app.sample_studies import build_sample_studies
from operators.messages import OutputKind
from operators.outputs.dicom_output import write_dataset_atomically
from operators.outputs.result_json import findings_document
from operators.phi.deidentify import export_study
from operators.segmentations.segmentation import (
    SegmentationBuildError,
    build_study_segmentations,
    read_segment_masks,
    resample_labels,
    write_study_segmentations,
)
from operators.specialists.burn.report import SKIN_SEGMENT_COLOUR, segment_labels
from operators.sr import coding
from operators.sr.sr_content import build_report, report_findings
from operators.sr.sr_readback import read_findings
from operators.sr_writer_operator import write_study_report
from tests.dicom_validation import run_dciodvfy
from tests.fixtures_burn import BURN_SCENES, burn_scene
from tests.test_burn_report import CONFIG, DEVICE, burn_study_and_photograph

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def assert_valid(path: Path) -> None:
    verdict = run_dciodvfy(path)
    assert verdict.errors == (), verdict.output


def expected_masks(wound_labels: np.ndarray) -> dict[int, np.ndarray]:
    """Segment n's mask from a wound map at the photograph's size: 1 normal skin, 2 + i wound class i."""
    labels = segment_labels(wound_labels, len(CONFIG.colour.classes))
    return {n: labels == n for n in range(1, len(CONFIG.colour.classes) + 2)}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return burn_scene(BURN_SCENES[0], seed=0).rgb


def test_resampling_maps_each_source_pixel_to_the_reduced_pixel_it_lies_in():
    labels = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert np.array_equal(resample_labels(labels, 4, 6), np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1))
    assert np.array_equal(resample_labels(labels, 2, 3), labels)
    odd = resample_labels(labels, 5, 7)  # centres (r + 0.5) * 2 / 5 and (c + 0.5) * 3 / 7
    assert odd[:, 0].tolist() == [1, 1, 4, 4, 4] and odd[0].tolist() == [1, 1, 2, 2, 2, 3, 3]


def test_segmentation_validates_and_reads_back_into_the_same_masks(tmp_path, photo):
    analysis, found = burn_study_and_photograph(tmp_path, photo, [0.05, 0.1, 0.2, 0.25, 0.4])
    (built,) = build_study_segmentations(analysis, DEVICE)
    (path,) = write_study_segmentations([built], tmp_path / "out", "st-burn0001")
    assert path.name == "SEG-st-burn0001-1.dcm"
    assert_valid(path)

    masks = read_segment_masks(path)
    assert found.wound_labels.shape == photo.shape[:2]  # analysed at its own size (640 x 480)
    expected = expected_masks(found.wound_labels)
    assert sorted(masks) == sorted(expected)
    for number, mask in masks.items():
        assert np.array_equal(mask, expected[number]), f"segment {number}"
    assert masks[1].any() and any(masks[n].any() for n in range(2, len(expected) + 1))

    seg = pydicom.dcmread(path)
    source = analysis.study.header
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert (seg.StudyInstanceUID, seg.PatientID, seg.PatientName) == (source.StudyInstanceUID, source.PatientID, source.PatientName)
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID and seg.Modality == "SEG"
    assert (seg.Rows, seg.Columns) == photo.shape[:2] and seg.NumberOfFrames == len(expected)
    assert seg.Manufacturer == DEVICE.manufacturer and "UNTRAINED" in seg.SeriesDescription
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.BurnedInAnnotation == "NO" and seg.RecognizableVisualFeatures == "YES"  # follows the photograph
    segments = list(seg.SegmentSequence)
    assert segments[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == coding.SKIN.value
    assert segments[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == coding.ANATOMICAL_STRUCTURE.value
    for segment, cls in zip(segments[1:], CONFIG.colour.classes):
        assert segment.SegmentLabel == cls.name
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == cls.code.value
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == coding.MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert tuple(round(v) for v in segments_rgb(segments[0])) == SKIN_SEGMENT_COLOUR
    # frame n holds segment n: the SR references segments by frame
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        assert frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number


def segments_rgb(segment) -> tuple[int, int, int]:
    import highdicom as hd

    return hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()


def test_a_photograph_larger_than_the_analysis_copy_gets_a_segmentation_at_its_own_size(tmp_path, photo):
    big = cv2.resize(photo, (1440, 1080), interpolation=cv2.INTER_LINEAR)  # analysed on a 1024 x 768 copy
    analysis, found = burn_study_and_photograph(tmp_path, big, [0.2] * 5)
    assert found.wound_labels.shape == (768, 1024)
    (built,) = build_study_segmentations(analysis, DEVICE)
    (path,) = write_study_segmentations([built], tmp_path / "out", "st-big")
    assert_valid(path)
    masks = read_segment_masks(path)
    assert masks[1].shape == (1080, 1440)
    expected = expected_masks(resample_labels(found.wound_labels, 1080, 1440))
    for number, mask in masks.items():
        assert np.array_equal(mask, expected[number])
    # wound area fractions survive the resampling within a pixel row's worth
    wound_small = (found.wound_labels >= 2).mean()
    wound_full = sum(masks[n] for n in range(2, len(masks) + 1)).astype(bool).mean()
    assert abs(wound_small - wound_full) < 0.002


def test_a_label_map_that_is_not_a_copy_of_its_photograph_is_refused(tmp_path, photo):
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5)
    found = analysis.specialists[0]
    squashed = dataclasses.replace(found.segmentations[0], labels=np.zeros((100, 400), np.uint8))
    analysis.specialists[0] = dataclasses.replace(found, segmentations=(squashed,))
    with pytest.raises(SegmentationBuildError, match="is not a reduced copy of the 640 x 480 source image"):
        build_study_segmentations(analysis, DEVICE)


def test_a_frame_of_a_multi_frame_image_gets_no_segmentation_and_one_log_line(tmp_path, photo, monkeypatch, caplog):
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5)
    header = pydicom.dcmread(analysis.series[0].selection.series.instances[0].path, stop_before_pixels=True)
    header.NumberOfFrames = 2
    monkeypatch.setattr("operators.segmentations.segmentation._source_header", lambda analysis, source: header)
    assert build_study_segmentations(analysis, DEVICE) == []
    (line,) = [r.getMessage() for r in caplog.records if "multi-frame" in r.getMessage()]
    assert line.startswith("study st-burn0001, segmentation '#1.1 Burn analysis") and header.SOPInstanceUID not in line


def test_the_sr_references_every_segment_and_reads_back(tmp_path, photo):
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.05, 0.1, 0.2, 0.25, 0.4])
    segmentations = build_study_segmentations(analysis, DEVICE)
    report = build_report(analysis, device=DEVICE, segmentations=segmentations)
    path = write_dataset_atomically(report, tmp_path / "out", "SR-st-burn0001.dcm")
    assert_valid(path)
    written = report_findings(analysis, segmentations=segmentations)
    assert read_findings(path) == written
    templates = [str(e.value[0].TemplateIdentifier) for e in pydicom.dcmread(path).iterall() if e.keyword == "ContentTemplateSequence"]
    assert templates.count("1410") == len(CONFIG.colour.classes) + 1

    seg = segmentations[0].dataset
    groups = written.segment_groups
    assert len(groups) == len(seg.SegmentSequence) == len(CONFIG.colour.classes) + 1
    assert (str(seg.SOPClassUID), str(seg.SOPInstanceUID)) in written.evidence
    photo_uid = analysis.study.header.SOPInstanceUID
    for number, (group, segment) in enumerate(zip(groups, seg.SegmentSequence), start=1):
        assert group.segmentation.sop_instance_uid == seg.SOPInstanceUID and group.segmentation.frame == number
        assert group.tracking_uid == segment.TrackingUID
        assert group.source_image.sop_instance_uid == photo_uid
        assert group.property_type.value == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
    # each wound segment carries its class's area, the same value as the burn group's
    (burn_group,) = written.specialist_groups
    areas = {m.concept: m.value for m in burn_group.measurements}
    for group, cls in zip(groups[1:], CONFIG.colour.classes):
        (measurement,) = group.measurements
        assert measurement.concept == coding.area_concept(cls.code) and measurement.value == areas[measurement.concept]


def test_the_writer_files_sr_capture_and_segmentation_into_the_study(tmp_path, photo):
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5)
    outcome = write_study_report(analysis, tmp_path / "out", tmp_path / "json", DEVICE)
    kinds = [o.kind for o in outcome.outputs]
    assert kinds == [OutputKind.REPORT, OutputKind.CAPTURE, OutputKind.SEGMENTATION, OutputKind.RESULTS_JSON]
    (json_path,) = outcome.files(OutputKind.RESULTS_JSON)
    results = json.loads(json_path.read_text())
    assert results["findings"] == findings_document(read_findings(outcome.files(OutputKind.REPORT)[0]))
    assert [s["segmentation_frame"] for s in results["findings"]["segments"]] == list(range(1, len(CONFIG.colour.classes) + 2))
    outcome.outputs.pop()  # the DICOM outputs below
    (seg_path,) = outcome.files(OutputKind.SEGMENTATION)
    assert seg_path.name == "SEG-st-burn0001-1.dcm"
    assert {o.document.study_instance_uid for o in outcome.outputs} == {analysis.study.header.StudyInstanceUID}
    assert len({o.document.series_instance_uid for o in outcome.outputs}) == 3
    seg_uid = outcome.outputs[2].document.sop_instance_uid
    assert {g.segmentation.sop_instance_uid for g in read_findings(outcome.files(OutputKind.REPORT)[0]).segment_groups} == {seg_uid}
    for path in (o.path for o in outcome.outputs):
        assert_valid(path)


def test_a_photograph_without_a_wound_map_gets_no_segmentation(tmp_path, photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    analysis, found = burn_study_and_photograph(tmp_path, grey, [0.2] * 5)
    assert found.wound_labels is None and analysis.specialists[0].segmentations == ()
    outcome = write_study_report(analysis, tmp_path / "out", None, DEVICE)
    assert outcome.files(OutputKind.SEGMENTATION) == [] and not list((tmp_path / "out").glob("SEG-*"))
    assert read_findings(outcome.files(OutputKind.REPORT)[0]).segment_groups == ()


# --------------------------------------------------------------------------- de-identified export


def _export(tmp_path: Path, photo: np.ndarray, **photo_attributes) -> tuple[list[pydicom.Dataset], list[Path]]:
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5, **photo_attributes)
    outcome = write_study_report(analysis, tmp_path / "out", None, DEVICE)
    photo_path = analysis.series[0].selection.series.instances[0].path
    export = export_study("st-burn0001", [o.path for o in outcome.outputs], [photo_path], tmp_path / "deid")
    return [pydicom.dcmread(p) for p in export.written], export.written


def test_export_leaves_the_segmentation_out_with_a_photograph_that_may_show_a_face(tmp_path, photo):
    exported, paths = _export(tmp_path, photo)  # the photograph declares nothing: taken as identifying
    assert [ds.Modality for ds in exported] == ["SR"]
    report = exported[0]
    references = {str(e.value) for e in report.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert references == set()  # photograph, capture and segmentation all withheld, their references gone
    assert_no_segment_groups(report)
    assert_valid(paths[0])


def assert_no_segment_groups(report: pydicom.Dataset) -> None:
    """The TID 1410 segment groups went with the references they existed for."""
    templates = [str(e.value[0].TemplateIdentifier) for e in report.iterall() if e.keyword == "ContentTemplateSequence"]
    assert "1410" not in templates and "1500" in templates


def test_export_leaves_the_segmentation_out_with_a_photograph_withheld_for_burned_in_text(tmp_path, photo, caplog):
    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5, BurnedInAnnotation="YES", RecognizableVisualFeatures="NO")
    outcome = write_study_report(analysis, tmp_path / "out", None, DEVICE)
    (seg_path,) = outcome.files(OutputKind.SEGMENTATION)
    assert pydicom.dcmread(seg_path).RecognizableVisualFeatures == "NO"  # not withheld for its own pixels
    photo_path = analysis.series[0].selection.series.instances[0].path
    export = export_study("st-burn0001", [o.path for o in outcome.outputs], [photo_path], tmp_path / "deid")
    assert [pydicom.dcmread(p).Modality for p in export.written] == ["SR"]
    assert any("a Segmentation of an image that is left out" in reason for reason in export.left_out)
    report = pydicom.dcmread(export.written[0])
    assert not any(e.keyword == "ReferencedSOPInstanceUID" for e in report.iterall())
    assert_no_segment_groups(report)
    assert_valid(export.written[0])


# --------------------------------------------------------------------------- the whole MAP


def test_a_map_run_writes_sr_capture_and_segmentation_for_the_burn_study_only(tmp_path, tiny_model_dir):
    samples = tmp_path / "samples"
    build_sample_studies(samples)
    inp = tmp_path / "in"
    for name in ("burn-photograph", "chest-radiograph"):
        shutil.copytree(samples / name, inp / name)
    out = tmp_path / "out"
    code = map_main(["-i", str(inp), "-o", str(out), "-m", str(tiny_model_dir.parent), "-w", str(tmp_path / "work"), "--allow-untrained"])
    assert code == EXIT_OK
    burn_study = pydicom.dcmread(next((inp / "burn-photograph").rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    by_study: dict[str, list[str]] = {}
    for path in sorted(out.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.Modality))
        assert_valid(path)
    assert sorted(by_study[burn_study]) == ["OT", "SEG", "SR"]
    (other,) = [modalities for study, modalities in by_study.items() if study != burn_study]
    assert "SEG" not in other and "SR" in other
    (report,) = [p for p in out.glob("SR-*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID == burn_study]
    (seg,) = out.glob("SEG-*.dcm")
    assert {g.segmentation.sop_instance_uid for g in read_findings(report).segment_groups} == {pydicom.dcmread(seg).SOPInstanceUID}


# --------------------------------------------------------------------------- the DICOM node


def test_the_node_queues_the_segmentation_with_the_report_for_delivery(tmp_path, photo):
    from app.node.outbox import Outbox
    from app.node.result_identity import ResultIdentity
    from app.node.runner import job_result
    from app.node.spool import SpoolLayout
    from app.node.work_queue import Job
    from app.run import RunReport

    analysis, _ = burn_study_and_photograph(tmp_path, photo, [0.2] * 5)
    outcome = write_study_report(analysis, tmp_path / "output", None, DEVICE)
    result = job_result(RunReport(outcomes=(outcome,)))
    names = [o.path.name for o in result.outputs]
    assert names == ["SC-st-burn0001-1.dcm", "SEG-st-burn0001-1.dcm", "SR-st-burn0001.dcm"]
    layout = SpoolLayout(tmp_path / "spool")
    layout.create()
    outbox = Outbox(layout, ["pacs"])
    job = Job(job_id="20260101T000000000000-st-burn0001", study_ref="st-burn0001")
    entry = outbox.commit(job, result.files, [ResultIdentity.of(o) for o in result.outputs])
    assert entry.unsent("pacs") == names
    assert [r.document.sop_class_uid for r in outbox.outputs_of(job.job_id)].count(SEGMENTATION_STORAGE) == 1
