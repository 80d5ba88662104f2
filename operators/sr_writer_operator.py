"""SRWriter: the report of each analysed study, written atomically into the output folder.

Per study: `SR-<ref>.dcm` (the report), `SC-<ref>-<n>.dcm` (viewable Secondary Captures) and, where
a specialist computed a label map (the burn wound map), `SEG-<ref>-<n>.dcm` (DICOM Segmentations the
report references). Everything is built in memory before the first file is written.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from holoscan.core import Operator, OperatorSpec
from pydicom.uid import generate_uid

from operators.outputs.dicom_output import write_dataset_atomically
from operators.phi.clinical_context import analysed_input_files
from operators.messages import (
    DocumentReference,
    FindingSummary,
    OutcomeStatus,
    OutputFile,
    OutputKind,
    RunResults,
    StudyAnalysis,
    StudyOutcome,
)
from operators.outputs.output_identity import report_identity
from common.operating_points import SiteOperatingPoints
from common.product import MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION
from operators.outputs.result_json import write_result_json
from operators.sr.sr_content import DeviceIdentity, build_report, report_findings, task_summaries
from operators.study_batch import advance
from operators.captures.study_captures import build_study_captures, write_study_captures
from operators.segmentations.segmentation import build_study_segmentations, write_study_segmentations

logger = logging.getLogger("biomedclip_map.sr_writer")

#: Findings named in the "report written" log line (the SR holds them all).
SUMMARY_LINES_LOGGED = 5

THIS_DEVICE = DeviceIdentity(
    manufacturer=MANUFACTURER,
    model_name=MODEL_NAME,
    software_version=SOFTWARE_VERSION,
    device_uid=generate_uid(entropy_srcs=[MODEL_NAME, SOFTWARE_VERSION]),
)


def write_study_report(
    analysis: StudyAnalysis, output_dir: Path, results_json_dir: Path | None, device: DeviceIdentity = THIS_DEVICE,
    operating_points: SiteOperatingPoints | None = None,
) -> StudyOutcome:
    """Build the study's SR, viewable images and Segmentations, write them (and the JSON results where configured), say what was written.

    With the site's `operating_points`, findings are present / absent / indeterminate (see `report_findings`).
    """
    identity = report_identity(analysis.study.header)
    if identity.fixes:
        logger.warning(
            "study %s: source header values the outputs cannot carry as they are: %s",
            analysis.study.ref, "; ".join(fix.describe() for fix in identity.fixes),
        )
    # The specialists' label maps as Segmentations, built first: the report references their segments.
    segmentations = build_study_segmentations(analysis, device, identity)
    # clinical_context was built from the study's free text and scrubbed by the PHIScrubber.
    report = build_report(
        analysis, device=device, complete=analysis.left_out == 0, extra_text=analysis.clinical_context,
        identity=identity, segmentations=segmentations, operating_points=operating_points,
    )
    # The JSON results are the same findings the SR holds (computed the same way, from the same analysis).
    written = report_findings(
        analysis, extra_text=analysis.clinical_context, segmentations=segmentations, operating_points=operating_points
    )
    captures = build_study_captures(analysis, device, identity)  # viewable images, built before anything is written
    ref = analysis.study.ref
    name = f"SR-{ref}.dcm"
    outputs = [OutputFile(write_dataset_atomically(report, output_dir, name), OutputKind.REPORT, document_of(report))]
    for path, capture in zip(write_study_captures(captures, output_dir, ref), captures):
        outputs.append(OutputFile(path, OutputKind.CAPTURE, document_of(capture)))
    for path, segmentation in zip(write_study_segmentations(segmentations, output_dir, ref), segmentations):
        outputs.append(OutputFile(path, OutputKind.SEGMENTATION, document_of(segmentation.dataset)))
    if results_json_dir is not None:
        outputs.append(OutputFile(write_result_json(analysis, written, results_json_dir, name), OutputKind.RESULTS_JSON))
    findings = [FindingSummary(s.selection.selection_name, f"{s.top_label} {s.top_probability:.0%}") for s in analysis.series]
    findings.extend(line for found in analysis.specialists for line in found.summary)
    shown = "; ".join(f"{f.selection}: {f.text}" for f in findings[:SUMMARY_LINES_LOGGED]) + (
        f"; and {len(findings) - SUMMARY_LINES_LOGGED} more" if len(findings) > SUMMARY_LINES_LOGGED else ""
    )
    logger.info("study %s: report written to %s (%s)", ref, outputs[0].path, shown)
    if analysis.model.untrained:
        logger.warning("study %s: the model is UNTRAINED; the report's findings are meaningless", ref)
    return StudyOutcome(
        study_ref=ref, status=OutcomeStatus.REPORTED, outputs=outputs, findings=findings,
        analysed_inputs=analysed_input_files(analysis), timings=analysis.study.timings, redactions=dict(analysis.redactions),
        tasks=task_summaries(analysis, operating_points),
    )


def document_of(dataset) -> DocumentReference:
    """The DICOM identities of a dataset the writer built."""
    return DocumentReference(
        str(dataset.SOPClassUID), str(dataset.SOPInstanceUID), str(dataset.SeriesInstanceUID), str(dataset.StudyInstanceUID)
    )


class SRWriterOperator(Operator):
    """Sink of the graph: writes each study's outputs and hands every study's outcome to `results`."""

    def __init__(
        self, fragment, *args, output_dir: Path, results: RunResults, results_json_dir: Path | None = None,
        operating_points: SiteOperatingPoints | None = None, **kwargs
    ):
        self.step = partial(
            write_study_report, output_dir=Path(output_dir), results_json_dir=results_json_dir, operating_points=operating_points
        )
        self.results = results
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("in")

    def compute(self, op_input, op_output, context) -> None:
        done = advance(op_input.receive("in"), "report writing", self.step, logger)
        self.results.add([*done.ended, *done.items])
