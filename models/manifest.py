"""The `manifest.json` every model directory carries: what the model is and whether to trust it.

The manifest is what the Structured Report quotes about the model (name, version, weights hash)
and what the product checks before running it (the weights hash, and the status: `validated`
models are cleared for the site, `research` models are real weights without local validation,
`untrained` models have random weights and are refused unless explicitly allowed).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from common.atomic_files import Durability, write_json_atomically
from common.site_validation import ModelValidation, PromotionRefused, validation_from_dict
from models.errors import ManifestError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
STATUSES = ("validated", "research", "untrained")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("name", "version", "source", "weights_file", "weights_sha256", "licence", "status")


@dataclass(frozen=True)
class ModelManifest:
    """Identity, provenance and trust status of one model directory.

    `weights_file` is a bare file name inside the model directory (never a path, so the folder
    can be moved). `upstream` records where converted weights came from (repository, revision,
    the sha256 of the file as downloaded) for models fetched from a hub.
    """

    name: str
    version: str
    source: str
    weights_file: str
    weights_sha256: str
    licence: str
    status: str
    created: str = ""
    architecture: str = ""
    notes: str = ""
    upstream: dict[str, str] = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    """For status `validated`: the promotion record (`common.site_validation.ModelValidation.as_dict`)."""
    format: int = MANIFEST_FORMAT

    @property
    def untrained(self) -> bool:
        return self.status == "untrained"

    def validation_record(self, where: Path | str = MANIFEST_FILE) -> ModelValidation | None:
        """The promotion record, or None when the model was never promoted."""
        if not self.validation:
            return None
        try:
            return validation_from_dict(self.validation, where)
        except PromotionRefused as exc:
            raise ManifestError(str(exc)) from None


def utc_timestamp() -> str:
    """Creation time for new manifests, ISO 8601 in UTC to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def validate_manifest(manifest: ModelManifest, where: Path | str) -> None:
    """Raise ManifestError naming `where` and the field if the manifest is not usable."""
    for name in _REQUIRED:
        value = getattr(manifest, name)
        if not isinstance(value, str) or not value.strip():
            raise ManifestError(f"{where}: field {name!r} must be a non-empty string")
    if manifest.status not in STATUSES:
        raise ManifestError(
            f"{where}: field 'status' is {manifest.status!r}; expected one of {', '.join(STATUSES)}"
        )
    if not _SHA256.match(manifest.weights_sha256):
        raise ManifestError(
            f"{where}: field 'weights_sha256' must be 64 lower-case hexadecimal digits, "
            f"got {manifest.weights_sha256!r}"
        )
    weights = manifest.weights_file
    if weights in (".", "..") or "/" in weights or "\\" in weights:
        raise ManifestError(
            f"{where}: field 'weights_file' must be a file name inside the model folder, got {weights!r}"
        )
    if not isinstance(manifest.upstream, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.upstream.items()
    ):
        raise ManifestError(f"{where}: field 'upstream' must be a mapping of strings to strings")
    if not isinstance(manifest.validation, dict):
        raise ManifestError(f"{where}: field 'validation' must be a mapping")
    manifest.validation_record(where)
    if manifest.format != MANIFEST_FORMAT:
        raise ManifestError(
            f"{where}: manifest format {manifest.format!r} is not supported (this product reads format "
            f"{MANIFEST_FORMAT})"
        )


def manifest_from_dict(raw: object, where: Path | str) -> ModelManifest:
    """Build and validate a manifest from parsed JSON; unknown keys are rejected to catch typos."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object at the top level")
    known = {f.name for f in fields(ModelManifest)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    missing = [name for name in _REQUIRED if name not in raw]
    if missing:
        raise ManifestError(f"{where}: missing required field(s) {missing}")
    manifest = ModelManifest(**raw)
    validate_manifest(manifest, where)
    return manifest


def read_manifest(model_dir: Path) -> ModelManifest:
    """Read and validate `<model_dir>/manifest.json`."""
    path = Path(model_dir) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: the model folder has no manifest; a model folder is made by "
            f"`python -m models fetch|build-tiny|build-random`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    return manifest_from_dict(raw, path)


def write_json_atomic(path: Path, document: object) -> None:
    """Write `document` as indented JSON to `path` through a temporary file and a rename."""
    # Readable by the user the product runs as, like any installed file; complete before it is named.
    write_json_atomically(Path(path), document, durability=Durability.FILE)


def write_manifest(model_dir: Path, manifest: ModelManifest) -> Path:
    """Validate and write `<model_dir>/manifest.json` atomically; returns the file's path."""
    path = Path(model_dir) / MANIFEST_FILE
    validate_manifest(manifest, path)
    write_json_atomic(path, asdict(manifest))
    return path
