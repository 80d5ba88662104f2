"""A coded concept, the currency of DICOM SR: scheme designator, code value, code meaning."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """A coded concept (scheme designator, code value, code meaning), e.g. SCT 17621005 "Normal"."""

    scheme: str
    value: str
    meaning: str
