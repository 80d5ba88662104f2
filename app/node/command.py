"""`biomedclip-map serve`: `--check-config`, and running until a signal (the flags are parsed in `app.cli`).

Exit codes: 0 stopped by SIGTERM/SIGINT (or `--check-config` found no problem); 2 the node cannot
start (the configuration, a path, the model or a port is unusable - the message names which).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.node.config import NodeConfig, NodeConfigError, load_node_config

logger = logging.getLogger("biomedclip_map.node")

EXIT_OK = 0
EXIT_CANNOT_START = 2


@dataclass(frozen=True)
class ServeRequest:
    """What `serve` was asked to do: the configuration file, the settings given on the command line
    (each overrides the same setting of the file; None: not given), and whether only to check."""

    config: Path | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)
    check_config: bool = False

    @property
    def log_level(self) -> str:
        """The log level to use before the configuration is read (it may not be readable)."""
        return str(self.overrides.get("log_level") or "INFO")


def _writable_location(path: Path) -> str | None:
    """None if `path` is (or can be created as) a writable folder, else why not."""
    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            return f"{path} cannot be created"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def check_config(config: NodeConfig) -> tuple[list[str], list[str]]:
    """(errors, warnings) about what the configuration names: paths, model, TLS files, options."""
    from app.node.destinations import client_ssl_context
    from app.node.scp import server_ssl_context
    from app.node.runner import node_configuration
    from common.configuration import ConfigurationError
    from models.directory import locate_model_dir
    from models.errors import ModelDirectoryError
    from models.manifest import read_manifest

    errors: list[str] = []
    warnings: list[str] = []
    problem = _writable_location(config.spool.path)
    if problem:
        errors.append(f"spool.path: {problem}")
    try:
        manifest = read_manifest(locate_model_dir(config.processing.models))
        if manifest.untrained and not config.processing.allow_untrained:
            errors.append(
                "processing.models: the model's status is 'untrained' (meaningless results); set "
                "processing.allow_untrained (or --allow-untrained) only for tests and demonstrations"
            )
        elif manifest.untrained:
            warnings.append("processing.models: the model is UNTRAINED; every result says so and is meaningless")
    except ModelDirectoryError as exc:
        errors.append(f"processing.models: {exc}")
    try:
        node_configuration(config)
    except ConfigurationError as exc:
        errors.append(f"processing (rules, tasks and the bundled configuration files): {exc}")
    try:
        server_ssl_context(config.dicom)
    except (OSError, ssl.SSLError) as exc:
        errors.append(f"dicom.tls: {exc}")
    for index, destination in enumerate(config.destinations):
        if destination.tls is not None:
            try:
                client_ssl_context(destination.tls)
            except (OSError, ssl.SSLError) as exc:
                errors.append(f"destinations[{index}].tls: {exc}")
        if destination.token_env and not os.environ.get(destination.token_env):
            warnings.append(f"destinations[{index}].token_env: environment variable {destination.token_env} is not set")
    if not config.destinations:
        warnings.append("destinations: none configured; results would stay in the spool's outbox")
    if not config.dicom.allow_calling_aes:
        warnings.append("dicom.allow_calling_aes: empty, so any calling AE title may store studies")
    if config.dicom.port < 1024 and os.geteuid() != 0:
        warnings.append(f"dicom.port: {config.dicom.port} is a privileged port; this user cannot listen on it")
    return errors, warnings


def summary(config: NodeConfig) -> str:
    """The effective configuration in a few lines (no secrets: token variables are named, not read)."""
    d = config.dicom
    lines = [
        f"DICOM listener : {d.ae_title} on {d.bind}:{d.port}{' (TLS)' if d.tls else ''}, accepts {d.accept_sop_classes}",
        f"calling AEs    : {', '.join(d.allow_calling_aes) or 'any'}",
        f"spool          : {config.spool.path} (quiet period {config.spool.quiet_period_s:g} s)",
        f"model          : {config.processing.models}{' (untrained allowed)' if config.processing.allow_untrained else ''}",
        f"destinations   : {'; '.join(x.describe() for x in config.destinations) or 'none'}",
        f"observability  : http://{config.http.bind}:{config.http.port}/healthz | /readyz | /metrics",
    ]
    return "\n".join(lines)


def serve_main(request: ServeRequest) -> int:
    """Run `serve` (or `serve --check-config`); return the exit code."""
    from app.logging_setup import configure_logging

    try:
        config = load_node_config(request.config, dict(request.overrides))
    except NodeConfigError as exc:
        configure_logging(request.log_level)
        logger.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    configure_logging(config.log_level)
    for noisy in ("pynetdicom", "dicomweb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if request.check_config:
        errors, warnings = check_config(config)
        print(summary(config))
        for warning in warnings:
            print(f"warning: {warning}")
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print("configuration is valid" if not errors else f"configuration has {len(errors)} problem(s)")
        return EXIT_OK if not errors else EXIT_CANNOT_START

    from app.node.service import DicomNode, NodeStartError

    node = DicomNode(config)

    def request_stop(signum, _frame) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        node.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        node.start()
    except NodeStartError as exc:
        logger.error("cannot start: %s", exc)
        node.stop(timeout=5)
        return EXIT_CANNOT_START
    while not node.wait(1.0):
        pass
    node.stop()
    return EXIT_OK
