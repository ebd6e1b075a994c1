"""Event-time windows: tumbling, hopping and session, with watermark, grace and late output.

Watermark. Records are judged in arrival (log) order. The watermark a record is judged against
is the largest event time of the records that arrived before it (earlier batches included)
minus `delay` (bounded out-of-orderness); records without a time do not move it. The first
record with a time has none, so it is never late. It never moves back; `flush()` moves it past
the windows it emits. Inside a batch it is a running maximum over the batch in arrival order
(`np.maximum.accumulate`, `_marks`), no Python per record.

Closing. A window [start, end) closes as soon as the watermark reaches `end + grace`, also
between two records of one batch: a record arriving after that cannot join it. It is emitted
once, in the output of the batch in which that happened (output is handed out at the batch
end), and its state is dropped. Outputs are sorted by window_start, then key. Windows that
received no record are never emitted. So which windows are emitted, their values and which
records are late are the same for every cut of the stream into batches and every crash point;
only the batch that hands a window out depends on the cuts.

Lateness. A record is late for a window when the window had closed before it arrived
(`end + grace <= its watermark`): it goes to `Emit.late` with the input's columns plus
`_late_reason` ("window_closed", or "null_time" for a record with no event time) and
`_late_window_start` / `_late_window_end`, and is counted in `late_count`. Nothing is dropped
silently. A record whose window is still open, because of `grace`, is included.

- Tumbling: one window per record; `late` has one row per late record.
- Hopping: a record belongs to every window that covers it and can be late for some and on time
  for others. It is aggregated into its open windows, and `late` has one row per (record,
  closed window) pair; `late_count` counts those rows.
- Session: per key, records less than `gap` apart form one session [first, last + gap), which
  closes when the watermark reaches `last + gap + grace`. A record merges with every open
  session of its key less than `gap` away (it can extend or bridge them). It is late when it is
  earlier than the end of its key's latest closed session (it can no longer join that session;
  its `_late_window_*` are that session's bounds, or [t, t + gap) when it is earlier than that
  session's start), or when it touches no open session and the session it would form closes at
  once (`t + gap + grace <= its watermark`). So every later session of a key starts after the
  end of its emitted ones, and no (key, window_start) is ever emitted twice, which idempotent
  sinks keyed on it rely on. The operator keeps, per key, the bounds of its latest emitted
  session for that (one row per key, in its state).

Cost. Fixed windows: one comparison per (record, window). Sessions: a record no older than its
watermark minus `grace` ("fresh") is never late: every session closed before it has
`last <= watermark - gap - grace`, so the record is at least `gap` after it. Late records never
change sessions, so the sessions are those the batch-level grouping forms from the open
sessions and the records that are not late; only which records are late needs the record
order, and only stale records can be. A batch without stale records (the usual case when
`delay` covers the disorder) costs one comparison per record. With stale records, the keys
that have them are tested in polars: a running minimum over their records in arrival order
(`_replay_stale`), then, for keys with many records in the batch, the sessions' arrival
pattern (`_unconnected`, which passes long sessions fed in near time order). Keys that pass
either test cannot have had a session close before one of their stale records, and their
stale records are late exactly when they are before the emitted session's end. The others are
replayed record by record in Python (`_replay_key`, a few microseconds per record), up to
their last stale record.

Processing is vectorised in polars: the batch is grouped on (key, window) into partial
aggregates, which are merged with the open windows' partials (see aggregations.py). A record's
arrival order (`__seq`, counted across the stream and kept in the state) breaks time ties for
first/last, so results do not depend on how the stream was cut into batches.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.hashing import FINGERPRINT
from headrace.streams.operators import hll
from headrace.streams.operators.aggregations import SEQ, TIME, Agg, ApproxDistinct, First, Max, Min
from headrace.streams.operators.base import (
    TIMESTAMP_UTC,
    Delta,
    Duration,
    Emit,
    FrameChanges,
    FramesChanges,
    as_table,
    check_config,
    check_fingerprint,
    decode_dictionaries,
    duration_micros,
    instant_micros,
    meta_table,
    micros_datetime,
    read_meta,
    require_columns,
    subject,
    time_micros,
)

LATE_REASON = "_late_reason"
LATE_START = "_late_window_start"
LATE_END = "_late_window_end"
WINDOW_CLOSED = "window_closed"
NULL_TIME = "null_time"

_ROW = "__row"  # position of a record in its batch
_WS = "__ws"  # window start (fixed windows)
_START, _LAST = "__start", "__last"  # first and last event time of a session
_SID, _SRC = "__sid", "__src"
_FSTART, _UNTIL = "__fstart", "__until"  # bounds of a key's latest emitted session
_BATCH = "__batch"
_MAX_PENDING = 32
_WSTART, _WEND = "__wstart", "__wend"
_UTC = pl.Datetime("us", "UTC")
_NO_MARK = np.iinfo(np.int64).min  # no watermark yet: no record with a time came before
_NEVER = np.iinfo(np.int64).max
_REPLAY_BELOW = 64  # keys with fewer records in a batch are replayed without the second test
_REASONS = [WINDOW_CLOSED, NULL_TIME]
_RESERVED = {"window_start", "window_end"}


@dataclass(frozen=True)
class _Late:
    """Late records of one batch: their rows, and the window each missed (None: no time)."""

    rows: np.ndarray
    start: np.ndarray | None
    end: np.ndarray | None
    reason: str


def _names(key: str | list[str] | None, name: str) -> list[str]:
    keys = [] if key is None else [key] if isinstance(key, str) else list(key)
    if not all(isinstance(k, str) and k and not k.startswith("__") for k in keys):
        raise StreamError(
            subject(name),
            f"key must be a column name or a list of them (not starting with '__'), got {key!r}",
            "pass key='sensor' or key=['site', 'sensor']",
        )
    return keys


class _Window:
    """What all window kinds share: input checks, watermark, late output, emit, snapshots."""

    kind = "window"

    def __init__(
        self,
        *,
        time_column: str,
        key: str | list[str] | None,
        aggs: Mapping[str, Agg],
        grace: Duration,
        delay: Duration,
        name: str,
    ) -> None:
        self.name = name
        if not isinstance(time_column, str) or not time_column:
            raise StreamError(
                subject(name), "time_column must name the event-time column",
                "pass time_column='event_time' (a timestamp column)",
            )  # fmt: skip
        self.time_column = time_column
        self.keys = _names(key, name)
        self.aggs = self._check_aggs(aggs)
        self.grace = duration_micros(grace, "grace", name, positive=False)
        self.delay = duration_micros(delay, "delay", name, positive=False)
        self.late_count = 0
        self._prefix = {out: f"__a{i}_" for i, out in enumerate(self.aggs)}
        self._partial_exprs = [e for k, a in self.aggs.items() for e in a.partial(self._prefix[k])]
        self._merge_exprs = [e for k, a in self.aggs.items() for e in a.merge(self._prefix[k])]
        self._finish_exprs = [a.finish(self._prefix[k]).alias(k) for k, a in self.aggs.items()]
        self._inputs = list(
            dict.fromkeys([*self.keys, *(c for a in self.aggs.values() for c in a.inputs)])
        )
        self._wm: int | None = None
        self._max_time: int | None = None
        self._seq = 0
        self._state: pl.DataFrame | None = None
        # partial aggregates of recent batches not folded into _state yet (fixed windows)
        self._pending: list[pl.DataFrame] = []
        self._pending_min: int | None = None  # earliest window start among them
        self._schema: pa.Schema | None = None
        self._empty_cache: tuple[str, pa.Table] | None = None
        self._trackers: dict[str, Any] | None = None  # see changes()
        self._meta_cache: tuple[str, pa.Schema | None, bytes | None] | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def watermark(self) -> datetime | None:
        return micros_datetime(self._wm)

    def process(self, batch: pa.Table) -> Emit:
        table = as_table(batch, self.name)
        require_columns(table, [self.time_column, *self._inputs], self.name)
        if self._schema is None:
            self._schema = table.select([self.time_column, *self._inputs]).schema
        times, valid = time_micros(table, self.time_column, self.name)
        n = table.num_rows
        frame = self._frame(table).with_columns(
            pl.Series(TIME, times), pl.Series(SEQ, np.arange(self._seq, self._seq + n))
        )
        self._seq += n
        rows = np.arange(n)
        late = []
        if valid is not None:
            late.append(_Late(rows[~valid], None, None, NULL_TIME))
            frame, times, rows = frame.filter(pl.Series(valid)), times[valid], rows[valid]
        try:
            if len(times):
                late.extend(self._absorb(frame, times, rows, self._marks(times)))
                newest = int(times.max())
                self._max_time = newest if self._max_time is None else max(self._max_time, newest)
                candidate = self._max_time - self.delay
                self._wm = candidate if self._wm is None else max(self._wm, candidate)
            main = self._emit(self._close(self._wm) if self._wm is not None else None)
        except pl.exceptions.PolarsError as exc:
            raise StreamError(
                subject(self.name),
                f"cannot aggregate this batch: {exc}",
                "keep the key and aggregated columns' types the same across the stream",
            ) from exc
        return Emit(main, self._late_table(table, late))

    def flush(self) -> Emit:
        closed = self._close(None)
        if closed is not None and closed.height:
            end = int(closed[_WEND].max()) + self.grace
            self._wm = end if self._wm is None else max(self._wm, end)
        return Emit(self._emit(closed))

    def snapshot(self) -> dict[str, pa.Table]:
        windows = self._state.to_arrow() if self._state is not None else pa.table({})
        pending = pa.table({})
        if self._pending:
            numbered = [
                p.with_columns(pl.lit(i).alias(_BATCH)) for i, p in enumerate(self._pending)
            ]
            pending = pl.concat(numbered, how="vertical_relaxed").to_arrow()
        return {"meta": self._meta(), "windows": windows, "pending": pending}

    def changes(self) -> dict[str, pa.Table | Delta]:
        """`snapshot()` as changes: the open windows added, changed or closed, and the
        partial aggregates of batches not folded yet (see `FrameChanges`, `FramesChanges`)."""
        tracked = self._tracked()
        return {
            "meta": self._meta(),
            "windows": tracked["windows"].delta(self._state),
            "pending": tracked["pending"].delta(self._pending),
        }

    def _tracked(self) -> dict[str, Any]:
        """The change trackers of the state tables (made on first use, after __init__)."""
        tracked = self._trackers
        if tracked is None:
            tracked = self._trackers = {
                "windows": FrameChanges(self._state_keys()),
                "pending": FramesChanges(_BATCH, self._state_keys()),
            }
        return tracked

    def _state_keys(self) -> list[str]:
        """The columns that identify an open window in `_state`."""
        raise NotImplementedError

    def _meta(self) -> pa.Table:
        schema = self._schema
        if self._meta_cache is None or self._meta_cache[1] is not schema:  # once, not per batch
            serialized = None if schema is None else schema.serialize().to_pybytes()
            self._meta_cache = (self._config(), schema, serialized)
        return meta_table(
            config=self._meta_cache[0],
            watermark=self._wm,
            max_time=self._max_time,
            seq=self._seq,
            late_count=self.late_count,
            has_state=self._state is not None,
            schema=self._meta_cache[2],
            hash_fingerprint=FINGERPRINT,
        )

    def restore(self, state: dict[str, pa.Table]) -> None:
        meta = read_meta(state, self.name)
        check_config(meta, self._config(), self.name)
        windows = state.get("windows")
        if windows is None:
            raise StreamError(
                subject(self.name),
                "the state to restore has no 'windows' table",
                "restore a dict produced by snapshot() of the same kind of window",
            )
        hashed = any(isinstance(a, ApproxDistinct) for a in self.aggs.values())
        if hashed and windows.num_rows:
            check_fingerprint(meta, self.name)
        self._state = pl.from_arrow(windows) if meta["has_state"] else None
        pending = state.get("pending")
        self._pending, self._pending_min = [], None
        if pending is not None and pending.num_rows:
            frame = pl.from_arrow(pending).sort(_BATCH, maintain_order=True)
            parts = frame.partition_by(_BATCH, maintain_order=True, include_key=False)
            self._pending, self._pending_min = parts, int(frame[_WS].min())
        tracked = self._tracked()
        tracked["windows"].baseline(self._state)
        tracked["pending"].baseline(self._pending)
        self._wm, self._max_time = meta["watermark"], meta["max_time"]
        self._seq, self.late_count = int(meta["seq"]), int(meta["late_count"])
        schema = meta["schema"]
        self._schema = None if schema is None else pa.ipc.read_schema(pa.py_buffer(schema))
        self._empty_cache = None

    # -- for the window kinds ----------------------------------------------------------------

    def _marks(self, times: np.ndarray) -> np.ndarray:
        """The watermark each timed record of the batch is judged against: the largest time
        of the records before it (earlier batches included) minus the delay, and never below
        the watermark the batch started with. `_NO_MARK` where no record came before."""
        before = np.empty_like(times)
        before[0] = _NO_MARK if self._max_time is None else self._max_time
        if len(times) > 1:
            np.maximum.accumulate(times[:-1], out=before[1:])
            if self._max_time is not None:
                np.maximum(before[1:], self._max_time, out=before[1:])
        marks = before - self.delay
        marks[before == _NO_MARK] = _NO_MARK
        if self._wm is not None:
            np.maximum(marks, self._wm, out=marks)
        return marks

    def _absorb(
        self, frame: pl.DataFrame, times: np.ndarray, rows: np.ndarray, marks: np.ndarray
    ) -> list[_Late]:
        """Merge a batch's timed records into the state; return the late (row, window) pairs,
        in any number of parts (`_late_table` puts them in order).

        `times`, `rows` (positions in the batch) and `marks` (each record's watermark, see
        `_marks`) are aligned with `frame`."""
        raise NotImplementedError

    def _close(self, watermark: int | None) -> pl.DataFrame | None:
        """Remove and return the windows final at `watermark` (all when None), with their
        _WSTART/_WEND columns."""
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    # -- internals ---------------------------------------------------------------------------

    def _check_aggs(self, aggs: Mapping[str, Agg]) -> dict[str, Agg]:
        if not isinstance(aggs, Mapping) or not aggs:
            raise StreamError(
                subject(self.name), "aggs must be a non-empty dict of output name -> aggregation",
                "pass aggs={'n': agg.count(), 'avg': agg.mean('x')}",
            )  # fmt: skip
        for out, agg in aggs.items():
            bad = not isinstance(out, str) or out.startswith("__") or out in _RESERVED
            if bad or out in self.keys or not isinstance(agg, Agg):
                raise StreamError(
                    subject(self.name),
                    f"aggregation {out!r}: {agg!r} is not allowed (names must be strings not "
                    "starting with '__', distinct from the keys and window_start/window_end; "
                    "values must come from headrace.streams.operators.aggregations)",
                    "rename the output or build it with aggregations.count(), .sum(col), ...",
                )
        return dict(aggs)

    def _config(self) -> str:
        aggs = ", ".join(f"{k}={a.describe()}" for k, a in self.aggs.items())
        return (
            f"{self._describe()} time_column={self.time_column!r} key={self.keys} "
            f"grace_us={self.grace} delay_us={self.delay} aggs=[{aggs}]"
        )

    def _emit(self, closed: pl.DataFrame | None) -> pa.Table:
        if closed is None or not closed.height:
            return self._empty_output(closed)
        return self._emit_rows(closed)

    def _arrow(self, out: pl.DataFrame) -> pa.Table:
        """The output with the keys and value-preserving aggregates in their input types."""
        table = out.to_arrow()
        schema = self._schema
        typed = {k: k for k in self.keys}
        typed.update(
            {k: a.column for k, a in self.aggs.items() if isinstance(a, Min | Max | First)}
        )
        for out_name, source in typed.items():
            want = schema.field(source).type
            if pa.types.is_dictionary(want):
                want = want.value_type
            i = table.schema.get_field_index(out_name)
            if table.schema.field(i).type != want:
                table = table.set_column(i, out_name, table.column(i).cast(want))
        return table

    def _empty_output(self, closed: pl.DataFrame | None) -> pa.Table:
        if self._schema is None:
            fields = [(k, pa.null()) for k in self.keys]
            fields += [("window_start", TIMESTAMP_UTC), ("window_end", TIMESTAMP_UTC)]
            fields += [(k, pa.null()) for k in self.aggs]
            return pa.schema(fields).empty_table()
        if closed is None:
            held = [f for f in (self._state, *self._pending) if f is not None]
            closed = held[0] if held else self._blank_state()
        key = str(closed.schema)
        if self._empty_cache is None or self._empty_cache[0] != key:
            blank = closed.clear().with_columns(
                pl.lit(0, pl.Int64).alias(_WSTART), pl.lit(0, pl.Int64).alias(_WEND)
            )
            self._empty_cache = (key, self._emit_rows(blank))
        return self._empty_cache[1]

    def _emit_rows(self, rows: pl.DataFrame) -> pa.Table:
        out = rows.select(
            *self.keys,
            pl.col(_WSTART).cast(_UTC).alias("window_start"),
            pl.col(_WEND).cast(_UTC).alias("window_end"),
            *self._finish_exprs,
        )
        if out.height > 1:
            out = out.sort(["window_start", *self.keys], nulls_last=True, maintain_order=True)
        return self._arrow(out)

    def _blank_state(self) -> pl.DataFrame:
        """A zero-row state with the right types, before any record arrived."""
        frame = self._frame(self._schema.empty_table())
        frame = frame.with_columns(pl.lit(0, pl.Int64).alias(TIME), pl.lit(0, pl.Int64).alias(SEQ))
        return frame.clear().group_by(self.keys or pl.lit(0)).agg(self._partial_exprs)

    def _frame(self, table: pa.Table) -> pl.DataFrame:
        """The input columns as polars, with the stable hashes approx_distinct counts."""
        frame = pl.from_arrow(decode_dictionaries(table.select(self._inputs)))
        if not isinstance(frame, pl.DataFrame):  # no input columns at all: count() only
            frame = pl.DataFrame()
        hashed = {
            a.hashed_column: hll.hashed_values(table.column(a.column))
            for a in self.aggs.values()
            if isinstance(a, ApproxDistinct)
        }
        return frame.with_columns(**hashed) if hashed else frame

    def _late_table(self, table: pa.Table, parts: list[_Late]) -> pa.Table | None:
        parts = [p for p in parts if len(p.rows)]
        if not parts:
            return None
        rows = np.concatenate([p.rows for p in parts])
        no_window = np.zeros(0, np.int64)
        start = np.concatenate([no_window if p.start is None else p.start for p in parts])
        end = np.concatenate([no_window if p.end is None else p.end for p in parts])
        reason = np.concatenate([np.full(len(p.rows), _REASONS.index(p.reason)) for p in parts])
        timed = np.concatenate([np.full(len(p.rows), p.start is not None) for p in parts])
        # in batch order, and by window within a record (hopping); records without a time
        # have no window, their start sorts as 0
        full_start = np.zeros(len(rows), np.int64)
        full_end = np.zeros(len(rows), np.int64)
        full_start[timed], full_end[timed] = start, end
        order = np.lexsort((full_start, rows))
        self.late_count += len(rows)
        out = table.take(pa.array(rows[order]))
        null = ~timed[order]
        for column, values in ((LATE_START, full_start), (LATE_END, full_end)):
            array = pa.array(values[order], pa.int64(), mask=null).cast(TIMESTAMP_UTC)
            out = out.append_column(column, array)
        reasons = pa.DictionaryArray.from_arrays(pa.array(reason[order], pa.int32()), _REASONS)
        return out.append_column(LATE_REASON, reasons.cast(pa.string()))


class _FixedWindows(_Window):
    """Windows of one size starting at align + k * hop: tumbling (hop = size) and hopping."""

    def __init__(self, size: int, hop: int, align: int, **common) -> None:
        super().__init__(**common)
        self.size, self.hop, self.align = size, hop, align
        self._group = [*self.keys, _WS]

    def _describe(self) -> str:
        return f"{self.kind}(size_us={self.size}, hop_us={self.hop}, align_us={self.align})"

    def _state_keys(self) -> list[str]:
        return self._group

    def _starts(self, times: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(record index, window start) for every window covering a record; the index is
        None for tumbling windows, where it is the identity."""
        latest = ((times - self.align) // self.hop) * self.hop + self.align
        if self.hop == self.size:
            return None, latest
        copies = math.ceil(self.size / self.hop)
        index = np.tile(np.arange(len(times)), copies)
        starts = (latest[None, :] - self.hop * np.arange(copies)[:, None]).ravel()
        covers = starts + self.size > times[index]
        return index[covers], starts[covers]

    def _absorb(
        self, frame: pl.DataFrame, times: np.ndarray, rows: np.ndarray, marks: np.ndarray
    ) -> list[_Late]:
        index, starts = self._starts(times)
        # a window closed before the record arrived when its end + grace <= the record's mark
        late = starts + (self.size + self.grace) <= (marks if index is None else marks[index])
        missed = starts[late]
        late_rows = rows[late] if index is None else rows[index[late]]
        if late.any():
            on_time = ~late
            index = np.flatnonzero(on_time) if index is None else index[on_time]
            starts = starts[on_time]
        if index is not None:
            frame = frame[index]
        if len(starts):
            frame = frame.with_columns(pl.Series(_WS, starts))
            self._pending.append(frame.group_by(self._group).agg(self._partial_exprs))
            earliest = int(starts.min())
            if self._pending_min is None or earliest < self._pending_min:
                self._pending_min = earliest
            if len(self._pending) >= _MAX_PENDING:
                self._fold()
        return [_Late(late_rows, missed, missed + self.size, WINDOW_CLOSED)]

    def _fold(self) -> None:
        """Merge the pending partials into the open windows, in one group-by.

        Folding happens only at points fixed by the input (a window may close, the pending
        list is full, flush), never because of a snapshot, which stores the pending partials
        as they are: float sums are then added in the same order with or without a restore.
        """
        parts = [f for f in (self._state, *self._pending) if f is not None and f.height]
        self._pending, self._pending_min = [], None
        if len(parts) > 1:
            both = pl.concat(parts, how="vertical_relaxed")
            self._state = both.group_by(self._group).agg(self._merge_exprs)
        elif parts:
            self._state = parts[0]

    def _close(self, watermark: int | None) -> pl.DataFrame | None:
        if watermark is not None:
            earliest = [self._pending_min] if self._pending_min is not None else []
            if self._state is not None and self._state.height:
                earliest.append(self._state[_WS].min())
            if not earliest or min(earliest) + self.size + self.grace > watermark:
                return None
        self._fold()
        state = self._state
        if state is None:
            return None
        if watermark is None:
            closed, self._state = state, state.clear()
        else:
            final = pl.col(_WS) + (self.size + self.grace) <= watermark
            closed = state.filter(final)
            self._state = state.filter(final.not_())
        return closed.with_columns(
            pl.col(_WS).alias(_WSTART), (pl.col(_WS) + self.size).alias(_WEND)
        )


class TumblingWindow(_FixedWindows):
    """Consecutive windows of `size`, starting at `align` + k * size (default: the epoch)."""

    kind = "TumblingWindow"

    def __init__(
        self,
        size: Duration,
        *,
        time_column: str,
        key: str | list[str] | None = None,
        aggs: Mapping[str, Agg],
        grace: Duration = 0,
        delay: Duration = 0,
        align: datetime | None = None,
        name: str = "tumbling_window",
    ) -> None:
        size_us = duration_micros(size, "size", name, positive=True)
        align_us = 0 if align is None else instant_micros(align, "align", name)
        super().__init__(
            size_us, size_us, align_us,
            time_column=time_column, key=key, aggs=aggs, grace=grace, delay=delay, name=name,
        )  # fmt: skip


class HoppingWindow(_FixedWindows):
    """Windows of `size` starting every `hop` (hop <= size), so they overlap."""

    kind = "HoppingWindow"

    def __init__(
        self,
        size: Duration,
        hop: Duration,
        *,
        time_column: str,
        key: str | list[str] | None = None,
        aggs: Mapping[str, Agg],
        grace: Duration = 0,
        delay: Duration = 0,
        align: datetime | None = None,
        name: str = "hopping_window",
    ) -> None:
        size_us = duration_micros(size, "size", name, positive=True)
        hop_us = duration_micros(hop, "hop", name, positive=True)
        if hop_us > size_us:
            raise StreamError(
                subject(name),
                f"hop ({hop!r}) is longer than size ({size!r}): records between windows "
                "would belong to no window",
                "use hop <= size (hop == size is a tumbling window)",
            )
        align_us = 0 if align is None else instant_micros(align, "align", name)
        super().__init__(
            size_us, hop_us, align_us,
            time_column=time_column, key=key, aggs=aggs, grace=grace, delay=delay, name=name,
        )  # fmt: skip


class SessionWindow(_Window):
    """Per key, records less than `gap` apart form a session [first, last + gap)."""

    kind = "SessionWindow"

    def __init__(
        self,
        gap: Duration,
        *,
        time_column: str,
        key: str | list[str] | None = None,
        aggs: Mapping[str, Agg],
        grace: Duration = 0,
        delay: Duration = 0,
        name: str = "session_window",
    ) -> None:
        self.gap = duration_micros(gap, "gap", name, positive=True)
        super().__init__(
            time_column=time_column, key=key, aggs=aggs, grace=grace, delay=delay, name=name
        )
        self._emitted: pl.DataFrame | None = None  # keys, _FSTART, _UNTIL
        self._emitted_changes = FrameChanges(self.keys)  # see changes()

    def snapshot(self) -> dict[str, pa.Table]:
        state = super().snapshot()
        state["emitted"] = pa.table({}) if self._emitted is None else self._emitted.to_arrow()
        return state

    def changes(self) -> dict[str, pa.Table | Delta]:
        state = super().changes()
        state["emitted"] = self._emitted_changes.delta(self._emitted)
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        super().restore(state)
        emitted = state.get("emitted")
        frame = None if emitted is None or not emitted.num_rows else pl.from_arrow(emitted)
        self._emitted = frame if isinstance(frame, pl.DataFrame) else None
        self._emitted_changes = FrameChanges(self.keys)
        self._emitted_changes.baseline(self._emitted)

    def _state_keys(self) -> list[str]:
        return [*self.keys, _START]

    def _describe(self) -> str:
        return f"{self.kind}(gap_us={self.gap})"

    def _absorb(
        self, frame: pl.DataFrame, times: np.ndarray, rows: np.ndarray, marks: np.ndarray
    ) -> list[_Late]:
        n = len(times)
        late = np.zeros(n, bool)
        start = np.zeros(n, np.int64)
        end = np.zeros(n, np.int64)
        before = self._before_emitted(frame, times)
        if before is not None:
            inside, start[inside], end[inside] = before
            late = inside
        # Only a stale record (older than its mark by more than grace) can be late: a fresh one
        # is at least `gap` after every session closed so far, so it neither touches one nor
        # falls before the end of the latest emitted (see the module docstring).
        stale = (marks != _NO_MARK) & (times < marks - self.grace)
        if stale.any():
            self._replay_stale(frame, times, marks, stale, late, start, end)
        if late.any():
            keep = ~late
            if keep.any():
                self._sessionize(frame.filter(pl.Series(keep)), times[keep])
            return [_Late(rows[late], start[late], end[late], WINDOW_CLOSED)]
        self._sessionize(frame, times)
        return []

    def _replay_stale(
        self,
        frame: pl.DataFrame,
        times: np.ndarray,
        marks: np.ndarray,
        stale: np.ndarray,
        late: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
    ) -> None:
        """Decide exactly, in `late`/`start`/`end`, the records of the keys where a session may
        have closed before one of their stale records arrived.

        A key is safe when at each of its stale records the smallest `last` its sessions can
        have (the minimum of its open sessions' `last` and of the times of its records so far
        that are not before its emitted session's end) is more than `gap + grace` above the
        record's mark: then no session of the key closed before the record, and the record is
        late exactly when it is before the emitted session's end (already in `late`). Keys
        with many records that fail it get a second test (`_unconnected`). The other keys
        replay their records in arrival order, in Python, up to their last stale record.
        """
        span = self.gap + self.grace
        cols = self.keys or ["__k"]
        recs = (
            frame.select(self.keys)
            if self.keys
            else pl.DataFrame({"__k": np.zeros(len(times), np.int8)})
        )
        # a session closes before a record when its last <= the record's mark - gap - grace
        limit = marks - span  # wraps where there is no mark, which only stale records read
        recs = recs.with_columns(
            pl.Series("__i", np.arange(len(times))),
            pl.Series("__c", np.where(late, _NEVER, times)),
            pl.Series("__lim", np.where(stale, limit, _NO_MARK)),
            pl.Series("__stale", stale),
        )
        state, held = self._state, None
        if state is not None and state.height:
            held = state.select(*self.keys, _START, _LAST)
            if not self.keys:
                held = held.with_columns(pl.lit(0, pl.Int8).alias("__k"))
            lowest = held.group_by(cols).agg(pl.col(_LAST).min().alias("__om"))
            recs = recs.join(lowest, on=cols, how="left", nulls_equal=True, maintain_order="left")
            floor = pl.min_horizontal(pl.col("__c").cum_min().over(cols), pl.col("__om"))
        else:
            floor = pl.col("__c").cum_min().over(cols)
        fails = recs.filter(pl.col("__stale") & (floor <= pl.col("__lim")))
        if not fails.height:
            return
        # Replaying costs Python per record; the second test costs a few polars passes per
        # batch, which only pays for keys with many records in the batch.
        counts = recs.join(fails.select(cols).unique(), on=cols, how="semi", nulls_equal=True)
        counts = counts.group_by(cols).agg(pl.len().alias("__n"))
        busy = counts.filter(pl.col("__n") >= _REPLAY_BELOW).select(cols)
        if busy.height:
            still, alone = self._unconnected(recs, held, cols, busy, marks)
            # (records of keys replayed below are decided again there)
            late[alone], start[alone], end[alone] = True, times[alone], times[alone] + self.gap
            few = counts.filter(pl.col("__n") < _REPLAY_BELOW).select(cols)
            fails = pl.concat([few, still], how="vertical_relaxed")
            if not fails.height:
                return
        ids = fails.select(cols).unique(maintain_order=True).with_row_index("__kid")
        mine = recs.join(ids, on=cols, how="inner", nulls_equal=True).sort("__kid", "__i")
        kid = mine["__kid"].to_numpy()
        k_from = np.searchsorted(kid, np.arange(ids.height)).tolist()
        k_to = np.zeros(ids.height, np.int64)  # after the key's last stale record: the rest
        ki = mine["__i"].to_numpy()  # is fresh, never late
        at = np.flatnonzero(stale[ki])
        np.maximum.at(k_to, kid[at], at + 1)
        s_bounds = [0] * (ids.height + 1)
        sess_start: list[int] = []
        sess_last: list[int] = []
        if held is not None:
            sess = held.join(ids, on=cols, how="inner", nulls_equal=True).sort("__kid", _START)
            sb = np.searchsorted(sess["__kid"].to_numpy(), np.arange(ids.height + 1))
            s_bounds = sb.tolist()
            sess_start, sess_last = sess[_START].to_list(), sess[_LAST].to_list()
        e_from = np.full(ids.height, _NO_MARK, np.int64)
        e_until = np.full(ids.height, _NO_MARK, np.int64)
        if self._emitted is not None and self._emitted.height:
            emitted = self._emitted
            if not self.keys:
                emitted = emitted.with_columns(pl.lit(0, pl.Int8).alias("__k"))
            found = ids.join(emitted, on=cols, how="inner", nulls_equal=True)
            where = found["__kid"].to_numpy()
            e_from[where], e_until[where] = found[_FSTART].to_numpy(), found[_UNTIL].to_numpy()
        kt, kw = times[ki].tolist(), marks[ki].tolist()
        ef, eu, k_to_list = e_from.tolist(), e_until.tolist(), k_to.tolist()
        verdict: list[bool] = []
        missed_from: list[int] = []
        missed_until: list[int] = []
        for k in range(ids.height):
            a, b, s0, s1 = k_from[k], k_to_list[k], s_bounds[k], s_bounds[k + 1]
            _replay_key(
                sess_start[s0:s1], sess_last[s0:s1], ef[k], eu[k], kt[a:b], kw[a:b],
                self.gap, span, verdict, missed_from, missed_until,
            )  # fmt: skip
        replayed = ki[np.arange(len(ki)) < k_to[kid]]
        late[replayed] = verdict
        start[replayed], end[replayed] = missed_from, missed_until

    def _unconnected(
        self,
        recs: pl.DataFrame,
        held: pl.DataFrame | None,
        cols: list[str],
        keys: pl.DataFrame,
        marks: np.ndarray,
    ) -> tuple[pl.DataFrame, np.ndarray]:
        """Of `keys`, those for which the second safe case below does not hold; and the
        records that are late because they are alone in a session that closes at once.

        Take the sessions the batch-level grouping forms from a key's open sessions and its
        records not before its emitted session's end. Nothing closes early for the key when,
        for each such session: it holds at most one open session, and each of its records
        arrives while the part that arrived before it is one open session it touches (`last`
        + gap + grace above the record's mark, and the record less than `gap` from it; the
        first record of a new session must not close at once); and every later session of the
        key, and for a record before the emitted session's end every session of the key, is
        still open when its records arrive. This holds for long sessions fed in near time
        order, which the running-minimum test refuses. Records grouped into a session without
        an open session, each of which would close at once on its own (`t + gap + grace <=`
        its mark), are late with [t, t + gap) in any case: by induction in arrival order none
        of them ever joins a session (the only sessions they could touch are each other), and
        none touches a session closed in the batch (its records would be in the group), so
        each is below every session closed before it, or touches none.
        """
        span, gap = self.gap + self.grace, self.gap
        mine = recs.join(keys, on=cols, how="semi", nulls_equal=True)
        parts = [
            mine.filter(pl.col("__c") != _NEVER).select(
                *cols,
                pl.col("__c").alias(_START),
                pl.col("__c").alias(_LAST),
                pl.col("__i"),
            )
        ]
        if held is not None:
            mine_held = held.join(keys, on=cols, how="semi", nulls_equal=True)
            parts.insert(
                0,
                mine_held.select(
                    *cols, _START, _LAST, pl.lit(-1, pl.Int64).alias("__i")
                ),
            )  # fmt: skip
        spans = pl.concat(parts, how="vertical_relaxed").sort([*cols, _START, "__i"])
        reach = pl.col(_LAST).cum_max().shift(1).over(cols)
        spans = spans.with_columns(
            (reach.is_null() | (pl.col(_START) - reach >= gap)).cum_sum().alias(_SID)
        )
        index = spans["__i"].to_numpy()
        spans = spans.with_columns(
            pl.Series("__w", np.where(index >= 0, marks[np.maximum(index, 0)], _NO_MARK))
        )
        is_held = pl.col("__i") < 0
        sessions = spans.group_by(_SID).agg(
            pl.col(cols).first(),
            is_held.sum().alias("__nh"),
            pl.col(_START).filter(is_held).min().alias("__hs"),
            pl.col(_LAST).filter(is_held).max().alias("__hl"),
            pl.col(_LAST).max().alias("__last"),
            pl.col("__i").max().alias("__a"),
            (pl.col(_LAST) + span > pl.col("__w")).any().alias("__open"),
        )
        # records that would each form a session closing at once, and touch only each other,
        # are late whatever came before
        alone = (pl.col("__nh") == 0) & ~pl.col("__open")
        lonely = spans.join(sessions.filter(alone).select(_SID), on=_SID, how="semi")
        sessions = sessions.filter(~alone)
        # each record touches the open part that arrived before it
        members = (
            spans.filter(~is_held)
            .join(sessions.select(_SID, "__hs", "__hl"), on=_SID, how="inner")
            .sort(_SID, "__i")
        )
        top = pl.max_horizontal(pl.col(_LAST).cum_max().shift(1).over(_SID), pl.col("__hl"))
        bottom = pl.min_horizontal(pl.col(_START).cum_min().shift(1).over(_SID), pl.col("__hs"))
        t, w = pl.col(_START), pl.col("__w")
        ok = (
            pl.when(top.is_null())
            .then(t + span > w)
            .otherwise((top + span > w) & (bottom - gap < t) & (t < top + gap))
        )
        bad_members = members.filter(~ok).select(cols)
        # when each session closes: the first record whose mark reaches last + gap + grace,
        # after its own last record
        sessions = sessions.sort(_SID)
        last, arrived = sessions["__last"].to_numpy(), sessions["__a"].to_numpy()
        closes = np.maximum(np.searchsorted(marks, last + span), arrived + 1)
        sessions = sessions.with_columns(pl.Series("__cl", closes))
        later = pl.col("__cl").reverse().cum_min().reverse().shift(-1).over(cols)
        bad_sessions = sessions.filter(
            (pl.col("__nh") > 1) | (later.is_not_null() & (pl.col("__a") >= later))
        ).select(cols)
        first_close = sessions.group_by(cols).agg(pl.col("__cl").min())
        bad_early = (
            mine.filter(pl.col("__c") == _NEVER)
            .join(first_close, on=cols, how="inner", nulls_equal=True)
            .filter(pl.col("__i") >= pl.col("__cl"))
            .select(cols)
        )
        bad = pl.concat([bad_members, bad_sessions, bad_early], how="vertical_relaxed")
        return bad, lonely["__i"].to_numpy()

    def _before_emitted(
        self, frame: pl.DataFrame, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(mask, missed start, missed end) of the records earlier than the end of their key's
        latest emitted session, or None when there are none."""
        emitted = self._emitted
        if emitted is None or not emitted.height:
            return None
        if self.keys:
            bounds = frame.select(self.keys).join(
                emitted, on=self.keys, how="left", nulls_equal=True, maintain_order="left"
            )
            fstart = bounds[_FSTART].fill_null(np.iinfo(np.int64).max).to_numpy()
            until = bounds[_UNTIL].fill_null(np.iinfo(np.int64).min).to_numpy()
        else:
            fstart = np.full(len(times), emitted[_FSTART][0], np.int64)
            until = np.full(len(times), emitted[_UNTIL][0], np.int64)
        inside = times < until
        if not inside.any():
            return None
        t, fs, un = times[inside], fstart[inside], until[inside]
        within = t >= fs
        return inside, np.where(within, fs, t), np.where(within, un, t + self.gap)

    def _remember_emitted(self, closed: pl.DataFrame) -> None:
        latest = closed.select(
            *self.keys, pl.col(_START).alias(_FSTART), (pl.col(_LAST) + self.gap).alias(_UNTIL)
        )
        if self._emitted is not None:
            latest = pl.concat([self._emitted, latest], how="vertical_relaxed")
        latest = latest.sort(_UNTIL)
        if self.keys:
            self._emitted = latest.group_by(self.keys, maintain_order=True).last()
        else:
            self._emitted = latest.tail(1)

    def _sessionize(self, frame: pl.DataFrame, times: np.ndarray) -> None:
        """Merge records (none of them late) with the open sessions of their keys."""
        keys, state = self.keys, self._state
        held = state is not None and state.height > 0
        points = frame.select(*keys, pl.col(TIME).alias(_START), pl.col(TIME).alias(_LAST))
        points = points.with_columns(pl.Series(_SRC, np.arange(len(times))))
        parts = [points]
        if held:
            spans = state.select(*keys, _START, _LAST, (-1 - pl.int_range(pl.len())).alias(_SRC))
            parts.insert(0, spans)
        spans = pl.concat(parts, how="vertical_relaxed").sort(
            [*keys, _START, _SRC], nulls_last=True, maintain_order=True
        )
        # sorted by start, a span opens a new session when it starts `gap` or more after the
        # latest end of every earlier span of its key
        reach = pl.col(_LAST).cum_max().shift(1)
        if keys:
            reach = reach.over(keys)
        spans = spans.with_columns(
            (reach.is_null() | (pl.col(_START) - reach >= self.gap)).cum_sum().alias(_SID)
        )
        sessions = spans.group_by(_SID).agg(
            (pl.col(_SRC) < 0).any().alias("__held"), pl.col(_START).min(), pl.col(_LAST).max()
        )
        sid, src = spans[_SID].to_numpy(), spans[_SRC].to_numpy()
        record = src >= 0
        record_sid = np.empty(len(times), sid.dtype)
        record_sid[src[record]] = sid[record]
        frame = frame.with_columns(pl.Series(_SID, record_sid))

        if frame.height:
            partial = frame.group_by([_SID, *keys]).agg(self._partial_exprs)
            if held:
                state_sid = np.empty(state.height, sid.dtype)
                state_sid[-1 - src[~record]] = sid[~record]
                before = state.drop(_START, _LAST).with_columns(pl.Series(_SID, state_sid))
                merged = pl.concat(
                    [before.select(partial.columns), partial], how="vertical_relaxed"
                )
                partial = merged.group_by([_SID, *keys], maintain_order=True).agg(self._merge_exprs)
            bounds = sessions.select(_SID, _START, _LAST)
            merged_state = partial.join(bounds, on=_SID, how="left").sort(_SID)
            self._state = merged_state.select(
                *keys, _START, _LAST, *(c for c in partial.columns if c.startswith("__a"))
            )

    def _close(self, watermark: int | None) -> pl.DataFrame | None:
        state = self._state
        if state is None:
            return None
        if watermark is None:
            closed, self._state = state, state.clear()
        elif not state.height or state[_LAST].min() + self.gap + self.grace > watermark:
            return None
        else:
            final = pl.col(_LAST) + (self.gap + self.grace) <= watermark
            closed = state.filter(final)
            self._state = state.filter(final.not_())
        if closed.height:
            self._remember_emitted(closed)
        return closed.with_columns(
            pl.col(_START).alias(_WSTART), (pl.col(_LAST) + self.gap).alias(_WEND)
        )


def _replay_key(
    starts: list[int],
    lasts: list[int],
    emitted_from: int,
    emitted_until: int,
    times: list[int],
    marks: list[int],
    gap: int,
    span: int,
    late: list[bool],
    miss_from: list[int],
    miss_until: list[int],
) -> None:
    """The session rule record by record for one key: appends (late, missed start, missed end)
    of each record to the three lists. `starts`/`lasts` are the key's open sessions sorted by
    start (disjoint, so `lasts` is sorted too); `emitted_*` bound its latest emitted session
    (`_NO_MARK`: none); `span` is gap + grace."""
    closed = 0  # sessions[:closed] have closed
    for t, mark in zip(times, marks, strict=True):
        if mark != _NO_MARK:
            while closed < len(lasts) and lasts[closed] + span <= mark:
                emitted_from, emitted_until = starts[closed], lasts[closed] + gap
                closed += 1
        if t < emitted_until:
            late.append(True)
            inside = t >= emitted_from
            miss_from.append(emitted_from if inside else t)
            miss_until.append(emitted_until if inside else t + gap)
            continue
        lo = bisect.bisect_right(lasts, t - gap, closed)  # first session with last > t - gap
        hi = bisect.bisect_left(starts, t + gap, closed)  # first with start >= t + gap
        if lo < hi:  # touches sessions lo..hi-1: they merge into one
            starts[lo:hi] = [min(starts[lo], t)]
            lasts[lo:hi] = [max(lasts[hi - 1], t)]
        elif mark != _NO_MARK and t + span <= mark:  # alone, and closed at once
            late.append(True)
            miss_from.append(t)
            miss_until.append(t + gap)
            continue
        else:
            starts.insert(lo, t)
            lasts.insert(lo, t)
        late.append(False)
        miss_from.append(0)
        miss_until.append(0)
