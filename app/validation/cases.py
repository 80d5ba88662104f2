"""The validation's cases: each labelled study or instance matched to what the MAP's analysis gave it.

A study-level case takes the task's probabilities of the study: the mean over the study's series
of that task (each series' probabilities being the mean over its images, exactly as the SR
reports them). An instance-level case takes that image's probabilities (the mean over its frames
for a multi-frame image). A labelled case that the run did not analyse (not in the input, not
selected, or failed) is kept as *unmatched*, with its labels-file line and why, never its UID.

Cases are named by salted references (`st-…` for studies, `in-…` for instances), so the report
carries no identifier of the inputs. The subgroups are read from the analysed series' header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from app.validation.labels import CaseLabel, CaseLevel, LabelSet
from operators.dicom_input.study_refs import uid_ref
from operators.messages import SeriesAnalysis, StudyAnalysis

#: Subgroup name → DICOM keyword (age band is derived, skin type comes from the labels file).
HEADER_SUBGROUPS = {
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "body part": "BodyPartExamined",
    "sex": "PatientSex",
}
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 65, "40-64"), (65, 200, "65+"))
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ScoredCase:
    """A labelled case with the probabilities the analysis gave it (task label order)."""

    ref: str
    task: str
    label_index: int
    probabilities: np.ndarray
    subgroups: dict[str, str]
    instance_uids: tuple[str, ...]
    embedding: np.ndarray | None = None
    """Mean of the case's L2-normalised image embeddings (what `adapt` fits its probes on)."""


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of L2-normalised image embeddings: one vector per case, on the scale the probes use."""
    stacked = np.vstack([np.asarray(e, dtype=np.float64) for e in embeddings])
    stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    return stacked.mean(axis=0)


@dataclass(frozen=True)
class UnmatchedCase:
    """A labelled case the run gave no result for: its line in the labels file and why."""

    line: int
    task: str
    reason: str


@dataclass
class CaseSet:
    """Every case of the labels file, scored or unmatched."""

    scored: list[ScoredCase] = field(default_factory=list)
    unmatched: list[UnmatchedCase] = field(default_factory=list)

    def of_task(self, task: str) -> list[ScoredCase]:
        return [case for case in self.scored if case.task == task]

    @property
    def instance_uids_sha256(self) -> str:
        """SHA-256 of the sorted SOP Instance UIDs whose images were scored (one per line)."""
        uids = sorted({uid for case in self.scored for uid in case.instance_uids})
        return hashlib.sha256("\n".join(uids).encode("ascii")).hexdigest()

    @property
    def instance_count(self) -> int:
        return len({uid for case in self.scored for uid in case.instance_uids})


def age_band(header: Dataset) -> str:
    """The patient's age band from PatientAge (e.g. '045Y'), else StudyDate − PatientBirthDate."""
    text = str(header.get("PatientAge", "") or "").strip().upper()
    years: float | None = None
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        years = int(text[:3]) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[text[3]]
    else:
        birth, study = str(header.get("PatientBirthDate", "") or ""), str(header.get("StudyDate", "") or "")
        if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
            years = int(study[:4]) - int(birth[:4]) - ((study[4:]) < (birth[4:]))
    if years is None or years < 0:
        return UNKNOWN
    return next(name for low, high, name in AGE_BANDS if low <= years < high)


def subgroups_of(header: Dataset, case: CaseLabel) -> dict[str, str]:
    """The case's subgroup values: equipment, body part, sex, age band, and skin type if labelled."""
    values = {name: (str(header.get(keyword, "") or "").strip()[:64] or UNKNOWN) for name, keyword in HEADER_SUBGROUPS.items()}
    values["age band"] = age_band(header)
    if case.skin_type:
        values["skin type"] = case.skin_type
    return values


def _task_series(analysis: StudyAnalysis, task: str) -> list[SeriesAnalysis]:
    return [series for series in analysis.series if series.task.name == task]


def _score_study(case: CaseLabel, analysis: StudyAnalysis, salt: str) -> ScoredCase | str:
    series = _task_series(analysis, case.task)
    if not series:
        return f"the study was analysed but no series of it was selected for task {case.task!r}"
    return ScoredCase(
        ref=analysis.study.ref,
        task=case.task,
        label_index=case.label_index,
        probabilities=np.mean([s.probabilities for s in series], axis=0),
        subgroups=subgroups_of(series[0].selection.series.header, case),
        instance_uids=tuple(image.source.sop_instance_uid for s in series for image in s.images),
        embedding=mean_embedding([image.embedding for s in series for image in s.images]),
    )


def _score_instance(case: CaseLabel, analysis: StudyAnalysis, salt: str) -> ScoredCase | str:
    for series in _task_series(analysis, case.task):
        images = [image for image in series.images if image.source.sop_instance_uid == case.uid]
        if images:
            return ScoredCase(
                ref=uid_ref(case.uid, salt, prefix="in"),
                task=case.task,
                label_index=case.label_index,
                probabilities=np.mean([image.probabilities for image in images], axis=0),
                subgroups=subgroups_of(series.selection.series.header, case),
                instance_uids=(case.uid,),
                embedding=mean_embedding([image.embedding for image in images]),
            )
    return f"the instance's study was analysed but the instance was not among the images analysed for task {case.task!r}"


def match_cases(labels: LabelSet, analyses: Sequence[StudyAnalysis], salt: str) -> CaseSet:
    """Score every labelled case from the run's analyses (see the module docstring)."""
    by_study = {analysis.study.study_instance_uid: analysis for analysis in analyses}
    by_instance = {
        image.source.sop_instance_uid: analysis
        for analysis in analyses for series in analysis.series for image in series.images
    }
    cases = CaseSet()
    for case in labels.cases:
        analysis = (by_study if case.level is CaseLevel.STUDY else by_instance).get(case.uid)
        if analysis is None:
            cases.unmatched.append(UnmatchedCase(
                case.line, case.task,
                f"no analysed {case.level.value} has this UID (not in the input, nothing selectable, or it failed; see the log)",
            ))
            continue
        scored = (_score_study if case.level is CaseLevel.STUDY else _score_instance)(case, analysis, salt)
        if isinstance(scored, str):
            cases.unmatched.append(UnmatchedCase(case.line, case.task, scored))
        else:
            cases.scored.append(scored)
    return cases
