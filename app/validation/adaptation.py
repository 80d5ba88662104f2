"""`biomedclip-map adapt`: fit a site adapter (a linear probe per task) on the site's labelled studies.

The studies go through the MAP's own analysis (the one run API, no SR written), exactly as for
`validate`; each labelled case gets the mean of its L2-normalised image embeddings, from the
frozen image tower. Those embeddings are computed once and cached in the work folder, keyed by
the model's weights, the tasks' prompt sets, the labels file and the input files (name, size,
modification time), so fitting again with other settings costs no inference. Per task, a
scikit-learn `LogisticRegression` is fitted on the labels the site gave cases of; the adapter is
written as `adapter.json` (`models.adapter`), tied to the base model's hash. Validate it with
`biomedclip-map validate --adapter DIR` on studies it was not fitted on.

Exit codes: 0 the adapter was written; 1 some studies failed or no task has two labels with cases;
2 nothing could start (a setting, the model, the configuration or the labels file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from app.run import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, configuration_of, run
from app.settings import RunSettings
from app.validation.cases import match_cases
from app.validation.labels import LabelsFileError, read_labels
from common.atomic_files import Durability, write_json_atomically
from common.configuration import ConfigurationError
from models.errors import ModelDirectoryError
from models.adapter import ADAPTER_FILE, ADAPTER_FORMAT, ADAPTER_KIND

logger = logging.getLogger("biomedclip_map.adaptation")

CACHE_FOLDER = "adapter-embeddings"
#: Fewer cases than this for a label gives a warning: the probe's boundary for it is a guess.
FEW_CASES = 10


@dataclass(frozen=True)
class CaseEmbeddings:
    """The labelled cases' embeddings: per case its task, label index and mean L2-normalised embedding."""

    tasks: np.ndarray
    label_index: np.ndarray
    embeddings: np.ndarray
    instance_uids_sha256: str
    labels_file_sha256: str

    def of_task(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.tasks == task
        return self.embeddings[chosen], self.label_index[chosen]


def _input_fingerprint(folder: Path) -> str:
    """SHA-256 over every input file's relative path, size and modification time (what the cache follows)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()


def cache_key(model_sha256: str, prompt_sets: dict[str, str], labels_sha256: str, input_folder: Path) -> str:
    """The cache file's name: everything the embeddings of the labelled cases depend on."""
    parts = json.dumps([model_sha256, sorted(prompt_sets.items()), labels_sha256, _input_fingerprint(input_folder)])
    return hashlib.sha256(parts.encode("utf-8")).hexdigest()


def _load_cached(path: Path, labels_sha256: str) -> CaseEmbeddings | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return CaseEmbeddings(data["tasks"], data["label_index"], data["embeddings"], str(data["instance_uids_sha256"]), labels_sha256)


def case_embeddings(settings: RunSettings, labels_file: Path) -> tuple[CaseEmbeddings | None, int, bool]:
    """The labelled cases' embeddings (from the cache or a run), the run's exit code, and whether cached.

    Raises ConfigurationError or LabelsFileError when the configuration or labels cannot be used.
    """
    configuration = configuration_of(settings)
    labels = read_labels(labels_file, configuration.tasks)
    from models.directory import open_model_dir

    model = open_model_dir(settings.models_path, allow_untrained=settings.allow_untrained)
    prompt_sets = {t.name: t.prompt_set_sha256 for t in configuration.tasks.tasks.values()}
    cache = Path(settings.work_dir) / CACHE_FOLDER / f"{cache_key(model.sha256, prompt_sets, labels.sha256, settings.input_path)}.npz"
    cached = _load_cached(cache, labels.sha256)
    if cached is not None:
        logger.info("embeddings of %d labelled case(s) read from the cache %s", len(cached.tasks), cache.name)
        return cached, EXIT_OK, True
    report = run(replace(settings, write_reports=False, operating_points=None, adapter=None), configuration=configuration)
    if report.start_error is not None:
        return None, EXIT_CANNOT_START, False
    cases = match_cases(labels, report.analyses, settings.uid_salt)
    for case in cases.unmatched:
        logger.warning("labels file line %d (%s): no result: %s", case.line, case.task, case.reason)
    if not cases.scored:
        return None, EXIT_STUDY_FAILED, False
    found = CaseEmbeddings(
        np.array([c.task for c in cases.scored]), np.array([c.label_index for c in cases.scored]),
        np.vstack([c.embedding for c in cases.scored]), cases.instance_uids_sha256, labels.sha256,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, tasks=found.tasks, label_index=found.label_index, embeddings=found.embeddings,
             instance_uids_sha256=np.array(found.instance_uids_sha256))
    partial.replace(cache)
    return found, report.exit_code, False


def fit_probe(embeddings: np.ndarray, label_index: np.ndarray, label_names: list[str], c: float) -> dict:
    """One task's probe (scikit-learn LogisticRegression on L2-normalised embeddings) as the adapter stores it."""
    from sklearn.linear_model import LogisticRegression

    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    model = LogisticRegression(C=c, max_iter=5000).fit(x, label_index)
    counts = {label_names[int(i)]: int((label_index == i).sum()) for i in model.classes_}
    return {
        "labels": list(label_names),
        "classes": [label_names[int(i)] for i in model.classes_],
        "class_counts": counts,
        "cases": int(len(label_index)),
        "coef": model.coef_.tolist(),
        "intercept": model.intercept_.tolist(),
    }


def training_set_sha256(found: CaseEmbeddings) -> str:
    """The training set's hash: its labels file and the instances it was fitted on."""
    return hashlib.sha256(f"{found.labels_file_sha256}\n{found.instance_uids_sha256}".encode("ascii")).hexdigest()


def adapt(settings: RunSettings, labels_file: Path, output: Path, *, name: str, version: str, c: float = 1.0) -> int:
    """Fit the adapter on the labelled studies of `settings.input_path` and write it to `output`; the exit code."""
    try:
        found, code, _ = case_embeddings(settings, labels_file)
        configuration = configuration_of(settings)
    except (ConfigurationError, LabelsFileError, ModelDirectoryError) as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    if found is None:
        logger.error("no labelled case got a result: no adapter written (see the lines above)")
        return code
    from models.directory import open_model_dir

    model = open_model_dir(settings.models_path, allow_untrained=settings.allow_untrained)
    tasks = {}
    for task_name in sorted(set(found.tasks.tolist())):
        task = configuration.tasks.tasks[task_name]
        x, y = found.of_task(task_name)
        present = np.unique(y)
        if len(present) < 2:
            logger.warning("task %s: cases of one label only; no probe fitted (it stays zero-shot)", task_name)
            continue
        for i in present:
            if (y == i).sum() < FEW_CASES:
                logger.warning("task %s / %s: only %d case(s); the probe's boundary for it is a guess",
                               task_name, task.label_names[int(i)], int((y == i).sum()))
        tasks[task_name] = {"prompt_set_sha256": task.prompt_set_sha256, **fit_probe(x, y, task.label_names, c)}
        logger.info("task %s: probe fitted on %d case(s) of label(s) %s", task_name, len(y), ", ".join(tasks[task_name]["classes"]))
    if not tasks:
        logger.error("no task has cases of two labels: no adapter written")
        return EXIT_STUDY_FAILED
    document = {
        "kind": ADAPTER_KIND,
        "format": ADAPTER_FORMAT,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": {"name": model.manifest.name, "version": model.manifest.version, "sha256": model.sha256,
                       "status": model.manifest.status},
        "training_set": {"cases": int(len(found.tasks)), "labels_file_sha256": found.labels_file_sha256,
                         "instance_uids_sha256": found.instance_uids_sha256, "sha256": training_set_sha256(found)},
        "method": f"scikit-learn LogisticRegression(C={c}) per task on the L2-normalised mean image embedding of each case",
        "tasks": tasks,
    }
    path = write_json_atomically(Path(output) / ADAPTER_FILE, document, durability=Durability.FILE)
    logger.info("site adapter written: %s; validate it on held-out studies with 'biomedclip-map validate --adapter %s'", path, output)
    return code
