"""Burn depth by zero-shot classification, reusing the image embeddings of the inference step.

The depth classes (superficial, superficial partial-thickness, deep partial-thickness,
full-thickness, no burn) are a zero-shot task built from `app/config/burn.yaml`: each class
embedding is the normalised mean of every prompt template filled with the class's phrase plus its
clinical descriptions (prompt ensembling). Class embeddings go through the same text-embedding
cache as every other task (computed once per model and prompt set). The image side is the
embedding BiomedCLIPInference already computed for the photograph, so no image is encoded twice.
"""

from __future__ import annotations

import numpy as np

from engines.base import InferenceBackend
from engines.text_cache import TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from common.zero_shot_tasks import ZeroShotTask
from operators.inference.zero_shot import class_embeddings, zero_shot_probabilities


def depth_class_embeddings(
    backend: InferenceBackend, tokenizer: TextTokenizer, task: ZeroShotTask, cache: TextEmbeddingCache
) -> np.ndarray:
    """(C, D) class embeddings of the depth task, through the text-embedding cache."""
    return class_embeddings(backend, tokenizer, task, cache)


def depth_probabilities(image_embeddings: np.ndarray, classes: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N, C) depth-class probabilities of N image embeddings (softmax over scaled cosine similarity)."""
    embeddings = np.atleast_2d(np.asarray(image_embeddings, dtype=np.float32))
    if embeddings.shape[0] == 0:
        return np.zeros((0, classes.shape[0]), dtype=np.float32)
    return zero_shot_probabilities(embeddings, classes, logit_scale)


def depth_method(task: ZeroShotTask) -> str:
    """One sentence saying how the depth probabilities were obtained (for the report's narrative)."""
    prompts = sum(len(task.prompts_for(label)) for label in task.labels)
    return (
        f"Burn depth: zero-shot classification of each photograph's BiomedCLIP image embedding against "
        f"{len(task.labels)} depth classes ({', '.join(task.label_names)}), each the mean of its prompts "
        f"({prompts} prompts in all: {len(task.templates)} templates plus clinical descriptions, from the burn "
        "configuration); probabilities are the softmax of the logit-scaled cosine similarities."
    )
