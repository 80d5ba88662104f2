"""PHI-free logging: every log line is redacted before it is written, whatever code wrote it.

Log lines identify studies by their salted `ref` (`operators.dicom_input.study_refs`), but messages also
carry file paths (a skipped file, a pixel-decoding error) and exception texts, and folders
exported by viewers are often named after the patient ("Kowalczyk-Brennan Theodora 1955-02-14/").
So the log carries no file name at all, by construction: `PHISafeFormatter`, installed on the log
handlers by `app.logging_setup.configure_logging`, rewrites each record's message, exception text
and stack before it is formatted:

- the run's input folder becomes `<input>` (the DICOM node's spool `<spool>`), and every file or
  folder path below it becomes one salted reference of its whole relative path,
  `<input>/p-3f9c0a12b4de` (a known extension such as `.dcm` is kept), whatever the names hold
  (spaces, dates, names nobody has read yet). The reference is HMAC-SHA-256 keyed by the site's
  salt (`app.uid_salt`): stable across runs with that salt, meaningless without it;
- any other UID in the text becomes `uid-` + its salted hash (standard DICOM UIDs, such as SOP
  Class and Transfer Syntax UIDs, stay readable: they identify no one);
- as a second layer, the identifying values of the run's studies (registered by the application
  when the loader's scan ends) and PHI-shaped patterns (dates, phone numbers, e-mail addresses,
  SSN- and MRN-like numbers, names after a title; `operators.phi.phi_text`) become `[NAME]`, `[ID]`,
  ... tags. Product code does not rely on this layer: its messages quote no DICOM value.

An administrator finds the file behind a reference with
`python -m app.log_privacy locate --input INPUT [-w WORKDIR] REF...`, which computes the
reference of every path under the input folder with the same salt.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from operators.phi.phi_text import StudyIdentifiers, TextScrubber, identifiers_from_headers
from operators.dicom_input.study_refs import uid_ref

#: A DICOM UID (or other OID) of at least five components.
UID_PATTERN = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){4,}(?![\w]|\.\d)")
#: UIDs defined by the DICOM standard itself (SOP classes, transfer syntaxes, coding schemes).
STANDARD_UID_ROOT = "1.2.840.10008."
INPUT_PLACEHOLDER = "<input>"
SPOOL_PLACEHOLDER = "<spool>"
#: Extensions kept visible after a path reference (they say what kind of file it was, nothing else).
KEPT_EXTENSIONS = frozenset(
    {".dcm", ".dicom", ".dic", ".ima", ".img", ".json", ".jsonl", ".png", ".jpg", ".jpeg", ".txt", ".xml", ".zip",
     ".gz", ".tar", ".tgz", ".bin", ".raw", ".tmp", ".part", ".pdf", ".yaml", ".yml"}
)
#: What the redactor itself wrote (root placeholders, path, UID and study references) and standard
#: DICOM UIDs: never scrubbed again (their digits are no identifier).
_WRITTEN = re.compile(
    r"<(?:input|spool)>(?:/p-[0-9a-f]{12}(?:\.\w+)?)?|\b(?:uid|st)-[0-9a-f]{12}\b|(?<![\w.])1\.2\.840\.10008(?:\.\d+)+"
)

# Where a path quoted in a message certainly ends (a path may contain spaces and commas, so those
# do not end it): ": " before the reason, a quote, a bracket, a line end, "; ", " (".
_PATH_END = re.compile(r"""(?::(?=\s|$)|['"`\n\r\t)\]>]|;\s| \(|$)""")
# Characters after which a path may stop if a shorter prefix is the one that exists on disk.
_PATH_BREAKS = re.compile(r"(?=[\s,.;:])")
_SEPARATORS = re.compile(r"[/\\]+")


def path_ref(relative: str, salt: str) -> str:
    """The salted reference of a path below a logged root: `p-` + 12 hex digits of HMAC-SHA-256.

    `relative` is the path below the root, with `/` or `\\` separators (normalised to `/`).
    """
    key = "/".join(part for part in _SEPARATORS.split(relative) if part)
    digest = hmac.new((salt or "unsalted").encode("utf-8"), key.encode("utf-8"), hashlib.sha256).hexdigest()
    return "p-" + digest[:12]


def logged_path(relative: str, salt: str, placeholder: str = INPUT_PLACEHOLDER) -> str:
    """How a path below a root is written in the log: `<input>/p-<12 hex>`, a known extension kept."""
    if not _SEPARATORS.sub("", relative):
        return placeholder
    suffix = Path(relative.rstrip("/\\")).suffix.lower()
    return f"{placeholder}/{path_ref(relative, salt)}{suffix if suffix in KEPT_EXTENSIONS else ''}"


@dataclass(frozen=True)
class _Root:
    forms: tuple[str, ...]  # the folder as it may be written: as given, absolute, resolved
    placeholder: str
    disk: Path


def _root_forms(root: Path) -> tuple[str, ...]:
    """The ways a folder may be written in a message: as given, absolute and resolved (longest first)."""
    forms = {os.path.abspath(root), os.path.realpath(root), str(root)}
    cleaned = {f.rstrip("/\\") for f in forms}
    return tuple(sorted((f for f in cleaned if f and f != "."), key=len, reverse=True))


def _form_pattern(form: str) -> str:
    """A folder as matched in text; a one-word relative folder ("in") only when a path follows it."""
    after = r"(?=[/\\])" if not re.search(r"[/\\]", form) else r"(?=[/\\]|[^\w.\-]|$)"
    return re.escape(form) + after


class LogRedactor:
    """Replaces paths below the logged roots, UIDs and identifiers in log text (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.salt = ""
        self._input: _Root | None = None
        self._others: dict[str, _Root] = {}
        self._pattern: re.Pattern[str] | None = None
        self._by_form: dict[str, _Root] = {}
        self._scrubber = TextScrubber()
        self._identifiers = StudyIdentifiers()
        self._endpoints: set[str] = set()
        self._kept: re.Pattern[str] = _WRITTEN

    # ------------------------------------------------------------------ configuration

    def keep_endpoints(self, *endpoints: str | None) -> None:
        """Keep these configured servers (`host:port` of a Triton server, a PACS destination) readable.

        They are the site's infrastructure, named by its administrator, not a patient's: a line
        that says which server could not be reached must name it. Their URLs (`scheme://host:port/...`)
        are kept too. Anything else that looks like an address is still redacted.
        """
        with self._lock:
            self._endpoints.update(e.strip() for e in endpoints if e and e.strip())
            if not self._endpoints:
                return
            names = "|".join(re.escape(e) for e in sorted(self._endpoints, key=len, reverse=True))
            self._kept = re.compile(rf"{_WRITTEN.pattern}|(?:[a-z][a-z0-9+.\-]*://)?(?:{names})(?:/[^\s)\]'\"]*)?")

    def start_run(self, input_root: Path | str, salt: str) -> None:
        """Begin a run: its input folder and salt; the previous run's input and identifiers are forgotten."""
        with self._lock:
            self.salt = salt
            root = Path(input_root)
            self._input = _Root(_root_forms(root), INPUT_PLACEHOLDER, root)
            self._identifiers = StudyIdentifiers()
            self._scrubber = TextScrubber()
            self._compile()

    def add_root(self, root: Path | str, placeholder: str, salt: str) -> None:
        """Also write paths below `root` (e.g. the node's spool) as `placeholder/p-...` references."""
        with self._lock:
            self.salt = salt
            folder = Path(root)
            self._others[placeholder] = _Root(_root_forms(folder), placeholder, folder)
            self._compile()

    def _compile(self) -> None:
        roots = [r for r in (self._input, *self._others.values()) if r is not None]
        self._by_form = {form: root for root in reversed(roots) for form in root.forms}
        forms = sorted(self._by_form, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w.\-])(?:" + "|".join(_form_pattern(f) for f in forms) + ")")
            if forms else None
        )

    def register_studies(self, studies: Iterable) -> None:
        """Add the identifying values of these studies (`StudyHeader`s) to the second layer."""
        identifiers = StudyIdentifiers()
        identifiers.merge(self._identifiers)
        for study in studies:
            identifiers.merge(identifiers_from_headers([study.header, *(s.header for s in study.series)]))
        scrubber = TextScrubber(identifiers)
        with self._lock:
            self._identifiers, self._scrubber = identifiers, scrubber

    # ------------------------------------------------------------------ redaction

    def _path_end(self, text: str, start: int, root: _Root) -> int:
        """Where the path that starts at `start` (its first separator, just after a root) ends in `text`.

        A path may hold spaces and commas, so it runs to where a path certainly ends (`_PATH_END`),
        unless a shorter prefix is what exists on disk ("x.dcm, y.dcm"). When nothing exists (a file
        removed meanwhile), the longer reading is taken: it may swallow words, never leak a name.
        """
        found = _PATH_END.search(text, start)
        end = found.start() if found else len(text)
        while end > start and text[end - 1] in " .,;":
            end -= 1
        if os.path.lexists(str(root.disk) + text[start:end]):
            return end
        for candidate in sorted((m.start() for m in _PATH_BREAKS.finditer(text, start + 1, end)), reverse=True):
            if os.path.lexists(str(root.disk) + text[start:candidate]):
                return candidate
        return end

    def _paths(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        pieces: list[str] = []
        position = 0
        for match in pattern.finditer(text):
            if match.start() < position:
                continue
            root = self._by_form[match.group()]
            end = match.end()
            if end < len(text) and text[end] in "/\\":
                end = self._path_end(text, end, root)
            relative = text[match.end() : end]
            pieces.append(text[position : match.start()])
            pieces.append(logged_path(relative, self.salt, root.placeholder))
            position = end
        pieces.append(text[position:])
        return "".join(pieces)

    def redact(self, text: str) -> str:
        """`text` with paths below the roots, non-standard UIDs and identifiers replaced."""
        if not text:
            return text
        with self._lock:
            scrubber, kept = self._scrubber, self._kept
            text = self._paths(text)
        text = UID_PATTERN.sub(
            lambda m: m.group() if m.group().startswith(STANDARD_UID_ROOT) else uid_ref(m.group(), self.salt or "unsalted", prefix="uid"),
            text,
        )
        return _scrub_around_refs(text, scrubber, kept)


def _scrub_around_refs(text: str, scrubber: TextScrubber, kept: re.Pattern[str] = _WRITTEN) -> str:
    """`text` scrubbed, except for the references already in it (their hex digits are not IDs) and
    the configured endpoints (`LogRedactor.keep_endpoints`)."""
    pieces: list[str] = []
    position = 0
    for match in kept.finditer(text):
        pieces.append(scrubber.scrub(text[position : match.start()]).text)
        pieces.append(match.group())
        position = match.end()
    pieces.append(scrubber.scrub(text[position:]).text)
    return "".join(pieces)


#: The process's redactor; the application starts it for each run (`app.run`), the node adds its spool.
LOG_REDACTOR = LogRedactor()


class PHISafeFormatter(logging.Formatter):
    """A formatter that passes each record's message, exception text and stack through a redactor."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, redactor: LogRedactor = LOG_REDACTOR):
        super().__init__(fmt, datefmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)  # other handlers keep the original record
        safe.msg, safe.args = self.redactor.redact(record.getMessage()), None
        if record.exc_info:
            safe.exc_text = self.redactor.redact(record.exc_text or self.formatException(record.exc_info))
        elif record.exc_text:
            safe.exc_text = self.redactor.redact(record.exc_text)
        safe.exc_info = None
        if record.stack_info:
            safe.stack_info = self.redactor.redact(record.stack_info)
        return super().format(safe)


def install(handlers: Sequence[logging.Handler], fmt: str) -> None:
    """Give each handler a `PHISafeFormatter` with format `fmt`; route Python warnings through logging."""
    for handler in handlers:
        handler.setFormatter(PHISafeFormatter(fmt))
    logging.captureWarnings(True)  # warnings (pydicom, highdicom) can quote header values


# --------------------------------------------------------------------------- administrators


def locate(input_root: Path, refs: Iterable[str], salt: str) -> dict[str, list[Path]]:
    """The files and folders under `input_root` whose logged reference is one of `refs`.

    Every path under the folder is hashed with `salt` exactly as the log formatter does
    (`path_ref` of its path relative to the folder); references may be given with their extension.
    """
    wanted = {_bare_ref(ref) for ref in refs}
    found: dict[str, list[Path]] = {ref: [] for ref in wanted}
    root = Path(input_root)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            ref = path_ref(path.relative_to(root).as_posix(), salt)
            if ref in wanted:
                found[ref].append(path)
    return found


def _bare_ref(text: str) -> str:
    """`p-3f9c0a12b4de` from a reference as logged (`<input>/p-3f9c0a12b4de.dcm`, or bare)."""
    match = re.search(r"p-[0-9a-f]{12}", text)
    return match.group() if match else text


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.log_privacy locate --input FOLDER [-w WORKDIR] REF...`: which file a log line meant."""
    from app.uid_salt import UidSaltError, resolve_uid_salt

    parser = argparse.ArgumentParser(prog="python -m app.log_privacy", description="find the file behind a p- reference in the logs")
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("locate", help="print the files and folders whose logged reference is given")
    find.add_argument("-i", "--input", required=True, help="the folder the references are below: the run's input folder (<input>) or the node's spool (<spool>)")
    find.add_argument("-w", "--workdir", help="the run's work folder (holds the installation salt unless BIOMEDCLIP_MAP_UID_SALT is set)")
    find.add_argument("refs", nargs="+", help="references as logged, e.g. p-3f9c0a12b4de or <input>/p-3f9c0a12b4de.dcm")
    args = parser.parse_args(argv)
    if not Path(args.input).is_dir():
        print(f"error: {args.input} is not a folder; give the input folder of the run (or the node's spool)", file=sys.stderr)
        return 2
    try:
        salt = resolve_uid_salt(args.workdir)
    except UidSaltError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refs = [_bare_ref(ref) for ref in args.refs]
    found = locate(Path(args.input), refs, salt)
    missing = 0
    for ref in refs:
        for path in found.get(ref, []):
            print(f"{ref}\t{path}")
        if not found.get(ref):
            print(f"{ref}\tnot found under {args.input} (another input folder, or another salt?)", file=sys.stderr)
            missing += 1
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
