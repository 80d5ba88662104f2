"""The study's own free text, scrubbed, as one short "clinical context" line for the report (opt-in).

By default the outputs carry no text from the study's free-text attributes: a scrubber without a
language model cannot promise to find every name in free text (see README, "Patient privacy").
A site may turn the line on (`--clinical-context`). A reader of the AI report then learns what the
study was requested for. DICOM headers carry
that as free text (study and series descriptions, additional patient history, the reason for the
requested procedure, image comments), typed by people and so liable to hold names, dates and
identifiers. `scrub_analysis` builds the line from those attributes, passes every piece through
the study's `TextScrubber` (exact values from the study's own headers, then patterns), and only
then shortens it; the SR writer writes the result as it is. The product-generated texts the SR
writer uses from the analysis (each series' preprocessing description) pass through the same
scrubber, so everything textual in the report's narrative has been scrubbed.

The line is scrubbed *before* it is shortened: shortening first could cut a name in half and
leave a fragment the scrubber no longer recognises.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from common.codes import Code
from common.zero_shot_tasks import ZeroShotTask
from operators.messages import ImageSource, SelectedSeries, StudyAnalysis
from operators.phi.phi_text import (
    ScrubResult,
    TextScrubber,
    add_counts,
    identifiers_from_headers,
)

T = TypeVar("T")
#: Parts of an analysis that are not report text: configuration codes and tasks, the selected
#: series (its headers are the study's identity), image provenance (UIDs the SR references).
_NOT_SCRUBBED = (Code, ZeroShotTask, SelectedSeries, ImageSource)

#: Study-level free-text attributes, with the words the line introduces each one with.
STUDY_TEXT = (
    ("StudyDescription", "study"),
    ("RequestedProcedureDescription", "requested procedure"),
    ("ReasonForTheRequestedProcedure", "reason for the request"),
    ("ReasonForStudy", "reason for the study"),
    ("AdditionalPatientHistory", "history"),
)
#: Series-level free-text attributes (from each analysed series' header).
SERIES_TEXT = (("SeriesDescription", "description"), ("ImageComments", "comments"))
#: Sequences whose items may carry the request's free text (Request Attributes, procedure steps).
REQUEST_SEQUENCES = ("RequestAttributesSequence", "ScheduledProcedureStepSequence")

#: At most this many characters of each scrubbed value, and of the whole line, are kept.
VALUE_LIMIT = 160
LINE_LIMIT = 900
#: Free text longer than this is cut before scrubbing (the line keeps far less than this, so a
#: value cut here is cut again, well before this point, after scrubbing).
SCRUB_WINDOW = 8 * VALUE_LIMIT

CONTEXT_INTRO = "Clinical context from the study's DICOM header (identifiers removed, as entered at the source):"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


def _texts(header: Dataset, keyword: str) -> list[str]:
    """The non-empty values of `keyword` in `header` and in the items of its request sequences."""
    found: list[str] = []
    for dataset in [header, *(item for name in REQUEST_SEQUENCES for item in (header.get(name) or []))]:
        value = dataset.get(keyword)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        found.extend(str(v) for v in values if str(v or "").strip())
    return found


def _clean(text: str) -> str:
    """One line: control characters and runs of white space become single spaces."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, never inside a `[TAG]`, with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    open_tag = cut.rfind("[")
    if open_tag > cut.rfind("]"):
        cut = cut[:open_tag]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def _scrubbed(scrubber: TextScrubber, text: str) -> ScrubResult:
    result = scrubber.scrub(_clean(text[:SCRUB_WINDOW]))
    return ScrubResult(shorten(result.text, VALUE_LIMIT), result.counts)


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for value in values:
        key = value.casefold()
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def context_line(analysis: StudyAnalysis, scrubber: TextScrubber) -> tuple[str | None, dict[str, int]]:
    """The scrubbed clinical-context line of the study (None if it has no free text) and the counts."""
    counts: dict[str, int] = {}
    parts: list[str] = []
    study_header = analysis.study.header
    for keyword, words in STUDY_TEXT:
        values = []
        for text in _unique(_texts(study_header, keyword)):
            result = _scrubbed(scrubber, text)
            counts = add_counts(counts, result.counts)
            if result.text:
                values.append(result.text)
        if values:
            parts.append(f"{words}: {' / '.join(_unique(values))}")
    for index, series in enumerate(analysis.series, start=1):
        pieces = []
        for keyword, words in SERIES_TEXT:
            for text in _unique(_texts(series.selection.series.header, keyword)):
                result = _scrubbed(scrubber, text)
                counts = add_counts(counts, result.counts)
                if result.text:
                    pieces.append(f"{words} {result.text}")
        if pieces:
            parts.append(f"analysed series #{index}: {', '.join(pieces)}")
    if not parts:
        return None, counts
    return shorten(f"{CONTEXT_INTRO} {'; '.join(parts)}.", LINE_LIMIT), counts


def study_scrubber(analysis: StudyAnalysis) -> TextScrubber:
    """A scrubber that knows the identifiers of every header of the study (study and series level)."""
    headers = [analysis.study.header, *(s.header for s in analysis.study.series)]
    return TextScrubber(identifiers_from_headers(headers))


def scrub_texts(value: T, scrubber: TextScrubber) -> tuple[T, dict[str, int]]:
    """`value` with every text in it scrubbed: strings, and strings inside dataclasses, lists and tuples.

    Used on each analysed series, so that the texts other stages wrote in words (how the pixels
    were prepared, the burn specialist's notes, methods and the region read from the header) are
    scrubbed whatever they quote. Left as they are: coded concepts and task definitions (they
    come from the product's configuration and must stay valid codes), enumerations, numbers,
    arrays, and the DICOM headers themselves (they are the study's identity, not report text).
    """
    if isinstance(value, enum.Enum):  # before str: some enumerations are str subclasses
        return value, {}
    if isinstance(value, str):
        result = scrubber.scrub(value)
        return result.text, result.counts  # type: ignore[return-value]
    if isinstance(value, (list, tuple)) and not isinstance(value, MultiValue):
        counts: dict[str, int] = {}
        items = []
        for element in value:
            scrubbed, more = scrub_texts(element, scrubber)
            counts = add_counts(counts, more)
            items.append(scrubbed)
        return type(value)(items), counts  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and not isinstance(value, _NOT_SCRUBBED):
        counts = {}
        changes = {}
        for item in dataclasses.fields(value):
            current = getattr(value, item.name)
            scrubbed, more = scrub_texts(current, scrubber)
            counts = add_counts(counts, more)
            if scrubbed is not current:
                changes[item.name] = scrubbed
        return (dataclasses.replace(value, **changes) if changes else value), counts
    return value, {}


def scrub_analysis(analysis: StudyAnalysis, *, clinical_context: bool = False) -> StudyAnalysis:
    """The analysis with every text the SR writer uses scrubbed, and the clinical-context line if asked.

    By default no text taken from the study's free-text attributes goes into the outputs: the
    report describes what was analysed in the product's own words. A site that wants the
    requester's context in the report turns `clinical_context` on (`--clinical-context`); the line
    is then built and scrubbed here. Returns a new `StudyAnalysis`: `clinical_context` holds the
    scrubbed line (if asked and the study has free text), each series' texts are scrubbed, and
    `redactions` counts what was removed per category.
    """
    scrubber = study_scrubber(analysis)
    line, counts = context_line(analysis, scrubber) if clinical_context else (None, {})
    series = []
    for item in analysis.series:
        scrubbed, item_counts = scrub_texts(item, scrubber)
        counts = add_counts(counts, item_counts)
        series.append(scrubbed)
    return dataclasses.replace(
        analysis,
        series=series,
        clinical_context=(line,) if line else (),
        redactions=counts,
    )


def analysed_input_files(analysis: StudyAnalysis) -> list[Path]:
    """The input files of the instances the analysis evaluated (for the de-identified export)."""
    paths: list[Path] = []
    for series in analysis.series:
        by_uid = {f.sop_instance_uid: f.path for f in series.selection.series.instances}
        for image in series.images:
            path = by_uid.get(image.source.sop_instance_uid)
            if path is not None and path not in paths:
                paths.append(path)
    return paths
