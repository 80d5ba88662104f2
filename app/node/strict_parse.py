"""Strict structural check of a received data set, before it is acknowledged.

pydicom reads leniently: a data set cut inside an element header, followed by stray bytes, or
encoded in implicit VR under an explicit-VR presentation context (or the reverse) still "decodes"
into something, which a PACS or DCMTK's `dcmdump` then cannot read. So the node walks the encoded
bytes exactly as they arrived, in the transfer syntax of the presentation context, without
decoding any value, and accepts them only if:

- every element header is complete and every value fits in what remains (nothing truncated);
- explicit VR elements carry a valid VR (so implicit-VR bytes under an explicit context fail), and
  an implicit-VR data set does not start with an explicit VR header (the reverse mix-up);
- tags rise within each data set (PS3.5 7.1), items and delimiters are where PS3.5 7.5 puts them,
  and undefined lengths are only used where PS3.5 allows them (SQ, encapsulated OB/OW, UN);
- the last element ends exactly at the end of the data (no trailing bytes).

The walk is linear in the number of elements and skips values, so it costs microseconds per
instance, even for large pixel data.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.datadict import dictionary_VR
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
LONG_LENGTH_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
DEFLATE_TRAILER_BYTES = 8
"""Bytes tolerated after a deflate stream: some encoders append a gzip-style CRC32 and size."""
MAX_DEPTH = 32
"""Deepest nesting of sequences accepted (a guard against crafted input, far beyond real data)."""


class MalformedDataSet(ValueError):
    """The encoded data set is not well-formed in its transfer syntax; the message says where and how."""


class _Walker:
    """Walks one encoded data set; raises MalformedDataSet on the first structural error."""

    def __init__(self, data: bytes | memoryview, *, explicit: bool, little: bool):
        self.data = data
        self.explicit = explicit
        self.end = "<" if little else ">"
        self.tag_format = struct.Struct(self.end + "HH")
        self.u16 = struct.Struct(self.end + "H")
        self.u32 = struct.Struct(self.end + "I")

    def _tag(self, at: int, limit: int) -> int:
        if at + 4 > limit:
            raise MalformedDataSet(f"truncated element header at byte {at}")
        group, element = self.tag_format.unpack_from(self.data, at)
        return (group << 16) | element

    def dataset(self, at: int, limit: int, depth: int, *, until_item_end: bool, explicit: bool | None = None) -> int:
        """Walk elements from `at`; stop at `limit` (defined length) or after an Item Delimitation Item."""
        explicit = self.explicit if explicit is None else explicit
        if depth > MAX_DEPTH:
            raise MalformedDataSet(f"sequences nested deeper than {MAX_DEPTH} levels")
        previous = -1
        while at < limit:
            tag = self._tag(at, limit)
            if tag == ITEM_END:
                if not until_item_end:
                    raise MalformedDataSet(f"item delimiter outside an item at byte {at}")
                return self._delimiter(at, limit)
            if tag in (ITEM, SEQUENCE_END):
                raise MalformedDataSet(f"item tag (FFFE,{tag & 0xFFFF:04X}) where an element was expected at byte {at}")
            if tag <= previous:
                raise MalformedDataSet(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) out of order at byte {at} (tags must rise)")
            previous = tag
            at = self._element(tag, at, limit, depth, explicit)
        if until_item_end:
            raise MalformedDataSet("an item of undefined length ends without its delimiter (truncated)")
        if at != limit:
            raise MalformedDataSet(f"element runs past the end of its container at byte {at}")
        return at

    def _delimiter(self, at: int, limit: int) -> int:
        if at + 8 > limit:
            raise MalformedDataSet(f"truncated delimiter at byte {at}")
        if self.u32.unpack_from(self.data, at + 4)[0] != 0:
            raise MalformedDataSet(f"delimiter with a non-zero length at byte {at}")
        return at + 8

    def _element(self, tag: int, at: int, limit: int, depth: int, explicit: bool) -> int:
        if explicit:
            if at + 8 > limit:
                raise MalformedDataSet(f"truncated element header at byte {at}")
            vr = bytes(self.data[at + 4 : at + 6])
            if vr not in VALID_VRS:
                raise MalformedDataSet(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} has no valid VR: the data set is not "
                    "in explicit VR as its presentation context says (or is corrupt)"
                )
            if vr in LONG_LENGTH_VRS:
                if at + 12 > limit:
                    raise MalformedDataSet(f"truncated element header at byte {at}")
                length = self.u32.unpack_from(self.data, at + 8)[0]
                start = at + 12
            else:
                length = self.u16.unpack_from(self.data, at + 6)[0]
                start = at + 8
        else:
            if at + 8 > limit:
                raise MalformedDataSet(f"truncated element header at byte {at}")
            length = self.u32.unpack_from(self.data, at + 4)[0]
            start = at + 8
            vr = None
        if length == UNDEFINED:
            return self._undefined(tag, vr, start, limit, depth, explicit)
        end = start + length
        if end > limit:
            raise MalformedDataSet(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} says {length} bytes, only {limit - start} follow (truncated)"
            )
        if vr == b"SQ" or (vr is None and _dictionary_vr(tag) == "SQ"):
            self._items(start, end, depth, explicit, defined=True)
        return end

    def _undefined(self, tag: int, vr: bytes | None, at: int, limit: int, depth: int, explicit: bool) -> int:
        """Value of undefined length: a sequence, encapsulated pixel data, or UN holding implicit VR items."""
        if vr in (b"OB", b"OW") and tag == 0x7FE00010:
            return self._fragments(at, limit)
        if vr == b"UN":
            return self._items(at, limit, depth, explicit=False, defined=False)
        if vr == b"SQ" or vr is None:
            return self._items(at, limit, depth, explicit, defined=False)
        raise MalformedDataSet(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with VR {vr.decode('ascii')} has an undefined length")

    def _items(self, at: int, limit: int, depth: int, explicit: bool, *, defined: bool) -> int:
        """Items of a sequence, to `limit` (defined length) or through its Sequence Delimitation Item."""
        while at < limit:
            tag = self._tag(at, limit)
            if tag == SEQUENCE_END and not defined:
                return self._delimiter(at, limit)
            if tag != ITEM:
                raise MalformedDataSet(f"expected an item in a sequence at byte {at}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            if at + 8 > limit:
                raise MalformedDataSet(f"truncated item header at byte {at}")
            length = self.u32.unpack_from(self.data, at + 4)[0]
            if length == UNDEFINED:
                at = self.dataset(at + 8, limit, depth + 1, until_item_end=True, explicit=explicit)
                continue
            end = at + 8 + length
            if end > limit:
                raise MalformedDataSet(f"item at byte {at} says {length} bytes, only {limit - at - 8} follow (truncated)")
            self.dataset(at + 8, end, depth + 1, until_item_end=False, explicit=explicit)
            at = end
        if not defined:
            raise MalformedDataSet("a sequence of undefined length ends without its delimiter (truncated)")
        return at

    def _fragments(self, at: int, limit: int) -> int:
        """Encapsulated Pixel Data: a Basic Offset Table item, fragments, then the Sequence Delimitation Item."""
        while True:
            tag = self._tag(at, limit)
            if tag == SEQUENCE_END:
                return self._delimiter(at, limit)
            if tag != ITEM:
                raise MalformedDataSet(f"expected a pixel data fragment at byte {at}")
            if at + 8 > limit:
                raise MalformedDataSet(f"truncated fragment header at byte {at}")
            length = self.u32.unpack_from(self.data, at + 4)[0]
            if length == UNDEFINED or at + 8 + length > limit:
                raise MalformedDataSet(f"pixel data fragment at byte {at} is truncated")
            at += 8 + length


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def check_encoding(data: bytes | memoryview, transfer_syntax: str) -> None:
    """MalformedDataSet unless `data` is one complete, well-formed data set in `transfer_syntax`."""
    syntax = str(transfer_syntax)
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(bytes(data)) + inflater.flush()
        except zlib.error as exc:
            raise MalformedDataSet(f"the deflated data set cannot be inflated ({exc})") from exc
        if not inflater.eof:
            raise MalformedDataSet("the deflated data set is truncated")
        if len(inflater.unused_data) > DEFLATE_TRAILER_BYTES:
            raise MalformedDataSet("the deflated data set has trailing bytes")
    explicit = syntax != ImplicitVRLittleEndian
    little = syntax != ExplicitVRBigEndian
    if len(data) == 0:
        raise MalformedDataSet("the data set is empty")
    if not explicit and len(data) >= 8 and bytes(data[4:6]) in VALID_VRS:
        group, element = struct.unpack_from("<HH", data, 0)
        if _dictionary_vr((group << 16) | element) == bytes(data[4:6]).decode("ascii"):
            raise MalformedDataSet("the data set is in explicit VR, but its presentation context says implicit VR")
    _Walker(data, explicit=explicit, little=little).dataset(0, len(data), 0, until_item_end=False)
