"""The typed messages that travel along the edges of the application graph.

Every edge carries a `Batch` of one stage's per-study items plus the outcomes of studies that
already ended (failed, or had nothing to analyse), so a failing study never stops the others and
the final writer can account for every study of the run.

The attribute names of the DICOM-derived types follow the MONAI Deploy SDK's domain types
(`DICOMStudy`, `DICOMSeries`, `SelectedSeries`) so that SDK selection rules apply unchanged. We do
not use those classes themselves: importing `monai.deploy.core.domain` pulls in MONAI core and torch
(about 9.5 s and 1 GB resident on the reference CPU), which would dominate a cold MAP run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from operators.dicom_input.patient_identity import PatientIdentity
from common.codes import Code
from common.model_identity import ModelIdentity
from common.zero_shot_tasks import ZeroShotTask

T = TypeVar("T")


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class SkippedFile:
    """A file in the input folder that is not analysable, and why (logged once, never modified)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class InstanceFile:
    """One DICOM instance on disk whose header has been read; pixel data is read only if selected."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    instance_number: int | None = None
    number_of_frames: int = 1
    slice_position: float | None = None
    slice_thickness: float | None = None


@dataclass
class SeriesHeader:
    """A series of the input: the header of its first instance (no pixels) and all its instances.

    Selection rules are evaluated against `header` by DICOM keyword, which covers every attribute
    the SDK's `DICOMSeries`/`DICOMStudy` properties expose and the instance-level ones it falls
    back to (ImageType, PhotometricInterpretation, ...).
    """

    series_instance_uid: str
    header: Dataset
    instances: list[InstanceFile] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return str(self.header.get("Modality", "") or "")


@dataclass(frozen=True)
class DocumentReference:
    """The identities of a DICOM object (a report of ours found in the input, an output written)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


@dataclass
class StudyHeader:
    """A study of the input. `ref` is the salted, shortened study identifier used in every log line.

    `identities` holds the patient identity of every instance of the study that was read (images
    and non-images alike), for the identity check; `earlier_reports` the product's own earlier SRs
    found in the input, which the new report supersedes.
    """

    study_instance_uid: str
    ref: str
    header: Dataset
    series: list[SeriesHeader] = field(default_factory=list)
    #: Seconds each stage spent on this study, filled in by `study_batch.advance` (for the audit trail).
    timings: dict[str, float] = field(default_factory=dict)
    identities: list[PatientIdentity] = field(default_factory=list)
    earlier_reports: list[DocumentReference] = field(default_factory=list)


# --------------------------------------------------------------------------- outcomes


class OutcomeStatus(str, enum.Enum):
    """How a study ended. FAILED and REFUSED make the run's exit code 1."""

    REPORTED = "reported"
    #: No series matched the selection rules, or none of the selected images could be used.
    NOTHING_SELECTED = "nothing_selected"
    #: Not reported because its data make any report unsafe (instances of more than one patient).
    REFUSED = "refused"
    FAILED = "failed"
    #: Analysed and handed back to the caller without writing any report (site validation).
    ANALYSED = "analysed"


class OutputKind(str, enum.Enum):
    """What an output file of a study is."""

    REPORT = "report"  # the DICOM SR
    CAPTURE = "capture"  # a viewable Secondary Capture
    SEGMENTATION = "segmentation"  # a DICOM Segmentation
    RESULTS_JSON = "results_json"  # machine-readable results, outside the DICOM output folder


@dataclass(frozen=True)
class OutputFile:
    """One file a study's run wrote; `document` holds the DICOM identities of a DICOM output."""

    path: Path
    kind: OutputKind
    document: DocumentReference | None = None

    @property
    def is_dicom(self) -> bool:
        return self.document is not None


@dataclass(frozen=True)
class FindingSummary:
    """One line of a study's findings for people (the demo table, log lines): which selection, what was found."""

    selection: str
    text: str


@dataclass(frozen=True)
class TaskSummary:
    """One analysed series' result for the audit trail and drift monitoring: no identifiers, labels and numbers only."""

    task: str
    label: str
    """The most probable label."""
    probabilities: dict[str, float]
    decisions: dict[str, str] = field(default_factory=dict)
    """Per label with a site operating point: present, absent or indeterminate."""


@dataclass
class StudyOutcome:
    """How one study of the run ended; the run's exit code is 1 if any study FAILED or was REFUSED.

    `analysed_inputs` are the input files of the instances the report evaluated (for the
    de-identified export); `outputs` every file written for the study, in writing order.
    """

    study_ref: str
    status: OutcomeStatus
    reason: str = ""
    stage: str = ""
    outputs: list[OutputFile] = field(default_factory=list)
    findings: list[FindingSummary] = field(default_factory=list)
    analysed_inputs: list[Path] = field(default_factory=list)
    #: The study's per-stage seconds (`StudyHeader.timings`) and free-text redactions per category,
    #: for the audit trail (counts only, never values).
    timings: dict[str, float] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)
    #: Per analysed series, its task's label and probabilities (and decisions), for the audit trail.
    tasks: list[TaskSummary] = field(default_factory=list)

    def files(self, kind: OutputKind) -> list[Path]:
        """The paths of the outputs of one kind."""
        return [output.path for output in self.outputs if output.kind is kind]


class RunResults:
    """The one way results leave the graph: the sink operator hands every study's outcome to this.

    Created by the caller of the graph (`app.run.run`) and read by it after the graph has run.
    """

    def __init__(self) -> None:
        self._outcomes: list[StudyOutcome] = []
        self._analyses: list["StudyAnalysis"] = []

    def add(self, outcomes: list[StudyOutcome]) -> None:
        self._outcomes.extend(outcomes)

    def add_analyses(self, analyses: list["StudyAnalysis"]) -> None:
        """Keep the analyses a collecting sink received (site validation: no report is written)."""
        self._analyses.extend(analyses)

    @property
    def outcomes(self) -> list[StudyOutcome]:
        return list(self._outcomes)

    @property
    def analyses(self) -> list["StudyAnalysis"]:
        return list(self._analyses)


@dataclass
class Batch(Generic[T]):
    """The studies of one run at one stage of the graph, plus those that already ended."""

    items: list[T] = field(default_factory=list)
    ended: list[StudyOutcome] = field(default_factory=list)
    skipped_files: list[SkippedFile] = field(default_factory=list)


# --------------------------------------------------------------------------- selection


@dataclass
class SelectedSeries:
    """A series picked by a named selection rule (SDK: `SelectedSeries.selection_name`)."""

    selection_name: str
    series: SeriesHeader


@dataclass
class StudySelection:
    """The series of a study picked for analysis, and a log-safe sentence for each series that was not."""

    study: StudyHeader
    selected: list[SelectedSeries] = field(default_factory=list)
    not_selected: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class ImageSource:
    """Which instance (and frame, 1-based, for multi-frame objects) an analysed image came from."""

    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None


@dataclass
class PreparedSeries:
    """Model-ready images of one selected series.

    `tensors` is (N, 3, 224, 224) float32 normalised with the model's mean/std; `sources[i]` is
    the provenance of `tensors[i]`; `method` says in words how the pixels were prepared (it is
    written into the report so a reader knows what the model saw).
    """

    selection: SelectedSeries
    tensors: np.ndarray
    sources: list[ImageSource]
    method: str


@dataclass
class PreparedStudy:
    """Prepared series of a study; `left_out` counts selected series that could not be prepared."""

    study: StudyHeader
    series: list[PreparedSeries] = field(default_factory=list)
    left_out: int = 0
    #: Sentences for the report (no file names or values): series left out and why, irregular volumes.
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- specialist findings
#
# A specialist (`operators.specialists`) turns analysed series into plain findings; the SR builder,
# the SR read-back, the Secondary Captures and the JSON results handle them without knowing which
# specialist made them.


@dataclass(frozen=True)
class MeasuredValue:
    """A numeric measurement of a finding group: its concept, value, UCUM unit and method (None: none stated)."""

    concept: Code
    value: float
    unit: Code
    method: Code | None = None


@dataclass(frozen=True)
class FindingGroup:
    """One TID 1501 measurement group a specialist reports about one or more source images.

    `method` names the specialist's method (it tells a reader the group is not a zero-shot series
    group); `evaluations` are coded (concept, value) pairs; every source image must be one of the
    images the zero-shot step analysed, so that it is in the report's evidence and image library.
    """

    tracking_identifier: str
    method: Code
    source_images: tuple[ImageSource, ...]
    measurements: tuple[MeasuredValue, ...]
    evaluations: tuple[tuple[Code, Code], ...]
    algorithm_name: str
    algorithm_version: str
    finding_site: Code | None = None
    laterality: Code | None = None


@dataclass
class SpecialistCapture:
    """A viewable image a specialist rendered from one analysed image, for a Secondary Capture."""

    source: ImageSource
    pixels: np.ndarray
    series_description: str
    derivation: str


@dataclass(frozen=True)
class SegmentDefinition:
    """One segment of a specialist's segmentation: what its pixels are, coded, and how they were found.

    `category` and `property_type` are the DICOM Segmented Property Category and Type (CID 7150 /
    CID 7151 where a code exists there); `algorithm_family` is a CID 7162 Algorithm Family code; `display_colour` is the recommended RGB colour (0-255) a
    viewer draws the segment in; `measurements` are the specialist's numbers about this segment
    (the SR writes them with the segment's reference, TID 1410).
    """

    label: str
    category: Code
    property_type: Code
    algorithm_name: str
    algorithm_version: str
    algorithm_family: Code
    display_colour: tuple[int, int, int]
    measurements: tuple[MeasuredValue, ...] = ()


@dataclass
class SpecialistSegmentation:
    """A label map a specialist computed on one analysed image, for a DICOM Segmentation.

    `labels` (H, W, unsigned integers) holds 0 where no segment is and n where segment
    `segments[n - 1]` is. It may be computed on a reduced copy of the source image with the same
    aspect ratio: the Segmentation is always written at the source image's own Rows × Columns, the
    labels resampled nearest-neighbour by pixel centres (`operators.segmentations`), so each
    source pixel takes the label of the reduced-copy pixel it lies in. `tracking_identifier` names
    the finding group of the same image, so the report ties the segments to it.
    """

    source: ImageSource
    labels: np.ndarray
    segments: tuple[SegmentDefinition, ...]
    series_description: str
    content_label: str
    tracking_identifier: str


@dataclass
class SpecialistFindings:
    """What one specialist found in a study: measurement groups, narrative, summary, captures, segmentations.

    `narrative` lines go into the SR's narrative as they are (product words, no identifiers);
    `summary` lines are the run summary's (one per finding, no identifiers); each segmentation
    becomes a DICOM Segmentation of its source image that the SR references.
    """

    specialist: str
    groups: tuple[FindingGroup, ...]
    narrative: tuple[str, ...] = ()
    summary: tuple[FindingSummary, ...] = ()
    captures: tuple[SpecialistCapture, ...] = ()
    segmentations: tuple[SpecialistSegmentation, ...] = ()


# --------------------------------------------------------------------------- inference


@dataclass
class ImageFindings:
    """Zero-shot result for one image: label probabilities (task label order) and its embedding."""

    source: ImageSource
    probabilities: np.ndarray
    embedding: np.ndarray


@dataclass
class SeriesAnalysis:
    """Zero-shot result for one selected series; `probabilities` is the mean over its images."""

    selection: SelectedSeries
    task: ZeroShotTask
    images: list[ImageFindings]
    probabilities: np.ndarray
    preprocessing: str

    @property
    def top_label(self) -> str:
        return self.task.labels[int(np.argmax(self.probabilities))].name

    @property
    def top_probability(self) -> float:
        return float(np.max(self.probabilities))


@dataclass
class StudyAnalysis:
    """Everything the report of one study says; `left_out` > 0 makes the report PARTIAL."""

    study: StudyHeader
    series: list[SeriesAnalysis]
    model: ModelIdentity
    backend: str
    left_out: int = 0
    #: Sentences for the report: series left out and why, geometry warnings (no identifiers).
    notes: tuple[str, ...] = ()
    #: Narrative lines built from the study's DICOM free text, already scrubbed by the PHIScrubber;
    #: the SR writer writes them as they are. Empty until the PHIScrubber has run.
    clinical_context: tuple[str, ...] = ()
    #: Redactions the PHIScrubber made in this study's free text, per category (counts only).
    redactions: dict[str, int] = field(default_factory=dict)
    #: What each specialist found, in the order the specialists ran (empty: none applied).
    specialists: list[SpecialistFindings] = field(default_factory=list)
