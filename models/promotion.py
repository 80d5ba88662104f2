"""Promote a model folder to status `validated`, backed by a site validation report.

`promote_model` opens the model folder (verifying its weights hash), refuses random weights, reads
the prompt sets the model runs with from the zero-shot tasks file, and lets
`common.site_validation.check_promotion` decide whether the validation report backs the promotion.
Only then is the manifest rewritten (atomically) with status `validated` and the promotion record:
who, when, the report's SHA-256 and the headline figures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.configuration import CONFIG_DIR
from common.site_validation import ModelValidation, PromotionRefused, check_promotion, load_validation_config
from common.zero_shot_tasks import load_tasks
from models.directory import open_model_dir
from models.manifest import ModelManifest, utc_timestamp, write_manifest

DEFAULT_TASKS_FILE = CONFIG_DIR / "zero_shot_tasks.yaml"


def prompt_sets_of(task_file: Path) -> dict[str, str]:
    """Each task's prompt-set SHA-256 in the zero-shot tasks file the model runs with."""
    return {task.name: task.prompt_set_sha256 for task in load_tasks(Path(task_file)).tasks.values()}


def promote_model(
    path: Path,
    report: Path | None,
    *,
    by: str,
    config: Path | None = None,
    task_file: Path | None = None,
    operating_points: Path | None = None,
) -> tuple[Path, ModelManifest, ModelValidation]:
    """Set the model at `path` to `validated` if `report` backs it; PromotionRefused says why not.

    Returns the model folder, the new manifest and the promotion record.
    """
    if report is None:
        raise PromotionRefused(
            "--report: a model becomes 'validated' only with the validation report (report.json of "
            "'biomedclip-map validate') of this model on the site's labelled studies"
        )
    model = open_model_dir(path, allow_untrained=True)
    if model.manifest.untrained:
        raise PromotionRefused(
            f"{model.path}: the model is untrained (random weights); such a model is never validated"
        )
    record = check_promotion(
        Path(report), model_sha256=model.sha256, prompt_sets=prompt_sets_of(task_file or DEFAULT_TASKS_FILE),
        minimums=load_validation_config(config), validated_by=by, validated_at=utc_timestamp(),
        operating_points=operating_points,
    )
    manifest = replace(model.manifest, status="validated", validation=record.as_dict())
    write_manifest(model.path, manifest)
    return model.path, manifest, record
