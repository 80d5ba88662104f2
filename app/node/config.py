"""The DICOM node's configuration: one YAML file, validated at start-up, plus command-line overrides.

Every setting has a dotted key (``dicom.port``, ``spool.quiet_period_s``, ``destinations[0].host``)
and every error names that key, the file, and where a command-line flag set the value, the flag, so
an administrator can fix it without reading code. Unknown keys are errors too (a misspelt key would
otherwise be silently ignored). Relative paths in the file are resolved against the file's folder.

The schema is written with pydantic, whose validation reports the location of each error.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize, Field, ValidationError, field_validator, model_validator

from engines.base import BACKEND_CHOICES, BackendConfigError, checked_backend_name
from common.configuration import (
    ConfigModel,
    ConfigurationError,
    dotted_key,
    load_yaml_file,
)

DEFAULT_AE_TITLE = "BIOMEDCLIP"
DEFAULT_DICOM_PORT = 11112
DEFAULT_HTTP_PORT = 8787
AE_TITLE_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
"""PS3.5 AE value representation: up to 16 characters of the default repertoire, no backslash."""
DESTINATION_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class NodeConfigError(ConfigurationError):
    """The node's configuration is unusable; the message names the key (and file or flag) to fix."""


def _ae_title(value: str) -> str:
    """The AE title without padding; ValueError when it is not a valid AE value."""
    text = str(value).strip()
    if not AE_TITLE_PATTERN.match(text):
        raise ValueError(
            "an AE title is 1 to 16 characters, letters, digits, spaces and punctuation except backslash"
        )
    return text


class ServerTLS(ConfigModel):
    """TLS for incoming associations (DICOM TLS, PS3.15 Annex B)."""

    certificate: Path = Field(description="PEM certificate (chain) the node presents")
    private_key: Path = Field(description="PEM private key of the certificate")
    client_ca_certificates: Path | None = Field(
        None, description="PEM CA bundle; when set, senders must present a certificate it signed"
    )


class ClientTLS(ConfigModel):
    """TLS for an outgoing association to a destination."""

    ca_certificates: Path | None = Field(None, description="PEM CA bundle that signed the destination's certificate")
    certificate: Path | None = Field(None, description="PEM client certificate, where the destination asks for one")
    private_key: Path | None = None
    server_hostname: str | None = Field(None, description="name to verify in the destination's certificate (default: host)")

    @model_validator(mode="after")
    def _key_with_certificate(self) -> "ClientTLS":
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: set both or neither")
        return self


class DicomSettings(ConfigModel):
    """The Storage SCP: who may send, on which address, what is accepted."""

    ae_title: str = DEFAULT_AE_TITLE
    bind: str = "127.0.0.1"
    port: int = Field(DEFAULT_DICOM_PORT, ge=1, le=65535)
    allow_calling_aes: list[str] = Field(
        default_factory=list, description="calling AE titles allowed to associate; empty allows any (not recommended)"
    )
    require_called_ae_title: bool = True
    accept_sop_classes: Literal["analysable", "all-storage"] = Field(
        "all-storage",
        description="'analysable': only the image storage classes the series selector can use; "
        "'all-storage': every storage class is accepted (the others are kept but never analysed)",
    )
    max_associations: int = Field(16, ge=1, le=256, description="accepted associations open at once, all senders together")
    max_associations_per_address: int = Field(
        8, ge=1, le=256, description="accepted associations open at once from one remote IP address"
    )
    max_pending_connections: int = Field(
        64, ge=1, le=1024, description="connections that have not completed an association yet, in all; more are closed at once"
    )
    max_pending_per_address: int = Field(
        4, ge=1, le=1024, description="connections from one remote IP address that have not completed an association yet"
    )
    acse_timeout_s: float = Field(
        5.0, gt=0, le=120,
        description="ARTIM/ACSE timeout: a connection must send its association request (and finish a TLS handshake) "
        "within this time, and a stalled PDU before the association is cut off after it",
    )
    max_pdu_bytes: int = Field(
        262144, ge=0, description="largest PDU the node accepts (0: no limit); bigger PDUs mean fewer round trips"
    )
    network_timeout_s: float = Field(60.0, gt=0)
    tcp_nodelay: bool = Field(True, description="disable Nagle's algorithm on DICOM sockets")
    tls: ServerTLS | None = None

    @field_validator("ae_title")
    @classmethod
    def _validate_ae(cls, value: str) -> str:
        return _ae_title(value)

    @model_validator(mode="after")
    def _per_address_within_total(self) -> "DicomSettings":
        if self.max_associations_per_address > self.max_associations:
            raise ValueError("max_associations_per_address must not be larger than max_associations")
        if self.max_pending_per_address > self.max_pending_connections:
            raise ValueError("max_pending_per_address must not be larger than max_pending_connections")
        return self

    @field_validator("allow_calling_aes")
    @classmethod
    def _validate_calling(cls, values: list[str]) -> list[str]:
        return [_ae_title(v) for v in values]

    @field_validator("bind")
    @classmethod
    def _validate_bind(cls, value: str) -> str:
        text = value.strip()
        if text in {"", "0.0.0.0", "::", "localhost"}:
            return text
        try:
            ipaddress.ip_address(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an IP address (use 127.0.0.1, 0.0.0.0 or one of this host's addresses)") from exc
        return text


class SpoolSettings(ConfigModel):
    """Where received instances, queued studies and results wait, durably, on disk."""

    path: Path
    quiet_period_s: float = Field(
        5.0, gt=0, le=3600, description="a study is complete when no instance of it arrived for this long"
    )
    max_bytes: ByteSize | None = Field(
        None, description="refuse new instances (Out of Resources) once the spool holds this much, e.g. '200GiB'"
    )
    min_free_bytes: ByteSize = Field(
        ByteSize(512 * 1024 * 1024), description="refuse new instances when the disk has less free space than this"
    )
    result_reserve_bytes: ByteSize = Field(
        ByteSize(32 * 1024 * 1024),
        description="disk space kept free for the results of each acknowledged, unfinished study before another "
        "instance is acknowledged",
    )
    retention_hours: float = Field(
        72.0, ge=0, description="how long processed studies and delivered results are kept (late instances re-run the study); "
        "under quota or disk pressure they are removed earlier, oldest first"
    )


class ProcessingSettings(ConfigModel):
    """The application graph run per study, with the model kept warm."""

    models: Path
    allow_untrained: bool = False
    backend: str | None = Field(None, description=f"{' | '.join(BACKEND_CHOICES)} (default: auto)")
    work_dir: Path | None = Field(None, description="caches (ONNX export, text embeddings); default <spool>/work")
    max_attempts: int = Field(3, ge=1, le=100, description="runs of a failing study before it is quarantined")
    retry_delay_s: float = Field(30.0, ge=0)
    urgent_priority_values: list[str] = Field(
        default_factory=lambda: ["STAT", "HIGH"],
        description="values of the DICOM priority attributes that make a study urgent",
    )
    urgent_keywords: list[str] = Field(
        default_factory=lambda: ["STAT", "urgent", "emergency"],
        description="whole words in the clinical history / reason for the request that make a study urgent",
    )
    rules: Path | None = None
    tasks: Path | None = None
    results_json: Path | None = None
    audit_log: Path | None = Field(None, description="audit trail, one JSON line per study (default: <work_dir>/audit.jsonl)")
    deid_export: Path | None = Field(None, description="also write de-identified copies of the results here (outside the spool)")
    deid_include_inputs: bool = Field(False, description="with deid_export: also export the analysed inputs, de-identified")
    clinical_context: bool = Field(False, description="add a scrubbed clinical-context line from the study's free text to the SR")
    operating_points: Path | None = Field(
        None, description="the site's operating points file ('biomedclip-map operating-points'); checked against the model and prompts at start"
    )
    run_arguments: list[str] | None = Field(None, description="no longer supported: use the processing keys above")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return checked_backend_name(value, "processing.backend")
        except BackendConfigError as exc:
            raise ValueError(str(exc).removeprefix("processing.backend: ")) from exc

    @field_validator("run_arguments")
    @classmethod
    def _no_run_arguments(cls, value: list[str] | None) -> None:
        if value:
            raise ValueError(
                "free-form run options are no longer taken; set processing.audit_log, processing.deid_export, "
                "processing.deid_include_inputs, processing.clinical_context, processing.results_json, processing.rules "
                "or processing.tasks instead"
            )
        return None

    @field_validator("urgent_priority_values", "urgent_keywords")
    @classmethod
    def _non_empty_words(cls, values: list[str]) -> list[str]:
        cleaned = [str(v).strip() for v in values]
        if any(not v for v in cleaned):
            raise ValueError("entries must not be empty")
        return cleaned


class DestinationSettings(ConfigModel):
    """Where results go: a DICOM C-STORE SCP (ae_title/host/port) or a DICOMweb STOW-RS endpoint."""

    name: str
    ae_title: str | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    calling_ae_title: str | None = Field(None, description="AE title the node uses towards this destination (default: dicom.ae_title)")
    tls: ClientTLS | None = None
    stow_url: str | None = Field(None, description="DICOMweb base URL for STOW-RS, e.g. https://pacs/dicom-web")
    token_env: str | None = Field(None, description="environment variable holding a bearer token for the DICOMweb endpoint")
    timeout_s: float = Field(30.0, gt=0)

    @field_validator("name")
    @classmethod
    def _validate_name(cls, value: str) -> str:
        if not DESTINATION_NAME_PATTERN.match(value):
            raise ValueError("a destination name is 1-32 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return value

    @field_validator("ae_title", "calling_ae_title")
    @classmethod
    def _validate_ae(cls, value: str | None) -> str | None:
        return None if value is None else _ae_title(value)

    @model_validator(mode="after")
    def _one_kind(self) -> "DestinationSettings":
        dimse = [self.ae_title is not None, self.host is not None, self.port is not None]
        if self.stow_url is not None:
            if any(dimse):
                raise ValueError("set either stow_url (DICOMweb) or ae_title/host/port (DICOM), not both")
            if not re.match(r"^https?://", self.stow_url):
                raise ValueError("stow_url must start with http:// or https://")
        elif not all(dimse):
            raise ValueError("a DICOM destination needs ae_title, host and port (or give stow_url for DICOMweb)")
        return self

    @property
    def is_dicomweb(self) -> bool:
        return self.stow_url is not None

    def describe(self) -> str:
        """How the destination is named in logs: its name and address (no patient data)."""
        if self.is_dicomweb:
            return f"{self.name} (STOW-RS {self.stow_url})"
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"


class DeliverySettings(ConfigModel):
    """The outbox: how results are retried when a destination is down or refuses them."""

    retry_initial_s: float = Field(5.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    max_rejections: int = Field(
        5, ge=1, description="refusals (a failure status) of one result before it is set aside as undeliverable"
    )
    reachability_cache_s: float = Field(10.0, ge=0, description="how long /readyz reuses a destination check")

    @model_validator(mode="after")
    def _ordered(self) -> "DeliverySettings":
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be smaller than retry_initial_s")
        return self


class HttpSettings(ConfigModel):
    """The observability endpoint: /healthz, /readyz, /metrics, on a loopback address only."""

    bind: str = "127.0.0.1"
    port: int = Field(DEFAULT_HTTP_PORT, ge=1, le=65535)

    @field_validator("bind")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        text = value.strip()
        if text == "localhost":
            return "127.0.0.1"
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an IP address") from exc
        if not address.is_loopback:
            raise ValueError("the observability endpoint listens on a loopback address only (127.0.0.1 or ::1)")
        return text


class NodeConfig(ConfigModel):
    """The whole configuration of `biomedclip-map serve`."""

    dicom: DicomSettings = Field(default_factory=DicomSettings)
    spool: SpoolSettings
    processing: ProcessingSettings
    destinations: list[DestinationSettings] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, values: list[DestinationSettings]) -> list[DestinationSettings]:
        names = [d.name for d in values]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique; repeated: {', '.join(duplicates)}")
        return values

    @property
    def work_dir(self) -> Path:
        return self.processing.work_dir or self.spool.path / "work"

    @property
    def uid_salt(self) -> str:
        """The salt of the study references: the same one every run of the node uses (same work folder).

        It is $BIOMEDCLIP_MAP_UID_SALT if set, else the installation salt kept in the work folder
        (`app.uid_salt`); raises `UidSaltError` naming the file if it is unusable.
        """
        from app.uid_salt import resolve_uid_salt

        return resolve_uid_salt(self.work_dir)


# --------------------------------------------------------------------------- command-line overrides


def parse_destination(text: str, index: int) -> dict[str, Any]:
    """`AE@HOST:PORT` (the --destination flag) as a destination entry named after its AE title."""
    match = re.match(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$", text.strip())
    if not match:
        raise NodeConfigError(f"--destination {text!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", match["ae"].strip().lower()) or f"destination{index + 1}"
    return {"name": f"{name}" if index == 0 else f"{name}-{index + 1}", "ae_title": match["ae"],
            "host": match["host"].strip("[]"), "port": int(match["port"])}


FLAG_KEYS = {
    "ae_title": ("--ae-title", ("dicom", "ae_title")),
    "bind": ("--bind", ("dicom", "bind")),
    "port": ("--port", ("dicom", "port")),
    "models": ("--models", ("processing", "models")),
    "spool": ("--spool", ("spool", "path")),
    "allow_calling_ae": ("--allow-calling-ae", ("dicom", "allow_calling_aes")),
    "http_port": ("--http-port", ("http", "port")),
    "backend": ("--backend", ("processing", "backend")),
}


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge command-line values into the raw configuration; return it and {dotted key: flag}."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    flags: dict[str, str] = {}
    for option, (flag, (section, key)) in FLAG_KEYS.items():
        value = overrides.get(option)
        if value is None or value == []:
            continue
        block = merged.setdefault(section, {})
        if not isinstance(block, dict):
            raise NodeConfigError(f"{section}: must be a mapping of settings")
        block[key] = str(value) if isinstance(value, Path) else value
        flags[f"{section}.{key}"] = flag
    if overrides.get("allow_untrained"):
        merged.setdefault("processing", {})["allow_untrained"] = True
        flags["processing.allow_untrained"] = "--allow-untrained"
    destinations = overrides.get("destination") or []
    if destinations:
        merged["destinations"] = [parse_destination(text, i) for i, text in enumerate(destinations)]
        flags["destinations"] = "--destination"
    if overrides.get("log_level"):
        merged["log_level"] = overrides["log_level"]
        flags["log_level"] = "--log-level"
    return merged, flags


def _explain(exc: ValidationError, source: str, flags: dict[str, str]) -> str:
    """One line per problem: the dotted key, where its value came from, and what is wrong."""
    lines = []
    for error in exc.errors(include_url=False):
        key = dotted_key(tuple(error["loc"]))
        flag = next((f for k, f in flags.items() if key == k or key.startswith(k + ".") or key.startswith(k + "[")), None)
        origin = f" (from {flag})" if flag else ""
        message = error["msg"]
        if error["type"] == "missing":
            message = {
                "spool": "required section is missing; it needs at least spool.path (or pass --spool)",
                "spool.path": "required setting is missing (or pass --spool)",
                "processing": "required section is missing; it needs at least processing.models (or pass --models)",
                "processing.models": "required setting is missing (or pass --models)",
            }.get(key, "required setting is missing")
        elif error["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling and section)"
        lines.append(f"{key}{origin}: {message}")
    return f"configuration {source} is invalid:\n  " + "\n  ".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are taken relative to the file's folder (not the current folder)."""
    path_keys = {
        "spool": ["path"],
        "processing": ["models", "work_dir", "rules", "tasks", "results_json", "audit_log", "deid_export", "operating_points"],
    }
    out = dict(raw)
    for section, keys in path_keys.items():
        block = out.get(section)
        if isinstance(block, dict):
            block = dict(block)
            for key in keys:
                value = block.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    block[key] = str(base / value)
            out[section] = block
    tls = (out.get("dicom") or {}).get("tls") if isinstance(out.get("dicom"), dict) else None
    if isinstance(tls, dict):
        out["dicom"] = dict(out["dicom"])
        out["dicom"]["tls"] = {k: (str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v) for k, v in tls.items()}
    if isinstance(out.get("destinations"), list):
        fixed = []
        for entry in out["destinations"]:
            if isinstance(entry, dict) and isinstance(entry.get("tls"), dict):
                entry = dict(entry)
                entry["tls"] = {
                    k: (str(base / v) if isinstance(v, str) and k != "server_hostname" and not Path(v).is_absolute() else v)
                    for k, v in entry["tls"].items()
                }
            fixed.append(entry)
        out["destinations"] = fixed
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping; NodeConfigError naming the file (and line) when it cannot be used."""
    document = load_yaml_file(Path(path), NodeConfigError, "configuration file")
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise NodeConfigError(f"configuration file {path}: the top level must be a mapping of sections (dicom:, spool:, ...)")
    return _resolve_paths(document, Path(path).resolve().parent)


def load_node_config(path: Path | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read the YAML file (if any), apply command-line overrides, validate; NodeConfigError on any problem."""
    raw = read_config_file(path) if path is not None else {}
    merged, flags = apply_overrides(raw, overrides or {})
    source = str(path) if path is not None else "(command-line flags only)"
    try:
        return NodeConfig.model_validate(merged)
    except ValidationError as exc:
        raise NodeConfigError(_explain(exc, source, flags)) from None
