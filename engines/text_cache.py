"""Cache of zero-shot class embeddings, per (model weights sha256, prompt set), in memory and on disk.

Class embeddings depend only on the model's weights and on the prompts of each label, so they are
computed once and reused by every study and every later run with the same work folder. The key
is the sha256 of the weights hash and the exact prompts (in label order); changing either misses.
Files are `<work dir>/text-embeddings/<key>.npy` with a readable `<key>.json` beside them, each
written under a temporary name and renamed. A cache that cannot be written or read is reported
with one log line and the embeddings are computed (the cache only saves time).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.atomic_files import Durability, write_atomically, write_json_atomically

log = logging.getLogger(__name__)

TEXT_CACHE_SUBDIR = "text-embeddings"
_FORMAT = 1


@dataclass
class TextCacheStats:
    """Counts for one cache object: how many texts were embedded and how lookups were answered."""

    texts_embedded: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0


def cache_key(model_sha256: str, prompt_sets: Sequence[Sequence[str]]) -> str:
    """The cache key of a prompt set (one list of prompts per class, in class order) for a model."""
    canonical = json.dumps(
        {"format": _FORMAT, "model": model_sha256, "prompts": [list(p) for p in prompt_sets]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class TextEmbeddingCache:
    """Class-embedding matrices by (model sha256, prompt set); `directory=None` keeps them in memory only."""

    def __init__(self, directory: Path | None, shipped: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.shipped = Path(shipped) if shipped is not None else None
        """Read-only embeddings shipped in the model folder (`onnx/text-embeddings/`), looked up before `directory`."""
        self.stats = TextCacheStats()
        self._memory: dict[str, np.ndarray] = {}

    @classmethod
    def in_work_dir(cls, work_dir: Path, shipped_onnx_dir: Path | None = None) -> "TextEmbeddingCache":
        """The cache kept under the run's work folder, after the embeddings shipped in `shipped_onnx_dir` (if given).

        A model folder prepared by `python -m app.engine_commands quantize` ships the bundled
        tasks' class embeddings, so a run with an empty work folder loads no text tower for them.
        """
        shipped = Path(shipped_onnx_dir) / TEXT_CACHE_SUBDIR if shipped_onnx_dir is not None else None
        return cls(Path(work_dir) / TEXT_CACHE_SUBDIR, shipped)

    def get_or_compute(
        self,
        model_sha256: str,
        prompt_sets: Sequence[Sequence[str]],
        compute: Callable[[Sequence[Sequence[str]]], np.ndarray],
    ) -> np.ndarray:
        """The (C, D) class embeddings for `prompt_sets`, calling `compute(prompt_sets)` only on a miss.

        A miss counts every prompt of the set in `stats.texts_embedded`.
        """
        key = cache_key(model_sha256, prompt_sets)
        if key in self._memory:
            self.stats.memory_hits += 1
            return self._memory[key].copy()
        loaded = self._load(key, len(prompt_sets))
        if loaded is not None:
            self.stats.disk_hits += 1
            self._memory[key] = loaded
            return loaded.copy()
        self.stats.misses += 1
        embeddings = np.ascontiguousarray(compute(prompt_sets), dtype=np.float32)
        self.stats.texts_embedded += sum(len(p) for p in prompt_sets)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompt_sets):
            raise ValueError(f"class embeddings must be ({len(prompt_sets)}, D), got {embeddings.shape}")
        self._memory[key] = embeddings
        self._store(key, embeddings, model_sha256, prompt_sets)
        return embeddings.copy()

    def _load(self, key: str, classes: int) -> np.ndarray | None:
        for folder in (self.shipped, self.directory):
            if folder is not None and (folder / f"{key}.npy").is_file():
                found = self._load_file(folder / f"{key}.npy", classes)
                if found is not None:
                    return found
        return None

    def _load_file(self, path: Path, classes: int) -> np.ndarray | None:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("text embedding cache file %s is unreadable (%s); computing the embeddings again", path, exc)
            return None
        if array.ndim != 2 or array.shape[0] != classes or array.dtype != np.float32:
            log.warning(
                "text embedding cache file %s holds %s %s, not (%d, D) float32; computing the embeddings again",
                path, array.shape, array.dtype, classes,
            )
            return None
        return array

    def _store(self, key: str, embeddings: np.ndarray, model_sha256: str, prompt_sets: Sequence[Sequence[str]]) -> None:
        if self.directory is None:
            return
        description = {"model_sha256": model_sha256, "prompts": [list(p) for p in prompt_sets], "shape": list(embeddings.shape)}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # A cache: rebuilt when missing, so a rename lost in a power cut costs nothing but time.
            write_json_atomically(self.directory / f"{key}.json", description, durability=Durability.REPLACE_ONLY)
            write_atomically(
                self.directory / f"{key}.npy", lambda h: np.save(h, embeddings, allow_pickle=False), durability=Durability.REPLACE_ONLY
            )
        except OSError as exc:
            log.warning(
                "cannot write the text embedding cache in %s (%s); embeddings are kept for this run only",
                self.directory, exc.strerror or exc,
            )
