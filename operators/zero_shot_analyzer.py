"""The model side of a run: model folder, inference backend, tokenizer, tasks and text cache.

Opened once per process and handed to the graph, so a long-running DICOM node keeps the model
loaded and the zero-shot text embeddings cached across studies.
"""

from __future__ import annotations

import logging

import numpy as np

from app.settings import RunSettings
from engines.base import InferenceBackend
from engines.selection import open_backend
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from models.directory import ModelDirectory, open_model_dir
from operators.messages import ImageFindings, PreparedStudy, SeriesAnalysis, StudyAnalysis
from operators.tasks import TaskCatalogue, load_tasks
from operators.zero_shot import class_embeddings, encode_images, zero_shot_probabilities

logger = logging.getLogger("biomedclip_map.inference")


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
    ):
        self.model = model
        self.backend = backend
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.cache = cache
        self.batch_size = batch_size

    @classmethod
    def open(cls, settings: RunSettings) -> "ZeroShotAnalyzer":
        """Open the model folder (refusing an untrained model unless allowed) and its backend.

        Raises the model registry's `ModelDirectoryError` family, `TaskConfigError`, or the
        backend errors, each naming the path or setting to fix.
        """
        model = open_model_dir(settings.models_path, allow_untrained=settings.allow_untrained)
        tasks = load_tasks(settings.tasks)
        identity = model.identity
        if identity.untrained:
            logger.warning(
                "model %s %s is UNTRAINED (allowed by --allow-untrained): every result of this run is meaningless",
                identity.name,
                identity.version,
            )
        backend = open_backend(
            model, settings.backend, work_dir=settings.work_dir,
            triton_server_netloc=settings.triton_server_netloc, triton_fallback=settings.triton_fallback,
        )
        logger.info(
            "model %s %s (sha256 %s…, status %s) on backend %s",
            identity.name,
            identity.version,
            identity.sha256[:12],
            identity.status,
            backend.name,
        )
        return cls(
            model,
            backend,
            TextTokenizer.from_model(model),
            tasks,
            TextEmbeddingCache.in_work_dir(settings.work_dir),
            settings.batch_size,
        )

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
            probabilities = zero_shot_probabilities(own, classes, self.backend.logit_scale)
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
            model=self.model.identity,
            backend=self.backend.name,
            left_out=prepared.left_out,
            notes=tuple(prepared.notes),
        )
