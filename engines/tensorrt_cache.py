"""The TensorRT engine cache: where engines live, what they were built for, whether one can be used.

A serialized TensorRT engine only runs with the TensorRT version that built it, on the GPU model
(compute capability) it was built for, and computes the weights it was built from. Each engine
is therefore stored with a JSON sidecar recording its `EngineKey` (model weights sha256, tower,
precision, optimisation profile, TensorRT version, GPU name and compute capability) and the size
and sha256 of the engine bytes:

    <work dir>/tensorrt/<weights sha256>/<tower>-<precision>.engine
    <work dir>/tensorrt/<weights sha256>/<tower>-<precision>.json

The path depends only on the model, tower and precision, so an engine built for another GPU or
TensorRT version is found, recognised by its sidecar and replaced (with one log line naming the
difference), rather than silently piling up beside it. A truncated or corrupted engine fails the
size or sha256 check. Both files are written under temporary names and renamed, engine first and
sidecar last, so an interrupted build leaves either the old pair or no valid pair, never a half
engine that looks valid. Nothing here imports TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.atomic_files import Durability, write_atomically

ENGINE_CACHE_SUBDIR = "tensorrt"
ENGINE_SUFFIX = ".engine"
METADATA_SUFFIX = ".json"
CACHE_FORMAT = 1

Profile = tuple[tuple[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]], ...]
"""Per input name: (min, opt, max) shapes, as nested tuples so keys compare and hash."""


class EngineCacheError(RuntimeError):
    """An engine cannot be written to the cache; the message names the folder."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine is valid for; any difference means the engine must be rebuilt."""

    model_sha256: str
    tower: str
    """'image' or 'text'."""
    precision: str
    """'fp16' or 'int8'."""
    profile: Profile
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def as_dict(self) -> dict:
        """JSON-friendly form (profile shapes as lists)."""
        data = asdict(self)
        data["profile"] = {name: [list(s) for s in shapes] for name, shapes in self.profile}
        return data

    @staticmethod
    def from_dict(data: dict) -> "EngineKey":
        """The key recorded in a sidecar; raises KeyError/TypeError/ValueError on malformed data."""
        profile = tuple(
            (str(name), tuple(tuple(int(v) for v in shape) for shape in shapes))
            for name, shapes in data["profile"].items()
        )
        return EngineKey(
            model_sha256=str(data["model_sha256"]),
            tower=str(data["tower"]),
            precision=str(data["precision"]),
            profile=profile,
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
        )

    def digest(self) -> str:
        """sha256 of the canonical key (used in log lines and calibration cache names)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def key_differences(found: EngineKey, wanted: EngineKey) -> list[str]:
    """What differs between an engine's recorded key and the wanted one, in words an administrator reads."""
    differences = []
    if found.model_sha256 != wanted.model_sha256:
        differences.append(f"built from weights {found.model_sha256[:12]}…, the model has {wanted.model_sha256[:12]}…")
    if found.tensorrt_version != wanted.tensorrt_version:
        differences.append(f"built with TensorRT {found.tensorrt_version}, this is TensorRT {wanted.tensorrt_version}")
    if (found.gpu_name, found.compute_capability) != (wanted.gpu_name, wanted.compute_capability):
        differences.append(
            f"built for {found.gpu_name} (compute capability {found.compute_capability}), "
            f"this GPU is {wanted.gpu_name} ({wanted.compute_capability})"
        )
    if (found.tower, found.precision) != (wanted.tower, wanted.precision):
        differences.append(f"it is a {found.tower} {found.precision} engine, not {wanted.tower} {wanted.precision}")
    if found.profile != wanted.profile:
        differences.append("built for other input shapes (optimisation profile)")
    return differences


@dataclass(frozen=True)
class CachedEngine:
    """Paths of one cache entry and what its sidecar says."""

    engine_path: Path
    metadata_path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def max_batch(self) -> int:
        """The largest batch the engine was built for (smaller than asked if the GPU ran out of memory)."""
        return int(self.metadata.get("built_max_batch", 0))


def engine_cache_dir(work_dir: Path, model_sha256: str) -> Path:
    """The folder holding the engines of one model's weights."""
    return Path(work_dir) / ENGINE_CACHE_SUBDIR / model_sha256


def engine_paths(work_dir: Path, key: EngineKey) -> tuple[Path, Path]:
    """(engine file, sidecar) for `key`."""
    folder = engine_cache_dir(work_dir, key.model_sha256)
    stem = f"{key.tower}-{key.precision}"
    return folder / f"{stem}{ENGINE_SUFFIX}", folder / f"{stem}{METADATA_SUFFIX}"


def sha256_of(path: Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cached_engine_problem(work_dir: Path, key: EngineKey) -> tuple[CachedEngine | None, str | None]:
    """The cached engine for `key` and None, or (None, why it cannot be used: missing, other key, damaged)."""
    engine_path, metadata_path = engine_paths(work_dir, key)
    if not engine_path.exists() and not metadata_path.exists():
        return None, f"no engine cached in {engine_path.parent}"
    if not metadata_path.is_file():
        return None, f"{engine_path} has no sidecar {metadata_path.name} (an interrupted build or a copied file)"
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        found = EngineKey.from_dict(metadata["key"])
    except FileNotFoundError:
        return None, f"{metadata_path} disappeared while it was read"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{metadata_path} is unreadable ({type(exc).__name__}: {exc})"
    differences = key_differences(found, key)
    if differences:
        return None, f"the cached engine {engine_path.name} does not fit: " + "; ".join(differences)
    if not engine_path.is_file():
        return None, f"{engine_path} is missing although its sidecar exists"
    size = engine_path.stat().st_size
    if size != metadata.get("size_bytes"):
        return None, f"{engine_path} has {size} bytes, its sidecar says {metadata.get('size_bytes')} (truncated or replaced)"
    if sha256_of(engine_path) != metadata.get("sha256"):
        return None, f"{engine_path} does not match the sha256 in its sidecar (the file is corrupt)"
    return CachedEngine(engine_path, metadata_path, metadata), None


def _write_atomic(path: Path, data: bytes) -> None:
    """An engine or its sidecar: complete on disk before it is named (a torn engine is never loaded)."""
    write_atomically(path, data, durability=Durability.FILE)


def store_engine(work_dir: Path, key: EngineKey, engine: bytes, extra: dict | None = None) -> CachedEngine:
    """Write `engine` and its sidecar for `key` atomically (sidecar removed first, written last).

    Raises EngineCacheError naming the folder when it cannot be written.
    """
    engine_path, metadata_path = engine_paths(work_dir, key)
    metadata = {
        "format": CACHE_FORMAT,
        "key": key.as_dict(),
        "size_bytes": len(engine),
        "sha256": hashlib.sha256(engine).hexdigest(),
        **(extra or {}),
    }
    try:
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        metadata_path.unlink(missing_ok=True)  # the old sidecar must never describe the new bytes
        _write_atomic(engine_path, bytes(engine))
        _write_atomic(metadata_path, (json.dumps(metadata, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise EngineCacheError(f"cannot write the TensorRT engine cache in {engine_path.parent}: {exc.strerror or exc}") from exc
    return CachedEngine(engine_path, metadata_path, metadata)


def discard_engine(work_dir: Path, key: EngineKey) -> None:
    """Remove the cache entry of `key` (sidecar first), e.g. after TensorRT refused to load it."""
    engine_path, metadata_path = engine_paths(work_dir, key)
    metadata_path.unlink(missing_ok=True)
    engine_path.unlink(missing_ok=True)
