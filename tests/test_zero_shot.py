"""Zero-shot scoring tests: probabilities, prompt ensembling, the text embedding cache, series analysis."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from engines.text_cache import TEXT_CACHE_SUBDIR, TextEmbeddingCache
from engines.tokenizer import TextTokenizer
from models.directory import open_model_dir
from operators.messages import ImageSource, PreparedSeries, SelectedSeries, SeriesHeader
from common.zero_shot_tasks import ZeroShotTask, load_tasks
from operators.inference.zero_shot import (
    analyse_series,
    class_embeddings,
    embed_texts,
    zero_shot_probabilities,
)

TASKS_FILE = Path(__file__).resolve().parents[1] / "app" / "config" / "zero_shot_tasks.yaml"


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    from engines.pytorch_backend import PyTorchBackend

    return PyTorchBackend(open_model_dir(tiny_model_dir, allow_untrained=True), device="cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> TextTokenizer:
    return TextTokenizer.from_model(open_model_dir(tiny_model_dir, allow_untrained=True))


@pytest.fixture(scope="module")
def task() -> ZeroShotTask:
    return load_tasks(TASKS_FILE).for_selection("chest_radiograph")


# --------------------------------------------------------------------------- probabilities


def test_probabilities_are_the_softmax_of_scaled_cosines() -> None:
    images = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    classes = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=np.float32)  # second row not unit length
    probabilities = zero_shot_probabilities(images, classes, logit_scale=10.0)
    cosines = np.array([[1.0, 0.0, -1.0], [0.6, 0.8, -0.6]])
    expected = np.exp(10 * cosines) / np.exp(10 * cosines).sum(axis=1, keepdims=True)
    assert probabilities.shape == (2, 3)
    assert np.allclose(probabilities, expected, atol=1e-6)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_larger_logit_scale_sharpens_probabilities() -> None:
    images = np.array([[0.6, 0.8]], dtype=np.float32)
    classes = np.eye(2, dtype=np.float32)
    soft = zero_shot_probabilities(images, classes, 1.0)
    sharp = zero_shot_probabilities(images, classes, 100.0)
    assert soft[0, 1] < sharp[0, 1] and sharp[0, 1] > 0.99


def test_probabilities_stay_finite_at_real_model_scale() -> None:
    probabilities = zero_shot_probabilities(np.eye(3), np.eye(3), logit_scale=1e4)
    assert np.isfinite(probabilities).all() and np.allclose(np.diag(probabilities), 1.0)


def test_mismatched_dimensions_are_rejected() -> None:
    with pytest.raises(ValueError, match="512-d"):
        zero_shot_probabilities(np.ones((1, 512)), np.ones((2, 256)), 1.0)


# --------------------------------------------------------------------------- class embeddings and cache


def test_class_embeddings_average_each_labels_prompts(backend, tokenizer, task) -> None:
    embeddings = class_embeddings(backend, tokenizer, task, TextEmbeddingCache(None))
    assert embeddings.shape == (len(task.labels), 512)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    for row, label in zip(embeddings, task.labels):
        prompts = embed_texts(backend, tokenizer, task.prompts_for(label))
        mean = prompts.mean(axis=0)
        assert np.allclose(row, mean / np.linalg.norm(mean), atol=1e-5)
    # Labels differ, so their class embeddings differ.
    assert not np.allclose(embeddings[0], embeddings[1])


def test_text_batching_does_not_change_embeddings(backend, tokenizer, task) -> None:
    texts = [p for label in task.labels for p in task.prompts_for(label)]
    assert np.allclose(embed_texts(backend, tokenizer, texts, batch_size=4), embed_texts(backend, tokenizer, texts), atol=1e-5)


def test_second_computation_embeds_no_texts(backend, tokenizer, task, tmp_path: Path) -> None:
    first = TextEmbeddingCache.in_work_dir(tmp_path)
    computed = class_embeddings(backend, tokenizer, task, first)
    prompts = sum(len(task.prompts_for(label)) for label in task.labels)
    assert first.stats.texts_embedded == prompts and first.stats.misses == 1

    assert np.array_equal(class_embeddings(backend, tokenizer, task, first), computed)
    assert first.stats.texts_embedded == prompts and first.stats.memory_hits == 1

    second = TextEmbeddingCache.in_work_dir(tmp_path)  # a later run with the same work folder
    assert np.array_equal(class_embeddings(backend, tokenizer, task, second), computed)
    assert second.stats.texts_embedded == 0 and second.stats.disk_hits == 1
    files = sorted(p.suffix for p in (tmp_path / TEXT_CACHE_SUBDIR).iterdir())
    assert files == [".json", ".npy"]  # no temporary files left behind


def test_other_prompts_or_model_miss_the_cache(backend, tokenizer, task, tmp_path: Path) -> None:
    cache = TextEmbeddingCache.in_work_dir(tmp_path)
    class_embeddings(backend, tokenizer, task, cache)
    embedded = cache.stats.texts_embedded

    reworded = dataclasses.replace(task, templates=task.templates[:1])
    class_embeddings(backend, tokenizer, reworded, cache)
    assert cache.stats.texts_embedded == embedded + len(task.labels)

    other_model = copy.copy(backend)
    other_model.model = dataclasses.replace(backend.model, sha256="f" * 64)
    class_embeddings(other_model, tokenizer, task, cache)
    assert cache.stats.misses == 3
    assert cache.stats.texts_embedded == 2 * embedded + len(task.labels)


def test_unreadable_cache_file_is_recomputed_with_a_log_line(backend, tokenizer, task, tmp_path: Path, caplog) -> None:
    computed = class_embeddings(backend, tokenizer, task, TextEmbeddingCache.in_work_dir(tmp_path))
    (cached,) = (tmp_path / TEXT_CACHE_SUBDIR).glob("*.npy")
    cached.write_bytes(b"not an array")
    cache = TextEmbeddingCache.in_work_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="engines"):
        again = class_embeddings(backend, tokenizer, task, cache)
    assert cache.stats.misses == 1 and cache.stats.texts_embedded > 0
    assert str(cached) in caplog.text
    assert np.allclose(again, computed, atol=1e-6)


# --------------------------------------------------------------------------- series analysis


def _prepared_series(count: int, seed: int = 0) -> PreparedSeries:
    header = Dataset()
    header.Modality = "CR"
    series = SeriesHeader(series_instance_uid="1.2.3.4", header=header)
    tensors = np.random.default_rng(seed).standard_normal((count, 3, 224, 224)).astype(np.float32)
    sources = [ImageSource(sop_class_uid="1.2.840.10008.5.1.4.1.1.1", sop_instance_uid=f"1.2.3.4.{i}") for i in range(count)]
    return PreparedSeries(
        selection=SelectedSeries("chest_radiograph", series),
        tensors=tensors,
        sources=sources,
        method="test tensors",
    )


def test_analyse_series_scores_every_image_in_batches(backend, tokenizer, task) -> None:
    series = _prepared_series(5)
    cache = TextEmbeddingCache(None)
    analysis = analyse_series(series, task, backend, tokenizer, cache, batch_size=2)
    assert [image.source for image in analysis.images] == series.sources
    assert analysis.selection is series.selection and analysis.task is task
    assert analysis.preprocessing == "test tensors"

    classes = class_embeddings(backend, tokenizer, task, cache)
    embeddings = backend.encode_images(series.tensors)
    expected = zero_shot_probabilities(embeddings, classes, backend.logit_scale)
    for i, image in enumerate(analysis.images):
        assert image.probabilities.shape == (len(task.labels),)
        assert np.allclose(image.probabilities, expected[i], atol=1e-5)
        assert np.allclose(image.embedding, embeddings[i], atol=1e-5)
    assert np.allclose(analysis.probabilities, expected.mean(axis=0), atol=1e-5)
    assert analysis.top_label in task.label_names

    whole = analyse_series(series, task, backend, tokenizer, cache, batch_size=16)
    assert np.allclose(whole.probabilities, analysis.probabilities, atol=1e-5)


def test_analyse_series_rejects_inconsistent_input(backend, tokenizer, task) -> None:
    series = _prepared_series(2)
    series.sources = series.sources[:1]
    with pytest.raises(ValueError, match="chest_radiograph"):
        analyse_series(series, task, backend, tokenizer, TextEmbeddingCache(None))
