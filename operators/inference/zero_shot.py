"""Zero-shot classification with BiomedCLIP: class embeddings from prompts, probabilities from images.

Plain functions over an inference backend (engines/base.py), used by the inference operator and
tested without Holoscan. Each label's embedding is the normalised mean of the embeddings of all
its prompts (prompt ensembling); an image's label probabilities are the softmax over the
logit-scaled cosine similarities to those class embeddings, as in CLIP.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engines.base import InferenceBackend, l2_normalise
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from operators.messages import ImageFindings, PreparedSeries, SeriesAnalysis
from common.zero_shot_tasks import ZeroShotTask

TEXT_BATCH_SIZE = 64
DEFAULT_IMAGE_BATCH_SIZE = 16


def embed_texts(
    backend: InferenceBackend, tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = TEXT_BATCH_SIZE
) -> np.ndarray:
    """(len(texts), D) L2-normalised embeddings, tokenized and encoded `batch_size` texts at a time."""
    if batch_size < 1:
        raise ValueError(f"text batch size must be at least 1, got {batch_size}")
    parts = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]))
        parts.append(backend.encode_texts(tokens.input_ids, tokens.attention_mask))
    if not parts:
        return np.zeros((0, backend.embed_dim), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def ensemble_prompts(backend: InferenceBackend, tokenizer: TextTokenizer, prompt_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """(C, D): per prompt set, the re-normalised mean of its prompts' embeddings."""
    if any(len(prompts) == 0 for prompts in prompt_sets):
        raise ValueError("every class needs at least one prompt")
    flat = [prompt for prompts in prompt_sets for prompt in prompts]
    embeddings = embed_texts(backend, tokenizer, flat)
    bounds = np.cumsum([0] + [len(prompts) for prompts in prompt_sets])
    means = np.stack([embeddings[bounds[i] : bounds[i + 1]].mean(axis=0) for i in range(len(prompt_sets))])
    return l2_normalise(means)


def class_embeddings(
    backend: InferenceBackend, tokenizer: TextTokenizer, task: ZeroShotTask, cache: TextEmbeddingCache
) -> np.ndarray:
    """(C, D) class embeddings of `task` in label order, computed once per (model, prompts) through `cache`."""
    prompt_sets = [task.prompts_for(label) for label in task.labels]
    return cache.get_or_compute(
        backend.model.sha256, prompt_sets, lambda sets: ensemble_prompts(backend, tokenizer, sets)
    )


def zero_shot_probabilities(image_embeddings: np.ndarray, class_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N, C) softmax over `logit_scale` * cosine similarity of each image to each class."""
    images = l2_normalise(np.atleast_2d(image_embeddings))
    classes = l2_normalise(np.atleast_2d(class_embeddings))
    if images.shape[1] != classes.shape[1]:
        raise ValueError(f"image embeddings are {images.shape[1]}-d but class embeddings are {classes.shape[1]}-d")
    logits = float(logit_scale) * (images.astype(np.float64) @ classes.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def encode_images(backend: InferenceBackend, tensors: np.ndarray, batch_size: int = DEFAULT_IMAGE_BATCH_SIZE) -> np.ndarray:
    """(N, D) embeddings of model-ready image tensors, encoded `batch_size` images at a time."""
    if batch_size < 1:
        raise ValueError(f"image batch size must be at least 1, got {batch_size}")
    parts = [backend.encode_images(tensors[start : start + batch_size]) for start in range(0, len(tensors), batch_size)]
    if not parts:
        return np.zeros((0, backend.embed_dim), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def analyse_series(
    series: PreparedSeries,
    task: ZeroShotTask,
    backend: InferenceBackend,
    tokenizer: TextTokenizer,
    cache: TextEmbeddingCache,
    *,
    batch_size: int = DEFAULT_IMAGE_BATCH_SIZE,
) -> SeriesAnalysis:
    """Score every image of a prepared series against `task`; the series result is the mean over its images."""
    count = len(series.sources)
    if series.tensors.ndim != 4 or series.tensors.shape[0] != count:
        raise ValueError(
            f"selection {series.selection.selection_name!r}: {series.tensors.shape[0] if series.tensors.ndim else 0} "
            f"image tensors but {count} image sources"
        )
    if count == 0:
        raise ValueError(f"selection {series.selection.selection_name!r}: the prepared series has no images")
    classes = class_embeddings(backend, tokenizer, task, cache)
    embeddings = encode_images(backend, series.tensors, batch_size)
    probabilities = zero_shot_probabilities(embeddings, classes, backend.logit_scale)
    images = [
        ImageFindings(source=source, probabilities=probabilities[i], embedding=embeddings[i])
        for i, source in enumerate(series.sources)
    ]
    return SeriesAnalysis(
        selection=series.selection,
        task=task,
        images=images,
        probabilities=probabilities.mean(axis=0),
        preprocessing=series.method,
    )
