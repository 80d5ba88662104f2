"""The salt of the short references that stand in for UIDs and file names in logs and audit records.

A reference is HMAC-SHA-256(salt, UID) cut to 12 hex digits (`operators.dicom_input.study_refs`). With a
salt everyone knows, anyone holding a list of Study Instance UIDs (a PACS export, a research
data set) could compute their references and find those studies in our logs. So the salt is a
per-installation secret:

- `BIOMEDCLIP_MAP_UID_SALT`, if set and not empty, is used (set the same value on every node of
  a site whose logs should agree, e.g. MONAI Deploy Express runs whose work folder is not kept);
- otherwise a random 256-bit salt is created once in the work folder (`uid-salt`, readable only
  by its owner) and reused by every later run with that work folder.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

SALT_FILE = "uid-salt"
WORK_DIR_NAME = "biomedclip-map-work"
ENV_UID_SALT = "BIOMEDCLIP_MAP_UID_SALT"
ENV_WORKDIR = "HOLOSCAN_WORKDIR"


class UidSaltError(ValueError):
    """The salt cannot be had; the message names the file and the setting to fix."""


def default_work_dir() -> Path:
    """The work folder a run uses without -w: $HOLOSCAN_WORKDIR, else one in the system temp dir."""
    return Path(os.environ.get(ENV_WORKDIR) or Path(tempfile.gettempdir()) / WORK_DIR_NAME)


def installation_salt(work_dir: Path) -> str:
    """The salt kept in `work_dir/uid-salt`, created (random, mode 0600) on first use.

    Raises `UidSaltError` naming the file if it cannot be read or created.
    """
    path = Path(work_dir) / SALT_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{SALT_FILE}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            try:
                os.link(temporary, path)  # never replaces a salt another run created meanwhile
            except FileExistsError:
                pass
            finally:
                temporary.unlink(missing_ok=True)
        salt = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UidSaltError(
            f"the installation salt file {path} cannot be read or created ({exc.__class__.__name__}); make the work "
            f"folder (-w/--workdir or {ENV_WORKDIR}) writable or set {ENV_UID_SALT}"
        ) from exc
    if len(salt) < 16:
        raise UidSaltError(f"the installation salt file {path} holds less than 16 characters; delete it to have a new one made")
    return salt


def resolve_uid_salt(work_dir: str | os.PathLike | None = None) -> str:
    """$BIOMEDCLIP_MAP_UID_SALT if set, else the installation salt of `work_dir` (default: the run's)."""
    configured = os.environ.get(ENV_UID_SALT, "").strip()
    if configured:
        return configured
    return installation_salt(Path(work_dir) if work_dir else default_work_dir())
