"""Logging for every front end: one line per event on stderr, PHI-free, library chatter kept down."""

from __future__ import annotations

import logging
import os
import sys
import warnings


class _LibraryChatterFilter(logging.Filter):
    """Drops open_clip's informational lines (it logs through the root logger) below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}open_clip{os.sep}" not in record.pathname


def configure_logging(level: str = "INFO") -> None:
    """One line per event on stderr; library chatter is kept to warnings and errors."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_LibraryChatterFilter())
    # Holoscan asks for a 32 MiB stack; the `run` script and MAP hosts set it. Where they do not,
    # its Python warning would repeat on every run without telling an administrator anything new.
    warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")
    # pydicom reports malformed values by quoting them, which could put patient data in the log;
    # values are validated where the product uses them instead.
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    # pydicom's pixel decoders log every failed plugin attempt at ERROR with a traceback; the product
    # reports an undecodable image itself, in one line naming the file and the reason.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    # Every line is redacted (input paths, UIDs, the run's patient identifiers) before it is written.
    from app.log_privacy import install as install_phi_safe_logging

    install_phi_safe_logging(logging.getLogger().handlers, "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
