"""Where a MAP run reads, writes and finds its models, resolved the way MAP hosts expect.

The MONAI Deploy SDK's `AppContext` conventions are followed exactly: command-line flags
(`-i/-o/-m/-w`) override the `HOLOSCAN_INPUT_PATH`, `HOLOSCAN_OUTPUT_PATH`, `HOLOSCAN_MODEL_PATH`
and `HOLOSCAN_WORKDIR` environment variables, which override the defaults `input`, `output` and
`models`. We resolve them here instead of calling `monai.deploy.core.init_app_context` because
importing `monai.deploy.core` imports MONAI core and torch (about 9.5 s and 1 GB resident on the
reference CPU) before the first study is even read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from app.uid_salt import UidSaltError, default_work_dir, resolve_uid_salt
from common.configuration import CONFIG_DIR

ENV_INPUT = "HOLOSCAN_INPUT_PATH"
ENV_OUTPUT = "HOLOSCAN_OUTPUT_PATH"
ENV_MODELS = "HOLOSCAN_MODEL_PATH"
ENV_WORKDIR = "HOLOSCAN_WORKDIR"
ENV_ALLOW_UNTRAINED = "BIOMEDCLIP_MAP_ALLOW_UNTRAINED"
ENV_BACKEND = "BIOMEDCLIP_MAP_BACKEND"
ENV_UID_SALT = "BIOMEDCLIP_MAP_UID_SALT"
ENV_RESULTS_JSON = "BIOMEDCLIP_MAP_RESULTS_JSON_DIR"
ENV_AUDIT_LOG = "BIOMEDCLIP_MAP_AUDIT_LOG"
ENV_DEID_EXPORT = "BIOMEDCLIP_MAP_DEID_EXPORT_DIR"
ENV_DEID_INCLUDE_INPUTS = "BIOMEDCLIP_MAP_DEID_INCLUDE_INPUTS"
ENV_CLINICAL_CONTEXT = "BIOMEDCLIP_MAP_CLINICAL_CONTEXT"
ENV_TRITON_NETLOC = "TRITON_SERVER_NETLOC"
ENV_TRITON_FALLBACK = "BIOMEDCLIP_MAP_TRITON_FALLBACK"
TRITON_FALLBACK_CHOICES = ("none", "local")

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "onnxruntime-int8", "pytorch", "pytorch-bf16")


class SettingsError(ValueError):
    """A run setting is unusable; the message names the flag or environment variable to fix."""


@dataclass(frozen=True)
class RunSettings:
    """Everything one MAP run needs to know before the graph starts."""

    input_path: Path
    output_path: Path
    models_path: Path
    work_dir: Path
    allow_untrained: bool = False
    backend: str = "auto"
    selection_rules: Path = CONFIG_DIR / "selection_rules.json"
    tasks: Path = CONFIG_DIR / "zero_shot_tasks.yaml"
    preprocessing: Path = CONFIG_DIR / "preprocessing.yaml"
    burn_config: Path = CONFIG_DIR / "burn.yaml"
    results_json_dir: Path | None = None
    uid_salt: str = "biomedclip-map"
    batch_size: int = 16
    extra: dict = field(default_factory=dict)
    audit_log: Path | None = None
    """JSON-lines audit trail, one line per processed study (default: WORKDIR/audit.jsonl)."""
    deid_export_dir: Path | None = None
    """Where de-identified copies of the results go (PS3.15 Basic Profile); None: no export."""
    deid_include_inputs: bool = False
    """Also export de-identified copies of the analysed input instances."""
    triton_server_netloc: str | None = None
    """Triton server `host:port` to send inference to (MONAI Deploy SDK's TRITON_SERVER_NETLOC); None: the environment's, else local."""
    triton_fallback: bool | None = None
    """Fall back to local inference when the Triton server is unusable (else the run or study fails); None: the environment's."""
    clinical_context: bool = False
    """Put a scrubbed clinical-context line from the study's free text into the SR (off: no source free text)."""


def _salt(work_dir: Path) -> str:
    try:
        return resolve_uid_salt(work_dir)
    except UidSaltError as exc:
        raise SettingsError(str(exc)) from exc


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _pick(flag_value: str | os.PathLike | None, env_name: str, default: str) -> tuple[Path, str]:
    """The path a setting resolves to and where it came from (for error messages)."""
    if flag_value:
        return Path(flag_value), "the command-line flag"
    if os.environ.get(env_name):
        return Path(os.environ[env_name]), f"{env_name}"
    return Path(default), f"the default ({default!r}, relative to the current folder)"


def resolve_run_settings(
    *,
    input_path: str | os.PathLike | None = None,
    output_path: str | os.PathLike | None = None,
    models_path: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    allow_untrained: bool = False,
    backend: str | None = None,
    results_json_dir: str | os.PathLike | None = None,
    selection_rules: str | os.PathLike | None = None,
    tasks: str | os.PathLike | None = None,
    audit_log: str | os.PathLike | None = None,
    deid_export: str | os.PathLike | None = None,
    deid_include_inputs: bool = False,
    triton_server_netloc: str | None = None,
    triton_fallback: str | None = None,
    clinical_context: bool = False,
) -> RunSettings:
    """Resolve flags, then environment, then defaults; check each path is usable for its role.

    Raises `SettingsError` naming the flag or variable when the input does not exist, the output
    folder cannot be created or written, or the models path does not exist.
    """
    inp, inp_from = _pick(input_path, ENV_INPUT, "input")
    out, out_from = _pick(output_path, ENV_OUTPUT, "output")
    mdl, mdl_from = _pick(models_path, ENV_MODELS, "models")

    if not inp.exists():
        raise SettingsError(f"input folder {inp} (from {inp_from}, -i/--input) does not exist")
    if not os.access(inp, os.R_OK | (os.X_OK if inp.is_dir() else 0)):
        raise SettingsError(f"input folder {inp} (from {inp_from}, -i/--input) is not readable")
    if not mdl.exists():
        raise SettingsError(
            f"model folder {mdl} (from {mdl_from}, -m/--model) does not exist; it must hold the model "
            "directory 'biomedclip/' (see 'python -m models fetch biomedclip DIR')"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"output folder {out} (from {out_from}, -o/--output) cannot be created: {exc.strerror}"
        ) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise SettingsError(f"output folder {out} (from {out_from}, -o/--output) is not writable")

    wd_value = work_dir or os.environ.get(ENV_WORKDIR)
    if wd_value:
        wd = Path(wd_value)
        try:
            wd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(f"work folder {wd} (-w/--workdir or {ENV_WORKDIR}) cannot be created: {exc.strerror}") from exc
    else:
        wd = default_work_dir()
        wd.mkdir(parents=True, exist_ok=True)

    chosen_backend = (backend or os.environ.get(ENV_BACKEND) or "auto").strip().lower()
    if chosen_backend not in BACKEND_CHOICES:
        raise SettingsError(
            f"backend {chosen_backend!r} (--backend or {ENV_BACKEND}) is not one of {', '.join(BACKEND_CHOICES)}"
        )
    json_dir = results_json_dir or os.environ.get(ENV_RESULTS_JSON)
    netloc = (triton_server_netloc or os.environ.get(ENV_TRITON_NETLOC) or "").strip() or None
    fallback = (triton_fallback or os.environ.get(ENV_TRITON_FALLBACK) or "none").strip().lower()
    if fallback not in TRITON_FALLBACK_CHOICES:
        raise SettingsError(
            f"Triton fallback {fallback!r} (--triton-fallback or {ENV_TRITON_FALLBACK}) is not one of {', '.join(TRITON_FALLBACK_CHOICES)}"
        )
    return RunSettings(
        input_path=inp,
        output_path=out,
        models_path=mdl,
        work_dir=wd,
        allow_untrained=allow_untrained or _truthy(os.environ.get(ENV_ALLOW_UNTRAINED)),
        backend=chosen_backend,
        results_json_dir=Path(json_dir) if json_dir else None,
        uid_salt=_salt(wd),
        audit_log=Path(audit_log or os.environ.get(ENV_AUDIT_LOG) or wd / "audit.jsonl"),
        deid_export_dir=Path(deid) if (deid := deid_export or os.environ.get(ENV_DEID_EXPORT)) else None,
        deid_include_inputs=deid_include_inputs or _truthy(os.environ.get(ENV_DEID_INCLUDE_INPUTS)),
        selection_rules=Path(selection_rules) if selection_rules else CONFIG_DIR / "selection_rules.json",
        tasks=Path(tasks) if tasks else CONFIG_DIR / "zero_shot_tasks.yaml",
        triton_server_netloc=netloc,
        triton_fallback=fallback == "local",
        clinical_context=clinical_context or _truthy(os.environ.get(ENV_CLINICAL_CONTEXT)),
    )
