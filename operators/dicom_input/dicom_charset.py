"""Text that a device wrote as UTF-8 without saying so: read it as UTF-8.

DICOM text is ASCII unless Specific Character Set (0008,0005) names another repertoire. Many newer
devices (phones, web uploaders, some modalities) write UTF-8 and leave the attribute out; read as
the default repertoire, "Müller^Jürgen" then becomes "MÃ¼ller^JÃ¼rgen", and a report would carry the
mangled name into the PACS.

`repair_undeclared_utf8` decides from the raw bytes: when a dataset declares no character set (or
only the default repertoire, ISO_IR 6) and every text value that holds bytes outside ASCII decodes
as valid UTF-8, the dataset is switched to ISO_IR 192 (UTF-8) in memory before any value is
decoded. Random Latin-1 text is almost never valid UTF-8 (a byte >= 0x80 must be followed by the
exact continuation pattern), so this misreads nothing that was meant as Latin-1 in practice; when
even one value is not valid UTF-8 the dataset is left as it is. Files are never changed.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

#: VRs whose values are text in the dataset's character set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "PN", "UC", "UT"})
#: Values of Specific Character Set that mean the default repertoire only.
DEFAULT_REPERTOIRE = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
UTF8_CHARACTER_SET = "ISO_IR 192"


def _declared_character_set(dataset: Dataset) -> str:
    element = dataset._dict.get(0x00080005)  # read raw: decoding it needs no character set
    if element is None:
        return ""
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("ascii", "replace")
    elif isinstance(value, str):
        text = value
    else:  # already decoded into several values
        text = "\\".join(str(v) for v in value or [])
    return text.strip().strip("\\").strip()


def _raw_text_values(dataset: Dataset) -> list[bytes]:
    """The undecoded values of the dataset's top-level text elements that hold non-ASCII bytes."""
    values = []
    for tag, element in dataset._dict.items():
        if not isinstance(element, RawDataElement) or not element.value:
            continue
        vr = element.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr in TEXT_VRS and any(byte >= 0x80 for byte in element.value):
            values.append(bytes(element.value))
    return values


def undeclared_utf8(dataset: Dataset) -> bool:
    """Whether the dataset's undeclared non-ASCII text is UTF-8 (see the module docstring)."""
    if _declared_character_set(dataset) not in DEFAULT_REPERTOIRE:
        return False
    values = _raw_text_values(dataset)
    if not values:
        return False
    for value in values:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def repair_undeclared_utf8(dataset: Dataset) -> bool:
    """Switch a freshly read dataset to UTF-8 when its undeclared text is UTF-8; True if it did.

    Must be called before any text value of `dataset` is accessed (values decoded earlier keep
    their first decoding). Only the in-memory dataset changes.
    """
    if not undeclared_utf8(dataset):
        return False
    implicit_vr, little_endian = dataset.original_encoding
    dataset.set_original_encoding(implicit_vr, little_endian, ["UTF8"])
    dataset.SpecificCharacterSet = UTF8_CHARACTER_SET
    return True
