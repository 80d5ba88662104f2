"""The viewable images (Secondary Captures) of a study: which ones, built before anything is written.

A study with burn photographs gets one burn overlay per analysed photograph (the image the burn
specialist rendered); any other analysed study gets one findings capture (its most probable image
with the findings beside it, `operators.findings_capture`). All captures of a study share one new
series. They are built in memory first, so a study whose capture cannot be made fails before any
of its outputs is written, and are then written as `SC-<study ref>-<n>.dcm` (no identifiers in
the name).
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from common.product import (
    BURN_CAPTURE_SERIES_DESCRIPTION,
    FINDINGS_CAPTURE_SERIES_DESCRIPTION,
    UNTRAINED_SUFFIX,
)
from operators.dicom_output import write_dataset_atomically
from operators.dicom_read import read_dataset
from operators.findings_capture import render_findings_capture
from operators.messages import ImageSource, SeriesAnalysis, StudyAnalysis
from operators.output_identity import ReportIdentity, report_identity
from operators.secondary_capture import CaptureBuildError, build_secondary_capture
from operators.sr_content import DeviceIdentity

BURN_SERIES_DESCRIPTION = BURN_CAPTURE_SERIES_DESCRIPTION
FINDINGS_SERIES_DESCRIPTION = FINDINGS_CAPTURE_SERIES_DESCRIPTION

BURN_DERIVATION = (
    "Burn photograph with the burn specialist's colour wound map (per-class tint and outline) and, beside it, "
    "the burn depth probabilities, wound areas, region, %TBSA estimate, flags and model."
)
FINDINGS_DERIVATION = (
    "The analysed image that most supports the study's strongest zero-shot finding, with every analysed "
    "series' top labels and probabilities and the model."
)


def _source_header(study_ref: str, series: SeriesAnalysis, source: ImageSource) -> Dataset:
    for instance in series.selection.series.instances:
        if instance.sop_instance_uid == source.sop_instance_uid:
            try:
                return read_dataset(instance.path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                raise CaptureBuildError(f"study {study_ref}: cannot read {instance.path} again: {exc}") from exc
    raise CaptureBuildError(f"study {study_ref}: an analysed image is not one of the instances of its series")


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
    burns = [
        (series, found)
        for series in analysis.series
        if series.burn is not None
        for found in series.burn.images
        if found.overlay is not None
    ]
    if burns:
        return [
            build_secondary_capture(
                found.overlay,
                source_header=_source_header(ref, series, found.source),
                source=found.source,
                instance_number=number,
                series_description=BURN_SERIES_DESCRIPTION + suffix,
                derivation=BURN_DERIVATION,
                **common,
            )
            for number, (series, found) in enumerate(burns, start=1)
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
