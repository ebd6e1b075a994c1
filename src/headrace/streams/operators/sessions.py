"""Session windows: per key, records less than `gap` apart form one session.

The watermark, closing and late output are those of every window (`windows.py`).

Per key, records less than `gap` apart form one session [first, last + gap), which
closes when the watermark reaches `last + gap + grace`. A record merges with every open
session of its key less than `gap` away (it can extend or bridge them). It is late when it is
earlier than the end of its key's latest closed session (it can no longer join that session;
its `_late_window_*` are that session's bounds, or [t, t + gap) when it is earlier than that
session's start), or when it touches no open session and the session it would form closes at
once (`t + gap + grace <= its watermark`). So every later session of a key starts after the
end of its emitted ones, and no (key, window_start) is ever emitted twice, which idempotent
sinks keyed on it rely on. The operator keeps, per key, the bounds of its latest emitted
session for that (one row per key, in its state).

Cost. A record no older than its watermark minus `grace` ("fresh") is never late: every session
closed before it has `last <= watermark - gap - grace`, so the record is at least `gap` after
it. Late records never change sessions, so the sessions are those the batch-level grouping forms
from the open sessions and the records that are not late; only which records are late needs the
record order, and only stale records can be. A batch without stale records (the usual case when
`delay` covers the disorder) costs one comparison per record. With stale records, the keys that
have them are tested in polars: a running minimum over their records in arrival order
(`_replay_stale`), then, for keys with many records in the batch, the sessions' arrival pattern
(`_unconnected`, which passes long sessions fed in near time order). Keys that pass either test
cannot have had a session close before one of their stale records, and their stale records are
late exactly when they are before the emitted session's end. The others are replayed record by
record in Python (`_replay_key`, a few microseconds per record), up to their last stale record.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.streams.operators.aggregations import TIME, Agg
from headrace.streams.operators.base import Delta, Duration, FrameChanges, duration_micros
from headrace.streams.operators.windows import (
    _NO_MARK,
    _WEND,
    _WSTART,
    WINDOW_CLOSED,
    _Late,
    _Window,
)

_START, _LAST = "__start", "__last"  # first and last event time of a session
_SID, _SRC = "__sid", "__src"
_FSTART, _UNTIL = "__fstart", "__until"  # bounds of a key's latest emitted session
_NEVER = np.iinfo(np.int64).max
_REPLAY_BELOW = 64  # keys with fewer records in a batch are replayed without the second test


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
