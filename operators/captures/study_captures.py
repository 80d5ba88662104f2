"""The viewable images (Secondary Captures) of a study: which ones, built before anything is written.

A study for which a specialist rendered captures (the burn specialist: one overlay per analysed
photograph) gets those; any other analysed study gets one findings capture (its most probable image
with the findings, the specialists' summary lines included, beside it, `operators.captures.findings_capture`). All captures of a study share one new
series. They are built in memory first, so a study whose capture cannot be made fails before any
of its outputs is written, and are then written as `SC-<study ref>-<n>.dcm` (no identifiers in
the name).
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from common.product import FINDINGS_CAPTURE_SERIES_DESCRIPTION, UNTRAINED_SUFFIX
from operators.outputs.dicom_output import write_dataset_atomically
from operators.dicom_input.dicom_read import analysed_instance_header
from operators.captures.findings_capture import render_findings_capture
from operators.messages import ImageSource, StudyAnalysis
from operators.outputs.output_identity import ReportIdentity, report_identity
from operators.captures.secondary_capture import CaptureBuildError, build_secondary_capture
from operators.sr.sr_content import DeviceIdentity

FINDINGS_SERIES_DESCRIPTION = FINDINGS_CAPTURE_SERIES_DESCRIPTION
FINDINGS_DERIVATION = (
    "The analysed image that most supports the study's strongest zero-shot finding, with every analysed "
    "series' top labels and probabilities and the model."
)


def _source_header(analysis: StudyAnalysis, source: ImageSource) -> Dataset:
    """The header of the analysed instance a capture was made from (read again, without pixels)."""
    return analysed_instance_header(analysis, source, CaptureBuildError, "a specialist's capture")


def build_study_captures(
    analysis: StudyAnalysis, device: DeviceIdentity, identity: ReportIdentity | None = None
) -> list[Dataset]:
    """Every Secondary Capture of the study, built in memory (CaptureBuildError and the rendering
    modules' errors name the study or file). `identity` defaults to the study header's."""
    ref = analysis.study.ref
    identity = identity or report_identity(analysis.study.header)
    untrained = analysis.model.untrained
    suffix = UNTRAINED_SUFFIX if untrained else ""
    series_uid = generate_uid()
    common = dict(study_ref=ref, identity=identity, device=device, series_instance_uid=series_uid, untrained=untrained)
    rendered = [capture for found in analysis.specialists for capture in found.captures]
    if rendered:
        return [
            build_secondary_capture(
                capture.pixels,
                source_header=_source_header(analysis, capture.source),
                source=capture.source,
                instance_number=number,
                series_description=capture.series_description + suffix,
                derivation=capture.derivation,
                **common,
            )
            for number, capture in enumerate(rendered, start=1)
        ]
    pixels, _series, image, header = render_findings_capture(analysis)
    return [
        build_secondary_capture(
            pixels,
            source_header=header,
            source=image.source,
            instance_number=1,
            series_description=FINDINGS_SERIES_DESCRIPTION + suffix,
            derivation=FINDINGS_DERIVATION,
            **common,
        )
    ]


def capture_filename(study_ref: str, number: int) -> str:
    """`SC-<study ref>-<n>.dcm`: the file name of the n-th capture of a study (no identifiers)."""
    return f"SC-{study_ref}-{number}.dcm"


def write_study_captures(captures: list[Dataset], output_dir: Path, study_ref: str) -> list[Path]:
    """Write each capture atomically into `output_dir`; return the paths in order."""
    return [
        write_dataset_atomically(capture, output_dir, capture_filename(study_ref, number))
        for number, capture in enumerate(captures, start=1)
    ]
