"""PHI-free logging: every log line is redacted before it is written, whatever code wrote it.

Log lines identify studies by their salted `ref` (`operators.dicom_input.study_refs`), but messages also
carry file paths (a skipped file, a pixel-decoding error) and exception texts, and at MONAI
Deploy Express sites file names are often SOP Instance UIDs while folders exported by viewers
may carry patient names. `PHISafeFormatter`, installed on the log handlers by
`app.cli.configure_logging`, rewrites each record's message, exception text and stack before it
is formatted:

- the input folder becomes `<input>`; within a path below it, a file or folder name that is a
  UID becomes `uid-` + a salted hash (the same 12 hex digits as the study's `st-` ref for a Study
  Instance UID) and one that holds a known identifier of a study of the run becomes `p-` + a
  salted hash; the extension is kept (`<input>/uid-3f9c0a12b4de.dcm`);
- any other UID in the text becomes `uid-` + its salted hash (standard DICOM UIDs, such as SOP
  Class and Transfer Syntax UIDs, stay readable: they identify no one);
- the identifying values of the run's studies (names in all their forms, IDs, accession numbers,
  dates, phone numbers, addresses; see `operators.phi.phi_text`) become `[NAME]`, `[ID]`, ... tags.

The loader registers the run's studies with `LOG_REDACTOR` when its scan ends and holds the lines
the scan logged until then (`scan_logging`), so even a skipped file in a folder named after the
patient is logged without the name. An administrator finds the file behind a `uid-` or `p-`
reference with `python -m app.log_privacy locate -i INPUT [-w WORKDIR] REF...`, which hashes the
names under the input folder with the same salt.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from operators.phi.phi_text import StudyIdentifiers, TextScrubber, fold, identifiers_from_headers
from operators.dicom_input.study_refs import uid_ref

#: A DICOM UID (or other OID) of at least five components.
UID_PATTERN = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){4,}(?![\w]|\.\d)")
#: UIDs defined by the DICOM standard itself (SOP classes, transfer syntaxes, coding schemes).
STANDARD_UID_ROOT = "1.2.840.10008."
INPUT_PLACEHOLDER = "<input>"

_COMPONENT = r"[^\s/\\:;,'\"()<>\[\]]+"
_EXTENSION = re.compile(r"^(?P<stem>.*?)(?P<ext>(?:\.[A-Za-z][A-Za-z0-9]{0,4})*)$")


class LogRedactor:
    """Redacts input paths, UIDs and the run's known identifiers from log text (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.salt = ""
        self._roots: list[str] = []
        self._root_pattern: re.Pattern[str] | None = None
        self._identifiers = StudyIdentifiers()
        self._scrubber: TextScrubber | None = None
        self._name_words: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ configuration

    def start_run(self, input_root: Path | str, salt: str) -> None:
        """Begin a run: its input folder, its salt; the previous run's identifiers are forgotten."""
        root = Path(input_root)
        roots = {str(root), os.path.abspath(root), os.path.realpath(root)}
        roots = sorted((r.rstrip("/\\") for r in roots if r.rstrip("/\\")), key=len, reverse=True)
        pattern = re.compile("(?:" + "|".join(re.escape(r) for r in roots) + rf")(?P<rest>(?:[/\\]{_COMPONENT})*)[/\\]?")
        with self._lock:
            self.salt = salt
            self._roots = roots
            self._root_pattern = pattern
            self._identifiers = StudyIdentifiers()
            self._scrubber = None
            self._name_words = frozenset()

    def register_studies(self, studies: Iterable) -> None:
        """Add the identifying values of these studies (`StudyHeader`s) to what is redacted."""
        identifiers = StudyIdentifiers()
        identifiers.merge(self._identifiers)
        for study in studies:
            identifiers.merge(identifiers_from_headers([study.header, *(s.header for s in study.series)]))
        scrubber = TextScrubber(identifiers, patterns=False) if identifiers else None
        words = frozenset(w for person in identifiers.names for w in person.words if len(w) >= 3)
        with self._lock:
            self._identifiers, self._scrubber, self._name_words = identifiers, scrubber, words

    # ------------------------------------------------------------------ redaction

    def _ref(self, value: str, prefix: str) -> str:
        return uid_ref(value, self.salt or "unsalted", prefix=prefix)

    def component(self, name: str, scrubber: TextScrubber | None = None, words: frozenset[str] = frozenset()) -> str:
        """A file or folder name as logged: UID-shaped or holding a known identifier → salted ref."""
        parts = _EXTENSION.match(name)
        stem, ext = (parts.group("stem"), parts.group("ext")) if parts and parts.group("stem") else (name, "")
        if UID_PATTERN.fullmatch(stem) and not stem.startswith(STANDARD_UID_ROOT):
            return self._ref(stem, "uid") + ext
        tokens = {fold(t) for t in re.findall(r"[^\W_]+", name)}
        if tokens & words or (scrubber is not None and scrubber.scrub(name).total):
            return self._ref(name, "p") + ext
        return name

    def _path(self, match: re.Match[str], scrubber: TextScrubber | None, words: frozenset[str]) -> str:
        rest = match.group("rest")
        parts = [p for p in re.split(r"[/\\]", rest) if p]
        return "/".join([INPUT_PLACEHOLDER, *(self.component(p, scrubber, words) for p in parts)])

    def redact(self, text: str) -> str:
        """`text` with input paths, non-standard UIDs and the run's identifiers replaced."""
        if not text:
            return text
        with self._lock:
            pattern, scrubber, words = self._root_pattern, self._scrubber, self._name_words
        if pattern is not None:
            text = pattern.sub(lambda m: self._path(m, scrubber, words), text)
        text = UID_PATTERN.sub(
            lambda m: m.group() if m.group().startswith(STANDARD_UID_ROOT) else self._ref(m.group(), "uid"), text
        )
        if scrubber is not None:
            text = scrubber.scrub(text).text
        return text


#: The process's redactor; the loader configures it for each run.
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


class _Hold(logging.Filter):
    def __init__(self, handler: logging.Handler, held: list):
        super().__init__()
        self.handler, self.held = handler, held

    def filter(self, record: logging.LogRecord) -> bool:
        self.held.append((self.handler, record))
        return False


@contextlib.contextmanager
def scan_logging(input_root: Path | str, salt: str) -> Iterator[Callable[[Iterable], None]]:
    """Start a run's redaction and hold log lines until the scan's studies are registered.

    Use as ``with scan_logging(root, salt) as register: studies = scan(...); register(studies)``.
    The held lines are written when the block ends (also if it raises), after registration.
    """
    LOG_REDACTOR.start_run(input_root, salt)
    held: list = []
    handlers = list(logging.getLogger().handlers)
    holds = [_Hold(handler, held) for handler in handlers]
    for hold in holds:
        hold.handler.addFilter(hold)
    try:
        yield LOG_REDACTOR.register_studies
    finally:
        for hold in holds:
            hold.handler.removeFilter(hold)
        for handler, record in held:
            handler.handle(record)


# --------------------------------------------------------------------------- administrators


def locate(input_root: Path, refs: Iterable[str], salt: str) -> dict[str, list[Path]]:
    """The files under `input_root` whose logged path holds each `uid-`/`p-` reference."""
    wanted = set(refs)
    found: dict[str, list[Path]] = {ref: [] for ref in wanted}
    redactor = LogRedactor()
    redactor.salt = salt
    for folder, dirs, files in os.walk(input_root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            parts = _EXTENSION.match(name)
            stem = parts.group("stem") if parts and parts.group("stem") else name
            candidates = {redactor._ref(name, "p"), redactor._ref(stem, "uid") if UID_PATTERN.fullmatch(stem) else ""}
            for ref in candidates & wanted:
                found[ref].append(path)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.log_privacy locate -i INPUT [-w WORKDIR] REF...`: which file a log line meant."""
    from app.uid_salt import UidSaltError, resolve_uid_salt

    parser = argparse.ArgumentParser(prog="python -m app.log_privacy", description="find the input file behind a uid-/p- reference in the logs")
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("locate", help="print the input files whose path holds the references")
    find.add_argument("-i", "--input", required=True, help="the input folder of the run that logged the references")
    find.add_argument("-w", "--workdir", help="the run's work folder (holds the installation salt unless BIOMEDCLIP_MAP_UID_SALT is set)")
    find.add_argument("refs", nargs="+", help="references as logged, e.g. uid-3f9c0a12b4de (the extension may be left on)")
    args = parser.parse_args(argv)
    try:
        salt = resolve_uid_salt(args.workdir)
    except UidSaltError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refs = [re.match(r"(?:uid|p)-[0-9a-f]+", r).group() if re.match(r"(?:uid|p)-[0-9a-f]+", r) else r for r in args.refs]
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
