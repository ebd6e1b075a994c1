"""The bytes of every field of a GRIB file, split exactly as ecCodes' multi-field support does.

Creating handles from bytes in memory is cheaper than ``codes_grib_new_from_file`` with
multi-field support (which re-reads the file through a ``FILE*`` and rebuilds every GRIB2
message), but a GRIB2 message may hold several fields, and a reader of messages would drop all
but the first. So the fields are cut here the way ecCodes' ``grib_handle_new_from_file_multi``
(ecCodes 2.50, ``grib_handle.cc``) cuts them:

* sections are walked from byte 16: 4-byte length, 1-byte number; every section 7 ends a field,
  built from section 0 and the latest section 1..7 seen, total length rewritten;
* a section 6 whose bitmap indicator is 254 ("previously defined bitmap") takes the last other
  section 6 seen in the file (ecCodes keeps it across messages), and every other section 6
  becomes that bitmap;
* GRIB1 messages are one field each.

A message that holds one field with its sections in order is passed on as it is (ecCodes'
rebuilt copy has the same bytes). Anything outside the regular case (unknown edition, a section
number or length that does not add up, a field without its sections, a 254 bitmap with none
before, stale section lengths that would make ecCodes write a different total length) raises
``IrregularMessage``; the caller then reads the file with ecCodes' own multi-field reader,
which is exact by definition. The tests check the cut fields byte for byte against ecCodes'
multi-field reader on every shared test file (the GFS file has multi-field messages whose
v-wind fields share a bitmap).

Messages are located by ecCodes' own strict scanner (``codes_extract_offsets_sizes_malloc``),
the same reader logic ``codes_grib_new_from_file`` uses; any error there also raises
``IrregularMessage`` so that the caller's ecCodes reader reports it precisely.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from .grib_keys import extract_offsets_sizes

_END = b"7777"
_REQUIRED_SECTIONS = (1, 3, 4, 5, 6)


class IrregularMessage(Exception):
    """The fast reader does not handle this file; read it with ecCodes' reader instead."""


@dataclass(frozen=True, slots=True)
class Message:
    number: int  # 1-based, in file order
    offset: int
    length: int
    # per field: one complete single-field GRIB message, and its grid section (or None)
    fields: list[tuple[bytes | memoryview, memoryview | None]]


def locate_messages(path: str) -> list[tuple[int, int]]:
    """(offset, length) of every GRIB message, as ecCodes' strict scanner finds them."""
    spans = extract_offsets_sizes(path)
    if spans is None:
        raise IrregularMessage(path)
    return spans


def read_messages(file: IO[bytes], spans: list[tuple[int, int]]) -> Iterator[Message]:
    """Read each message and split it into fields; state carries over as in ecCodes.

    The file is read in one call (the decoded values of its fields take several times its
    size anyway) and messages are views into it, copied only by ecCodes.
    """
    state = _MultiFieldState()
    whole = memoryview(file.read())
    for number, (offset, length) in enumerate(spans, start=1):
        data = whole[offset : offset + length]
        if len(data) != length or data[:4] != b"GRIB" or data[-4:] != _END:
            raise IrregularMessage(f"message {number}")
        edition = data[7]
        if edition == 1:
            fields = [(data, _grib1_grid_section(data))]
        elif edition == 2:
            fields = state.split(data)
        else:
            raise IrregularMessage(f"message {number}: edition {edition}")
        yield Message(number, offset, length, fields)


class _MultiFieldState:
    """What ecCodes' ``grib_multi_support`` keeps for one open file."""

    __slots__ = ("bitmap", "lengths")

    def __init__(self) -> None:
        # ecCodes resets section pointers after each message but never these lengths, which it
        # adds up (capped at the message length) as the total length of every rebuilt field
        self.lengths = [16, 0, 0, 0, 0, 0, 0, 0]
        self.bitmap: bytes | memoryview | None = None

    def split(self, data: memoryview) -> list[tuple[bytes | memoryview, memoryview | None]]:
        total = len(data)
        sections: list[bytes | memoryview | None] = [data[:16], *([None] * 7)]
        order: list[int] = []
        substituted = False
        fields: list[list[bytes | memoryview]] = []  # the sections of each field
        position = 16
        while total - position >= 5:  # grib2_has_next_section
            length = int.from_bytes(data[position : position + 4], "big")
            number = data[position + 4]
            if not 1 <= number <= 7 or length < 5 or position + length > total - 4:
                raise IrregularMessage(f"section {number} of length {length} at {position}")
            section = data[position : position + length]
            position += length
            order.append(number)
            sections[number] = section
            self.lengths[number] = length
            if number == 6:
                if section[5] == 254:
                    if self.bitmap is None:
                        raise IrregularMessage("bitmap 254 without an earlier bitmap")
                    sections[6] = self.bitmap
                    self.lengths[6] = len(self.bitmap)
                    substituted = True
                else:
                    self.bitmap = section  # a view of the file, which outlives this state
            if number == 7:
                fields.append(self._field_sections(sections, total))
        if total - position != 4 or not order or order[-1] != 7:
            raise IrregularMessage("the last section is not section 7 followed by 7777")
        grids = [parts[_position(parts, 3)] for parts in fields]
        if len(fields) == 1 and not substituted and order == sorted(set(order)):
            return [(data, grids[0])]  # ecCodes' rebuilt copy would be byte for byte the same
        return [(_build(parts), grid) for parts, grid in zip(fields, grids, strict=True)]

    def _field_sections(
        self, sections: list[bytes | memoryview | None], total: int
    ) -> list[bytes | memoryview]:
        """What grib2_build_message joins: section 0 and the latest sections 1..7."""
        if any(sections[n] is None for n in _REQUIRED_SECTIONS):
            raise IrregularMessage("a field without all of sections 1, 3, 4, 5 and 6")
        parts = [s for s in sections if s is not None]
        declared = min(sum(self.lengths) + 4, total)
        if declared != sum(map(len, parts)) + 4:
            raise IrregularMessage("ecCodes would write a total length that does not add up")
        return parts


def field_sections(field: bytes | memoryview) -> dict[int, memoryview] | None:
    """Sections 1-7 of a single-field GRIB2 message by number (views, nothing copied), or None
    if it is not GRIB2 or its section lengths do not add up."""
    view = memoryview(field)
    if len(view) < 16 or view[7] != 2:
        return None
    sections: dict[int, memoryview] = {}
    position, end = 16, len(view) - 4
    while position + 5 <= end:
        length = int.from_bytes(view[position : position + 4], "big")
        if length < 5 or position + length > end:
            return None
        sections[view[position + 4]] = view[position : position + length]
        position += length
    return sections


def _position(parts: list[bytes | memoryview], number: int) -> int:
    """Index in ``parts`` (section 0, then the sections present in order) of ``number``."""
    return next(i for i, part in enumerate(parts) if i and part[4] == number)


def _grib1_grid_section(data: memoryview) -> memoryview | None:
    """The GDS (section 2) of a GRIB1 message, if it has one and its length adds up."""
    pds_length = int.from_bytes(data[8:11], "big")
    if len(data) < 8 + pds_length + 3 or pds_length < 8 or not data[15] & 0x80:
        return None
    start = 8 + pds_length
    length = int.from_bytes(data[start : start + 3], "big")
    return data[start : start + length] if length and start + length <= len(data) else None


def _build(parts: list[bytes | memoryview]) -> bytes:
    """Section 0 with the new total length, the sections, then 7777."""
    length = sum(map(len, parts)) + 4
    head = bytes(parts[0][:8]) + length.to_bytes(8, "big")
    return b"".join([head, *parts[1:], _END])
