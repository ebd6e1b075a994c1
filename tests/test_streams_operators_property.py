"""Properties of the stream operators against a batch recomputation, and Map/Filter.

Streaming (random batch cuts, duplicates, disorder, dedup then window) must give what DuckDB
computes over the deduplicated records in one go; every record must end up in exactly the
windows it belongs to or in the late output.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.errors import StreamError
from headrace.streams.operators import (
    Dedup,
    Filter,
    HoppingWindow,
    Map,
    SessionWindow,
    TumblingWindow,
)
from headrace.streams.operators import aggregations as agg

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AGGS = {
    "n": agg.count(),
    "nx": agg.count("x"),
    "total": agg.sum("x"),
    "avg": agg.mean("x"),
    "lo": agg.min("x"),
    "hi": agg.max("x"),
    "first": agg.first("x"),
    "last": agg.last("x"),
}
SIZE = 10  # seconds


def _cut(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    edges = [0, *sorted(c for c in set(cuts) if 0 < c < table.num_rows), table.num_rows]
    return [table.slice(a, b - a) for a, b in itertools.pairwise(edges)]


@st.composite
def deduplicated_streams(draw):
    """Records with ids, some sent again later, times disordered by at most `disorder`."""
    n = draw(st.integers(1, 60))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    cents = st.one_of(st.none(), st.integers(-100_000, 100_000))
    values = [None if c is None else c / 100 for c in draw(st.lists(cents, min_size=n, max_size=n))]
    resent = draw(st.lists(st.integers(0, n - 1), max_size=n))
    arrival = draw(st.permutations(list(range(n)) + resent))
    disorder = draw(st.integers(0, 30))
    jitter = draw(st.lists(st.integers(0, disorder * 1000), min_size=n, max_size=n))
    # a record's time follows the arrival of its first copy, plus up to `disorder` seconds
    first_seen = {}
    for i in arrival:
        first_seen.setdefault(i, len(first_seen))
    millis = [2_000 * first_seen[i] + jitter[i] for i in range(n)]
    table = pa.table(
        {
            "id": pa.array(arrival, pa.int64()),
            "k": pa.array([keys[i] for i in arrival], pa.string()),
            "x": pa.array([values[i] for i in arrival], pa.float64()),
            "ts": pa.array(
                [T0 + timedelta(milliseconds=millis[i]) for i in arrival], pa.timestamp("us")
            ),
        }
    )
    cuts = draw(st.lists(st.integers(1, max(1, len(arrival) - 1)), max_size=8))
    restore_at = draw(st.integers(0, 8))
    return _cut(table, cuts), disorder, restore_at


def _streamed(batches, disorder, restore_at=None):
    def fresh():
        dedup = Dedup("id", timedelta(days=1), time_column="ts")
        window = TumblingWindow(SIZE, time_column="ts", key="k", aggs=AGGS, delay=disorder)
        return dedup, window

    dedup, window = fresh()
    kept, out, late = [], [], 0
    for i, b in enumerate(batches):
        if i == restore_at:
            states = dedup.snapshot(), window.snapshot()
            dedup, window = fresh()
            dedup.restore(states[0])
            window.restore(states[1])
        unique = dedup.process(b).main
        kept.append(unique)
        e = window.process(unique)
        out.append(e.main)
        late += 0 if e.late is None else e.late.num_rows
    out.append(window.flush().main)
    return pa.concat_tables(kept), pa.concat_tables(out), late


def _duckdb(kept: pa.Table) -> list[tuple]:
    records = kept.append_column("seq", pa.array(np.arange(kept.num_rows)))  # arrival order
    con = duckdb.connect()
    con.register("records", records)
    size_us = SIZE * 1_000_000
    return con.execute(
        f"""
        SELECT k, (epoch_us(ts) // {size_us}) * {size_us} AS ws,
               count(*), count(x), sum(x), avg(x), min(x), max(x),
               first(x ORDER BY ts, seq), last(x ORDER BY ts, seq)
        FROM records GROUP BY k, ws ORDER BY ws, k NULLS LAST
        """
    ).fetchall()


def _close(a, b, scale):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * scale)


@PROPERTY
@given(deduplicated_streams())
def test_dedup_then_tumbling_equals_duckdb_over_the_deduplicated_records(stream):
    batches, disorder, restore_at = stream
    kept, out, late = _streamed(batches, disorder)
    assert late == 0  # the delay covers the disorder
    ids = kept.column("id").to_pylist()
    assert sorted(ids) == sorted(set(pa.concat_tables(batches).column("id").to_pylist()))
    expected = _duckdb(kept)
    got = out.to_pylist()
    assert len(got) == len(expected)
    scale = max([abs(v) for v in kept.column("x").to_pylist() if v is not None] or [1.0])
    scale *= kept.num_rows
    for row, want in zip(got, expected, strict=True):
        k, ws, n, nx, total, avg, lo, hi, first, last = want
        assert (row["k"], row["window_start"]) == (k, EPOCH + timedelta(microseconds=ws))
        assert row["window_end"] - row["window_start"] == timedelta(seconds=SIZE)
        assert (row["n"], row["nx"], row["lo"], row["hi"]) == (n, nx, lo, hi)
        assert (row["first"], row["last"]) == (first, last)
        assert _close(row["total"], total, scale) and _close(row["avg"], avg, scale)
    # a snapshot and restore between any two batches changes nothing
    kept2, out2, _ = _streamed(batches, disorder, restore_at)
    assert kept2.equals(kept) and out2.equals(out)


@st.composite
def disordered_streams(draw):
    n = draw(st.integers(0, 80))
    seconds = draw(st.lists(st.one_of(st.none(), st.integers(0, 120)), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    table = pa.table(
        {
            "ts": pa.array(
                [None if s is None else T0 + timedelta(seconds=s) for s in seconds],
                pa.timestamp("us"),
            ),
            "k": pa.array(keys, pa.string()),
        }
    )
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=10))
    grace, delay = draw(st.integers(0, 15)), draw(st.integers(0, 15))
    return _cut(table, cuts), grace, delay, n


def _account(window, batches):
    """(records counted in windows, late rows) over the whole stream; each window once."""
    counted, late, emitted = 0, 0, []
    for b in [*batches, None]:
        e = window.flush() if b is None else window.process(b)
        counted += sum(e.main.column("n").to_pylist())
        emitted += zip(
            e.main.column("k").to_pylist(), e.main.column("window_start").to_pylist(), strict=True
        )
        late += 0 if e.late is None else e.late.num_rows
        assert window.late_count == late
    assert len(emitted) == len(set(emitted))
    return counted, late


@PROPERTY
@given(disordered_streams())
def test_every_record_is_in_its_windows_or_in_the_late_output(stream):
    batches, grace, delay, n = stream
    options = dict(time_column="ts", key="k", aggs={"n": agg.count()}, grace=grace, delay=delay)
    assert sum(_account(TumblingWindow(10, **options), batches)) == n
    assert sum(_account(SessionWindow(7, **options), batches)) == n
    # hopping: every timed record belongs to size / hop = 3 windows
    nulls = sum(b.column("ts").null_count for b in batches)
    counted, late = _account(HoppingWindow(15, 5, **options), batches)
    assert counted + late == 3 * (n - nulls) + nulls


@PROPERTY
@given(disordered_streams())
def test_watermark_never_moves_back(stream):
    batches, _grace, delay, _ = stream
    window = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, delay=delay)
    marks = []
    for b in batches:
        window.process(b)
        marks.append(window.watermark)
    known = [m for m in marks if m is not None]
    assert known == sorted(known)
    assert marks[: len(marks) - len(known)] == [None] * (len(marks) - len(known))


# -- Map and Filter ---------------------------------------------------------------------------


TABLE = pa.table({"a": [1, 2, 3, None], "b": ["w", "x", "y", "z"]})


def test_map_passes_arrow_or_polars_by_annotation():
    def doubled(table: pa.Table) -> pa.Table:
        return table.set_column(0, "a", pa.compute.multiply(table.column("a"), 2))

    def tripled(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col("a") * 3)

    assert Map(doubled).process(TABLE).main.column("a").to_pylist() == [2, 4, 6, None]
    assert Map(tripled).process(TABLE).main.column("a").to_pylist() == [3, 6, 9, None]
    untyped = Map(lambda f: f.with_columns(pl.col("a") + 1), input="polars")
    assert untyped.process(TABLE).main.column("a").to_pylist() == [2, 3, 4, None]
    op = Map(doubled)
    assert op.name == "map:test_map_passes_arrow_or_polars_by_annotation.<locals>.doubled"
    assert op.snapshot() == {} and op.watermark is None
    op.restore({})
    assert op.flush().main.num_rows == 0


def test_map_errors_name_the_operator_and_the_function():
    def broken(table):
        raise KeyError("missing")

    with pytest.raises(StreamError, match=r"'enrich'.*broken raised KeyError") as info:
        Map(broken, name="enrich").process(TABLE)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(StreamError, match="returned a dict"):
        Map(lambda t: {"a": 1}).process(TABLE)
    with pytest.raises(StreamError, match="input must be"):
        Map(lambda t: t, input="pandas")
    with pytest.raises(StreamError, match="keeps no state"):
        Map(lambda t: t).restore({"x": TABLE})


def test_filter_accepts_expressions_and_masks_of_every_kind():
    assert Filter(pl.col("a") > 1).process(TABLE).main.column("b").to_pylist() == ["x", "y"]

    def by_series(frame: pl.DataFrame) -> pl.Series:
        return frame["b"] != "x"

    assert Filter(by_series).process(TABLE).main.column("b").to_pylist() == ["w", "y", "z"]
    numpy_mask = Filter(lambda t: np.array([True, False, False, True]))
    assert numpy_mask.process(TABLE).main.column("b").to_pylist() == ["w", "z"]
    arrow_mask = Filter(lambda t: pa.compute.greater(t.column("a"), 2))  # null drops the row
    assert arrow_mask.process(TABLE).main.column("b").to_pylist() == ["y"]
    assert Filter(lambda t: [False] * 4).process(TABLE).main.schema == TABLE.schema


def test_filter_errors_name_the_operator():
    with pytest.raises(StreamError, match=r"'only-big'.*3 values for a batch of 4"):
        Filter(lambda t: [True] * 3, name="only-big").process(TABLE)
    with pytest.raises(StreamError, match="mask of type int64"):
        Filter(lambda t: t.column("a")).process(TABLE)
    with pytest.raises(StreamError, match="returned a str"):
        Filter(lambda t: "yes").process(TABLE)
    with pytest.raises(StreamError, match="raised ColumnNotFoundError"):
        Filter(pl.col("missing") > 1).process(TABLE)
