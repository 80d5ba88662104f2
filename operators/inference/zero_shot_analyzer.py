"""The model side of a run as the operators see it: model, backend, tokenizer, tasks, text cache.

`app.analyzer.open_analyzer` composes it once per process; the graph's operators use it to score
prepared studies (and the burn specialist to embed its depth classes).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common.zero_shot_tasks import TaskCatalogue
from engines.base import InferenceBackend
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from models.adapter import SiteAdapter
from models.directory import ModelDirectory
from operators.messages import (
    ImageFindings,
    PreparedStudy,
    SeriesAnalysis,
    StudyAnalysis,
)
from operators.inference.zero_shot import class_embeddings, encode_images, zero_shot_probabilities


class ZeroShotAnalyzer:
    """Scores prepared studies against their selections' zero-shot tasks."""

    def __init__(
        self,
        model: ModelDirectory,
        backend: InferenceBackend,
        tokenizer: TextTokenizer,
        tasks: TaskCatalogue,
        cache: TextEmbeddingCache,
        batch_size: int = 16,
        adapter: SiteAdapter | None = None,
    ):
        self.model = model
        self.backend = backend
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.cache = cache
        self.batch_size = batch_size
        self.adapter = adapter

    @property
    def identity(self):
        """What the reports say about the model, and the site adapter when one is used."""
        identity = self.model.identity
        return identity if self.adapter is None else replace(identity, adapter=self.adapter.identity)

    def _probabilities(self, task_name: str, embeddings: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The site adapter's probe for the task when there is one, else the zero-shot probabilities."""
        probe = self.adapter.probes.get(task_name) if self.adapter is not None else None
        if probe is not None:
            return probe.probabilities(embeddings)
        return zero_shot_probabilities(embeddings, classes, self.backend.logit_scale)

    def analyse(self, prepared: PreparedStudy) -> StudyAnalysis:
        """Score every image of the study in shared batches, then each series against its task."""
        tensors = np.concatenate([s.tensors for s in prepared.series], axis=0)
        embeddings = encode_images(self.backend, tensors, self.batch_size)
        analyses: list[SeriesAnalysis] = []
        start = 0
        for series in prepared.series:
            count = len(series.sources)
            task = self.tasks.for_selection(series.selection.selection_name)
            classes = class_embeddings(self.backend, self.tokenizer, task, self.cache)
            own = embeddings[start : start + count]
            start += count
            probabilities = self._probabilities(task.name, own, classes)
            analyses.append(
                SeriesAnalysis(
                    selection=series.selection,
                    task=task,
                    images=[
                        ImageFindings(source=src, probabilities=probabilities[i], embedding=own[i])
                        for i, src in enumerate(series.sources)
                    ],
                    probabilities=probabilities.mean(axis=0),
                    preprocessing=series.method,
                )
            )
        return StudyAnalysis(
            study=prepared.study,
            series=analyses,
            model=self.identity,
            backend=self.backend.name,
            left_out=prepared.left_out,
            notes=tuple(prepared.notes),
        )
