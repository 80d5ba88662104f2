"""Building the DICOM Structured Report that carries one study's zero-shot findings.

The report is a Comprehensive 3D SR (highdicom `Comprehensive3DSR`) whose content follows TID 1500
"Measurement Report":

- observation context: this application as the device observer (TID 1004);
- procedure reported: one CID 100 code per source modality;
- image library (TID 1600): every evaluated instance, described from its own header;
- imaging measurements: one TID 1501 measurement group per analysed series, holding a tracking
  identifier, the algorithm (TID 4019: model name, version, weights hash, backend), the method
  (99BMCLIP zero-shot classification), the source images (instances, and frames of multi-frame
  instances), the most probable label as a coded finding, and every label's probability as a
  numeric measurement in UCUM percent; with site operating points, each label that has one is a
  qualitative evaluation valued present / absent / indeterminate (SCT qualifiers), its threshold
  and method named in the algorithm parameters;
- specialist measurement groups: the groups each specialist returned (`operators.specialists`;
  the burn specialist's give the depth, wound areas, %TBSA estimate and flags per photograph), written
  generically (see the last section of this module);
- segment groups: one TID 1410 Planar ROI group per segment of the study's DICOM Segmentations
  (`operators.segmentations`; the burn wound map), referencing the segment and its source image;
- qualitative evaluations (root-level container of TID 1500): narrative TEXT items saying that
  the result is AI-generated and requires clinician review, which model and backend produced it,
  how each series was preprocessed, whether site-validated thresholds apply (and what they gave),
  and, for an untrained model, that the result is meaningless.

The report files into the source study: patient and study attributes come from the study's
header, the source instances are listed as Current Requested Procedure Evidence, and the
document is UNVERIFIED and PRELIMINARY.

`report_findings` says what `build_report` writes in plain, comparable values; reading a written
report back (`operators.sr.sr_readback.read_findings`) must give the same value.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from highdicom import UID
from highdicom._standard_utils import is_attribute_in_iod
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageContentItem,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    ReferencedSegmentationFrame,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    SourceImageForSegmentation,
    TextContentItem,
    TrackingIdentifier,
    UIDRefContentItem,
)
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes

from common.codes import Code
from common.operating_points import Decision, OperatingPoint, SiteOperatingPoints
from common.site_validation import TaskValidation
from operators.messages import TaskSummary
from common.product import SR_SERIES_DESCRIPTION, SR_SERIES_DESCRIPTION_UNTRAINED
from operators.sr import coding
from operators.dicom_input.dicom_read import read_dataset
from operators.messages import (
    DocumentReference,
    FindingGroup,
    ImageSource,
    InstanceFile,
    MeasuredValue,
    SeriesAnalysis,
    StudyAnalysis,
)
from operators.outputs.output_identity import ReportIdentity, report_identity

logger = logging.getLogger(__name__)

PERCENT_DECIMALS = coding.PERCENT_DECIMALS
stored_percent = coding.stored_percent

#: The first narrative line of every report.
AI_NOTICE = (
    "AI-generated \u2014 requires clinician review. This report was produced automatically by "
    "zero-shot image-text classification and has not been verified by a clinician."
)

#: The narrative line written when the model's manifest status is "untrained".
UNTRAINED_NOTICE = (
    "UNTRAINED MODEL: the model that produced this report is untrained (random weights). "
    "The results are meaningless and must not be used for any clinical purpose."
)

#: The narrative line written when the model's manifest status is "research".
RESEARCH_NOTICE = (
    "RESEARCH USE: the model has not been validated on this site's studies (status research); "
    "its results are for research use only."
)

#: The narrative line of a report made without site operating points.
NO_OPERATING_POINTS_NOTICE = (
    "No site-validated threshold exists for this model and prompt set: the label probabilities are reported "
    "as they are, and no finding is called present or absent."
)

SERIES_DESCRIPTION = SR_SERIES_DESCRIPTION
SERIES_DESCRIPTION_UNTRAINED = SR_SERIES_DESCRIPTION_UNTRAINED

_TOLERANCE = 1e-4  # how far outside [0, 1] a probability may stray through float rounding


class ReportBuildError(ValueError):
    """The report cannot be built from this study; the message names the study ref and attribute."""


@dataclass(frozen=True)
class DeviceIdentity:
    """This application as the report's device observer and equipment.

    `device_uid` identifies the installation (Device Observer UID); `serial_number` is optional.
    """

    manufacturer: str
    model_name: str
    software_version: str
    device_uid: str
    serial_number: str | None = None

    @property
    def observer_name(self) -> str:
        """Device Observer Name: the application's name and version."""
        return f"{self.model_name} {self.software_version}"


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class LabelProbability:
    """One label's probability: its 99BMCLIP "Probability of <label>" concept and the value in %."""

    concept: Code
    percent: float


@dataclass(frozen=True)
class SeriesFindings:
    """What the report says about one analysed series (one TID 1501 measurement group)."""

    tracking_identifier: str
    finding: Code
    top_label: Code
    probabilities: tuple[LabelProbability, ...]
    source_images: tuple[ImageSource, ...]
    algorithm_name: str
    algorithm_version: str
    algorithm_parameters: tuple[str, ...]
    #: (label code, PRESENT / ABSENT / INDETERMINATE) for each label with a site operating point.
    decisions: tuple[tuple[Code, Code], ...] = ()


@dataclass(frozen=True)
class SegmentFindings:
    """What the report says about one segment of a written Segmentation (one TID 1410 group).

    `segmentation` is the Segmentation instance and the frame that holds the segment (the Image SOP
    Instance Reference gives a frame or a segment number, never both; frame n of the product's
    Segmentations holds segment n); `tracking_uid` is the segment's Tracking UID in the
    Segmentation, so the two stay linked.
    """

    tracking_identifier: str
    tracking_uid: str
    segmentation: ImageSource
    source_image: ImageSource
    category: Code
    property_type: Code
    algorithm_name: str
    algorithm_version: str
    measurements: tuple[MeasuredValue, ...] = ()


@dataclass(frozen=True)
class SegmentationEvidence:
    """A Segmentation built for the study (not yet written) and the report's groups about its segments."""

    dataset: Dataset
    segments: tuple[SegmentFindings, ...]


@dataclass(frozen=True)
class ReportFindings:
    """What a report says, in plain values: groups, evidence (SOP class, SOP instance), narrative."""

    series: tuple[SeriesFindings, ...]
    evidence: frozenset[tuple[str, str]]
    narrative: tuple[str, ...]
    #: The specialists' measurement groups, in the order they ran (see the last section below).
    specialist_groups: tuple[FindingGroup, ...] = ()
    #: One group per segment of the study's Segmentations, in writing order.
    segment_groups: tuple[SegmentFindings, ...] = ()


def _probabilities(analysis: StudyAnalysis, index: int, series: SeriesAnalysis) -> np.ndarray:
    where = f"study {analysis.study.ref}, analysed series #{index} (task {series.task.name!r})"
    probabilities = np.asarray(series.probabilities, dtype=np.float64).reshape(-1)
    if probabilities.shape[0] != len(series.task.labels):
        raise ReportBuildError(
            f"{where}: {probabilities.shape[0]} probabilities for {len(series.task.labels)} labels"
        )
    finite = bool(np.all(np.isfinite(probabilities)))
    if not finite or probabilities.min() < -_TOLERANCE or probabilities.max() > 1 + _TOLERANCE:
        raise ReportBuildError(f"{where}: probabilities must be finite and between 0 and 1")
    concepts = [coding.probability_concept(label.code) for label in series.task.labels]
    duplicated = {c.value for c in concepts if concepts.count(c) > 1}
    if duplicated:
        raise ReportBuildError(
            f"{where}: several labels share the code(s) {sorted(duplicated)}; give each label of the "
            "task its own code in the zero-shot task file"
        )
    return np.clip(probabilities, 0.0, 1.0)


@functools.lru_cache(maxsize=256)
def allows_frame_references(sop_class_uid: str) -> bool:
    """Whether instances of this SOP class may be referenced by frame (their IOD is multi-frame).

    DICOM forbids Referenced Frame Number for SOP classes whose IOD has no Number of Frames, even
    if a (non-conformant) instance carries several frames; such instances, and instances of SOP
    classes the standard does not define, are referenced as a whole. highdicom's IOD tables
    answer this; the helper is internal to highdicom, so it is wrapped here (highdicom is pinned).
    """
    try:
        return bool(is_attribute_in_iod("NumberOfFrames", sop_class_uid))
    except KeyError:  # not a standard SOP class: no IOD to consult
        return False


def _source_images(series: SeriesAnalysis) -> tuple[ImageSource, ...]:
    """The evaluated images of a series: instances in order of first use, frames sorted.

    A frame of None means the whole instance: a single-frame instance, an instance also used as
    a whole, or a frame of a SOP class that cannot be referenced by frame.
    """
    frames: dict[tuple[str, str], set[int] | None] = {}
    for image in series.images:
        source = image.source
        key = (source.sop_class_uid, source.sop_instance_uid)
        if source.frame is None or not allows_frame_references(source.sop_class_uid):
            frames[key] = None
        elif key not in frames:
            frames[key] = {source.frame}
        elif frames[key] is not None:
            frames[key].add(source.frame)
    sources: list[ImageSource] = []
    for (sop_class_uid, sop_instance_uid), numbers in frames.items():
        if numbers is None:
            sources.append(ImageSource(sop_class_uid, sop_instance_uid, None))
        else:
            sources.extend(ImageSource(sop_class_uid, sop_instance_uid, n) for n in sorted(numbers))
    return tuple(sources)


def _tracking_identifier(index: int, series: SeriesAnalysis) -> str:
    number = series.selection.series.header.get("SeriesNumber")
    source = f", source series {number}" if number not in (None, "") else ""
    return f"#{index} {series.task.title}{source}"


def _task_validation(analysis: StudyAnalysis, series: SeriesAnalysis) -> TaskValidation | None:
    """The site validation of this series' task, if the model was validated with exactly its prompts."""
    record = analysis.model.validation
    task = record.tasks.get(series.task.name) if record is not None else None
    return task if task is not None and task.prompt_set_sha256 == series.task.prompt_set_sha256 else None


def _validation_parameters(analysis: StudyAnalysis, series: SeriesAnalysis) -> tuple[str, ...]:
    """The algorithm parameters that name the site validation behind status `validated` (none otherwise)."""
    record, task = analysis.model.validation, _task_validation(analysis, series)
    if record is None:
        return ()
    if task is None:
        return (f"site validation {record.date}: task {series.task.name} with these prompts was not validated",)
    return (f"site validation {record.date}: {task.cases} cases, validation report sha256 {record.report_sha256}",) + tuple(
        f"site validation {name}: AUROC {figures.auroc:.3f} (95 % CI {figures.auroc_ci[0]:.3f} to {figures.auroc_ci[1]:.3f}), "
        f"{figures.positives} positive and {figures.negatives} negative cases"
        for name, figures in task.labels.items()
    )


def _validation_line(index: int, series: SeriesAnalysis, analysis: StudyAnalysis) -> str:
    """The narrative line stating the site validation of one series' task (model status `validated`)."""
    record, task = analysis.model.validation, _task_validation(analysis, series)
    where = f"Series {_tracking_identifier(index, series)}"
    if record is None:
        return f"{where}: the model's manifest says validated but holds no site validation record; treat as research use."
    if task is None:
        return (f"{where}: task {series.task.name} with these prompts was not part of the site validation of "
                f"{record.date}; research use only.")
    figures = "; ".join(
        f"{name}: AUROC {f.auroc:.2f} (95 % CI {f.auroc_ci[0]:.2f} to {f.auroc_ci[1]:.2f}, {f.positives} positive, "
        f"{f.negatives} negative cases)"
        for name, f in task.labels.items()
    )
    return (f"{where}: model validated at this site on {record.date} on {task.cases} labelled cases of task "
            f"{series.task.name}: {figures}.")


def _adapter_parameters(analysis: StudyAnalysis, series: SeriesAnalysis) -> tuple[str, ...]:
    """The site adapter whose linear probe gave this series' probabilities (none: zero-shot prompts)."""
    adapter = analysis.model.adapter
    if adapter is None or series.task.name not in adapter.tasks:
        return ()
    return (f"site adapter {adapter.name} {adapter.version} sha256 {adapter.sha256}: linear probe on the frozen image "
            f"embeddings, fitted {adapter.created} on training set sha256 {adapter.training_set_sha256}",)


def _algorithm_parameters(analysis: StudyAnalysis, series: SeriesAnalysis, points: dict[str, OperatingPoint]) -> tuple[str, ...]:
    return (
        f"weights sha256 {analysis.model.sha256}",
        f"inference backend {analysis.backend}",
        f"zero-shot task {series.task.name}",
        f"model status {analysis.model.status}",
    ) + _adapter_parameters(analysis, series) + _validation_parameters(analysis, series) + tuple(
        f"operating point {label.name}: threshold {stored_percent(point.threshold):.2f} %, {point.method}, "
        f"indeterminate within {stored_percent(point.band):.2f} % of it or below a top-1 margin of "
        f"{stored_percent(point.min_top1_margin):.2f} %"
        for label in series.task.labels if (point := points.get(label.name)) is not None
    )


DECISION_CODES = {Decision.PRESENT: coding.PRESENT, Decision.ABSENT: coding.ABSENT, Decision.INDETERMINATE: coding.INDETERMINATE}


def _decisions(series: SeriesAnalysis, probabilities: np.ndarray, points: dict[str, OperatingPoint]) -> list[tuple[str, Decision, float, OperatingPoint]]:
    """Each label with an operating point: its name, decision, probability and point (task label order)."""
    ordered = np.sort(probabilities)[::-1]
    margin = float(ordered[0] - ordered[1]) if len(ordered) > 1 else 1.0
    return [
        (label.name, point.decide(float(p), margin), float(p), point)
        for label, p in zip(series.task.labels, probabilities) if (point := points.get(label.name)) is not None
    ]


def task_summaries(analysis: StudyAnalysis, site: SiteOperatingPoints | None) -> list[TaskSummary]:
    """Per series, the task, top label, probabilities and decisions, as the audit trail records them."""
    summaries = []
    for series in analysis.series:
        probabilities = np.clip(np.asarray(series.probabilities, float), 0, 1)
        points = site.for_task(series.task.name) if site is not None else {}
        summaries.append(TaskSummary(
            task=series.task.name,
            label=series.task.labels[int(np.argmax(probabilities))].name,
            probabilities={label.name: round(float(p), 6) for label, p in zip(series.task.labels, probabilities)},
            decisions={name: decision.value for name, decision, _, _ in _decisions(series, probabilities, points)},
        ))
    return summaries


def _operating_points_line(index: int, series: SeriesAnalysis, points: dict[str, OperatingPoint], site: SiteOperatingPoints) -> str:
    """The narrative line saying what the site's operating points gave for one series, or that it has none."""
    where = f"Series {_tracking_identifier(index, series)}"
    if not points:
        return f"{where}: no site-validated threshold exists for task {series.task.name}; probabilities only."
    decided = "; ".join(
        f"{name}: {decision.value} ({stored_percent(p):.2f} %, threshold {stored_percent(point.threshold):.2f} %, {point.method})"
        for name, decision, p, point in _decisions(series, np.clip(np.asarray(series.probabilities, float), 0, 1), points)
    )
    return f"{where}: at the site's validated operating points (validation report SHA-256 {site.report_sha256}): {decided}."


def _narrative(analysis: StudyAnalysis, extra_text: Sequence[str], site: SiteOperatingPoints | None = None) -> tuple[str, ...]:
    model = analysis.model
    lines = [AI_NOTICE]
    if model.untrained:
        lines.append(UNTRAINED_NOTICE)
    if model.research:
        lines.append(RESEARCH_NOTICE)
    lines.append(
        f"Model: {model.name} version {model.version}, weights SHA-256 {model.sha256}, "
        f"status {model.status}. Inference backend: {analysis.backend}."
    )
    if model.status == "validated":
        lines.extend(_validation_line(index, series, analysis) for index, series in enumerate(analysis.series, start=1))
    if site is None:
        lines.append(NO_OPERATING_POINTS_NOTICE)
    else:
        lines.extend(
            _operating_points_line(index, series, site.for_task(series.task.name), site)
            for index, series in enumerate(analysis.series, start=1)
        )
    for index, series in enumerate(analysis.series, start=1):
        top = series.task.labels[int(np.argmax(series.probabilities))]
        lines.append(
            f"Series {_tracking_identifier(index, series)}: {len(series.images)} image(s) analysed; "
            f"most probable label: {top.name} ({stored_percent(series.top_probability):.2f} %). "
            f"Preprocessing: {series.preprocessing}"
        )
    lines.extend(analysis.notes)
    lines.extend(line for found in analysis.specialists for line in found.narrative)
    if analysis.study.earlier_reports:
        count = len(analysis.study.earlier_reports)
        lines.append(
            f"This report supersedes {count} earlier report(s) of this study by this application, listed in the "
            "Predecessor Documents Sequence."
        )
    lines.extend(str(text) for text in extra_text if str(text).strip())
    return tuple(lines)


def report_findings(
    analysis: StudyAnalysis,
    *,
    extra_text: Sequence[str] = (),
    segmentations: Sequence[SegmentationEvidence] = (),
    operating_points: SiteOperatingPoints | None = None,
) -> ReportFindings:
    """What `build_report` writes for `analysis` (and the study's Segmentations), as plain comparable values.


    With the site's `operating_points` (checked against the model and prompts at start), each
    label that has one is decided present / absent / indeterminate; without them the narrative
    says that no site-validated threshold exists.

    Raises ReportBuildError if the analysis cannot be reported (no series, a series without
    images, probabilities that do not match the task's labels, labels sharing a code, a model
    without name or version).
    """
    ref = analysis.study.ref
    if not analysis.series:
        raise ReportBuildError(f"study {ref}: no analysed series to report")
    if not analysis.model.name.strip() or not analysis.model.version.strip():
        raise ReportBuildError(
            f"study {ref}: the model manifest must give a name and a version for the report's "
            "algorithm identification"
        )
    groups = []
    evidence: set[tuple[str, str]] = set()
    for index, series in enumerate(analysis.series, start=1):
        if not series.images:
            raise ReportBuildError(f"study {ref}: analysed series #{index} has no evaluated images")
        probabilities = _probabilities(analysis, index, series)
        labels = series.task.labels
        points = operating_points.for_task(series.task.name) if operating_points is not None else {}
        codes_by_name = {label.name: label.code for label in labels}
        sources = _source_images(series)
        evidence.update((s.sop_class_uid, s.sop_instance_uid) for s in sources)
        groups.append(
            SeriesFindings(
                tracking_identifier=_tracking_identifier(index, series),
                finding=series.task.finding,
                top_label=labels[int(np.argmax(probabilities))].code,
                probabilities=tuple(
                    LabelProbability(coding.probability_concept(label.code), stored_percent(p))
                    for label, p in zip(labels, probabilities)
                ),
                source_images=sources,
                algorithm_name=analysis.model.name,
                algorithm_version=analysis.model.version,
                algorithm_parameters=_algorithm_parameters(analysis, series, points),
                decisions=tuple(
                    (codes_by_name[name], DECISION_CODES[decision]) for name, decision, _, _ in _decisions(series, probabilities, points)
                ),
            )
        )
    segments = segment_groups(analysis, segmentations)
    evidence.update((str(s.dataset.SOPClassUID), str(s.dataset.SOPInstanceUID)) for s in segmentations)
    return ReportFindings(
        series=tuple(groups),
        evidence=frozenset(evidence),
        narrative=_narrative(analysis, extra_text, operating_points),
        specialist_groups=specialist_groups(analysis),
        segment_groups=segments,
    )


# --------------------------------------------------------------------------- source headers


def _instance_headers(analysis: StudyAnalysis) -> dict[str, Dataset]:
    """The header (no pixel data) of every evaluated instance, keyed by SOP Instance UID.

    The image library describes each instance from its own header (size, position, orientation)
    and frame references are checked against its Number of Frames, so each evaluated instance's
    file is read again here, header only (a few kilobytes each).
    """
    ref = analysis.study.ref
    headers: dict[str, Dataset] = {}
    for index, series in enumerate(analysis.series, start=1):
        files: dict[str, InstanceFile] = {f.sop_instance_uid: f for f in series.selection.series.instances}
        for image in series.images:
            uid = image.source.sop_instance_uid
            if uid in headers:
                continue
            instance = files.get(uid)
            if instance is None:
                raise ReportBuildError(
                    f"study {ref}: an evaluated image of analysed series #{index} is not one of the "
                    "instances of its series"
                )
            try:
                header = read_dataset(instance.path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                raise ReportBuildError(
                    f"study {ref}: cannot read the header of evaluated file {instance.path} again: {exc}"
                ) from exc
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                if not str(header.get(keyword, "") or "").strip():
                    raise ReportBuildError(
                        f"study {ref}: evaluated file {instance.path} lacks {keyword}, which the "
                        "report needs to reference it"
                    )
            if header.SOPInstanceUID != uid or header.SOPClassUID != image.source.sop_class_uid:
                raise ReportBuildError(
                    f"study {ref}: evaluated file {instance.path} no longer holds the instance that "
                    "was analysed (its SOP Class or SOP Instance UID differs)"
                )
            headers[uid] = header
    return headers


def _study_instance_uid(analysis: StudyAnalysis) -> str:
    """The study's StudyInstanceUID from its header; ReportBuildError if it is missing."""
    study_uid = str(analysis.study.header.get("StudyInstanceUID", "") or "").strip()
    if not study_uid:
        raise ReportBuildError(
            f"study {analysis.study.ref}: the source header lacks StudyInstanceUID (0020,000D); the "
            "report cannot be filed into the study without it"
        )
    return study_uid


def _identity_carrier(analysis: StudyAnalysis, study_uid: str, headers: Sequence[Dataset], identity: ReportIdentity) -> Dataset:
    """The first evidence dataset: an evaluated instance's SOP identity with the report's patient/study identity.

    highdicom copies the new document's Patient, General Study and Patient Study modules from the
    first evidence dataset. Giving it a minimal dataset (the instance's four UIDs plus the
    conformant identity of `operators.outputs.output_identity`) rather than the source header keeps the
    source's invalid values and free text out of the report while filing it exactly where the
    source is filed.
    """
    ref = analysis.study.ref
    same_study = [h for h in headers if str(h.StudyInstanceUID) == study_uid]
    if not same_study:
        raise ReportBuildError(
            f"study {ref}: none of the evaluated instances carries the study's StudyInstanceUID"
        )
    source = same_study[0]
    carrier = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        setattr(carrier, keyword, source[keyword].value)
    identity.apply_to(carrier)
    carrier.StudyInstanceUID = study_uid
    return carrier


@contextlib.contextmanager
def _highdicom_without_phi() -> Iterator[None]:
    """Keep highdicom's messages that quote patient data or UIDs out of the logs while building.

    highdicom logs the source SOP Instance UID at INFO level when it copies patient and study
    attributes, and warns (warnings module) with the patient's name when the name has a single
    component. The name is copied unchanged on purpose (the report must file to the same
    patient), so that warning carries no action for us.
    """
    highdicom_logger = logging.getLogger("highdicom")
    level = highdicom_logger.level
    if highdicom_logger.getEffectiveLevel() < logging.WARNING:
        highdicom_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"The string .* is unlikely to represent", category=UserWarning
            )
            yield
    finally:
        highdicom_logger.setLevel(level)


# --------------------------------------------------------------------------- content


def _num(name: Code | CodedConcept, value: float, unit: CodedConcept) -> NumContentItem:
    return NumContentItem(
        name=name, value=value, unit=unit, relationship_type=RelationshipTypeValues.HAS_ACQ_CONTEXT
    )


_PIXELS = CodedConcept("{pixels}", "UCUM", "Pixels")
_MILLIMETRE = CodedConcept.from_code(codes.UCUM.Millimeter)
_DIRECTION_COSINE = CodedConcept("{-1:1}", "UCUM", "{-1:1}")


def _numbers(header: Dataset, keyword: str, count: int) -> list[float] | None:
    """The `count` numeric values of a multi-valued attribute, or None if absent or incomplete."""
    value = header.get(keyword)
    if value in (None, ""):
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    if len(values) != count or any(v in (None, "") for v in values):
        return None
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):  # a malformed DS/IS in the source: the descriptor is left out
        return None
    return numbers if all(math.isfinite(n) for n in numbers) else None


def _library_descriptors(header: Dataset) -> list:
    """TID 1602 Image Library Entry Descriptors for one instance, from its header.

    Modality, Frame of Reference, rows and columns always; the TID 1604 cross-sectional
    descriptors (pixel spacing, slice thickness, position, orientation) and the TID 1603
    projection descriptors (patient orientation, imager pixel spacing) where the header has the
    attributes. highdicom's own `ImageLibrary` is not used because it knows only a fixed list of
    SOP classes (not, e.g., dermoscopy) and fails on headers that lack the modality-specific
    attributes.
    """
    acquisition = RelationshipTypeValues.HAS_ACQ_CONTEXT
    items: list = [
        CodeContentItem(
            name=codes.DCM.Modality,
            value=coding.coded_modality(str(header.get("Modality", "") or "")),
            relationship_type=acquisition,
        )
    ]
    if str(header.get("FrameOfReferenceUID", "") or ""):
        items.append(
            UIDRefContentItem(
                name=codes.DCM.FrameOfReferenceUID,
                value=header.FrameOfReferenceUID,
                relationship_type=acquisition,
            )
        )
    for keyword, concept in (("Rows", codes.DCM.PixelDataRows), ("Columns", codes.DCM.PixelDataColumns)):
        value = _numbers(header, keyword, 1)
        if value is not None:
            items.append(_num(concept, value[0], _PIXELS))

    spacing = _numbers(header, "PixelSpacing", 2) or _numbers(header, "ImagerPixelSpacing", 2)
    if spacing is not None:  # (row spacing = vertical, column spacing = horizontal)
        items.append(_num(codes.DCM.HorizontalPixelSpacing, spacing[1], _MILLIMETRE))
        items.append(_num(codes.DCM.VerticalPixelSpacing, spacing[0], _MILLIMETRE))
    thickness = _numbers(header, "SliceThickness", 1)
    if thickness is not None:
        items.append(_num(codes.DCM.SliceThickness, thickness[0], _MILLIMETRE))
    position = _numbers(header, "ImagePositionPatient", 3)
    if position is not None:
        for concept, value in zip(
            (codes.DCM.ImagePositionPatientX, codes.DCM.ImagePositionPatientY, codes.DCM.ImagePositionPatientZ),
            position,
        ):
            items.append(_num(concept, value, _MILLIMETRE))
    orientation = _numbers(header, "ImageOrientationPatient", 6)
    if orientation is not None:
        for concept, value in zip(
            (
                codes.DCM.ImageOrientationPatientRowX,
                codes.DCM.ImageOrientationPatientRowY,
                codes.DCM.ImageOrientationPatientRowZ,
                codes.DCM.ImageOrientationPatientColumnX,
                codes.DCM.ImageOrientationPatientColumnY,
                codes.DCM.ImageOrientationPatientColumnZ,
            ),
            orientation,
        ):
            items.append(_num(concept, value, _DIRECTION_COSINE))
    patient_orientation = header.get("PatientOrientation")
    if orientation is None and patient_orientation is not None and len(patient_orientation) == 2:
        row, column = (str(v) for v in patient_orientation)
        if row and column:
            items.append(TextContentItem(codes.DCM.PatientOrientationRow, row, acquisition))
            items.append(TextContentItem(codes.DCM.PatientOrientationColumn, column, acquisition))
    return items


def _image_library(headers: Sequence[Dataset]) -> ContainerContentItem:
    """TID 1600 Image Library: one Image Library Group per source series, one entry per instance."""
    groups: dict[str, list[Dataset]] = {}
    for header in headers:
        groups.setdefault(str(header.SeriesInstanceUID), []).append(header)
    library = ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=RelationshipTypeValues.CONTAINS)
    library.ContentSequence = ContentSequence()
    for members in groups.values():
        group = ContainerContentItem(
            name=codes.DCM.ImageLibraryGroup, relationship_type=RelationshipTypeValues.CONTAINS
        )
        group.ContentSequence = ContentSequence()
        for header in members:
            entry = ImageContentItem(
                name=CodedConcept("260753009", "SCT", "Source"),
                referenced_sop_class_uid=header.SOPClassUID,
                referenced_sop_instance_uid=header.SOPInstanceUID,
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
            entry.ContentSequence = ContentSequence(_library_descriptors(header))
            group.ContentSequence.append(entry)
        library.ContentSequence.append(group)
    return library


def _source_image_items(
    findings: SeriesFindings, headers: dict[str, Dataset], where: str
) -> list[SourceImageForMeasurementGroup]:
    frames: dict[tuple[str, str], list[int]] = {}
    for source in findings.source_images:
        numbers = frames.setdefault((source.sop_class_uid, source.sop_instance_uid), [])
        if source.frame is not None:
            numbers.append(source.frame)
    items = []
    for (sop_class_uid, sop_instance_uid), numbers in frames.items():
        available = int(headers[sop_instance_uid].get("NumberOfFrames") or 1)
        if any(n < 1 or n > available for n in numbers):
            raise ReportBuildError(
                f"{where}: an evaluated frame number is outside 1..{available}, the frames of its instance"
            )
        items.append(
            SourceImageForMeasurementGroup(
                referenced_sop_class_uid=sop_class_uid,
                referenced_sop_instance_uid=sop_instance_uid,
                referenced_frame_numbers=numbers or None,
            )
        )
    return items


def _measurement_group(
    series: SeriesAnalysis,
    findings: SeriesFindings,
    headers: dict[str, Dataset],
    where: str,
) -> MeasurementsAndQualitativeEvaluations:
    derivation = coding.MEAN if len(series.images) > 1 else None
    measurements = [
        Measurement(
            name=coding.coded(probability.concept),
            value=probability.percent,
            unit=coding.PERCENT,
            derivation=derivation,
        )
        for probability in findings.probabilities
    ]
    finding = coding.coded(findings.finding)
    top_label = coding.coded(findings.top_label)
    # TID 1501 has its own "Finding" row (DCM 121071); a task reporting under that concept uses
    # it, any other concept is a qualitative evaluation. Both are CONTAINS CODE items.
    is_finding_row = finding == CodedConcept.from_code(codes.DCM.Finding)
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=UID(), identifier=findings.tracking_identifier),
        finding_type=top_label if is_finding_row else None,
        method=coding.ZERO_SHOT_METHOD,
        algorithm_id=AlgorithmIdentification(
            name=findings.algorithm_name,
            version=findings.algorithm_version,
            parameters=list(findings.algorithm_parameters),
        ),
        measurements=measurements,
        qualitative_evaluations=([] if is_finding_row else [QualitativeEvaluation(finding, top_label)]) + [
            QualitativeEvaluation(coding.coded(label), coding.coded(value)) for label, value in findings.decisions
        ] or None,
        source_images=_source_image_items(findings, headers, where),
    )


def _narrative_container(lines: Sequence[str]) -> ContainerContentItem:
    container = ContainerContentItem(
        name=coding.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence(
        [TextContentItem(coding.COMMENT, line, RelationshipTypeValues.CONTAINS) for line in lines]
    )
    return container


def _procedures(analysis: StudyAnalysis) -> list[CodedConcept]:
    procedures: list[CodedConcept] = []
    for series in analysis.series:
        procedure = coding.procedure_reported(series.selection.series.modality)
        if procedure not in procedures:
            procedures.append(procedure)
    return procedures


def predecessor_documents(references: Sequence[DocumentReference]) -> list[Dataset]:
    """Predecessor Documents Sequence items (Hierarchical SOP Instance Reference Macro) for earlier reports.

    One item per study, holding one Referenced Series item per series with its SOP references;
    duplicates are removed.
    """
    studies: dict[str, dict[str, dict[str, str]]] = {}
    for reference in references:
        series = studies.setdefault(reference.study_instance_uid, {}).setdefault(reference.series_instance_uid, {})
        series[reference.sop_instance_uid] = reference.sop_class_uid
    items = []
    for study_uid, series_map in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, instances in series_map.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedSOPSequence = []
            for instance_uid, class_uid in instances.items():
                sop = Dataset()
                sop.ReferencedSOPClassUID = class_uid
                sop.ReferencedSOPInstanceUID = instance_uid
                series.ReferencedSOPSequence.append(sop)
            study.ReferencedSeriesSequence.append(series)
        items.append(study)
    return items


def _separate_containers(item: Dataset) -> None:
    """Make every CONTAINER of the content tree SEPARATE.

    highdicom writes containers as CONTINUOUS, which tells a viewer that the items form one running
    text: DCMTK's dsr2html then prints the measurements as a run of bare values ("20.0 % 20.0 % No
    Yes"). The report's items are separate statements, each with its concept name.
    """
    if str(item.get("ValueType", "")) == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    for child in item.get("ContentSequence", []) or []:
        _separate_containers(child)


def build_report(
    analysis: StudyAnalysis,
    *,
    device: DeviceIdentity,
    series_number: int = 9001,
    instance_number: int = 1,
    extra_text: Sequence[str] = (),
    complete: bool = True,
    identity: ReportIdentity | None = None,
    segmentations: Sequence[SegmentationEvidence] = (),
    operating_points: SiteOperatingPoints | None = None,
) -> Comprehensive3DSR:
    """Build the Comprehensive 3D SR (TID 1500) that reports `analysis` into its own study.

    `extra_text` lines are appended to the narrative as they are (they must already be free of
    PHI). `complete` sets CompletionFlag: False (PARTIAL) when some selected series of the study
    could not be analysed. The document is always UNVERIFIED and PRELIMINARY.

    The patient and study attributes are `identity` (default: `report_identity` of the study
    header): identifying values exactly as received, everything else conformant. The product's
    earlier reports of the study found in the input are listed in the Predecessor Documents
    Sequence. Each segment of the study's `segmentations` (built, not yet written) gets a TID 1410
    group that references it, and each Segmentation is listed in the evidence. `operating_points`:
    the site's checked thresholds (see `report_findings`).

    Raises ReportBuildError, naming the study ref and the attribute or file, when the source
    lacks something the report needs (StudyInstanceUID, a readable header of an evaluated
    instance) or the analysis is inconsistent.
    """
    ref = analysis.study.ref
    study_uid = _study_instance_uid(analysis)
    findings = report_findings(analysis, extra_text=extra_text, segmentations=segmentations, operating_points=operating_points)
    headers = _instance_headers(analysis)
    identity = identity or report_identity(analysis.study.header)
    carrier = _identity_carrier(analysis, study_uid, list(headers.values()), identity)
    evidence = [carrier] + [h for h in headers.values() if h.SOPInstanceUID != carrier.SOPInstanceUID]
    evidence.extend(item.dataset for item in segmentations)

    groups = [
        _measurement_group(series, series_findings, headers, f"study {ref}, analysed series #{index}")
        for index, (series, series_findings) in enumerate(zip(analysis.series, findings.series), start=1)
    ]
    groups.extend(
        _specialist_measurement_group(group, headers, f"study {ref}, {group.tracking_identifier}")
        for group in findings.specialist_groups
    )
    groups.extend(_segment_measurement_group(segment) for segment in findings.segment_groups)
    observer = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device.device_uid,
            name=device.observer_name,
            manufacturer_name=device.manufacturer,
            model_name=device.model_name,
            serial_number=device.serial_number,
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=_procedures(analysis),
        imaging_measurements=groups,
    )
    root = report[0]
    # TID 1500 order: ..., procedure reported, image library, imaging measurements, ...,
    # qualitative evaluations. highdicom builds the library only for SOP classes it knows, so
    # the library is inserted here, before the Imaging Measurements container (the last item).
    root.ContentSequence.insert(len(root.ContentSequence) - 1, _image_library(list(headers.values())))
    root.ContentSequence.append(_narrative_container(findings.narrative))
    _separate_containers(root)

    with _highdicom_without_phi():
        report = Comprehensive3DSR(
            evidence=evidence,
            content=root,
            series_instance_uid=UID(),
            series_number=series_number,
            sop_instance_uid=UID(),
            instance_number=instance_number,
            manufacturer=device.manufacturer,
            is_complete=complete,
            is_final=False,
            is_verified=False,
            series_description=SERIES_DESCRIPTION_UNTRAINED if analysis.model.untrained else SERIES_DESCRIPTION,
            manufacturer_model_name=device.model_name,
            software_versions=device.software_version,
            device_serial_number=device.serial_number,
            coding_schemes=[coding.coding_scheme_identification()],
            specific_character_set="ISO_IR 192",
        )
    identity.apply_to(report)  # exactly as built: highdicom's setters may have re-typed values
    if analysis.study.earlier_reports:
        report.PredecessorDocumentsSequence = predecessor_documents(analysis.study.earlier_reports)
    return report


# --------------------------------------------------------------------------- specialist findings
#
# One TID 1501 measurement group per `FindingGroup` of a specialist, as the specialist gave it: its
# method, the algorithm, the finding site (with laterality), numeric measurements with their units
# and methods, and coded qualitative evaluations. The SR does not know which specialist made it.


def _specialist_source(source: ImageSource) -> ImageSource:
    """A specialist's source image as the report references it (by frame only where the IOD allows)."""
    if source.frame is not None and not allows_frame_references(source.sop_class_uid):
        return ImageSource(source.sop_class_uid, source.sop_instance_uid, None)
    return source


def specialist_groups(analysis: StudyAnalysis) -> tuple[FindingGroup, ...]:
    """Every specialist's measurement groups, in order, each referencing only analysed images.

    Raises ReportBuildError when a group has no source image or cites an image the zero-shot step
    did not analyse (it would not be in the evidence or the image library).
    """
    analysed = {image.source.sop_instance_uid for series in analysis.series for image in series.images}
    groups = []
    for found in analysis.specialists:
        for group in found.groups:
            where = f"study {analysis.study.ref}: specialist {found.specialist!r}, group {group.tracking_identifier!r}"
            if not group.source_images:
                raise ReportBuildError(f"{where}: names no source image")
            if any(source.sop_instance_uid not in analysed for source in group.source_images):
                raise ReportBuildError(f"{where}: cites an image that was not analysed")
            groups.append(replace(group, source_images=tuple(_specialist_source(s) for s in group.source_images)))
    return tuple(groups)


def _specialist_measurement_group(
    findings: FindingGroup, headers: dict[str, Dataset], where: str
) -> MeasurementsAndQualitativeEvaluations:
    """The TID 1501 measurement group of one specialist finding group."""
    sites = None
    if findings.finding_site is not None:
        sites = [
            FindingSite(
                anatomic_location=coding.coded(findings.finding_site),
                laterality=coding.coded(findings.laterality) if findings.laterality is not None else None,
            )
        ]
    for source in findings.source_images:
        available = int(headers[source.sop_instance_uid].get("NumberOfFrames") or 1)
        if source.frame is not None and not 1 <= source.frame <= available:
            raise ReportBuildError(f"{where}: the evaluated frame number is outside 1..{available}")
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=UID(), identifier=findings.tracking_identifier),
        method=coding.coded(findings.method),
        algorithm_id=AlgorithmIdentification(name=findings.algorithm_name, version=findings.algorithm_version),
        finding_sites=sites,
        measurements=[
            Measurement(
                name=coding.coded(m.concept),
                value=m.value,
                unit=coding.coded(m.unit),
                method=coding.coded(m.method) if m.method is not None else None,
            )
            for m in findings.measurements
        ],
        qualitative_evaluations=[
            QualitativeEvaluation(coding.coded(name), coding.coded(value)) for name, value in findings.evaluations
        ],
        source_images=[
            SourceImageForMeasurementGroup(
                referenced_sop_class_uid=source.sop_class_uid,
                referenced_sop_instance_uid=source.sop_instance_uid,
                referenced_frame_numbers=[source.frame] if source.frame is not None else None,
            )
            for source in findings.source_images
        ],
    )


# --------------------------------------------------------------------------- segment groups
#
# One TID 1410 Planar ROI group per segment of the study's Segmentations: the segment's Tracking
# UID and ID, the Referenced Segmentation Frame (with its source image), the segmented property
# type as the finding and its category, the algorithm, and the specialist's measurements of the
# segment. Viewers that show SEG link the group's measurements to the drawn segment this way.


#: The concepts of a TID 1410 segment reference (DCM 121214) and of its source image (DCM 121233).
REFERENCED_SEGMENTATION_FRAME = CodedConcept("121214", "DCM", "Referenced Segmentation Frame")
SOURCE_IMAGE_FOR_SEGMENTATION = CodedConcept("121233", "DCM", "Source image for segmentation")


def segment_groups(analysis: StudyAnalysis, segmentations: Sequence[SegmentationEvidence]) -> tuple[SegmentFindings, ...]:
    """Every segment group of the study's Segmentations, in order, each of an analysed source image.

    Raises ReportBuildError when a Segmentation is not of an image the zero-shot step analysed (its
    source would be in neither the evidence nor the image library) or is filed in another study.
    """
    analysed = {image.source.sop_instance_uid for series in analysis.series for image in series.images}
    study_uid = str(analysis.study.header.get("StudyInstanceUID", "") or "")
    for item in segmentations:
        if str(item.dataset.StudyInstanceUID) != study_uid:
            raise ReportBuildError(f"study {analysis.study.ref}: a Segmentation of the study is filed in another study")
        if any(segment.source_image.sop_instance_uid not in analysed for segment in item.segments):
            raise ReportBuildError(f"study {analysis.study.ref}: a Segmentation is of an image that was not analysed")
    return tuple(segment for item in segmentations for segment in item.segments)


def _segment_measurement_group(segment: SegmentFindings) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """The TID 1410 group that references one segment of a Segmentation."""
    source = segment.source_image
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=segment.tracking_uid, identifier=segment.tracking_identifier),
        referenced_segment=ReferencedSegmentationFrame(
            sop_class_uid=segment.segmentation.sop_class_uid,
            sop_instance_uid=segment.segmentation.sop_instance_uid,
            frame_number=segment.segmentation.frame,
            segment_number=segment.segmentation.frame,  # removed below: the frame identifies the segment
            source_image=SourceImageForSegmentation(
                referenced_sop_class_uid=source.sop_class_uid,
                referenced_sop_instance_uid=source.sop_instance_uid,
                referenced_frame_numbers=[source.frame] if source.frame is not None else None,
            ),
        ),
        finding_type=coding.coded(segment.property_type),
        finding_category=coding.coded(segment.category),
        algorithm_id=AlgorithmIdentification(name=segment.algorithm_name, version=segment.algorithm_version),
        measurements=[
            Measurement(
                name=coding.coded(m.concept),
                value=m.value,
                unit=coding.coded(m.unit),
                method=coding.coded(m.method) if m.method is not None else None,
            )
            for m in segment.measurements
        ]
        or None,
    )
    # PS3.3 C.10.8: Referenced Segment Number shall not be present with Referenced Frame Number.
    for item in group[0].ContentSequence:
        if str(item.ValueType) == "IMAGE" and CodedConcept.from_dataset(item.ConceptNameCodeSequence[0]) == REFERENCED_SEGMENTATION_FRAME:
            for reference in item.ReferencedSOPSequence:
                if "ReferencedSegmentNumber" in reference:
                    del reference.ReferencedSegmentNumber
    return group
