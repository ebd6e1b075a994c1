"""Event-time windows: hand-computed cases for tumbling, hopping and session windows."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from headrace.errors import StreamError
from headrace.streams.operators import (
    LATE_END,
    LATE_REASON,
    LATE_START,
    HoppingWindow,
    HyperLogLog,
    Operator,
    SessionWindow,
    TumblingWindow,
)
from headrace.streams.operators import aggregations as agg
from tests.polars_hash_state import as_old_state

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def batch(*events, key="k") -> pa.Table:
    """events: (seconds, key, x) with seconds None for a record without an event time."""
    return pa.table(
        {
            "ts": pa.array(
                [None if s is None else at(s) for s, _, _ in events], pa.timestamp("us")
            ),
            key: pa.array([k for _, k, _ in events], pa.string()),
            "x": pa.array([x for _, _, x in events], pa.float64()),
        }
    )


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    data = table.to_pydict()
    names = columns or tuple(table.column_names)
    return list(zip(*(data[c] for c in names), strict=True))


def late_windows(emit) -> list[tuple]:
    if emit.late is None:
        return []
    return rows(emit.late, "x", LATE_START, LATE_END, LATE_REASON)


ALL_AGGS = {
    "n": agg.count(),
    "nx": agg.count("x"),
    "total": agg.sum("x"),
    "avg": agg.mean("x"),
    "lo": agg.min("x"),
    "hi": agg.max("x"),
    "first": agg.first("x"),
    "last": agg.last("x"),
}


# -- tumbling ---------------------------------------------------------------------------------


def test_tumbling_aggregates_each_key_and_window_once_closed():
    w = TumblingWindow(10, time_column="ts", key="k", aggs=ALL_AGGS)
    assert isinstance(w, Operator)
    assert w.watermark is None
    first = w.process(batch((1, "a", 1.0), (4, "a", None), (3, "a", 5.0), (2, "b", 2.0)))
    assert first.main.num_rows == 0 and first.late is None
    assert w.watermark == at(4)
    out = w.process(batch((10, "a", 7.0), (11, "b", 1.0))).main  # watermark 11 closes [0, 10)
    assert out.schema.field("window_start").type == pa.timestamp("us", "UTC")
    assert out.schema.field("k").type == pa.string()
    assert rows(out) == [
        ("a", at(0), at(10), 3, 2, 6.0, 3.0, 1.0, 5.0, 1.0, None),  # last: t=4 has no x
        ("b", at(0), at(10), 1, 1, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0),
    ]
    rest = w.flush().main
    assert rows(rest, "k", "window_start", "n", "total") == [
        ("a", at(10), 1, 7.0),
        ("b", at(10), 1, 1.0),
    ]


def test_window_of_only_nulls_gives_null_sum_mean_min_and_first_by_time():
    w = TumblingWindow(10, time_column="ts", aggs=ALL_AGGS)
    w.process(batch((5, "a", None), (2, "a", None)))
    (row,) = rows(w.flush().main)
    assert row == (at(0), at(10), 2, 0, None, None, None, None, None, None)


def test_first_and_last_break_time_ties_by_arrival_order_across_batches():
    w = TumblingWindow(10, time_column="ts", aggs={"f": agg.first("x"), "l": agg.last("x")})
    w.process(batch((5, "a", 1.0), (3, "a", 2.0)))
    w.process(batch((3, "a", 3.0), (5, "a", 4.0), (6, "a", 9.0), (6, "a", 8.0)))
    assert rows(w.flush().main, "f", "l") == [(2.0, 8.0)]


def test_out_of_order_within_delay_is_on_time():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, delay=5)
    assert w.process(batch((12, "a", 1.0))).main.num_rows == 0  # watermark 7
    e = w.process(batch((8, "a", 1.0), (14, "a", 1.0)))  # 8 is within the delay
    assert e.late is None and w.watermark == at(9)
    e = w.process(batch((15, "a", 1.0)))  # watermark 10 closes [0, 10)
    assert rows(e.main, "window_start", "n") == [(at(0), 1)]
    assert rows(w.flush().main, "window_start", "n") == [(at(10), 3)]


def test_late_within_grace_is_included_and_beyond_grace_goes_to_late_output():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count(), "s": agg.sum("x")}, grace=3)
    w.process(batch((11, "a", 1.0)))  # watermark 11 < 10 + 3: [0, 10) still open
    e = w.process(batch((9, "a", 2.0), (12, "a", 4.0)))
    assert e.late is None and e.main.num_rows == 0
    e = w.process(batch((13, "a", 8.0)))  # watermark 13 closes [0, 10)
    assert rows(e.main, "window_start", "n", "s") == [(at(0), 1, 2.0)]
    e = w.process(batch((7, "b", 16.0), (14, "a", 32.0)))
    assert e.main.num_rows == 0
    assert late_windows(e) == [(16.0, at(0), at(10), "window_closed")]
    assert e.late.column_names == ["ts", "k", "x", LATE_START, LATE_END, LATE_REASON]
    assert w.late_count == 1
    assert rows(w.flush().main, "window_start", "n", "s") == [(at(10), 4, 1.0 + 4 + 8 + 32)]


def test_records_without_event_time_go_to_late_output():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()})
    e = w.process(batch((1, "a", 1.0), (None, "a", 2.0), (2, "a", 3.0)))
    assert rows(e.late, "x", LATE_START, LATE_REASON) == [(2.0, None, "null_time")]
    assert w.late_count == 1
    assert rows(w.flush().main, "n") == [(2,)]


def test_empty_windows_are_not_emitted():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()})
    first = w.process(batch((5, "a", 1.0), (35, "a", 1.0), (36, "a", 1.0)))
    assert rows(first.main, "window_start", "n") == [(at(0), 1)]
    e = w.process(batch((70, "a", 1.0)))
    assert rows(e.main, "window_start", "n") == [(at(30), 2)]
    assert rows(w.flush().main, "window_start") == [(at(70),)]


def test_watermark_is_monotone_and_trails_max_event_time_by_delay():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, delay=2)
    marks = []
    for seconds in [5, 30, 7, 12, 31, 29]:
        w.process(batch((seconds, "a", 1.0)))
        marks.append(w.watermark)
    assert marks == [at(3), at(28), at(28), at(28), at(29), at(29)]


def test_flush_closes_everything_and_later_records_for_those_windows_are_late():
    w = TumblingWindow(10, time_column="ts", key="k", aggs={"n": agg.count()}, grace=10)
    assert w.process(batch((1, "a", 1.0), (15, "b", 1.0))).main.num_rows == 0
    out = w.flush()
    assert rows(out.main, "k", "window_start", "n") == [("a", at(0), 1), ("b", at(10), 1)]
    assert w.flush().main.num_rows == 0
    e = w.process(batch((12, "b", 1.0), (40, "a", 1.0)))
    assert late_windows(e) == [(1.0, at(10), at(20), "window_closed")]
    assert rows(w.flush().main, "k", "window_start", "n") == [("a", at(40), 1)]


def test_align_shifts_window_boundaries():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, align=at(3), grace=99)
    w.process(batch((1, "a", 1.0), (3, "a", 1.0), (12, "a", 1.0), (13, "a", 1.0)))
    assert rows(w.flush().main, "window_start", "window_end", "n") == [
        (at(-7), at(3), 1),
        (at(3), at(13), 2),
        (at(13), at(23), 1),
    ]


def test_composite_and_dictionary_keys_keep_their_types():
    table = pa.table(
        {
            "ts": pa.array([at(1), at(2), at(3)], pa.timestamp("ms", "UTC")),
            "site": pa.array(["s1", "s1", "s2"]).dictionary_encode(),
            "sensor": pa.array([1, 1, None], pa.int32()),
            "x": [1, 2, 3],
        }
    )
    w = TumblingWindow(
        timedelta(minutes=1),
        time_column="ts",
        key=["site", "sensor"],
        aggs={"n": agg.count(), "s": agg.sum("x"), "hi": agg.max("x")},
    )
    w.process(table)
    out = w.flush().main
    assert out.schema.field("site").type == pa.string()
    assert out.schema.field("sensor").type == pa.int32()
    assert out.schema.field("hi").type == pa.int64()
    assert rows(out, "site", "sensor", "n", "s") == [("s1", 1, 2, 3), ("s2", None, 1, 3)]


def test_emits_have_one_schema_even_when_empty():
    w = TumblingWindow(10, time_column="ts", key="k", aggs={"n": agg.count(), "m": agg.mean("x")})
    first = w.process(batch((1, "a", 1.0)))
    second = w.process(batch((30, "a", 1.0)))
    assert first.main.num_rows == 0 and second.main.num_rows == 1
    assert first.main.schema == second.main.schema


# -- hopping ----------------------------------------------------------------------------------


def test_hopping_counts_a_record_in_every_window_covering_it():
    aggs = {"n": agg.count(), "s": agg.sum("x")}
    w = HoppingWindow(10, 5, time_column="ts", aggs=aggs, grace=100)
    w.process(batch((1, "a", 1.0), (7, "a", 2.0), (12, "a", 4.0)))
    assert rows(w.flush().main, "window_start", "window_end", "n", "s") == [
        (at(-5), at(5), 1, 1.0),
        (at(0), at(10), 2, 3.0),
        (at(5), at(15), 2, 6.0),
        (at(10), at(20), 1, 4.0),
    ]


def test_hopping_record_late_for_one_window_counts_in_the_other():
    w = HoppingWindow(10, 5, time_column="ts", aggs={"n": agg.count()})
    e = w.process(batch((1, "a", 1.0), (11, "a", 2.0)))  # watermark 11 closes [-5, 5), [0, 10)
    assert rows(e.main, "window_start", "n") == [(at(-5), 1), (at(0), 1)]
    e = w.process(batch((6, "a", 3.0)))  # [0, 10) is closed, [5, 15) is open
    assert late_windows(e) == [(3.0, at(0), at(10), "window_closed")]
    assert rows(w.flush().main, "window_start", "n") == [(at(5), 2), (at(10), 1)]
    assert w.late_count == 1


def test_hopping_with_uneven_hop_and_all_windows_late():
    w = HoppingWindow(10, 4, time_column="ts", aggs={"n": agg.count()})
    w.process(batch((100, "a", 1.0)))
    e = w.process(batch((9, "a", 5.0)))  # windows [0,10), [4,14), [8,18): all closed
    assert late_windows(e) == [
        (5.0, at(0), at(10), "window_closed"),
        (5.0, at(4), at(14), "window_closed"),
        (5.0, at(8), at(18), "window_closed"),
    ]
    assert w.late_count == 3


def test_hop_longer_than_size_is_refused():
    with pytest.raises(StreamError, match="hop"):
        HoppingWindow(5, 10, time_column="ts", aggs={"n": agg.count()})


# -- session ----------------------------------------------------------------------------------


def test_sessions_split_on_gaps_per_key():
    aggs = {"n": agg.count(), "s": agg.sum("x")}
    w = SessionWindow(5, time_column="ts", key="k", aggs=aggs, grace=100)
    w.process(batch((1, "a", 1.0), (4, "a", 2.0), (9, "a", 4.0), (3, "b", 8.0), (20, "b", 16.0)))
    # a: 1, 4 (gap 3 < 5), then 9 (gap 5: not < 5) -> [1, 9) and [9, 14)
    assert rows(w.flush().main, "k", "window_start", "window_end", "n", "s") == [
        ("a", at(1), at(9), 2, 3.0),
        ("b", at(3), at(8), 1, 8.0),
        ("a", at(9), at(14), 1, 4.0),
        ("b", at(20), at(25), 1, 16.0),
    ]


def test_session_bridging_record_merges_two_open_sessions():
    w = SessionWindow(5, time_column="ts", aggs={"n": agg.count(), "f": agg.first("x")}, grace=20)
    w.process(batch((0, "a", 1.0), (8, "a", 2.0)))
    e = w.process(batch((4, "a", 3.0)))  # 4 - 0 < 5 and 8 - 4 < 5
    assert e.main.num_rows == 0
    assert rows(w.flush().main, "window_start", "window_end", "n", "f") == [(at(0), at(13), 3, 1.0)]


def test_session_closes_after_gap_and_grace_and_late_records_extend_open_sessions():
    w = SessionWindow(5, time_column="ts", aggs={"n": agg.count()}, grace=2)
    w.process(batch((10, "a", 1.0)))
    e = w.process(batch((16, "a", 1.0)))  # watermark 16 < 10 + 5 + 2: still open, not joined
    assert e.main.num_rows == 0
    # a record at 6 forms [6, 11) which closed at watermark 13, but it joins the open [10, 15)
    e = w.process(batch((6, "a", 2.0)))
    assert e.late is None
    e = w.process(batch((22, "a", 1.0)))  # watermark 22 closes [6, 15) (15 + 2 <= 22)
    assert rows(e.main, "window_start", "window_end", "n") == [(at(6), at(15), 2)]
    e = w.process(batch((1, "a", 4.0)))  # [1, 6): closed, and no open session within 5 s
    assert late_windows(e) == [(4.0, at(1), at(6), "window_closed")]
    assert rows(w.flush().main, "window_start", "window_end", "n") == [
        (at(16), at(21), 1),
        (at(22), at(27), 1),
    ]


def test_session_never_emits_a_key_and_start_twice():
    """A record at the start of an emitted session, bridging to an open one, must not start
    that session again (found by the property test: (a, 23) was emitted twice)."""
    w = SessionWindow(7, time_column="ts", key="k", aggs={"n": agg.count()})
    e = w.process(batch((23, "a", 1.0), (35, "a", 1.0)))  # watermark 35 closes [23, 30)
    assert rows(e.main, "k", "window_start", "window_end", "n") == [("a", at(23), at(30), 1)]
    # 23 is inside the emitted [23, 30): late; 29 too (before its end, 30); 31 joins [35, 42)
    e = w.process(batch((23, "a", 2.0), (29, "a", 3.0), (31, "a", 4.0), (30, "b", 5.0)))
    assert late_windows(e) == [
        (2.0, at(23), at(30), "window_closed"),
        (3.0, at(23), at(30), "window_closed"),
    ]
    assert rows(w.flush().main, "k", "window_start", "window_end", "n") == [
        ("b", at(30), at(37), 1),
        ("a", at(31), at(42), 2),
    ]
    # before an emitted session's start: the record's own (closed) session is reported
    e = w.process(batch((10, "a", 6.0)))
    assert late_windows(e) == [(6.0, at(10), at(17), "window_closed")]


def test_session_remembers_emitted_sessions_across_restore():
    w = SessionWindow(7, time_column="ts", key="k", aggs={"n": agg.count()})
    w.process(batch((23, "a", 1.0), (35, "a", 1.0)))
    again = SessionWindow(7, time_column="ts", key="k", aggs={"n": agg.count()})
    again.restore(w.snapshot())
    e = again.process(batch((23, "a", 2.0), (29, "a", 3.0)))
    assert [x for x, *_ in late_windows(e)] == [2.0, 3.0]
    assert rows(again.flush().main, "k", "window_start", "n") == [("a", at(35), 1)]


def test_session_without_key_and_null_times():
    w = SessionWindow(timedelta(seconds=3), time_column="ts", aggs={"n": agg.count()})
    e = w.process(batch((1, "a", 1.0), (None, "a", 1.0), (2, "b", 1.0)))
    assert rows(e.late, LATE_REASON) == [("null_time",)]
    assert rows(w.flush().main, "window_start", "n") == [(at(1), 2)]


# -- approximate distinct ---------------------------------------------------------------------


def test_approx_distinct_is_within_three_percent_and_merges_exactly_across_batches():
    rng = np.random.default_rng(7)
    values = np.concatenate([np.arange(100_000), rng.integers(0, 100_000, 50_000)])
    rng.shuffle(values)
    times = pa.array(np.full(len(values), 1_000_000, np.int64), pa.timestamp("us"))
    table = pa.table({"ts": times, "user": values})
    aggs = {"users": agg.approx_distinct("user")}
    whole = TumblingWindow(60, time_column="ts", aggs=aggs)
    whole.process(table)
    split = TumblingWindow(60, time_column="ts", aggs=aggs)
    for start in range(0, len(values), 7_001):
        split.process(table.slice(start, 7_001))
    estimate = whole.flush().main.column("users")[0].as_py()
    assert abs(estimate - 100_000) / 100_000 < 0.03
    assert split.flush().main.column("users")[0].as_py() == estimate
    dense = HyperLogLog()
    dense.add(pl.Series(values))
    assert dense.estimate() == estimate


def test_approx_distinct_small_counts_are_exact_and_ignore_nulls():
    table = pa.table(
        {
            "ts": pa.array([at(1)] * 6, pa.timestamp("us")),
            "v": ["a", "b", "a", None, "c", "b"],
        }
    )
    w = TumblingWindow(10, time_column="ts", aggs={"d": agg.approx_distinct("v", precision=10)})
    w.process(table)
    assert rows(w.flush().main, "d") == [(3,)]


def test_hyperloglog_merge_equals_union():
    left, right, both = HyperLogLog(10), HyperLogLog(10), HyperLogLog(10)
    left.add(list(range(0, 3000)))
    right.add(list(range(2000, 6000)))
    both.add(list(range(0, 6000)))
    left.merge(right)
    assert left.estimate() == both.estimate()
    assert left.codes() == both.codes()
    with pytest.raises(StreamError, match="precision"):
        left.merge(HyperLogLog(12))


# -- snapshot and restore ---------------------------------------------------------------------


def _ipc_roundtrip(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """What the ledger does: every table through Arrow IPC bytes."""
    out = {}
    for name, table in state.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = pa.ipc.open_stream(sink.getvalue()).read_all()
    return out


def _stream(n=3_000, seed=3):
    rng = np.random.default_rng(seed)
    seconds = np.arange(n) * 0.1 + rng.normal(0, 4, n)
    x = rng.normal(0, 100, n)
    x[rng.random(n) < 0.05] = np.nan
    table = pa.table(
        {
            "ts": pa.array(
                (seconds * 1e6).astype(np.int64) + 1_700_000_000_000_000, pa.timestamp("us")
            ),
            "k": pa.array(rng.choice(["a", "b", "c", None], n)),
            "x": pa.array(x, mask=np.isnan(x)),
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    return [table.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


FULL_AGGS = {**ALL_AGGS, "d": agg.approx_distinct("x", precision=8)}
WINDOWS = {
    "tumbling": lambda: TumblingWindow(
        5, time_column="ts", key="k", aggs=FULL_AGGS, grace=1, delay=2
    ),
    "hopping": lambda: HoppingWindow(
        6, 2, time_column="ts", key="k", aggs=FULL_AGGS, grace=1, delay=2
    ),
    "session": lambda: SessionWindow(0.5, time_column="ts", key="k", aggs=FULL_AGGS, delay=3),
}


def _run(make, batches, restore_at=None):
    op = make()
    mains, lates = [], []
    for i, b in enumerate(batches):
        if i == restore_at:
            state = _ipc_roundtrip(op.snapshot())
            op = make()
            op.restore(state)
        e = op.process(b)
        mains.append(e.main)
        lates.append(e.late)
    mains.append(op.flush().main)
    main = pa.concat_tables(mains)
    late = pa.concat_tables([x for x in lates if x is not None])
    return main, late, op


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_restore_in_the_middle_of_a_stream_gives_identical_output(kind):
    batches = _stream()
    main, late, op = _run(WINDOWS[kind], batches)
    assert main.num_rows > 50 and late.num_rows > 0
    for restore_at in (1, 17, 39):
        main2, late2, op2 = _run(WINDOWS[kind], batches, restore_at)
        assert main2.equals(main)
        assert late2.equals(late)
        assert (op2.late_count, op2.watermark) == (op.late_count, op.watermark)


def test_restore_refuses_state_of_a_differently_configured_window():
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()})
    w.process(batch((1, "a", 1.0)))
    other = TumblingWindow(20, time_column="ts", aggs={"n": agg.count()})
    with pytest.raises(StreamError, match="configured"):
        other.restore(w.snapshot())
    with pytest.raises(StreamError, match="meta"):
        other.restore({})


def test_restore_refuses_hll_state_hashed_by_polars_with_the_way_out():
    w = TumblingWindow(10, time_column="ts", aggs={"d": agg.approx_distinct("x")})
    w.process(batch((1, "a", 1.0)))
    state = as_old_state(w.snapshot())  # what headrace wrote before the stable hash
    state["windows"] = state["pending"]  # any non-empty hashed state
    with pytest.raises(StreamError, match=r"polars' hash.*headrace streams reset"):
        TumblingWindow(10, time_column="ts", aggs={"d": agg.approx_distinct("x")}).restore(state)
    plain = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()})
    plain.process(batch((1, "a", 1.0)))
    TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}).restore(
        as_old_state(plain.snapshot())
    )  # nothing hashed in it: old state without HLL still restores


# -- errors users can act on ------------------------------------------------------------------


def test_errors_name_the_operator_and_the_problem():
    w = TumblingWindow(10, time_column="ts", aggs={"s": agg.sum("x")}, name="per-minute")
    with pytest.raises(StreamError, match=r"'per-minute'.*no column 'x'"):
        w.process(pa.table({"ts": pa.array([at(1)])}))
    with pytest.raises(StreamError, match="not a timestamp"):
        w.process(pa.table({"ts": ["2024-01-01"], "x": [1.0]}))
    with pytest.raises(StreamError, match="greater than zero"):
        TumblingWindow(0, time_column="ts", aggs={"n": agg.count()})
    with pytest.raises(StreamError, match=r"grace .* overflow"):  # was an OverflowError later
        TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, grace=timedelta.max)
    with pytest.raises(StreamError, match="aggs"):
        TumblingWindow(10, time_column="ts", aggs={})
    with pytest.raises(StreamError, match="window_start"):
        TumblingWindow(10, time_column="ts", aggs={"window_start": agg.count()})
    with pytest.raises(StreamError, match="column"):
        agg.sum("")
    with pytest.raises(StreamError, match="precision"):
        agg.approx_distinct("x", precision=30)
    w2 = TumblingWindow(10, time_column="ts", aggs={"s": agg.sum("x")})
    w2.process(pa.table({"ts": pa.array([at(1)]), "x": [1.0]}))
    with pytest.raises(StreamError, match="types the same"):
        w2.process(pa.table({"ts": pa.array([at(2)]), "x": ["text"]}))


@pytest.mark.parametrize("kind", [TumblingWindow, SessionWindow])
def test_a_column_whose_type_widens_between_batches_folds_into_one_window(kind):
    # integer values in one batch, floats in the next (the stream log accepts that): their
    # partial sums have different types and must still merge into the same open window, which
    # is emitted with the wider type
    w = kind(10, time_column="ts", key="k", aggs={"s": agg.sum("x"), "hi": agg.max("x")})

    def typed(x_type, *events):
        return pa.table(
            {
                "ts": pa.array([at(s) for s, _, _ in events], pa.timestamp("us")),
                "k": pa.array([k for _, k, _ in events], pa.string()),
                "x": pa.array([x for _, _, x in events], x_type),
            }
        )

    w.process(typed(pa.int64(), (1, "a", 2), (2, "a", 3)))
    w.process(typed(pa.float64(), (3, "a", 0.5), (4, "b", 1.5)))
    out = w.process(typed(pa.float64(), (30, "a", 1.0))).main
    assert out.select(["k", "s", "hi"]).to_pylist() == [
        {"k": "a", "s": 5.5, "hi": 3.0},
        {"k": "b", "s": 1.5, "hi": 1.5},
    ]
