"""Whether a received instance makes its study urgent (STAT), and why, without quoting patient text.

A study goes to the front of the queue when any of its instances says so through:

- the C-STORE request's own Priority (0000,0700) = HIGH;
- a DICOM priority attribute whose value is one of `processing.urgent_priority_values` (default
  STAT, HIGH): Requested Procedure Priority (0040,1003), Reporting Priority (0040,1009), Scheduled
  Procedure Step Priority (0074,1200), and the retired Study Priority ID (0032,000C), at the top
  level or inside the Request Attributes Sequence (0040,0275);
- one of `processing.urgent_keywords` (default STAT, urgent, emergency) as a whole word in the
  clinical history or reason for the request: Additional Patient History (0010,21B0), Reason For
  The Requested Procedure (0040,1002), Reason For Study (0032,1030), Requested Procedure
  Description (0032,1060), also inside the Request Attributes Sequence.

The reason returned names the attribute and the configured keyword or coded value, never the free
text itself, so it can be logged.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

logger = logging.getLogger("biomedclip_map.node.priority")

DIMSE_PRIORITY_HIGH = 0x0001
PRIORITY_ATTRIBUTES = (
    "RequestedProcedurePriority",
    "ReportingPriority",
    "ScheduledProcedureStepPriority",
    "StudyPriorityID",
)
HISTORY_ATTRIBUTES = (
    "AdditionalPatientHistory",
    "ReasonForTheRequestedProcedure",
    "ReasonForStudy",
    "RequestedProcedureDescription",
)


@dataclass(frozen=True)
class UrgencyRules:
    """The configured values and keywords that make a study urgent."""

    priority_values: frozenset[str]
    keyword_pattern: re.Pattern[str] | None

    @classmethod
    def from_settings(cls, priority_values: Iterable[str], keywords: Iterable[str]) -> "UrgencyRules":
        words = [re.escape(k) for k in keywords]
        pattern = re.compile(r"(?<!\w)(" + "|".join(words) + r")(?!\w)", re.IGNORECASE) if words else None
        return cls(frozenset(v.strip().upper() for v in priority_values), pattern)


#: What pydicom raises for an element whose value cannot be decoded.
DECODING_ERRORS = (ValueError, TypeError, KeyError, AttributeError, struct.error, UnicodeDecodeError)


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except DECODING_ERRORS as exc:  # a malformed value must not stop receiving; it simply does not mark the study
        logger.debug("priority attribute %s cannot be decoded (%s); it does not mark the study urgent", keyword, type(exc).__name__)
        return ""
    if value is None:
        return ""
    return " ".join(str(v) for v in value) if isinstance(value, (list, tuple, MultiValue)) else str(value)


def _scopes(dataset: Dataset) -> list[tuple[str, Dataset]]:
    scopes: list[tuple[str, Dataset]] = [("", dataset)]
    try:
        items = dataset.get("RequestAttributesSequence") or []
    except DECODING_ERRORS as exc:
        logger.debug("the Request Attributes Sequence cannot be decoded (%s); its priorities are not read", type(exc).__name__)
        items = []
    scopes.extend(("RequestAttributesSequence > ", item) for item in items)
    return scopes


def urgency_reason(dataset: Dataset, dimse_priority: int | None, rules: UrgencyRules) -> str | None:
    """Why the instance's study is urgent (attribute and matched value/keyword), or None."""
    if dimse_priority == DIMSE_PRIORITY_HIGH:
        return "C-STORE Priority HIGH"
    scopes = _scopes(dataset)
    for prefix, scope in scopes:
        for keyword in PRIORITY_ATTRIBUTES:
            value = _text(scope, keyword).strip().upper()
            if value and value in rules.priority_values:
                return f"{prefix}{keyword} {value}"
    if rules.keyword_pattern is not None:
        for prefix, scope in scopes:
            for keyword in HISTORY_ATTRIBUTES:
                match = rules.keyword_pattern.search(_text(scope, keyword))
                if match:
                    return f"keyword '{match.group(1).lower()}' in {prefix}{keyword}"
    return None
