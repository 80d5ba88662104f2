"""Short salted references that stand in for DICOM UIDs in logs, metrics and benchmark output.

A Study Instance UID is an identifier of a patient's examination: it must never appear in a log
line. `study_ref` maps it to a short token (``st-`` + 12 hex digits) with a keyed hash (HMAC-SHA-256)
whose key, the salt, comes from the site's configuration. The same study always gets the same ref
within one site, so an administrator can follow a study through the logs, but the ref cannot be
turned back into the UID, nor matched against refs of another site that uses another salt.
"""

from __future__ import annotations

import hashlib
import hmac

REF_HEX_DIGITS = 12


class StudyRefError(ValueError):
    """A reference cannot be made (empty UID or salt); the message says which."""


def uid_ref(uid: str, salt: str, *, prefix: str) -> str:
    """Return ``{prefix}-`` followed by 12 hex digits of HMAC-SHA-256(salt, uid).

    12 hex digits (48 bits) keep collisions negligible for the number of studies one site logs,
    while staying short enough to read in a log line.
    """
    if not uid:
        raise StudyRefError(f"cannot make a '{prefix}' reference: the UID is empty")
    if not salt:
        raise StudyRefError(
            f"cannot make a '{prefix}' reference: the salt is empty; configure a non-empty, "
            "site-specific salt so that logs carry no guessable study identifiers"
        )
    digest = hmac.new(salt.encode("utf-8"), uid.strip().encode("ascii", "replace"), hashlib.sha256)
    return f"{prefix}-{digest.hexdigest()[:REF_HEX_DIGITS]}"


def study_ref(study_instance_uid: str, salt: str) -> str:
    """Return the log-safe reference of a study, e.g. ``st-3f9c0a12b4de``."""
    return uid_ref(study_instance_uid, salt, prefix="st")


def series_ref(series_instance_uid: str, salt: str) -> str:
    """Return the log-safe reference of a series, e.g. ``se-0c41d2e9a7b3``."""
    return uid_ref(series_instance_uid, salt, prefix="se")
