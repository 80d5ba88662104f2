"""Finding the ONNX files for a model: shipped in the model folder, cached in the work folder, or exported.

ONNX files are only valid for the weights they were exported from, so each folder of them carries
`onnx.json` with that weights sha256, and is used only if it equals the model's. Exports are
cached under `<work dir>/onnx/<weights sha256>/`, so a model is exported once per work folder
and a different model never picks up another model's graphs. Nothing here imports torch unless
an export is actually needed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from engines.onnx_export import IMAGE_ONNX, ONNX_METADATA, TEXT_ONNX, OnnxExportError
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

ONNX_CACHE_SUBDIR = "onnx"


@dataclass(frozen=True)
class OnnxFiles:
    """A checked folder of ONNX graphs for one model's weights."""

    folder: Path
    origin: str
    """'shipped' (in the model folder), 'cached' (work folder) or 'exported' (just now)."""

    @property
    def image_model(self) -> Path:
        return self.folder / IMAGE_ONNX

    @property
    def text_model(self) -> Path:
        return self.folder / TEXT_ONNX


def onnx_cache_dir(work_dir: Path, weights_sha256: str) -> Path:
    """Where the ONNX export of the weights with `weights_sha256` is cached under `work_dir`."""
    return Path(work_dir) / ONNX_CACHE_SUBDIR / weights_sha256


def read_export_metadata(metadata_path: Path, weights_sha256: str) -> tuple[dict, str | None]:
    """The metadata JSON written next to an export, and why it does not fit `weights_sha256` (or None)."""
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{metadata_path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"{metadata_path} cannot be read ({exc})"
    if not isinstance(metadata, dict):
        return {}, f"{metadata_path} does not hold a JSON object"
    if metadata.get("weights_sha256") != weights_sha256:
        return metadata, f"{metadata_path} was made from weights {metadata.get('weights_sha256')}, not the model's {weights_sha256}"
    return metadata, None


def onnx_folder_problem(folder: Path, weights_sha256: str) -> str | None:
    """Why the ONNX files in `folder` cannot be used for weights `weights_sha256`, or None if they can."""
    _, problem = read_export_metadata(folder / ONNX_METADATA, weights_sha256)
    if problem:
        return problem
    for name in (IMAGE_ONNX, TEXT_ONNX):
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
    return None


def onnx_files_for(model: ModelDirectory, work_dir: Path) -> OnnxFiles:
    """The ONNX files for `model`: shipped ones if they match its weights, else the work-folder cache, else a new export.

    Raises OnnxExportError if an export is needed and cannot be made (for example without torch).
    """
    shipped = model.shipped_onnx_dir
    if shipped.is_dir():
        problem = onnx_folder_problem(shipped, model.sha256)
        if problem is None:
            return OnnxFiles(shipped, "shipped")
        log.warning("ignoring the ONNX files shipped with the model: %s", problem)
    cached = onnx_cache_dir(work_dir, model.sha256)
    if cached.exists():
        problem = onnx_folder_problem(cached, model.sha256)
        if problem is None:
            return OnnxFiles(cached, "cached")
        log.warning("discarding unusable cached ONNX files and exporting again: %s", problem)
        shutil.rmtree(cached)
    log.info("exporting model %s %s to ONNX in %s (once per model weights)", model.manifest.name, model.manifest.version, cached)
    from engines.onnx_export import export_onnx

    export_onnx(model, cached)
    problem = onnx_folder_problem(cached, model.sha256)
    if problem is not None:
        raise OnnxExportError(f"the ONNX export in {cached} is unusable: {problem}")
    return OnnxFiles(cached, "exported")
