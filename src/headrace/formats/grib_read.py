"""Read every field of a GRIB file with ecCodes: metadata, values with missing points, grid.

Why it is written this way:

* Multi-field support is switched on, because some GRIB2 messages carry several fields and
  reading messages would silently drop data. ecCodes keeps that state per process and per open
  file (keyed on the C ``FILE*``), so it is reset for the file before and after reading, and
  switched on only around each read, under a lock, so that other ecCodes users in the process
  (and other threads) keep the default.
* The values are decoded as float64 with ``missingValue`` set to NaN first. GRIB values are never
  NaN, so NaN marks exactly the points ecCodes treats as missing: bitmap, grid_complex
  missing-value management, entirely missing fields. A sentinel such as 9999 would collide with
  real data (two points of ``eta.grb`` and one of the GFS file are exactly 9999).
* ecCodes skips bytes it cannot parse while looking for the next ``GRIB``. A damaged header
  therefore silently drops a message, so the bytes between messages are checked afterwards.
* Evaluating a parameter "concept" (paramId, shortName, name, units) costs about 0.2 ms per
  field each, and ecCodes keeps the tables of each one per edition and centre for the life of
  the process (``name`` alone: 15-70 MB each). The paramId is evaluated for every field:
  caching it on a subset of keys would silently mislabel a field whenever ecCodes' concept
  rules use a key left out. shortName, name and units are then read from ecCodes' own
  definition files for that paramId when those files make them certain (see
  ``headrace.formats.grib_concepts``), else evaluated on the field. They are never cached per
  paramId alone: the same paramId has different names under different centres/editions.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import eccodes
import numpy as np

from headrace.errors import CorruptGrib

from .grib_concepts import Names, parameter_names
from .grib_grid import Grid, grid_of
from .grib_keys import KeyReader

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
    fields: list[GribField] = []
    spans: dict[int, int] = {}  # message offset -> length, in file order
    with open(path, "rb") as file, _multi_field_reading(file):
        for handle in _handles(file, source, spans):
            try:
                fields.append(_decode_field(handle, len(fields), len(spans), source))
            finally:
                eccodes.codes_release(handle)
    if not fields:
        raise CorruptGrib(
            source,
            "no GRIB message found (not a GRIB file, or its headers are damaged)",
            "check that the file is GRIB edition 1 or 2 and was fully downloaded",
        )
    _check_gaps(path, size, spans, source)
    return GribContents(source=source, fields=fields, messages=len(spans), bytes=size)


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
    subject = f"{source} message {message} (field {index + 1})"
    keys = KeyReader(handle)
    try:
        meta, base_name = _metadata(handle, keys)
        meta["message"] = message
        meta["field"] = index + 1
        grid = grid_of(
            handle, keys, meta["gridType"], meta["edition"], meta["numberOfPoints"], subject
        )
        values, missing = _values(handle, grid.points, subject)
    except eccodes.CodesInternalError as exc:
        raise CorruptGrib(
            subject, f"ecCodes cannot decode the field: {exc}", "re-download or regenerate the file"
        ) from exc
    return GribField(index, message, base_name, meta, values, missing, grid)


def _values(handle: int, points: int, subject: str) -> tuple[np.ndarray, np.ndarray | None]:
    eccodes.codes_set_double(handle, "missingValue", math.nan)
    values = eccodes.codes_get_double_array(handle, "values")
    if values.size != points:
        raise CorruptGrib(
            subject,
            f"{values.size} values decoded for a grid of {points} points",
            "re-download or regenerate the file",
        )
    missing = np.isnan(values)
    return values, (missing if missing.any() else None)


def _metadata(handle: int, keys: KeyReader) -> tuple[dict[str, Any], str]:
    edition = keys.long("edition")
    centre = keys.string("centre")
    param_id = keys.long("paramId")
    short_name, name, units = _param_names(handle, keys, edition, param_id)
    data_date, data_time = keys.long("dataDate"), keys.long("dataTime")
    valid_date, valid_time = keys.long("validityDate"), keys.long("validityTime")
    step_units = keys.long("stepUnits")
    start_step, end_step = keys.long("startStep"), keys.long("endStep")
    meta: dict[str, Any] = {
        "shortName": short_name,
        "name": name,
        "units": units,
        "paramId": param_id,
        "typeOfLevel": keys.string("typeOfLevel"),
        "level": _clean(keys.double("level")),
        "topLevel": _clean(keys.double("topLevel")),
        "bottomLevel": _clean(keys.double("bottomLevel")),
        "step": _step_label(start_step, end_step, step_units, keys),
        "stepUnits": _STEP_UNIT_NAMES.get(step_units, str(step_units)),
        "startStep": start_step,
        "endStep": end_step,
        "stepType": keys.string("stepType"),
        "number": keys.optional_long("number"),
        "dataDate": data_date,
        "dataTime": data_time,
        "referenceTime": _iso(data_date, data_time),
        "validityDate": valid_date,
        "validityTime": valid_time,
        "validTime": _iso(valid_date, valid_time),
        "edition": edition,
        "centre": centre,
        "gridType": keys.string("gridType"),
        "numberOfPoints": keys.long("numberOfPoints"),
        "packingType": keys.string("packingType"),
    }
    return meta, _base_name(keys, short_name, edition)


def _param_names(handle: int, keys: KeyReader, edition: int, param_id: int) -> Names:
    names = parameter_names(keys, edition, param_id)
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


def _iso(date: int, time: int) -> str:
    return (
        f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"
        f"T{time // 100:02d}:{time % 100:02d}:00Z"
    )


def _check_gaps(path: str, size: int, spans: dict[int, int], source: str) -> None:
    """Fail if bytes ecCodes skipped look like a (damaged) message rather than padding."""
    position = 0
    with open(path, "rb") as file:
        for number, (offset, ecc_length) in enumerate(sorted(spans.items()), start=1):
            length = _message_length(file, offset, ecc_length)
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
