"""Composing the model side of a run: model folder, inference backend, tokenizer, tasks, text cache.

Opened once per process and handed to the graph, so a long-running DICOM node keeps the model
loaded and the zero-shot text embeddings cached across studies. This is composition of the lower
layers (models, engines) for the operators, so it lives with the front ends.
"""

from __future__ import annotations

import logging

from app.probe_set import SampleStudyProbes
from app.log_privacy import LOG_REDACTOR
from app.settings import RunSettings
from common.zero_shot_tasks import TaskCatalogue, load_tasks
from engines.selection import open_backend
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from models.adapter import check_adapter
from models.directory import open_model_dir
from operators.inference.zero_shot_analyzer import ZeroShotAnalyzer

logger = logging.getLogger("biomedclip_map.inference")


def open_analyzer(settings: RunSettings, tasks: TaskCatalogue | None = None) -> ZeroShotAnalyzer:
    """Open the model folder (refusing an untrained model unless allowed) and its backend.

    `tasks` are the run's checked zero-shot tasks (`app.configuration`; read from `settings.tasks`
    when not given). Raises the model registry's `ModelDirectoryError` family, `TaskConfigError`,
    or the backend errors, each naming the path or setting to fix.
    """
    LOG_REDACTOR.keep_endpoints(settings.engines.triton_server_netloc)  # so a failure names the server
    model = open_model_dir(settings.models_path, allow_untrained=settings.allow_untrained)
    tasks = tasks or load_tasks(settings.tasks)
    identity = model.identity
    if identity.untrained:
        logger.warning(
            "model %s %s is UNTRAINED (allowed by --allow-untrained): every result of this run is meaningless",
            identity.name,
            identity.version,
        )
    backend = open_backend(model, settings.engines, work_dir=settings.work_dir, probes=SampleStudyProbes())
    logger.info(
        "model %s %s (sha256 %s…, status %s) on backend %s",
        identity.name, identity.version, identity.sha256[:12], identity.status, backend.name,
    )
    adapter = None
    if settings.adapter is not None:
        adapter = check_adapter(settings.adapter, model.sha256, {t.name: t.prompt_set_sha256 for t in tasks.tasks.values()})
        logger.info("site adapter %s %s (sha256 %s…): linear probes replace zero-shot for task(s) %s",
                    adapter.identity.name, adapter.identity.version, adapter.identity.sha256[:12], ", ".join(sorted(adapter.probes)))
    return ZeroShotAnalyzer(
        model,
        backend,
        TextTokenizer.from_model(model),
        tasks,
        TextEmbeddingCache.in_work_dir(settings.work_dir, model.shipped_onnx_dir),
        settings.batch_size,
        adapter,
    )
