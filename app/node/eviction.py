"""Making room in a full spool: what is already safe elsewhere goes first, oldest first.

Three kinds of spool content are copies of something kept elsewhere: processed studies kept for
late instances (`studies/<ref>`, the PACS has the instances), delivered results (`delivered/<job>`,
every destination acknowledged them) and copies of refused C-STORE data (`rejected/`, the sender
kept its copy). Under quota or disk pressure they are removed oldest first, before a new instance
is refused; studies still being received, queued or processed are never touched, nor are results
waiting for delivery, undeliverable or quarantined ones.

When nothing is left to remove, the refusal says what the space is held by, so the message an
administrator reads is true (not "wait for studies to be processed" when they were).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.node.spool import SpoolFullError, SpoolLayout, SpoolQuota, mib

logger = logging.getLogger("biomedclip_map.node.spool")

BREAKDOWN_REFRESH_S = 5.0
"""The description of what fills the spool is measured at most this often (it walks the folders)."""


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (or of the file itself); 0 for what vanished meanwhile."""
    if path.is_file():
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


@dataclass(frozen=True)
class Evictable:
    """One removable item: when it was last changed, where it is and what it is."""

    mtime: float
    path: Path
    kind: str


KIND_WORDS = {"studies": "processed study(ies)", "delivered": "delivered result set(s)", "rejected": "refused-data copy(ies)"}


class SpoolEvictor:
    """Frees space in the spool (see the module docstring); one eviction at a time."""

    def __init__(self, layout: SpoolLayout, quota: SpoolQuota, busy_refs: Callable[[], set[str]]):
        self.layout = layout
        self.quota = quota
        self.busy_refs = busy_refs
        self._lock = threading.Lock()
        self._breakdown: tuple[float, str] = (float("-inf"), "")

    def candidates(self) -> list[Evictable]:
        """Everything that may be removed, oldest first."""
        busy = self.busy_refs()
        items: list[Evictable] = []
        for kind, folder in (("studies", self.layout.studies), ("delivered", self.layout.delivered), ("rejected", self.layout.rejected)):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if kind == "studies" and (entry.name in busy or (self.layout.incoming / entry.name).exists()):
                    continue
                try:
                    items.append(Evictable(entry.stat(follow_symlinks=False).st_mtime, Path(entry.path), kind))
                except FileNotFoundError:
                    continue
        items.sort(key=lambda item: item.mtime)
        return items

    def make_room(self, nbytes: int) -> int:
        """Remove the oldest evictable items until `nbytes` more fit; return the bytes freed.

        Raises SpoolFullError (saying what holds the space) when even removing everything
        evictable is not enough.
        """
        with self._lock:
            try:
                self.quota.check(nbytes)
                return 0
            except SpoolFullError:
                pass
            freed = 0
            removed: dict[str, int] = {}
            try:
                for item in self.candidates():
                    size = tree_bytes(item.path)
                    if item.path.is_dir():
                        shutil.rmtree(item.path, ignore_errors=True)
                    else:
                        item.path.unlink(missing_ok=True)
                    self.quota.removed(size)
                    freed += size
                    removed[item.kind] = removed.get(item.kind, 0) + 1
                    try:
                        self.quota.check(nbytes)
                        return freed
                    except SpoolFullError:
                        continue
                try:
                    self.quota.check(nbytes)
                    return freed
                except SpoolFullError as exc:
                    raise SpoolFullError(f"{exc}; nothing more can be removed: {self.holders()}") from exc
            finally:
                if removed:
                    logger.warning(
                        "spool under pressure: removed %s (%s), oldest first, to make room",
                        ", ".join(f"{count} {KIND_WORDS[kind]}" for kind, count in removed.items()), mib(freed),
                    )

    def holders(self) -> str:
        """What the spool's space is held by, measured at most every BREAKDOWN_REFRESH_S."""
        now = time.monotonic()
        if now - self._breakdown[0] < BREAKDOWN_REFRESH_S:
            return self._breakdown[1]
        lay = self.layout
        parts = {
            "studies being received, queued or analysed": sum(tree_bytes(p) for p in (lay.incoming, lay.queue, lay.processing)),
            "results waiting for delivery (outbox/)": tree_bytes(lay.outbox),
            "undeliverable/ and quarantine/ (set aside for an administrator)": tree_bytes(lay.undeliverable) + tree_bytes(lay.quarantine),
        }
        text = ", ".join(f"{mib(size)} in {what}" for what, size in parts.items())
        text += "; free disk space, raise the limit, or deal with undeliverable/ and quarantine/"
        self._breakdown = (now, text)
        return text
