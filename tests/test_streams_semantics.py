"""Record-order semantics: the same windows, late records and dedup decisions at every batch cut
and crash point, equal to the one-record-at-a-time reference (tests/stream_reference.py)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.streams.log import decode_batch, encode_batch
from headrace.streams.operators import (
    LATE_END,
    LATE_REASON,
    LATE_START,
    Dedup,
    HoppingWindow,
    SessionWindow,
    TumblingWindow,
    sessions,
)
from headrace.streams.operators import aggregations as agg
from tests import stream_reference as reference

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@st.composite
def traces(draw, *, nulls: bool = True):
    """Records mostly in time order with jitter, some far behind (late), some far ahead,
    repeated times (ties), missing times, a few keys (one of them null), integer values (sums
    exact in float64)."""
    n = draw(st.integers(0, 70))
    records, clock = [], 0
    for _ in range(n):
        clock += draw(st.integers(0, 3))
        kind = draw(st.sampled_from(["near", "near", "near", "behind", "ahead", "tie", "null"]))
        if kind == "null" and not nulls:
            kind = "near"
        t = {
            "near": clock + draw(st.integers(-4, 4)),
            "behind": clock - draw(st.integers(5, 40)),
            "ahead": clock + draw(st.integers(5, 30)),
            "tie": records[-1]["t"] // SECOND
            if records and records[-1]["t"] is not None
            else clock,
            "null": None,
        }[kind]
        x = draw(st.one_of(st.none(), st.integers(-50, 50)))
        key = draw(st.sampled_from(["a", "b", "c", None]))
        records.append({"t": None if t is None else t * SECOND, "k": key, "x": x})
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=12))
    edges = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    crashes = draw(st.lists(st.integers(0, len(edges) - 2), max_size=3))
    return records, list(itertools.pairwise(edges)), sorted(set(crashes))


def as_table(records: list[dict], first: int) -> pa.Table:
    return pa.table(
        {
            "seq": pa.array(range(first, first + len(records)), pa.int64()),
            "ts": pa.array([r["t"] for r in records], pa.timestamp("us")),
            "k": pa.array([r["k"] for r in records], pa.string()),
            "x": pa.array([r["x"] for r in records], pa.float64()),
        }
    )


def through_ipc(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """A snapshot as the runner stores it: every table through Arrow IPC bytes."""
    return {name: decode_batch(encode_batch(table)) for name, table in state.items()}


def run(make, records: list[dict], spans: list[tuple[int, int]], crashes: list[int]):
    """Feed the spans as batches; at each crash point snapshot, go on for a batch (its output
    is lost with the crash), then restore the snapshot into a fresh operator and replay."""
    op, main, late = make(), [], []
    for i, (a, b) in enumerate(spans):
        if i in crashes:
            saved = through_ipc(op.snapshot())
            op.process(as_table(records[a:b], a))  # lost
            op = make()
            op.restore(saved)
        emit = op.process(as_table(records[a:b], a))
        main.append(emit.main)
        if emit.late is not None:
            late.append(emit.late)
    main.append(op.flush().main)
    return op, pa.concat_tables(main), late


def windows_of(main: pa.Table) -> dict:
    names = [name for name in AGGS if name in main.column_names]
    rows = {}
    for row in main.to_pylist():
        start = (row["window_start"] - EPOCH) // timedelta(microseconds=1)
        end = (row["window_end"] - EPOCH) // timedelta(microseconds=1)
        key = row.get("k")  # no key column when the window has no key
        assert (key, start) not in rows  # each window once
        rows[(key, start)] = (end, {name: row[name] for name in names})
    return rows


def late_of(late: list[pa.Table]) -> set:
    out = set()
    for table in late:
        for row in table.to_pylist():
            bounds = [
                None if row[c] is None else (row[c] - EPOCH) // timedelta(microseconds=1)
                for c in (LATE_START, LATE_END)
            ]
            out.add((row["seq"], *bounds, row[LATE_REASON]))
    return out


def same_windows(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for window, (end, values) in want.items():
        assert got[window][0] == end, window
        for name, value in values.items():
            if isinstance(value, float):
                assert math.isclose(got[window][1][name], value, rel_tol=1e-12), (window, name)
            else:
                assert got[window][1][name] == value, (window, name)


def check(make, records, spans, crashes, want) -> None:
    op, main, late = run(make, records, spans, crashes)
    same_windows(windows_of(main), want[0])
    assert late_of(late) == want[1]
    assert op.late_count == len(want[1])


options = st.fixed_dictionaries(
    {"grace": st.integers(0, 8), "delay": st.integers(0, 8)},
)


@PROPERTY
@given(traces(), options)
def test_tumbling_equals_the_reference_at_every_cut_and_crash(trace, opts):
    records, spans, crashes = trace
    want = reference.fixed_windows(
        records,
        size=10 * SECOND,
        hop=10 * SECOND,
        grace=opts["grace"] * SECOND,
        delay=opts["delay"] * SECOND,
    )

    def make():
        return TumblingWindow(10, time_column="ts", key="k", aggs=AGGS, **opts)

    check(make, records, spans, crashes, want)
    check(make, records, [(0, len(records))] if records else [], [], want)  # one batch


@PROPERTY
@given(traces(), options)
def test_hopping_equals_the_reference_at_every_cut_and_crash(trace, opts):
    records, spans, crashes = trace
    want = reference.fixed_windows(
        records,
        size=15 * SECOND,
        hop=5 * SECOND,
        grace=opts["grace"] * SECOND,
        delay=opts["delay"] * SECOND,
    )

    def make():
        return HoppingWindow(15, 5, time_column="ts", key="k", aggs=AGGS, **opts)

    check(make, records, spans, crashes, want)


@PROPERTY
@given(traces(), options, st.integers(1, 8), st.booleans())
def test_sessions_equal_the_reference_at_every_cut_and_crash(trace, opts, gap, keyed):
    records, spans, crashes = trace
    if not keyed:  # one session stream for all records
        records = [{**r, "k": None} for r in records]
    want = reference.sessions(
        records, gap=gap * SECOND, grace=opts["grace"] * SECOND, delay=opts["delay"] * SECOND
    )

    def make():
        return SessionWindow(gap, time_column="ts", key="k" if keyed else None, aggs=AGGS, **opts)

    check(make, records, spans, crashes, want)
    single = [(i, i + 1) for i in range(len(records))]
    check(make, records, single, [], want)  # record by record
    # keys with few records are replayed straight away; here every key takes the vectorised
    # test first
    replay_below, sessions._REPLAY_BELOW = sessions._REPLAY_BELOW, 0
    try:
        check(make, records, spans, crashes, want)
    finally:
        sessions._REPLAY_BELOW = replay_below


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same path
@given(traces(), st.integers(1, 20))
def test_dedup_equals_the_reference_at_every_cut_and_crash(dedup_path, trace, ttl):
    records, spans, crashes = trace
    ids = [None if r["x"] is None else r["x"] % 7 for r in records]  # few keys, null among them
    want = reference.dedup(ids, [r["t"] for r in records], ttl * SECOND)
    kept = []

    def make():
        return Dedup("id", ttl, time_column="ts")

    op = make()
    for i, (a, b) in enumerate(spans):
        batch = as_table(records[a:b], a).append_column("id", pa.array(ids[a:b], pa.int64()))
        if i in crashes:
            saved = through_ipc(op.snapshot())
            op.process(batch)  # lost
            op = make()
            op.restore(saved)
        kept += op.process(batch).main.column("seq").to_pylist()
    assert kept == [i for i, keep in enumerate(want) if keep]


def test_a_record_after_later_records_of_its_batch_is_late():
    """Within one batch the watermark moves record by record: the first record is never late,
    and a record behind the records before it is late even in the stream's first batch."""
    w = TumblingWindow(10, time_column="ts", aggs={"n": agg.count()})
    times = [25, 3, 31, 12, 40, 29]  # seconds; marks: -, 25, 25, 31, 31, 40
    table = as_table([{"t": t * SECOND, "k": None, "x": None} for t in times], 0)
    emit = w.process(table)
    assert emit.late.column("seq").to_pylist() == [1, 3, 5]
    # the batch ends at watermark 40: [20, 30) holds 25 only (29 came late), [30, 40) 31
    assert [r["n"] for r in emit.main.to_pylist()] == [1, 1]
    assert [r["n"] for r in w.flush().main.to_pylist()] == [1]  # [40, 50)


def test_session_closed_inside_a_batch_turns_away_a_later_record():
    w = SessionWindow(5, time_column="ts", key="k", aggs={"n": agg.count()})
    # a's session [0, 5) closes when the watermark reaches 5 (b at 6); then a at 3 is late
    times = [(0, "a"), (6, "b"), (3, "a"), (7, "a")]
    table = as_table([{"t": t * SECOND, "k": k, "x": None} for t, k in times], 0)
    emit = w.process(table)
    late = emit.late.to_pylist()
    assert [(r["seq"], r[LATE_START], r[LATE_END]) for r in late] == [
        (2, EPOCH + timedelta(seconds=0), EPOCH + timedelta(seconds=5))
    ]
    out = [(r["k"], r["n"]) for r in [*emit.main.to_pylist(), *w.flush().main.to_pylist()]]
    assert sorted(out) == [("a", 1), ("a", 1), ("b", 1)]


def test_many_keys_with_stale_records_follow_the_reference():
    """A larger batch where many keys go through the record-by-record replay."""
    rng = np.random.default_rng(5)
    n = 3_000
    clock = np.cumsum(rng.integers(0, 2, n))
    behind = rng.random(n) < 0.1
    t = clock - np.where(behind, rng.integers(5, 60, n), rng.integers(0, 3, n))
    records = [
        {"t": int(s) * SECOND, "k": f"u{int(k)}", "x": int(x)}
        for s, k, x in zip(t, rng.integers(0, 40, n), rng.integers(0, 9, n), strict=True)
    ]
    want = reference.sessions(records, gap=4 * SECOND, grace=SECOND, delay=2 * SECOND)
    assert 100 < len(want[1]) < 1_000  # many late records, not all

    def make():
        return SessionWindow(4, time_column="ts", key="k", aggs=AGGS, grace=1, delay=2)

    for size in (n, 700, 29):
        spans = [(a, min(a + size, n)) for a in range(0, n, size)]
        check(make, records, spans, [len(spans) // 2], want)


def test_long_sessions_with_stale_records_follow_the_reference():
    """Few keys, long sessions fed in near time order with some records far behind (inside
    their key's open session): the vectorised test lets most keys skip the replay."""
    rng = np.random.default_rng(8)
    n = 4_000
    clock = np.cumsum(rng.integers(0, 2, n))
    behind = rng.random(n) < 0.02
    t = clock - np.where(behind, rng.integers(10, 100, n), rng.integers(0, 3, n))
    t[rng.random(n) < 0.002] += 60  # a few jumps ahead close every session now and then
    records = [
        {"t": int(s) * SECOND, "k": f"s{int(k)}", "x": int(x)}
        for s, k, x in zip(t, rng.integers(0, 3, n), rng.integers(0, 9, n), strict=True)
    ]
    want = reference.sessions(records, gap=20 * SECOND, grace=SECOND, delay=3 * SECOND)
    assert 10 < len(want[1]) < n // 4

    def make():
        return SessionWindow(20, time_column="ts", key="k", aggs=AGGS, grace=1, delay=3)

    for size in (n, 1000, 333):
        spans = [(a, min(a + size, n)) for a in range(0, n, size)]
        check(make, records, spans, [1], want)


def test_runner_gives_the_same_windows_and_late_records_at_every_batch_size(tmp_path):
    """Through the whole engine (log, dedup, window, sinks, a checkpoint per batch)."""
    from headrace.ledger import Ledger
    from headrace.streams.log import open_log
    from headrace.streams.pipeline import Pipeline
    from headrace.streams.runner import PartitionRunner
    from headrace.streams.sinks import MemorySink, SinkContext

    rng = np.random.default_rng(3)
    n = 4_000
    seconds = np.arange(n) + rng.uniform(-3, 3, n)
    late = rng.random(n) < 0.03
    seconds[late] -= rng.uniform(60, 300, late.sum())
    ids = np.arange(n)
    again = rng.random(n) < 0.05  # re-sent: the same id and time later in the log
    order = np.concatenate([ids, ids[again]])
    table = pa.table(
        {
            "id": pa.array(order, pa.int64()),
            "ts": pa.array((seconds[order] * SECOND).astype(np.int64), pa.timestamp("us", "UTC")),
            "fee": pa.array(rng.integers(1, 100, n)[order], pa.int64()),
        }
    )
    results = []
    for batch_size in (1_000_000, 500, 37):
        root = tmp_path / str(batch_size)
        log = open_log(str(root / "streams"), "events")
        for start in range(0, table.num_rows, 1000):
            log.append(table.slice(start, 1000))
        ledger = Ledger(f"sqlite:///{root}/ledger.db")
        pipe = Pipeline("fees", "events", batch_size=batch_size)
        pipe.dedup("id", ttl=3600, time_column="ts")
        pipe.tumbling(
            60,
            time_column="ts",
            aggs={"n": agg.count(), "total": agg.sum("fee")},
            delay=5,
            late=MemorySink("late"),
        )
        pipe.sink(MemorySink("out"))
        runner = PartitionRunner(pipe, 0, log=log, ledger=ledger, context=SinkContext("fees", 0))
        runner.open()
        runner.run_until_caught_up()
        runner.flush()
        out = runner.stage("out").table().sort_by("window_start").to_pylist()
        late_ids = sorted(runner.stage("tumbling", late=True).table()["id"].to_pylist())
        results.append((out, late_ids, runner.status.late))
        ledger.close()
        log.close()
    assert 50 < len(results[0][1]) < 200  # late records were there to decide
    assert results[1] == results[0] and results[2] == results[0]


def test_the_worked_example_in_the_docs():
    """docs/streams.md, Semantics: the same verdicts in one batch and record by record."""
    times = [3, 12, 8, 11, 25, 19, None, 21]
    records = [{"t": None if t is None else t * SECOND, "k": None, "x": None} for t in times]
    for spans in ([(0, 8)], [(i, i + 1) for i in range(8)], [(0, 3), (3, 7), (7, 8)]):

        def make():
            return TumblingWindow(10, time_column="ts", aggs={"n": agg.count()}, delay=2)

        _, main, late = run(make, records, spans, [])
        assert sorted(r["seq"] for t in late for r in t.to_pylist()) == [2, 5, 6]
        assert main["n"].to_pylist() == [1, 2, 2]


NUMPY_AGGS = {name: AGGS[name] for name in ("n", "nx", "total", "avg", "lo", "hi")}


def keyless(records: list[dict]) -> list[dict]:
    return [{**r, "k": None} for r in records]


def fixed(hop: int | None, opts: dict, *, numpy: bool):
    """A keyless fixed window with count/sum/mean/min/max: the numpy path, or (numpy=False)
    the same window forced through the polars path."""

    def make():
        if hop is None:
            op = TumblingWindow(10, time_column="ts", aggs=NUMPY_AGGS, **opts)
        else:
            op = HoppingWindow(15, hop, time_column="ts", aggs=NUMPY_AGGS, **opts)
        assert op._numpy is not None  # eligible: no key, only numpy aggregations
        if not numpy:
            op._numpy = None
        return op

    return make


@PROPERTY
@given(traces(), options, st.sampled_from([None, 5, 15]))
def test_numpy_fixed_windows_equal_the_reference_and_the_polars_path(trace, opts, hop):
    records, spans, crashes = trace
    records = keyless(records)
    size, step = (10, 10) if hop is None else (15, hop)
    want = reference.fixed_windows(
        records,
        size=size * SECOND,
        hop=step * SECOND,
        grace=opts["grace"] * SECOND,
        delay=opts["delay"] * SECOND,
    )
    want = ({(k, s): (e, {n: v[n] for n in NUMPY_AGGS}) for (k, s), (e, v) in want[0].items()},)
    fast, slow = fixed(hop, opts, numpy=True), fixed(hop, opts, numpy=False)
    _, main, late = run(fast, records, spans, crashes)
    _, main_polars, late_polars = run(slow, records, spans, crashes)
    same_windows(windows_of(main), want[0])
    assert late_of(late) == late_of(late_polars)
    # integer values: the sums are exact, so both paths give the same table, types included
    assert main.equals(main_polars)
    # one state format: each path restores the other's snapshot mid-stream and goes on alike
    if spans:
        cut = len(spans) // 2
        mixed = []
        a_op, b_op = fast(), slow()
        for a, b in spans[:cut]:
            mixed.append(a_op.process(as_table(records[a:b], a)).main)
            b_op.process(as_table(records[a:b], a))
        swapped_fast, swapped_slow = fast(), slow()
        swapped_fast.restore(through_ipc(b_op.snapshot()))
        swapped_slow.restore(through_ipc(a_op.snapshot()))
        for a, b in spans[cut:]:
            batch = as_table(records[a:b], a)
            x, y = swapped_fast.process(batch).main, swapped_slow.process(batch).main
            assert x.equals(y)
        assert swapped_fast.flush().main.equals(swapped_slow.flush().main)


def test_numpy_fixed_windows_keep_int64_types_and_nulls():
    """Integer sums stay integers, min/max keep the input type, an all-null window gives null
    sum/mean/min/max, and NaN follows polars (min/max skip it, sums carry it)."""

    def table(ts, x, kind):
        return pa.table(
            {"ts": pa.array([t * SECOND for t in ts], pa.timestamp("us")), "x": pa.array(x, kind)}
        )

    for kind, values in (
        (pa.int64(), [2**60, 2**60, None, None, 3]),
        (pa.float64(), [float("nan"), 1.5, None, None, -2.0]),
    ):
        outputs = []
        for numpy in (True, False):
            w = TumblingWindow(10, time_column="ts", aggs=NUMPY_AGGS)
            if not numpy:
                w._numpy = None
            first = w.process(table([1, 2, 11, 12], values[:4], kind)).main
            rest = w.process(table([25], values[4:], kind)).main
            outputs.append(pa.concat_tables([first, rest, w.flush().main]))
        fast, slow = outputs
        assert fast.schema == slow.schema
        assert fast.to_pylist()[1:] == slow.to_pylist()[1:]  # NaN != NaN: the first apart
        assert fast.schema.field("total").type == kind and fast.schema.field("lo").type == kind
        row = fast.to_pylist()[1]  # [10, 20): all null
        assert [row[name] for name in ("n", "nx", "total", "avg", "lo")] == [2, 0, *[None] * 3]
        head = fast.to_pylist()[0]
        if kind == pa.int64():
            assert head["total"] == 2**61 and head["lo"] == 2**60
        else:
            assert math.isnan(head["total"]) and head["lo"] == head["hi"] == 1.5
            assert slow.to_pylist()[0]["lo"] == 1.5
