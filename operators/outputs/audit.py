"""The audit trail: one JSON line per processed study, with no patient data in it.

Each line says when, what was done (`analyse`), to which study (its salted `ref`, never the
UID), with which model (name, version, weights hash, status) and backend, how it ended
(reported, nothing selected, failed, and at which stage with which error type; never the error
text, which could quote header values), how long each stage took, how many pieces of free text
of each category the PHIScrubber redacted, how many files were written and de-identified.

Lines are appended with one `write` on a file opened in append mode and flushed to disk, under an
exclusive `flock` where the platform has it, so concurrent runs (a DICOM node and a MAP run
sharing a work folder) never interleave their lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common.model_identity import ModelIdentity

from operators.messages import StudyOutcome

try:  # POSIX; elsewhere a single O_APPEND write is relied on
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ACTION_ANALYSE = "analyse"


class AuditWriteError(OSError):
    """The audit log cannot be written; the message names the file and the setting to change."""


@dataclass(frozen=True)
class AuditContext:
    """What is the same for every study of a run: the model, the backend, the product version."""

    model: ModelIdentity
    backend: str
    product: str
    version: str


@dataclass(frozen=True)
class AuditRecord:
    """One study's audit line (see `audit_line` for its JSON form)."""

    time: str
    study: str
    outcome: str
    stage: str
    error: str
    durations_s: dict[str, float]
    redactions: dict[str, int]
    outputs: int
    deidentified: int = 0
    action: str = ACTION_ANALYSE
    tasks: list[dict] = field(default_factory=list)
    """Per analysed series: task, top label, label probabilities and decisions (no identifiers)."""
    extra: dict = field(default_factory=dict)


def _error_type(reason: str) -> str:
    """The exception type of a failure reason ("ValueError: ..." → "ValueError"); never the text."""
    head = reason.split(":", 1)[0].strip()
    return head if head.isidentifier() else ("error" if reason else "")


def record_for(outcome: StudyOutcome, *, deidentified: int = 0, now: datetime | None = None) -> AuditRecord:
    """The audit record of one study's outcome."""
    durations = {stage: round(float(seconds), 4) for stage, seconds in outcome.timings.items()}
    durations["total"] = round(sum(durations.values()), 4)
    return AuditRecord(
        time=(now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds"),
        study=outcome.study_ref,
        outcome=outcome.status.value,
        stage=outcome.stage,
        error=_error_type(outcome.reason) if outcome.status.value == "failed" else "",
        durations_s=durations,
        redactions=dict(outcome.redactions),
        outputs=len(outcome.outputs),
        deidentified=deidentified,
        tasks=[asdict(summary) for summary in outcome.tasks],
    )


def audit_line(record: AuditRecord, context: AuditContext) -> str:
    """The JSON line (no trailing newline) for `record`."""
    document = {
        "time": record.time,
        "action": record.action,
        "study": record.study,
        "product": {"name": context.product, "version": context.version},
        "model": {
            "name": context.model.name,
            "version": context.model.version,
            "sha256": context.model.sha256,
            "status": context.model.status,
        },
        "backend": context.backend,
        "outcome": record.outcome,
        "stage": record.stage,
        "error": record.error,
        "durations_s": record.durations_s,
        "redactions": record.redactions,
        "outputs": record.outputs,
        "deidentified": record.deidentified,
        "tasks": record.tasks,
        **record.extra,
    }
    return json.dumps(document, ensure_ascii=True, sort_keys=False)


def append_audit(path: Path, records: Iterable[AuditRecord], context: AuditContext) -> int:
    """Append one line per record to the audit log at `path` (created with its folder); return the count."""
    lines = [audit_line(r, context) for r in records]
    if not lines:
        return 0
    payload = ("\n".join(lines) + "\n").encode("ascii")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.write(descriptor, payload)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)  # closing releases the lock
    except OSError as exc:
        raise AuditWriteError(
            f"cannot append to the audit log {path}: {exc.strerror or exc}; choose another file with "
            "--audit-log or BIOMEDCLIP_MAP_AUDIT_LOG"
        ) from exc
    return len(lines)
