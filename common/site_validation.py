"""What it takes for a model to be `validated` at a site, and the record of that validation.

`python -m models promote DIR --to validated --report R --by NAME` turns a model folder's status
into `validated` only when `R` is the `report.json` of `biomedclip-map validate` measured on
exactly this model: the same weights (SHA-256), the same prompt set for every task of the report,
and, when the site uses operating points, a site file made from this very report. The report's
figures must meet the site's minimums (`app/config/validation.yaml`): for every label required,
at least N positive and N negative cases and an AUROC whose 95 % interval's lower bound is at
least x. The checks live here, in the shared layer, so that the model registry (which must not
depend on the application) and the application read the report the same way.

The result is a `ModelValidation`: who promoted the model and when, the report's SHA-256, its
date and data set, and the headline figures per task and label. The manifest keeps it and the
Structured Report quotes it (date, cases, AUROC).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.configuration import CONFIG_DIR, ConfigModel, ConfigurationError, explain, load_config_file
from common.operating_points import check_operating_points

#: The site's minimums for promotion, bundled with the product (a site passes its own with --config).
DEFAULT_VALIDATION_CONFIG = CONFIG_DIR / "validation.yaml"
REPORT_TITLE_SUFFIX = "site validation"


class PromotionRefused(ValueError):
    """The model cannot be promoted; the message says which check failed and what to do about it."""


class ValidationConfigError(ConfigurationError):
    """The site's validation configuration is unusable; the message names the file and key."""


class ValidationMinimums(ConfigModel):
    """Schema of `validation.yaml` (unknown keys are refused)."""

    minimum_positives: int = Field(ge=1, description="positive cases each required label needs")
    minimum_negatives: int = Field(ge=1, description="negative cases each required label needs")
    minimum_auroc_lower_bound: float = Field(ge=0, le=1, description="lowest acceptable lower bound of the AUROC 95 % interval")
    required_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per task of the report, the labels that must meet the minimums; a task not named: all its labels",
    )


def load_validation_config(path: Path | None = None) -> ValidationMinimums:
    """The site's minimums from `path` (default: the bundled `validation.yaml`)."""
    return load_config_file(Path(path or DEFAULT_VALIDATION_CONFIG), ValidationMinimums,
                            error=ValidationConfigError, what="site validation configuration")


# --- the part of report.json that promotion reads (other keys are ignored) ---------------------------

_LENIENT = ConfigDict(extra="ignore", frozen=True)


class _LabelFigures(BaseModel):
    model_config = _LENIENT
    label: str
    positives: int
    negatives: int
    auroc: float | None = None
    auroc_ci: tuple[float, float] | None = None


class _TaskFigures(BaseModel):
    model_config = _LENIENT
    labels: list[str]
    prompt_set_sha256: str
    cases: int
    per_label: dict[str, _LabelFigures]


class _ReportModel(BaseModel):
    model_config = _LENIENT
    name: str
    version: str
    sha256: str


class _ReportDataSet(BaseModel):
    model_config = _LENIENT
    cases: int
    labels_file_sha256: str
    instance_uids_sha256: str


class _Report(BaseModel):
    model_config = _LENIENT
    report: str
    created: str
    model: _ReportModel
    data_set: _ReportDataSet
    tasks: dict[str, _TaskFigures]


@dataclass(frozen=True)
class LabelValidation:
    """One label's headline figures in the validation."""

    positives: int
    negatives: int
    auroc: float
    auroc_ci: tuple[float, float]


@dataclass(frozen=True)
class TaskValidation:
    """One task's validation: the prompt set measured, its cases and the figures of each required label."""

    prompt_set_sha256: str
    cases: int
    labels: dict[str, LabelValidation]


@dataclass(frozen=True)
class ModelValidation:
    """The record of a promotion, kept in the manifest and quoted by the Structured Report."""

    validated_by: str
    validated_at: str
    report_sha256: str
    report_created: str
    cases: int
    labels_file_sha256: str
    tasks: dict[str, TaskValidation]
    operating_points_sha256: str = ""
    minimums: dict[str, Any] = field(default_factory=dict)

    @property
    def date(self) -> str:
        """The day the figures were measured (the report's date), as the SR gives it."""
        return self.report_created[:10]

    def as_dict(self) -> dict[str, Any]:
        """The record as the manifest stores it (JSON types only)."""
        data = asdict(self)
        for task in data["tasks"].values():
            for label in task["labels"].values():
                label["auroc_ci"] = list(label["auroc_ci"])
        return data


def validation_from_dict(raw: object, where: Path | str) -> ModelValidation:
    """The record back from the manifest; PromotionRefused names `where` if it is malformed."""
    try:
        data = dict(raw)  # type: ignore[arg-type]
        tasks = {
            name: TaskValidation(
                task["prompt_set_sha256"], int(task["cases"]),
                {label: LabelValidation(int(v["positives"]), int(v["negatives"]), float(v["auroc"]),
                                        (float(v["auroc_ci"][0]), float(v["auroc_ci"][1])))
                 for label, v in task["labels"].items()},
            )
            for name, task in data.pop("tasks").items()
        }
        return ModelValidation(tasks=tasks, **data)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
        raise PromotionRefused(f"{where}: field 'validation' is not a validation record ({exc})") from exc


def read_validation_report(path: Path) -> tuple[_Report, str]:
    """The report's figures and its SHA-256; PromotionRefused if it is missing or not a validation report."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromotionRefused(
            f"{path}: no validation report there; run 'biomedclip-map validate' on the site's labelled studies "
            "and pass its report.json"
        ) from None
    except OSError as exc:
        raise PromotionRefused(f"{path}: the validation report cannot be read ({exc.strerror or exc})") from exc
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PromotionRefused(f"{path}: not a JSON validation report ({exc})") from exc
    if not isinstance(document, dict) or not str(document.get("report", "")).endswith(REPORT_TITLE_SUFFIX):
        raise PromotionRefused(f"{path}: not a validation report of 'biomedclip-map validate' (its report.json)")
    try:
        report = _Report.model_validate(document)
    except ValidationError as exc:
        raise PromotionRefused(f"{path}: incomplete validation report: " + "; ".join(explain(exc))) from None
    return report, hashlib.sha256(data).hexdigest()


def _check_label(task: str, label: str, figures: _LabelFigures | None, minimums: ValidationMinimums) -> LabelValidation:
    where = f"task {task}, label {label!r}"
    if figures is None:
        raise PromotionRefused(f"{where}: the report has no figures for this label")
    if figures.positives < minimums.minimum_positives or figures.negatives < minimums.minimum_negatives:
        raise PromotionRefused(
            f"{where}: too few cases ({figures.positives} positive, {figures.negatives} negative); the site requires at "
            f"least {minimums.minimum_positives} positive and {minimums.minimum_negatives} negative cases per label: "
            "label more studies and validate again"
        )
    if figures.auroc is None or figures.auroc_ci is None:
        raise PromotionRefused(f"{where}: the report has no AUROC interval for this label")
    low = figures.auroc_ci[0]
    if low < minimums.minimum_auroc_lower_bound:
        raise PromotionRefused(
            f"{where}: AUROC {figures.auroc:.3f}, 95 % interval lower bound {low:.3f} is under the site's minimum "
            f"{minimums.minimum_auroc_lower_bound:.3f}: the model does not perform well enough on this site's studies"
        )
    return LabelValidation(figures.positives, figures.negatives, figures.auroc, (low, figures.auroc_ci[1]))


def check_promotion(
    report_path: Path,
    *,
    model_sha256: str,
    prompt_sets: dict[str, str],
    minimums: ValidationMinimums,
    validated_by: str,
    validated_at: str,
    operating_points: Path | None = None,
) -> ModelValidation:
    """The validation record if the report at `report_path` backs promoting this model; PromotionRefused if not.

    `prompt_sets` maps every task the model runs with to its `prompt_set_sha256`; every task of the
    report must be among them with the same hash. `operating_points`, when the site uses them, must
    be a site file for these weights and prompts made from this very report.
    """
    if not validated_by.strip():
        raise PromotionRefused("--by: name the person or committee responsible for the promotion")
    report, report_sha256 = read_validation_report(report_path)
    if report.model.sha256 != model_sha256:
        raise PromotionRefused(
            f"{report_path}: a validation of other weights (sha256 {report.model.sha256[:12]}…, {report.model.name} "
            f"{report.model.version}); this model's weights have sha256 {model_sha256[:12]}…: validate this model"
        )
    if not report.tasks:
        raise PromotionRefused(f"{report_path}: the report measures no task")
    tasks: dict[str, TaskValidation] = {}
    for name, task in report.tasks.items():
        if name not in prompt_sets:
            raise PromotionRefused(f"{report_path}: task {name} is not among the tasks this model runs with ({', '.join(sorted(prompt_sets))})")
        if task.prompt_set_sha256 != prompt_sets[name]:
            raise PromotionRefused(
                f"{report_path}: task {name} was measured with another prompt set (sha256 {task.prompt_set_sha256[:12]}…, "
                f"the tasks file's is {prompt_sets[name][:12]}…): validate again with the prompts the model will run with"
            )
        required = minimums.required_labels.get(name, task.labels)
        unknown = sorted(set(required) - set(task.labels))
        if unknown:
            raise PromotionRefused(f"site validation configuration: required_labels.{name}: {unknown} are not labels of the task")
        labels = {label: _check_label(name, label, task.per_label.get(label), minimums) for label in required}
        tasks[name] = TaskValidation(task.prompt_set_sha256, task.cases, labels)
    for name in sorted(set(minimums.required_labels) - set(report.tasks)):
        raise PromotionRefused(f"{report_path}: the site requires task {name}, which the report does not measure")
    points_sha256 = ""
    if operating_points is not None:
        site = check_operating_points(Path(operating_points), model_sha256, prompt_sets)
        if site.report_sha256 != report_sha256:
            raise PromotionRefused(
                f"{operating_points}: the operating points were chosen on another validation report (sha256 "
                f"{site.report_sha256[:12]}…, this one is {report_sha256[:12]}…): choose them on this report"
            )
        points_sha256 = hashlib.sha256(Path(operating_points).read_bytes()).hexdigest()
    return ModelValidation(
        validated_by=validated_by.strip(), validated_at=validated_at, report_sha256=report_sha256,
        report_created=report.created, cases=report.data_set.cases, labels_file_sha256=report.data_set.labels_file_sha256,
        tasks=tasks, operating_points_sha256=points_sha256, minimums=minimums.model_dump(),
    )
