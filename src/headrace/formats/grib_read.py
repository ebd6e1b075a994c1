"""Read every field of a GRIB file with ecCodes: metadata, values with missing points, grid.

Why it is written this way:

* Every field is read, including all fields of multi-field GRIB2 messages (a reader of messages
  would silently drop data). Handles are created from the bytes of each field in memory, cut
  from the messages exactly as ecCodes' multi-field support cuts them
  (``headrace.formats.grib_messages``); that is about a third cheaper than letting ecCodes
  read the file with multi-field support on. A file the fast reader does not handle (an
  irregular message, or any error of ecCodes' scanner) is read again with
  ``codes_grib_new_from_file`` and multi-field support, whose errors are then reported. ecCodes
  keeps multi-field state per process and per open file (keyed on the C ``FILE*``), so it is
  reset for the file before and after reading, and switched on only around each read, under a
  lock, so that other ecCodes users in the process (and other threads) keep the default.
* The values are decoded as float64 with ``missingValue`` set to NaN first. GRIB values are never
  NaN, so NaN marks exactly the points ecCodes treats as missing: bitmap, grid_complex
  missing-value management, entirely missing fields. A sentinel such as 9999 would collide with
  real data (two points of ``eta.grb`` and one of the GFS file are exactly 9999).
* ecCodes skips bytes it cannot parse while looking for the next ``GRIB``. A damaged header
  therefore silently drops a message, so the bytes between messages are checked afterwards.
* Evaluating a parameter "concept" (paramId, shortName, name, units) costs about 0.2 ms per
  field each, and ecCodes keeps the tables of each one per edition and centre for the life of
  the process (``name`` alone: 15-70 MB each). paramId is ecCodes' own answer, cached by the
  values of every key its concept files can test on the path to it
  (``headrace.formats.grib_concept_cache``): never by a subset, which would mislabel a field when a
  key left out differs. shortName, name and units are then read from ecCodes' own definition
  files for that paramId when those files make them certain (see
  ``headrace.formats.grib_concepts``), else evaluated on the field. They are never cached per
  paramId alone: the same paramId has different names under different centres/editions.
* The step and validity keys, stepType and the concept layout of most GRIB2 fields are
  functions of a few header bytes (``headrace.formats.grib_field_class``): ecCodes answers for
  the first field of each class and the answer serves the rest (about 6% of a conversion).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

import eccodes
import numpy as np

from headrace.errors import CorruptGrib

from .grib_concept_cache import param_id, step_type, type_of_level
from .grib_concepts import ConceptLayout, Names, concept_layout, parameter_names
from .grib_disk_cache import save as save_disk_cache
from .grib_fast_path import count_conversion
from .grib_field_class import ClassCache, field_class
from .grib_grid import Grid, grid_of
from .grib_keys import KeyReader, decode_values, handle_from_message, release
from .grib_messages import IrregularMessage, locate_messages, read_messages

# GRIB code table 4.4 (also used by ecCodes for GRIB1): seconds per unit; months/years vary.
_STEP_UNIT_SECONDS = {0: 60, 1: 3600, 2: 86400, 10: 10800, 11: 21600, 12: 43200, 13: 1, 254: 1}
_STEP_UNIT_NAMES = {0: "m", 1: "h", 2: "D", 3: "M", 4: "Y", 5: "10Y", 6: "30Y", 7: "C"}
_STEP_UNIT_NAMES |= {10: "3h", 11: "6h", 12: "12h", 13: "s", 254: "s"}

# Bytes that may sit between messages: zero padding and WMO bulletin headers (ASCII, SOH, ETX).
# Shorter gaps are always fine (Fortran record markers): no GRIB message is that small.
_ALLOWED_GAP_BYTES = bytes([0, 1, 3, 9, 10, 13, *range(32, 127)])
_SMALLEST_MESSAGE = 40

_MULTI_LOCK = threading.Lock()


@dataclass(slots=True)
class GribField:
    """One decoded field. ``values`` holds NaN where ``missing`` is True."""

    index: int
    message: int
    base_name: str
    meta: dict[str, Any]
    values: np.ndarray
    missing: np.ndarray | None
    grid: Grid


@dataclass(slots=True)
class GribContents:
    source: str
    fields: list[GribField]
    messages: int
    bytes: int


def read_grib_file(path: str, source: str) -> GribContents:
    """Decode every field of the local file ``path``; ``source`` names it in errors/metadata."""
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptGrib(source, "the file is empty", "re-download or regenerate the file")
    try:
        fields, spans = _read_in_memory(path, source)
        whole_messages = True
    except IrregularMessage:
        fields, spans = _read_with_multi_field_support(path, source)
        whole_messages = False
    if not fields:
        raise CorruptGrib(
            source,
            "no GRIB message found (not a GRIB file, or its headers are damaged)",
            "check that the file is GRIB edition 1 or 2 and was fully downloaded",
        )
    _check_gaps(path, size, spans, source, whole_messages)
    count_conversion()
    save_disk_cache()  # the next process starts with what this one learnt
    return GribContents(source=source, fields=fields, messages=len(spans), bytes=size)


def _read_in_memory(path: str, source: str) -> tuple[list[GribField], dict[int, int]]:
    """Fields from handles on the bytes of each field (see ``grib_messages``)."""
    with _MULTI_LOCK:  # ecCodes' scanner refuses to run while multi-field support is on
        spans = locate_messages(path)
    fields: list[GribField] = []
    batch: list[tuple[int, bytes | memoryview, memoryview | None]] = []
    batch_bytes = 0
    with open(path, "rb") as file:
        for message in read_messages(file, spans):
            for data, grid_section in message.fields:
                batch.append((message.number, data, grid_section))
                batch_bytes += len(data)
                if len(batch) == _BATCH or batch_bytes >= _BATCH_BYTES:
                    fields += _decode_batch(batch, len(fields), source)
                    batch, batch_bytes = [], 0
    if batch:
        fields += _decode_batch(batch, len(fields), source)
    return fields, dict(spans)


# Handles created back to back per batch. Creating a handle walks ecCodes' definition tree,
# evaluating concepts reads their tables, decoding streams the values: field by field each step
# evicts from the CPU caches what the next field's same step needs; in phases over a batch it
# stays warm (about 10% less CPU on the shared files). A handle holds a copy of its packed
# message, so a batch also stops at 64 MB of messages (the values decoded from them are kept
# anyway, and take several times that).
_BATCH = 16
_BATCH_BYTES = 64 << 20


def _decode_batch(
    batch: list[tuple[int, bytes | memoryview, memoryview | None]], first: int, source: str
) -> list[GribField]:
    """Fields of (message number, field bytes, grid section) from handles made together."""
    handles: list[int] = []
    try:
        for number, data, _ in batch:
            handle = handle_from_message(data)
            if handle is None:
                raise IrregularMessage(f"message {number}")
            handles.append(handle)
        described = [
            _describe(handle, first + i, number, source, grid_section, data)
            for i, (handle, (number, data, grid_section)) in enumerate(
                zip(handles, batch, strict=True)
            )
        ]
        return [_decode(h, d) for h, d in zip(handles, described, strict=True)]
    finally:
        for handle in handles:
            release(handle)


def _read_with_multi_field_support(
    path: str, source: str
) -> tuple[list[GribField], dict[int, int]]:
    """Fields as ``codes_grib_new_from_file`` returns them; reports ecCodes' reading errors."""
    fields: list[GribField] = []
    spans: dict[int, int] = {}  # message offset -> length, in file order
    with open(path, "rb") as file, _multi_field_reading(file):
        for handle in _handles(file, source, spans):
            try:
                fields.append(_decode_field(handle, len(fields), len(spans), source))
            finally:
                eccodes.codes_release(handle)
    return fields, spans


@contextmanager
def _multi_field_reading(file: IO[bytes]) -> Iterator[None]:
    with _MULTI_LOCK:
        eccodes.codes_grib_multi_support_reset_file(file)
    try:
        yield
    finally:
        with _MULTI_LOCK:
            eccodes.codes_grib_multi_support_reset_file(file)


def _handles(file: IO[bytes], source: str, spans: dict[int, int]) -> Iterator[int]:
    """Yield one handle per field, recording where each message starts and how long it is."""
    while True:
        with _MULTI_LOCK:
            eccodes.codes_grib_multi_support_on()
            try:
                handle = eccodes.codes_grib_new_from_file(file)
            except eccodes.CodesInternalError as exc:
                end = max((o + n for o, n in spans.items()), default=0)
                raise CorruptGrib(
                    f"{source} message {len(spans) + 1} (at or after byte {end})",
                    f"ecCodes cannot read the message: {exc} (truncated or damaged file)",
                    "re-download or regenerate the file",
                ) from exc
            finally:
                eccodes.codes_grib_multi_support_off()
        if handle is None:
            return
        try:
            keys = KeyReader(handle)
            spans.setdefault(int(keys.double("offset")), keys.long("totalLength"))
        except eccodes.CodesInternalError as exc:
            eccodes.codes_release(handle)
            raise CorruptGrib(
                f"{source} message {len(spans) + 1}",
                f"ecCodes cannot read the message header: {exc} (unknown edition or damaged)",
                "re-download or regenerate the file",
            ) from exc
        yield handle


def _decode_field(handle: int, index: int, message: int, source: str) -> GribField:
    return _decode(handle, _describe(handle, index, message, source))


@dataclass(slots=True)
class _Described:
    """A field's metadata and grid, before its values are decoded."""

    index: int
    message: int
    subject: str
    base_name: str
    meta: dict[str, Any]
    grid: Grid


def _describe(
    handle: int,
    index: int,
    message: int,
    source: str,
    grid_section: memoryview | None = None,
    data: bytes | memoryview | None = None,
) -> _Described:
    """``data``: the field's single-field message when at hand (it keys the step cache)."""
    subject = f"{source} message {message} (field {index + 1})"
    keys = KeyReader(handle)
    try:
        meta, base_name = _metadata(handle, keys, data)
        meta["message"] = message
        meta["field"] = index + 1
        grid = grid_of(
            handle,
            keys,
            meta["gridType"],
            meta["edition"],
            meta["numberOfPoints"],
            subject,
            grid_section,
        )
    except eccodes.CodesInternalError as exc:
        raise _decoding_error(subject, exc) from exc
    return _Described(index, message, subject, base_name, meta, grid)


def _decode(handle: int, field: _Described) -> GribField:
    try:
        values, missing = _values(handle, field.grid.points, field.subject)
    except eccodes.CodesInternalError as exc:
        raise _decoding_error(field.subject, exc) from exc
    return GribField(
        field.index, field.message, field.base_name, field.meta, values, missing, field.grid
    )


def _decoding_error(subject: str, exc: Exception) -> CorruptGrib:
    return CorruptGrib(
        subject, f"ecCodes cannot decode the field: {exc}", "re-download or regenerate the file"
    )


def _values(handle: int, points: int, subject: str) -> tuple[np.ndarray, np.ndarray | None]:
    values = decode_values(handle)
    if values.size != points:
        raise CorruptGrib(
            subject,
            f"{values.size} values decoded for a grid of {points} points",
            "re-download or regenerate the file",
        )
    if values.size == 0 or not math.isnan(values.max()):  # max is NaN if any value is
        return values, None
    return values, np.isnan(values)


_LEVEL_KEYS = (b"level", b"topLevel", b"bottomLevel")
_STEP_KEYS = (
    b"dataDate",
    b"dataTime",
    b"validityDate",
    b"validityTime",
    b"stepUnits",
    b"startStep",
    b"endStep",
)
# per field class (see grib_field_class): what ecCodes answered for its first field
_LAYOUTS: ClassCache = ClassCache()
_TIMINGS: ClassCache = ClassCache()  # step keys, number and stepType


def _metadata(
    handle: int, keys: KeyReader, data: bytes | memoryview | None
) -> tuple[dict[str, Any], str]:
    edition = keys.long("edition")
    centre = keys.string("centre")
    klass = field_class(data, centre) if edition == 2 else None
    layout_key, timing_key = (None, None) if klass is None else klass
    layout = _LAYOUTS.get(layout_key, lambda: concept_layout(keys, edition, centre))
    parameter = param_id(keys, layout)
    short_name, name, units = _param_names(handle, keys, edition, parameter, layout)
    (
        data_date,
        data_time,
        valid_date,
        valid_time,
        step_units,
        start_step,
        end_step,
        number,
        kind_of_step,
    ) = _TIMINGS.get(
        timing_key,
        lambda: (*keys.longs(_STEP_KEYS), keys.optional_long("number"), step_type(keys, layout)),
    )
    points = keys.long("numberOfPoints")
    level, top, bottom = keys.doubles(_LEVEL_KEYS)
    meta: dict[str, Any] = {
        "shortName": short_name,
        "name": name,
        "units": units,
        "paramId": parameter,
        "typeOfLevel": type_of_level(keys, layout),
        "level": _clean(level),
        "topLevel": _clean(top),
        "bottomLevel": _clean(bottom),
        "step": _step_label(start_step, end_step, step_units, keys),
        "stepUnits": _STEP_UNIT_NAMES.get(step_units, str(step_units)),
        "startStep": start_step,
        "endStep": end_step,
        "stepType": kind_of_step,
        "number": number,
        "dataDate": data_date,
        "dataTime": data_time,
        "referenceTime": _iso(data_date, data_time),
        "validityDate": valid_date,
        "validityTime": valid_time,
        "validTime": _iso(valid_date, valid_time),
        "edition": edition,
        "centre": centre,
        "gridType": keys.string("gridType"),
        "numberOfPoints": points,
        "packingType": keys.string("packingType"),
    }
    return meta, _base_name(keys, short_name, edition)


def _param_names(
    handle: int, keys: KeyReader, edition: int, parameter: int, layout: ConceptLayout | None
) -> Names:
    names = parameter_names(keys, edition, parameter, layout)
    if names is None:  # ecCodes' files leave it open: evaluate on this field, never cached
        short_name, name, units = (
            eccodes.codes_get_string(handle, k) for k in ("shortName", "name", "units")
        )
        names = (short_name, name, units)
    return names


def _base_name(keys: KeyReader, short_name: str, edition: int) -> str:
    """shortName, or the raw parameter numbers when ecCodes does not know the parameter."""
    if short_name and short_name != "unknown":
        return short_name
    names = (
        ("discipline", "parameterCategory", "parameterNumber")
        if edition == 2
        else ("table2Version", "indicatorOfParameter")
    )
    return "_".join(["unknown", *(str(keys.optional_long(k)) for k in names)])


def _clean(value: float) -> float | int:
    """Drop float noise from scaled levels (0.32999999999999996 -> 0.33); ints stay ints."""
    value = float(f"{value:.10g}")
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _step_label(start: int, end: int, units: int, keys: KeyReader) -> str:
    """Step in hours ("6"), or minutes/seconds when not whole hours ("90m"); "start-end" ranges.

    Steps are normalised because one file may mix units (``step_60m.grib`` encodes 0 in minutes
    and 1..72 in hours); months/years cannot be converted and keep ecCodes' ``stepRange``.
    """
    seconds = _STEP_UNIT_SECONDS.get(units)
    if seconds is None:
        return keys.string("stepRange")
    end_label = _duration_label(end * seconds)
    return end_label if start == end else f"{_duration_label(start * seconds)}-{end_label}"


def _duration_label(seconds: int) -> str:
    if seconds % 3600 == 0:
        return str(seconds // 3600)
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@lru_cache(maxsize=4096)  # a file's fields share few reference and validity times
def _iso(date: int, time: int) -> str:
    return (
        f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"
        f"T{time // 100:02d}:{time % 100:02d}:00Z"
    )


def _check_gaps(
    path: str, size: int, spans: dict[int, int], source: str, whole_messages: bool
) -> None:
    """Fail if bytes ecCodes skipped look like a (damaged) message rather than padding.

    ``whole_messages``: the lengths in ``spans`` are those of whole messages (ecCodes' scanner),
    not of fields (ecCodes' multi-field reader), so the headers need not be read again.
    """
    position = 0
    with open(path, "rb") as file:
        for number, (offset, ecc_length) in enumerate(sorted(spans.items()), start=1):
            length = ecc_length if whole_messages else _message_length(file, offset, ecc_length)
            if offset < position:
                raise CorruptGrib(
                    f"{source} message {number} (byte {offset})",
                    "the message overlaps the previous one",
                    "re-download or regenerate the file",
                )
            _check_gap(file, position, offset, source)
            position = offset + length
        _check_gap(file, position, size, source)


def _message_length(file: IO[bytes], offset: int, ecc_length: int) -> int:
    """Length of the whole message; with multi-field support ecCodes reports a field's length."""
    file.seek(offset)
    header = file.read(16)
    if len(header) == 16 and header[:4] == b"GRIB" and header[7] == 2:
        return int.from_bytes(header[8:16], "big")
    return ecc_length  # GRIB1 has no multi-field messages; ecCodes handles its large-file trick


def _check_gap(file: IO[bytes], start: int, end: int, source: str) -> None:
    if end - start < _SMALLEST_MESSAGE:
        return
    file.seek(start)
    chunk_size = 1 << 20
    for chunk_start in range(start, end, chunk_size):
        chunk = file.read(min(chunk_size, end - chunk_start))
        if b"GRIB" in chunk or chunk.translate(None, _ALLOWED_GAP_BYTES):
            raise CorruptGrib(
                f"{source} bytes {start}-{end}",
                "these bytes are not a readable GRIB message but look like one "
                "(damaged header or section lengths); ecCodes would skip them and lose data",
                "re-download or regenerate the file",
            )
