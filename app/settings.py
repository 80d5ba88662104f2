"""Where a MAP run reads, writes and finds its models, resolved the way MAP hosts expect.

The MONAI Deploy SDK's `AppContext` conventions are followed exactly: command-line flags
(`-i/-o/-m/-w`) override the `HOLOSCAN_INPUT_PATH`, `HOLOSCAN_OUTPUT_PATH`, `HOLOSCAN_MODEL_PATH`
and `HOLOSCAN_WORKDIR` environment variables, which override the defaults `input`, `output` and
`models`. We resolve them here instead of calling `monai.deploy.core.init_app_context` because
importing `monai.deploy.core` imports MONAI core and torch (about 9.5 s and 1 GB resident on the
reference CPU) before the first study is even read. The work folder's default
(`HOLOSCAN_WORKDIR`, else one in the system temp dir) is computed in one place,
`default_work_dir`, which the engine commands use too.

This module is where the product reads its environment; the layers below take explicit values
(`engines.selection.EngineSettings` for the inference engines). One exception to "flags win":
`BIOMEDCLIP_MAP_BACKEND` wins over `--backend` and the node's `processing.backend`, as a
deployment-time setting a MAP host sets. On/off variables are read by one function, `truthy`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from app.uid_salt import UidSaltError, default_work_dir, resolve_uid_salt
from common.configuration import CONFIG_DIR
from engines.base import AUTO, BACKEND_CHOICES, BackendConfigError
from engines.selection import DEFAULT_TRITON_TIMEOUT_S, EngineSettings

__all__ = ["BACKEND_CHOICES", "RunSettings", "SettingsError", "default_work_dir", "engine_settings", "resolve_run_settings", "truthy"]

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
ENV_TRITON_TIMEOUT = "BIOMEDCLIP_MAP_TRITON_TIMEOUT_S"
ENV_TENSORRT_PRECISION = "BIOMEDCLIP_MAP_TENSORRT_PRECISION"
ENV_ADAPTER = "BIOMEDCLIP_MAP_ADAPTER"
ENV_OPERATING_POINTS = "BIOMEDCLIP_MAP_OPERATING_POINTS"
TRITON_FALLBACK_CHOICES = ("none", "local")
TRUTHY_VALUES = frozenset({"1", "true", "yes", "on"})


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
    backend: str = AUTO
    backend_origin: str = ""
    """Where `backend` came from, for messages (e.g. 'BIOMEDCLIP_MAP_BACKEND=pytorch'); empty: the setting."""
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
    """Triton server `host:port` to send inference to (MONAI Deploy SDK's TRITON_SERVER_NETLOC); None: local inference."""
    triton_fallback: bool = False
    """Fall back to local inference when the Triton server is unusable (else the run or study fails)."""
    triton_timeout_s: float = DEFAULT_TRITON_TIMEOUT_S
    """Seconds one Triton request may take (BIOMEDCLIP_MAP_TRITON_TIMEOUT_S)."""
    tensorrt_precision: str = ""
    """TensorRT image engine precision as given (BIOMEDCLIP_MAP_TENSORRT_PRECISION; empty: fp16), checked by the engine."""
    clinical_context: bool = False
    """Put a scrubbed clinical-context line from the study's free text into the SR (off: no source free text)."""
    operating_points: Path | None = None
    """The site's operating points file (`biomedclip-map operating-points`); None: probabilities only,
    and the SR says that no site-validated threshold exists."""
    adapter: Path | None = None
    """The site adapter folder (`biomedclip-map adapt`); None: zero-shot only."""
    write_reports: bool = True
    """False for site validation: the same graph runs, but its sink collects each study's analysis
    (`RunReport.analyses`) instead of writing the SR, captures and JSON results."""

    @property
    def engines(self) -> EngineSettings:
        """What this run asks of the inference engines, as the typed value the engines take."""
        return EngineSettings(
            backend=self.backend,
            origin=self.backend_origin,
            tensorrt_precision=self.tensorrt_precision,
            triton_server_netloc=self.triton_server_netloc,
            triton_fallback=self.triton_fallback,
            triton_timeout_s=self.triton_timeout_s,
        )


def _salt(work_dir: Path) -> str:
    try:
        return resolve_uid_salt(work_dir)
    except UidSaltError as exc:
        raise SettingsError(str(exc)) from exc


def truthy(value: str | None) -> bool:
    """Whether an on/off environment value means on: 1, true, yes or on (any case); anything else is off.

    The one parser of on/off environment variables, so every flag-like variable reads the same way.
    """
    return (value or "").strip().lower() in TRUTHY_VALUES


def _triton_timeout(value: str | None) -> float:
    """Seconds from BIOMEDCLIP_MAP_TRITON_TIMEOUT_S (default 60); SettingsError unless a positive number."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_TRITON_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SettingsError(f"{ENV_TRITON_TIMEOUT}={text!r}: expected a positive number of seconds")
    return seconds


def engine_settings(
    backend: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    triton_server_netloc: str | None = None,
    triton_fallback: str | None = None,
) -> EngineSettings:
    """The engines' settings from the configured values and the environment (default: this process's).

    `BIOMEDCLIP_MAP_BACKEND` wins over the configured `backend` (a deployment-time setting, as
    MAP hosts set it), which wins over `auto`; a flag or configuration value of the Triton server
    and fallback wins over `TRITON_SERVER_NETLOC` / `BIOMEDCLIP_MAP_TRITON_FALLBACK`. Raises
    BackendConfigError naming the variable or setting when a backend name is unknown, and
    SettingsError for a malformed Triton fallback or timeout.
    """
    env = os.environ if environ is None else environ
    env_backend = env.get(ENV_BACKEND, "").strip().lower()
    if env_backend:
        choice, origin = env_backend, f"{ENV_BACKEND}={env_backend}"
    else:
        choice, origin = (backend or AUTO).strip().lower(), f"backend setting {backend or AUTO!r}"
    netloc = (triton_server_netloc or env.get(ENV_TRITON_NETLOC) or "").strip() or None
    fallback = (triton_fallback or env.get(ENV_TRITON_FALLBACK) or "none").strip().lower()
    if fallback not in TRITON_FALLBACK_CHOICES:
        raise SettingsError(
            f"Triton fallback {fallback!r} (--triton-fallback or {ENV_TRITON_FALLBACK}) is not one of {', '.join(TRITON_FALLBACK_CHOICES)}"
        )
    return EngineSettings(
        backend=choice,
        origin=origin,
        tensorrt_precision=env.get(ENV_TENSORRT_PRECISION, ""),
        triton_server_netloc=netloc,
        triton_fallback=fallback == "local",
        triton_timeout_s=_triton_timeout(env.get(ENV_TRITON_TIMEOUT)) if netloc else DEFAULT_TRITON_TIMEOUT_S,
    )


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
    operating_points: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
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

    wd = Path(work_dir) if work_dir else default_work_dir()
    try:
        wd.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"work folder {wd} (-w/--workdir or {ENV_WORKDIR}) cannot be created: {exc.strerror}") from exc

    try:
        engines = engine_settings(backend, triton_server_netloc=triton_server_netloc, triton_fallback=triton_fallback)
    except BackendConfigError as exc:
        raise SettingsError(f"{exc} (--backend or {ENV_BACKEND})") from exc
    json_dir = results_json_dir or os.environ.get(ENV_RESULTS_JSON)
    return RunSettings(
        input_path=inp,
        output_path=out,
        models_path=mdl,
        work_dir=wd,
        allow_untrained=allow_untrained or truthy(os.environ.get(ENV_ALLOW_UNTRAINED)),
        backend=engines.backend,
        backend_origin=engines.origin,
        results_json_dir=Path(json_dir) if json_dir else None,
        uid_salt=_salt(wd),
        audit_log=Path(audit_log or os.environ.get(ENV_AUDIT_LOG) or wd / "audit.jsonl"),
        deid_export_dir=Path(deid) if (deid := deid_export or os.environ.get(ENV_DEID_EXPORT)) else None,
        deid_include_inputs=deid_include_inputs or truthy(os.environ.get(ENV_DEID_INCLUDE_INPUTS)),
        selection_rules=Path(selection_rules) if selection_rules else CONFIG_DIR / "selection_rules.json",
        tasks=Path(tasks) if tasks else CONFIG_DIR / "zero_shot_tasks.yaml",
        triton_server_netloc=engines.triton_server_netloc,
        triton_fallback=engines.triton_fallback,
        triton_timeout_s=engines.triton_timeout_s,
        tensorrt_precision=engines.tensorrt_precision,
        clinical_context=clinical_context or truthy(os.environ.get(ENV_CLINICAL_CONTEXT)),
        operating_points=Path(points) if (points := operating_points or os.environ.get(ENV_OPERATING_POINTS)) else None,
        adapter=Path(folder) if (folder := adapter or os.environ.get(ENV_ADAPTER)) else None,
    )
