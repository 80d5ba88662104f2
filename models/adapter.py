"""A site adapter: linear probes on the frozen image embeddings of one model, versioned like a model.

`biomedclip-map adapt` fits, per task, a logistic regression (scikit-learn) from the site's
labelled studies to the model's L2-normalised image embeddings, and writes it here as
`adapter.json`: its own manifest (name, version, creation date, the base model's name, version
and weights SHA-256, the training set's hashes) and per task the prompt set it replaces, the
labels it was trained on and the coefficients. The MAP uses it only when configured
(`--adapter`) and only if the base model's hash equals that of the model it runs
(`check_adapter`); the probe's probabilities then replace the zero-shot ones for its tasks, with
probability 0 for labels the site gave no case of. Applying a probe is a few lines of numpy, the
same formula as scikit-learn's `predict_proba`, so the run-time image needs no scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.model_identity import AdapterIdentity
from models.errors import ModelDirectoryError

ADAPTER_FILE = "adapter.json"
ADAPTER_KIND = "biomedclip-map linear probe adapter"
ADAPTER_FORMAT = 1


class AdapterError(ModelDirectoryError):
    """The site adapter cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class LinearProbe:
    """One task's logistic regression over L2-normalised embeddings (scikit-learn's coef_ and intercept_)."""

    labels: tuple[str, ...]
    """Every label of the task, in task order (the probabilities returned follow it)."""
    classes: tuple[str, ...]
    """The labels the probe was trained on, in the order of scikit-learn's classes_."""
    coef: np.ndarray
    intercept: np.ndarray
    prompt_set_sha256: str

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, len(labels)) probabilities, as `LogisticRegression.predict_proba`, 0 for untrained labels."""
        x = np.atleast_2d(embeddings).astype(np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        scores = x @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            known = np.stack([1.0 - positive, positive], axis=1)
        else:
            scores -= scores.max(axis=1, keepdims=True)
            known = np.exp(scores)
            known /= known.sum(axis=1, keepdims=True)
        full = np.zeros((x.shape[0], len(self.labels)))
        for column, label in enumerate(self.classes):
            full[:, self.labels.index(label)] = known[:, column]
        return full.astype(np.float32)


@dataclass(frozen=True)
class SiteAdapter:
    """An opened adapter: its identity and one probe per task it covers."""

    path: Path
    identity: AdapterIdentity
    probes: dict[str, LinearProbe]
    document: dict[str, Any]


def _fail(path: Path, message: str) -> AdapterError:
    return AdapterError(f"{path}: {message}")


def read_adapter(folder: Path) -> SiteAdapter:
    """Open `<folder>/adapter.json` (or the file itself); AdapterError names the file and the problem."""
    path = Path(folder)
    path = path / ADAPTER_FILE if path.is_dir() else path
    try:
        data = path.read_bytes()
        document = json.loads(data)
    except FileNotFoundError:
        raise _fail(path, "no site adapter there; 'biomedclip-map adapt' writes one") from None
    except OSError as exc:
        raise _fail(path, f"cannot read the site adapter ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a JSON site adapter ({exc})") from exc
    if not isinstance(document, dict) or document.get("kind") != ADAPTER_KIND or document.get("format") != ADAPTER_FORMAT:
        raise _fail(path, f"not a site adapter of this product (kind {ADAPTER_KIND!r}, format {ADAPTER_FORMAT})")
    try:
        base = document["base_model"]
        probes = {
            name: LinearProbe(
                tuple(task["labels"]), tuple(task["classes"]), np.asarray(task["coef"], dtype=np.float64),
                np.asarray(task["intercept"], dtype=np.float64), task["prompt_set_sha256"],
            )
            for name, task in document["tasks"].items()
        }
        identity = AdapterIdentity(document["name"], document["version"], hashlib.sha256(data).hexdigest(),
                                   base["sha256"], document["created"], document["training_set"]["sha256"],
                                   tuple(sorted(probes)))
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"incomplete site adapter ({type(exc).__name__}: {exc})") from exc
    for name, probe in probes.items():
        width = 1 if len(probe.classes) == 2 else len(probe.classes)
        if probe.coef.ndim != 2 or probe.coef.shape[0] != width or probe.intercept.shape != (width,) \
                or not set(probe.classes) <= set(probe.labels) or len(probe.classes) < 2:
            raise _fail(path, f"tasks.{name}: coefficients do not match its classes")
    return SiteAdapter(path, identity, probes, document)


def check_adapter(folder: Path, model_sha256: str, prompt_sets: dict[str, str]) -> SiteAdapter:
    """The adapter at `folder`, refused unless made for these weights and, per task, this prompt set."""
    adapter = read_adapter(folder)
    if adapter.identity.base_sha256 != model_sha256:
        raise _fail(adapter.path, (
            f"made for model weights sha256 {adapter.identity.base_sha256[:12]}…, but this run's model has sha256 "
            f"{model_sha256[:12]}…: fit the adapter again on this model ('biomedclip-map adapt')"))
    for name, probe in adapter.probes.items():
        if name not in prompt_sets:
            raise _fail(adapter.path, f"tasks.{name}: this run has no task of that name")
        if probe.prompt_set_sha256 != prompt_sets[name]:
            raise _fail(adapter.path, f"tasks.{name}: made for another version of the task (its labels or prompts changed); fit it again")
    return adapter
