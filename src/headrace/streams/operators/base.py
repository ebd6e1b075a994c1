"""The contract every stream operator follows, and the helpers operators share.

An operator turns one micro-batch (a pyarrow Table) into an `Emit`: the main output and, for
event-time windows, a side output of late records. Operators are deterministic: the same
sequence of batches gives the same outputs, so a pipeline that crashed and replays from its last
checkpoint reproduces what it would have emitted. Their whole state is a dict of small Arrow
tables (`snapshot`), written to the ledger together with the source offsets of the same
micro-batch, and read back with `restore`.

Operators whose state grows (dedup keys, open windows) also offer `changes()`: the same slots
as `snapshot()`, but a keyed table is given as a `Delta` (the rows upserted and the keys deleted
since the previous call), so a checkpoint writes what changed rather than the whole state (the
runner keeps the deltas as a changelog, see `headrace.streams.changelog`).

Times are handled internally as int64 microseconds since the Unix epoch (UTC); naive timestamp
columns are read as UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from headrace.errors import StreamError
from headrace.streams.hashing import FINGERPRINT

Duration = float | int | timedelta
"""A length of time: seconds (int or float) or a `timedelta`."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}


@dataclass(frozen=True)
class Emit:
    """What an operator produced for one batch.

    `late` holds the records an event-time window could no longer include (their window was
    already emitted); it is None when there are none, and always None for other operators.
    """

    main: pa.Table
    late: pa.Table | None = None


@runtime_checkable
class Operator(Protocol):
    """A pure, deterministic step of a stream pipeline."""

    name: str

    def process(self, batch: pa.Table) -> Emit: ...

    def flush(self) -> Emit: ...

    def snapshot(self) -> dict[str, pa.Table]: ...

    def restore(self, state: dict[str, pa.Table]) -> None: ...

    @property
    def watermark(self) -> datetime | None: ...


@dataclass(frozen=True)
class Delta:
    """What changed in one keyed state table since the previous `changes()` call.

    `keys` name the columns that identify a row (unique within the table). `upserts` holds whole
    rows that were added or changed, `deletes` the key columns of rows removed. With `reset`
    the upserts are the whole table: whatever came before is dropped. With `expires`, rows whose
    value in that column is at or before `horizon` are gone too, without being listed (how dedup
    drops expired keys: the horizon only moves forward). Columns named in `zeros` hold only
    zeros (integers, no nulls): they are left out of the encoded delta and put back on reading.
    """

    keys: tuple[str, ...]
    upserts: pa.Table
    deletes: pa.Table | None = None
    reset: bool = False
    expires: str | None = None
    horizon: int | None = None
    zeros: tuple[str, ...] = ()  # integer columns of upserts known to hold only zeros

    @property
    def empty(self) -> bool:
        """Nothing to write (a horizon that moved alone is written with the next rows)."""
        gone = self.deletes is not None and self.deletes.num_rows > 0
        return not self.reset and not gone and self.upserts.num_rows == 0


class FrameChanges:
    """Follows a keyed polars frame that an operator replaces as it works, and gives the rows
    changed since the last call as a `Delta`.

    A frame that is the same object as last time has not changed (polars frames are not
    modified in place, the operators replace them). Otherwise rows are compared by two 64-bit
    row hashes (polars `hash_rows`, never stored, so they need not be stable across versions):
    rows whose hashes are new are upserts, keys no longer present are deletes. That costs time
    in proportion to the frame, but only when the operator rebuilt it, which it did in time in
    proportion to the frame as well. A small frame is written whole (as a reset): for a few
    rows that costs less than finding which changed."""

    _SEEDS = (0x5EED_0003, 0x5EED_0004)
    SMALL = 256  # rows: a frame this small is written whole, cheaper than finding its changes

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self._frame: Any = None
        self._rows: np.ndarray | None = None  # row hashes of _frame, computed when first needed
        self._written = False  # some delta was given since the baseline (else: reset first)

    def baseline(self, frame: Any) -> None:
        """The frame as it is in the last checkpoint (after a restore)."""
        self._frame, self._rows, self._written = frame, None, frame is not None

    def delta(self, frame: Any) -> Delta:
        """`frame`: a polars frame, or an object with `height`, `to_arrow()` and
        `to_polars()` (the same object while it has not changed)."""
        before, rows = self._frame, self._rows
        if frame is before:
            return Delta(self.keys, pa.table({}))
        self._frame, self._rows = frame, None
        if frame is None:
            return Delta(self.keys, pa.table({}), reset=True)
        if before is None or not self._written or not self.keys or frame.height <= self.SMALL:
            self._written = True
            return Delta(self.keys, frame.to_arrow(), reset=True)
        # frames an operator keeps in another form (a window's numpy columns) convert here,
        # only when large: small ones were written whole above
        before, frame = as_polars(before), as_polars(frame)
        if before.schema != frame.schema:
            return Delta(self.keys, frame.to_arrow(), reset=True)
        if rows is None:
            rows = self._hashes(before)
        now = self._hashes(frame)
        self._rows = now
        changed = ~_isin_rows(now, rows)
        upserts = frame.filter(pl.Series(changed)) if not changed.all() else frame
        # keys of `before` that `frame` no longer has (a changed row keeps its key)
        gone = before.select(self.keys).join(
            frame.select(self.keys), on=list(self.keys), how="anti", nulls_equal=True
        )
        return Delta(self.keys, upserts.to_arrow(), gone.to_arrow() if gone.height else None)

    def _hashes(self, frame: pl.DataFrame) -> np.ndarray:
        first, second = (frame.hash_rows(seed=s).to_numpy() for s in self._SEEDS)
        return np.stack([first, second], axis=1).view(np.dtype((np.void, 16))).ravel()


def as_polars(frame: Any) -> pl.DataFrame:
    """A polars frame, or the polars form of a frame kept in another one (`to_polars()`)."""
    return frame if isinstance(frame, pl.DataFrame) else frame.to_polars()


def _isin_rows(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    return np.isin(values, among) if len(among) else np.zeros(len(values), bool)


class FramesChanges:
    """Follows a list of polars frames that an operator appends to and sometimes replaces (the
    partial aggregates of recent batches), stored as one table numbered by `column`.

    Frames appended since the last call are the upserts; a list that no longer starts with the
    frames given before (it was folded or cleared) is written again whole, as a reset."""

    def __init__(self, column: str, keys: Sequence[str]) -> None:
        self.column = column
        self.keys = (column, *keys)
        self._frames: list[pl.DataFrame] = []

    def baseline(self, frames: Sequence[pl.DataFrame]) -> None:
        self._frames = list(frames)

    def delta(self, frames: Sequence[pl.DataFrame]) -> Delta:
        before = self._frames
        self._frames = list(frames)
        kept = len(before) <= len(frames) and all(
            a is b for a, b in zip(before, frames, strict=False)
        )
        start = len(before) if kept else 0
        new = [  # numbered as the snapshot numbers them (`pl.lit(i)`: Int32)
            f.to_arrow().append_column(self.column, pa.array(np.full(f.height, i, np.int32)))
            for i, f in enumerate(frames)
            if i >= start
        ]
        if not new:
            return Delta(self.keys, pa.table({}), reset=not kept)
        table = new[0] if len(new) == 1 else pa.concat_tables(new, promote_options="permissive")
        return Delta(self.keys, table, reset=not kept)


def subject(name: str) -> str:
    """How errors name an operator."""
    return f"stream operator {name!r}"


def as_table(batch: pa.Table | pa.RecordBatch, name: str) -> pa.Table:
    """The batch as a Table, or a StreamError naming the operator."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    raise StreamError(
        subject(name),
        f"process() received a {type(batch).__name__}, not a pyarrow Table",
        "pass each micro-batch as a pyarrow.Table",
    )


def require_columns(table: pa.Table, columns: list[str], name: str) -> None:
    names = table.column_names  # a new list at each access: taken once
    missing = [c for c in columns if c not in names]
    if missing:
        raise StreamError(
            subject(name),
            f"the batch has no column {', '.join(map(repr, missing))} "
            f"(it has {', '.join(table.column_names) or 'no columns'})",
            "select or rename the columns upstream, or configure the operator with the right names",
        )


def duration_micros(value: Duration, what: str, name: str, *, positive: bool) -> int:
    """A duration in whole microseconds; `positive` refuses zero as well as negatives."""
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
        micros = round(value * 1_000_000)
    else:
        raise StreamError(
            subject(name),
            f"{what} must be seconds (a number) or a timedelta, not {value!r}",
            f"pass {what} as e.g. 60 or timedelta(minutes=1)",
        )
    if micros < 0 or (positive and micros == 0):
        bound = "greater than zero" if positive else "zero or more"
        raise StreamError(subject(name), f"{what} is {value!r}", f"make {what} {bound}")
    if micros > _LONGEST:  # a time plus it would wrap around (dedup's expiry, a window's end)
        raise StreamError(
            subject(name),
            f"{what} is {value!r}: a time plus it would overflow (times are 64-bit microseconds)",
            f"make {what} at most {_LONGEST // 86_400_000_000:,} days (about 284,000 years)",
        )
    return micros


def instant_micros(value: datetime, what: str, name: str) -> int:
    """A datetime (naive means UTC) as microseconds since the epoch."""
    if not isinstance(value, datetime):
        raise StreamError(
            subject(name), f"{what} must be a datetime, not {value!r}", f"pass {what} as a datetime"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_LAST_MICROS = instant_micros(datetime.max, "the last instant", "base")
# the longest duration: added to any time up to the last instant it stays an int64
_LONGEST = int(np.iinfo(np.int64).max) - _LAST_MICROS


def micros_datetime(micros: int | None) -> datetime | None:
    """As a datetime; past the last one Python has (a window of year 9999 ends in 10000), the
    last one, which still orders after every event time a record can carry."""
    if micros is None:
        return None
    return EPOCH + timedelta(microseconds=min(int(micros), _LAST_MICROS))


def time_micros(table: pa.Table, column: str, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The time column as int64 microseconds (floored), and a validity mask when it has nulls."""
    col = table.column(column)
    if not pa.types.is_timestamp(col.type):
        raise StreamError(
            subject(name),
            f"time column {column!r} has type {col.type}, not a timestamp",
            "convert it upstream, e.g. pyarrow.compute.strptime or polars str.to_datetime",
        )
    valid = None
    if col.null_count:
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
        col = pc.fill_null(col, pa.scalar(0, col.type))
    raw = col.to_numpy().view(np.int64)  # datetime64 of the column's unit; no copy
    factor = _MICROS_PER_UNIT[col.type.unit]
    micros = raw // 1_000 if factor is None else raw * factor
    return micros.astype(np.int64, copy=False), valid


def decode_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain values, so equal values hash and group the same way."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


_META_SCHEMAS: dict[tuple[tuple[str, type], ...], tuple[pa.Schema, list]] = {}


def meta_table(**values: object) -> pa.Table:
    """A one-row table of scalars: how operators store their counters in a snapshot."""
    # inferring the types costs most of the time, every batch: the types Python values of
    # the same kinds were given last time are reused, and so is each column whose value
    # did not change since (the configuration, the fingerprint: only counters move)
    names = tuple((k, type(v)) for k, v in values.items())
    cached = _META_SCHEMAS.get(names)
    if cached is not None:
        schema, last = cached
        try:
            columns = []
            for i, (field, value) in enumerate(zip(schema, values.values(), strict=True)):
                held = last[i]
                if held is None or held[0] != value:
                    held = last[i] = (value, pa.array([value], field.type))
                columns.append(held[1])
            return pa.Table.from_arrays(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    table = pa.table({k: [v] for k, v in values.items()})
    if not any(pa.types.is_null(f.type) for f in table.schema):
        _META_SCHEMAS[names] = (table.schema, [None] * table.num_columns)
    return table


class Meta(dict):
    """An operator's counters as `changes()` gives them: the values of its one-row 'meta'
    table, which the runner stores as JSON rather than as a table (building and encoding a
    one-row table each batch cost more than the rest of a small batch's state). A restore gets
    them back as the one-row table `meta_table` makes."""


def read_meta(state: dict[str, pa.Table], name: str) -> dict[str, object]:
    table = state.get("meta")
    if table is None or table.num_rows != 1:
        raise StreamError(
            subject(name),
            "the state to restore has no one-row 'meta' table",
            "restore a dict produced by snapshot() of the same kind of operator",
        )
    return {k: v[0] for k, v in table.to_pydict().items()}


def check_config(meta: dict[str, object], config: str, name: str) -> None:
    if meta.get("config") != config:
        raise StreamError(
            subject(name),
            f"the snapshot was taken from an operator configured as {meta.get('config')!r}, "
            f"this one is {config!r}",
            "restore into an operator built with the same arguments, or start from empty state",
        )


def check_fingerprint(meta: dict[str, object], name: str) -> None:
    """Hashed state must come from headrace's stable hash (`headrace.streams.hashing`).

    headrace before it hashed with polars, whose hashes may change with the polars version;
    such hashes cannot be converted (the values are not in the state), so that state is
    refused with the way out rather than silently mis-deduplicated or miscounted."""
    if meta.get("hash_fingerprint") == FINGERPRINT:
        return
    raise StreamError(
        subject(name),
        "its saved state holds values hashed with polars' hash (written by a headrace version "
        "before the stable hash) or by an unknown hash; those hashes cannot be converted",
        "stop the coordinator, run `headrace streams reset PIPELINE` for the pipeline that holds "
        "this operator (it then starts over at the log's retention start and rebuilds the state),"
        " and start it again",
    )
