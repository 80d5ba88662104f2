"""The spool: received instances on disk, fsync'd before the sender hears "success".

Layout under the configured `spool.path` (each folder is one state of the node's state machine;
a study moves between states with one atomic `rename`):

    incoming/<ref>/instances/<in-…>.dcm   instances of a study still arriving (quiet period running)
    incoming/<ref>/urgent.json            the study was marked STAT/urgent, and why
    queue/<job>/                          a complete study waiting for the model (job.json + input/)
    processing/<job>/                     the study being analysed (input/ + output/)
    outbox/<job>/                         results waiting for delivery (*.dcm + delivery state)
    delivered/<job>/                      results every destination acknowledged
    undeliverable/<job>/                  results a destination kept refusing (reason recorded)
    quarantine/<job>/                     a study that failed `processing.max_attempts` times
    studies/<ref>/                        instances and report identities of processed studies,
                                          kept for late instances (`spool.retention_hours`)
    rejected/                             C-STORE data that was refused (corrupt, no study UID)
    tmp/                                  staging for atomic moves; cleaned at start-up

`<ref>` is the study's salted reference (`operators.dicom_input.study_refs`), and instance files are named by
the salted reference of their SOP Instance UID, so no path (and so no log line naming a path)
carries a raw UID.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from app.node.durable_files import fsync_directory, read_json, write_file_durably, write_json_durably

logger = logging.getLogger("biomedclip_map.node.spool")

STATE_FOLDERS = (
    "incoming",
    "queue",
    "processing",
    "outbox",
    "delivered",
    "undeliverable",
    "quarantine",
    "studies",
    "rejected",
    "tmp",
)
INSTANCES = "instances"
URGENT_FILE = "urgent.json"
LOCK_STRIPES = 64
FREE_SPACE_REFRESH_S = 0.5


class SpoolError(OSError):
    """The spool cannot be used; the message names the folder or setting to fix."""


class SpoolFullError(SpoolError):
    """No room for another instance (disk nearly full, or the spool's configured quota reached)."""


@dataclass(frozen=True)
class SpoolLayout:
    """The folders of the spool (see the module docstring)."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def delivered(self) -> Path:
        return self.root / "delivered"

    @property
    def undeliverable(self) -> Path:
        return self.root / "undeliverable"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def studies(self) -> Path:
        return self.root / "studies"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def create(self) -> None:
        """Create every state folder; SpoolError naming `spool.path` if that is impossible."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for name in STATE_FOLDERS:
                (self.root / name).mkdir(exist_ok=True)
            fsync_directory(self.root)
        except OSError as exc:
            raise SpoolError(f"spool folder {self.root} (spool.path) cannot be created: {exc.strerror or exc}") from exc
        probe = self.tmp / f".write-probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise SpoolError(f"spool folder {self.root} (spool.path) is not writable: {exc.strerror or exc}") from exc

    def incoming_study(self, ref: str) -> Path:
        return self.incoming / ref

    def writable(self) -> bool:
        """Whether a file can be created in the spool now (for /readyz)."""
        probe = self.tmp / f".ready-probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False


def mib(value: int) -> str:
    """A byte count for messages: 12.3 MiB."""
    return f"{value / 1048576:.1f} MiB"


class SpoolQuota:
    """Refuses instances that would fill the disk or pass the configured size of the spool.

    The spool's size is measured by walking it (`rescan`, done periodically off the receive path)
    plus the bytes stored since; the free space of the disk is asked for on every instance.
    Before another instance is acknowledged, `reserve_per_study` bytes stay free for the results of
    every study already acknowledged and not yet finished (`open_studies()`, plus the one this
    instance may start), so a full disk never costs an acknowledged study its report.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int | None,
        min_free_bytes: int,
        reserve_per_study: int = 0,
        open_studies: Callable[[], int] | None = None,
    ):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.reserve_per_study = reserve_per_study
        self.open_studies = open_studies or (lambda: 0)
        self._lock = threading.Lock()
        self._scanned = 0
        self._added = 0
        self._free = 0
        self._free_at = float("-inf")
        self._added_at_free = 0
        self.last_instance_bytes = 0
        """Size of the last instance stored: what /readyz checks there is room for."""
        self.rescan()

    def reserved(self) -> tuple[int, int]:
        """(bytes kept free for results, the number of studies they are for)."""
        studies = self.open_studies() + 1
        return self.reserve_per_study * studies, studies

    def rescan(self) -> int:
        """Measure the spool's size on disk now (files linked twice count once); return it."""
        seen: set[tuple[int, int]] = set()
        total = 0
        started_added = self._added
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    st = os.stat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += st.st_size
        with self._lock:
            self._scanned = total
            self._added -= started_added
            self._added_at_free -= started_added
        return total

    def usage(self) -> int:
        with self._lock:
            return self._scanned + self._added

    def added(self, nbytes: int) -> None:
        with self._lock:
            self._added += nbytes
            self.last_instance_bytes = nbytes

    def removed(self, nbytes: int) -> None:
        """`nbytes` were deleted from the spool: count them out, and ask the OS for free space anew."""
        with self._lock:
            self._added -= nbytes
            self._free_at = float("-inf")

    def free_bytes(self) -> int:
        """Free space of the spool's disk; asked of the OS at most every FREE_SPACE_REFRESH_S.

        Between two asks, the bytes this process stored meanwhile are subtracted, so a burst of
        instances cannot overshoot; other writers on the same disk are seen at the next ask.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._free_at < FREE_SPACE_REFRESH_S:
                return self._free - (self._added - self._added_at_free)
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise SpoolError(f"spool folder {self.root} cannot be inspected: {exc.strerror}") from exc
        with self._lock:
            self._free, self._free_at, self._added_at_free = st.f_bavail * st.f_frsize, now, self._added
            return self._free

    def check(self, nbytes: int) -> None:
        """SpoolFullError (naming the setting) when `nbytes` more would not fit."""
        free = self.free_bytes()
        reserve, studies = self.reserved()
        if free - nbytes - reserve < self.min_free_bytes:
            raise SpoolFullError(
                f"the disk holding the spool is full: {mib(free)} free, this instance needs {mib(nbytes)}, "
                f"{mib(reserve)} are kept for the results of {studies} study(ies) (spool.result_reserve_bytes each) "
                f"and spool.min_free_bytes keeps {mib(self.min_free_bytes)} free"
            )
        if self.max_bytes is not None:
            usage = self.usage()
            if usage + nbytes + reserve > self.max_bytes:
                raise SpoolFullError(
                    f"the spool holds {mib(usage)}; {mib(nbytes)} more plus {mib(reserve)} kept for the results of "
                    f"{studies} study(ies) (spool.result_reserve_bytes each) would pass spool.max_bytes ({mib(self.max_bytes)})"
                )


@dataclass(frozen=True)
class StoredInstance:
    """Where an instance was written and whether it started a new incoming study."""

    path: Path
    nbytes: int
    first_of_study: bool


class Spool:
    """Incoming instances and refused data; the other states are handled by the queue and outbox."""

    def __init__(self, layout: SpoolLayout, quota: SpoolQuota):
        self.layout = layout
        self.quota = quota
        self.make_room: Callable[[int], int] | None = None
        """Frees evictable space when the quota says no (`SpoolEvictor.make_room`); None: refuse at once."""
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def lock_for(self, ref: str) -> threading.Lock:
        """The lock serialising writes to, and closing of, one incoming study."""
        return self._stripes[zlib.crc32(ref.encode("ascii")) % LOCK_STRIPES]

    def store_instance(self, ref: str, name: str, chunks: list[bytes | memoryview], *, urgent_reason: str | None) -> StoredInstance:
        """Write one instance durably into `incoming/<ref>/instances/<name>`.

        Returns once the file's data and its folder entry are on disk. Raises SpoolFullError when
        the quota or the disk's free space does not allow it (or the disk fills while writing), and
        SpoolError for any other write failure; nothing partial is left behind either way.
        """
        nbytes = sum(len(c) for c in chunks)
        study_dir = self.layout.incoming_study(ref)
        instances = study_dir / INSTANCES
        with self.lock_for(ref):
            self.ensure_room(nbytes)
            first = not instances.is_dir()
            try:
                if first:
                    instances.mkdir(parents=True, exist_ok=True)
                    fsync_directory(study_dir)
                    fsync_directory(self.layout.incoming)
                if urgent_reason and not (study_dir / URGENT_FILE).exists():
                    write_json_durably(study_dir / URGENT_FILE, {"reason": urgent_reason})
                target = instances / name
                write_file_durably(target, chunks, staging_dir=study_dir)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SpoolFullError(f"the disk holding the spool ({self.layout.root}) is full: {exc.strerror}") from exc
                raise SpoolError(f"cannot write to the spool folder {study_dir}: {exc.strerror or exc}") from exc
        self.quota.added(nbytes)
        return StoredInstance(target, nbytes, first)

    def ensure_room(self, nbytes: int) -> None:
        """Return when `nbytes` more fit (evicting what is safe elsewhere, if needed); SpoolFullError otherwise."""
        try:
            self.quota.check(nbytes)
        except SpoolFullError:
            if self.make_room is None:
                raise
            self.make_room(nbytes)

    def keep_rejected(self, chunks: Iterable[bytes | memoryview], details: dict) -> Path | None:
        """Keep refused C-STORE data for inspection in `rejected/`; None (with a log line) if impossible."""
        chunks = list(chunks)
        try:
            self.ensure_room(sum(len(c) for c in chunks) + 4096)
        except SpoolFullError as exc:
            logger.warning("the refused data is not kept in %s: %s", self.layout.rejected, exc)
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        base = self.layout.rejected / f"{stamp}-{secrets.token_hex(3)}"
        try:
            write_file_durably(base.with_suffix(".dcm"), chunks, staging_dir=self.layout.tmp)
            write_json_durably(base.with_suffix(".json"), details)
        except OSError as exc:
            logger.error("could not keep the refused data in %s: %s", self.layout.rejected, exc.strerror or exc)
            return None
        return base.with_suffix(".dcm")

    # ----------------------------------------------------------------------- incoming studies

    def urgent_reason(self, ref: str) -> str | None:
        document = read_json(self.layout.incoming_study(ref) / URGENT_FILE)
        return document.get("reason") if isinstance(document, dict) else None

    def recover_incoming(self) -> list[str]:
        """At start-up: drop half-written files (never acknowledged) and empty study folders.

        Returns the refs of the studies that still hold acknowledged instances; they are complete
        once a full quiet period passes after start-up, so a sender can resume first.
        """
        dropped = 0
        refs: list[str] = []
        for study_dir in sorted(self.layout.incoming.iterdir()) if self.layout.incoming.is_dir() else []:
            for part in study_dir.glob(".*.part"):
                part.unlink(missing_ok=True)
                dropped += 1
            instances = study_dir / INSTANCES
            if instances.is_dir():
                for part in instances.glob(".*.part"):
                    part.unlink(missing_ok=True)
                    dropped += 1
            if instances.is_dir() and any(instances.iterdir()):
                refs.append(study_dir.name)
            else:
                shutil.rmtree(study_dir, ignore_errors=True)
        if dropped:
            logger.info("start-up: removed %d half-written instance file(s) that were never acknowledged", dropped)
        return refs


def utc_stamp(moment: float | None = None) -> str:
    """A sortable UTC timestamp for job names: 20260101T120000123456."""
    return datetime.fromtimestamp(moment if moment is not None else time.time(), timezone.utc).strftime("%Y%m%dT%H%M%S%f")
