"""Event time: what a record's time field says, as the `_event_time` a stream stores.

`_event_time` is a `timestamp[us, UTC]` column, the unit the operators compute in (int64
microseconds since the epoch). Every path that makes it (bus ingest from a source's
`time_field`, an object-created event) reads the field with `parse_event_time`:

- epoch **seconds** as a number (int, float) or as numeric text (`"1714564800.123456"`),
  decoded exactly from their decimal digits;
- ISO 8601 text: `Z` or any offset (converted to UTC), no offset meaning UTC, any number of
  fractional digits;
- a datetime (naive means UTC), or an Arrow timestamp column of any unit.

Digits below the microsecond (a nanosecond timestamp, a tenth fractional digit) are cut toward
the past, the way the operators floor a nanosecond column, so a record never moves into a later
window. A value that is none of these is a MalformedEvent naming it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from headrace.errors import MalformedEvent

__all__ = [
    "EVENT_TIME",
    "EVENT_TIME_TYPE",
    "event_time_column",
    "nanosecond_columns_as_text",
    "parse_event_time",
]

EVENT_TIME = "_event_time"
EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_OUT_OF_RANGE = "is out of the range of dates (years 1 to 9999)"
_FIX = (
    "give epoch seconds (a number) or ISO 8601 text such as '2024-05-01T12:00:00.123456Z' "
    "or '2024-05-01T14:00:00.123456789+02:00'"
)


def parse_event_time(value: Any, field: str = "time") -> datetime | None:
    """The moment `value` names, in UTC at microsecond precision; None for None."""
    if value is None:
        return None
    if isinstance(value, bool):  # a bool is an int to Python, never a time
        raise _bad(value, field, "is a boolean")
    if isinstance(value, datetime):
        # a pandas Timestamp is a datetime too: rebuilding it drops its nanoseconds (floor)
        moment = datetime.combine(value.date(), value.timetz())
        return _in_utc(moment, value, field)
    if isinstance(value, int):
        return _from_seconds(Decimal(value), value, field)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(value, field, "is not a finite number")
        # repr is the shortest text that reads back as this float: what the sender wrote
        return _from_seconds(Decimal(repr(value)), value, field)
    if isinstance(value, Decimal):
        return _from_seconds(value, value, field)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.match(text):
            return _from_seconds(Decimal(text), value, field)
        try:
            moment = datetime.fromisoformat(text)  # Python 3.11: 'Z', offsets, > 6 digits cut
        except ValueError:
            raise _bad(value, field, "is neither epoch seconds nor ISO 8601") from None
        return _in_utc(moment, value, field)
    raise _bad(value, field, f"is a {type(value).__name__}")


def event_time_column(times: list[datetime | None]) -> pa.Array:
    """`_event_time` values (from parse_event_time) as the stream's column."""
    return pa.array(times, EVENT_TIME_TYPE)


def nanosecond_columns_as_text(table: pa.Table) -> pa.Table:
    """The table with its nanosecond timestamp columns as ISO 8601 text with all nine digits.

    Records become JSON on their way through the bus, where a timestamp is its ISO text; Python
    datetimes stop at microseconds (and without pandas a nanosecond value cannot become one at
    all), so these columns are written as text by Arrow, digits intact. An aware column is
    written in UTC with '+00:00', a naive one without an offset, as `datetime.isoformat` does.
    """
    for position, field in enumerate(table.schema):
        kind = field.type
        if not (pa.types.is_timestamp(kind) and kind.unit == "ns"):
            continue
        column = table.column(position)
        if kind.tz is not None:
            column = column.cast(pa.timestamp("ns", "UTC"))
        text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
        if kind.tz is not None:
            text = pc.binary_join_element_wise(text, "+00:00", "")
        table = table.set_column(position, field.name, text)
    return table


def _in_utc(moment: datetime, value: Any, field: str) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise _bad(value, field, _OUT_OF_RANGE + " once converted to UTC") from None


def _from_seconds(seconds: Decimal, value: Any, field: str) -> datetime:
    try:
        micros = math.floor(seconds.scaleb(6))
        return EPOCH + timedelta(microseconds=micros)
    except (ArithmeticError, ValueError):  # OverflowError, decimal.Overflow, InvalidOperation
        raise _bad(value, field, _OUT_OF_RANGE) from None


def _bad(value: Any, field: str, why: str) -> MalformedEvent:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return MalformedEvent(f"time field {field!r}", f"{shown} {why}", _FIX)
