"""Dedup with a time-to-live: within and across batches, expiry, keys of every kind, state."""

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headrace.errors import StreamError
from headrace.streams.operators import Dedup, Operator, dedup_kernel
from headrace.streams.operators.dedup import _FREE, _KeyTable, _mix
from tests.polars_hash_state import as_old_state
from tests.stream_reference import dedup as reference

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def events(*pairs, time_column="_ingest_time") -> pa.Table:
    """pairs: (key, seconds); a running number in `n` tells the records apart."""
    return pa.table(
        {
            "id": [k for k, _ in pairs],
            time_column: pa.array(
                [T0 + timedelta(seconds=s) for _, s in pairs], pa.timestamp("us")
            ),
            "n": list(range(len(pairs))),
        }
    )


@pytest.fixture(autouse=True)
def _both_paths(dedup_path):
    """Every test here runs on the compiled kernel and on the numpy path."""


def kept(emit) -> list:
    return emit.main.column("n").to_pylist()


def test_drops_duplicates_within_a_batch_keeping_the_first():
    d = Dedup("id", 60)
    assert isinstance(d, Operator) and d.watermark is None
    e = d.process(events(("a", 0), ("b", 1), ("a", 2), ("c", 3), ("b", 4), ("a", 5)))
    assert kept(e) == [0, 1, 3]
    assert e.late is None
    assert e.main.schema == events(("a", 0)).schema
    assert d.dropped_count == 3


def test_drops_duplicates_across_batches_and_lets_a_key_through_after_ttl():
    d = Dedup("id", timedelta(seconds=10))
    assert kept(d.process(events(("a", 0), ("b", 5)))) == [0, 1]
    assert kept(d.process(events(("a", 9), ("b", 9)))) == []
    # a at 10: ttl passed since 0 (the duplicate at 9 did not extend it); b at 14 is within
    assert kept(d.process(events(("a", 10), ("b", 14), ("b", 15)))) == [0, 2]
    # within one batch too: a kept at 10 expires at 20
    assert kept(d.process(events(("a", 19), ("a", 20), ("a", 21), ("a", 30)))) == [1, 3]


def test_expired_keys_are_pruned_as_time_advances():
    d = Dedup("id", 10)
    d.process(events(*((f"k{i}", i) for i in range(100))))
    assert d.held_keys == 10  # k_i expires at i + 10, the newest time is 99
    assert kept(d.process(events(("k95", 100), ("z", 200)))) == [1]
    assert d.held_keys == 1
    # k95 (expiry 105) is forgotten once time reached 200, even for a record before 105
    assert kept(d.process(events(("k95", 101)))) == [0]


def test_out_of_order_records_compare_with_the_held_expiry():
    d = Dedup("id", 10)
    d.process(events(("a", 100)))
    assert kept(d.process(events(("a", 95), ("a", 111)))) == [1]


def test_integer_keys_with_nulls_are_exact():
    table = pa.table(
        {
            "id": pa.array([0, None, 0, None, 2**63 - 1, -(2**63), 7], pa.int64()),
            "_ingest_time": pa.array([T0] * 7, pa.timestamp("us")),
            "n": range(7),
        }
    )
    assert kept(Dedup("id", 60).process(table)) == [0, 1, 4, 5, 6]
    unsigned = table.set_column(0, "id", pa.array([0, None, 0, None, 2**64 - 1, 5, 7], pa.uint64()))
    assert kept(Dedup("id", 60).process(unsigned)) == [0, 1, 4, 5, 6]


def test_string_and_composite_keys():
    table = pa.table(
        {
            "src": ["x", "x", "y", None, None, "x"],
            "id": pa.array([1, 1, 1, 1, 1, None]),
            "_ingest_time": pa.array([T0] * 6, pa.timestamp("us")),
            "n": range(6),
        }
    )
    assert kept(Dedup(["src", "id"], 60).process(table)) == [0, 2, 3, 5]
    assert kept(Dedup("src", 60).process(table)) == [0, 2, 3]
    dictionary = table.set_column(0, "src", table.column("src").dictionary_encode())
    d = Dedup("src", 60)
    assert kept(d.process(dictionary)) == [0, 2, 3]
    assert kept(d.process(table)) == []  # dictionary and plain strings are the same keys


def test_keys_of_other_types_are_hashed():
    import datetime as dt

    columns = {
        "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 1)]),
        "clock": pa.array([dt.time(1), dt.time(2), dt.time(1)], pa.time32("s")),
        "ratio": pa.array([0.5, 1.5, 0.5]),
        "flag": pa.array([True, False, True]),
        "wait": pa.array([dt.timedelta(1), dt.timedelta(2), dt.timedelta(1)]),
    }
    for name, column in columns.items():
        table = pa.table(
            {name: column, "_ingest_time": pa.array([T0] * 3, pa.timestamp("us")), "n": [0, 1, 2]}
        )
        assert kept(Dedup(name, 60).process(table)) == [0, 1], name


def test_event_time_column_and_nanosecond_timestamps():
    table = pa.table(
        {
            "id": ["a", "a", "a"],
            "ts": pa.array([0, 999_999_999, 1_000_000_000], pa.timestamp("ns", "UTC")),
            "n": [0, 1, 2],
        }
    )
    assert kept(Dedup("id", 1, time_column="ts").process(table)) == [0, 2]


def test_matches_the_one_at_a_time_rule_on_a_large_disordered_stream():
    rng = np.random.default_rng(11)
    n = 60_000
    keys = rng.integers(0, 300, n)  # each key every ~300 s: within the ttl or not
    times = np.cumsum(rng.integers(0, 3, n)) + rng.integers(-20, 20, n)  # seconds, disordered
    ttl = 400  # so a key is kept several times within one batch (several rounds)
    table = pa.table(
        {
            "id": pa.array(keys.astype(str)),
            "_ingest_time": pa.array(times * 1_000_000, pa.timestamp("us")),
            "n": np.arange(n),
        }
    )
    d = Dedup("id", ttl)
    keep = np.zeros(n, bool)
    cuts = [0, *np.sort(rng.choice(np.arange(1, n), 30, replace=False)), n]
    for a, b in itertools.pairwise(cuts):
        keep[d.process(table.slice(a, b - a)).main.column("n").to_numpy()] = True
    micros = (times * 1_000_000).tolist()
    assert keep.tolist() == reference(keys.tolist(), micros, ttl * 1_000_000)
    assert d.dropped_count == n - keep.sum()
    assert 0.1 < keep.mean() < 0.9


def test_key_table_grows_and_keeps_every_key():
    table = _KeyTable(1024)
    h1 = np.arange(50_000, dtype=np.uint64) * np.uint64(1024)  # all share one home slot mod 1024
    slots = table.locate(h1[:600], np.zeros(600, np.uint64))
    assert len(set(slots.tolist())) == 600
    assert (table.locate(h1[:600], np.zeros(600, np.uint64)) == slots).all()
    kernels = dedup_kernel.compiled()  # None on the numpy path
    grown = _KeyTable.build(h1, np.ones(50_000, np.uint64), np.arange(50_000), 10, kernels)
    # the numpy probe finds what either path put in: both lay the table out alike
    found = grown.locate(h1, np.ones(50_000, np.uint64))
    assert (grown.expiry[found] == np.arange(50_000)).all()
    assert grown.used == 50_000


def _ipc(state):
    out = {}
    for name, table in state.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = pa.ipc.open_stream(sink.getvalue()).read_all()
    return out


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_restore_in_the_middle_of_a_stream_gives_identical_output(key_type):
    rng = np.random.default_rng(5)
    n = 20_000
    keys = rng.integers(0, 3_000, n)
    table = pa.table(
        {
            "id": pa.array(keys) if key_type == "int" else pa.array(keys.astype(str)),
            "_ingest_time": pa.array(np.arange(n) * 10_000, pa.timestamp("us")),
            "n": np.arange(n),
        }
    )
    batches = [table.slice(i, 1_000) for i in range(0, n, 1_000)]

    def run(restore_at=None):
        d, out = Dedup("id", 15), []
        for i, b in enumerate(batches):
            if i == restore_at:
                state = _ipc(d.snapshot())
                d = Dedup("id", 15)
                d.restore(state)
            out.append(d.process(b).main)
        return pa.concat_tables(out), d

    whole, d = run()
    assert 0 < whole.num_rows < n
    for at in (1, 7, 19):
        again, d2 = run(at)
        assert again.equals(whole)
        assert (d2.dropped_count, d2.held_keys) == (d.dropped_count, d.held_keys)


def test_restore_refuses_other_config_and_other_hash_function():
    d = Dedup("id", 10)
    d.process(events(("a", 0)))
    state = d.snapshot()
    with pytest.raises(StreamError, match="configured"):
        Dedup("id", 20).restore(state)
    meta = state["meta"]
    i = meta.schema.get_field_index("hash_fingerprint")
    state["meta"] = meta.set_column(i, "hash_fingerprint", pa.array([12345], pa.int64()))
    with pytest.raises(StreamError, match="unknown hash"):
        Dedup("id", 10).restore(state)
    with pytest.raises(StreamError, match="keys"):  # a keys table of another shape
        Dedup("id", 10).restore({"meta": d.snapshot()["meta"], "keys": pa.table({"h1": [1]})})
    # no keys table: a checkpoint taken before a record was kept holds none
    empty = Dedup("id", 10)
    empty.restore({"meta": d.snapshot()["meta"]})
    assert empty.held_keys == 0


def test_errors_name_the_operator_and_the_fix():
    d = Dedup("id", 10, name="dedup-orders")
    with pytest.raises(StreamError, match=r"'dedup-orders'.*no column '_ingest_time'"):
        d.process(pa.table({"id": [1]}))
    d.process(pa.table({"id": [1], "_ingest_time": pa.array([T0], pa.timestamp("us"))}))
    with pytest.raises(StreamError, match="changed type"):
        d.process(pa.table({"id": ["1"], "_ingest_time": pa.array([T0], pa.timestamp("us"))}))
    with pytest.raises(StreamError, match="ttl"):
        Dedup("id", 0)
    with pytest.raises(StreamError, match="key"):
        Dedup([], 10)
    assert d.flush().main.num_rows == 0


def test_a_million_records_in_batches_keep_each_id_once():
    """1M records with 5% duplicates in batches of 100k (their speed is
    benchmarks/stream_window.py's; a test does not time it)."""
    rng = np.random.default_rng(1)
    n = 1_000_000
    ids = np.arange(n)
    ids[rng.choice(n, n // 20, replace=False)] = rng.integers(0, n, n // 20)
    table = pa.table(
        {"id": ids, "_ingest_time": pa.array(np.arange(n) * 1_000, pa.timestamp("us"))}
    )
    d = Dedup("id", 3600)
    total = sum(d.process(table.slice(i, 100_000)).main.num_rows for i in range(0, n, 100_000))
    assert total == len(np.unique(ids))


def _unmix(y: int) -> int:
    """The integer key whose splitmix64 finaliser is `y` (the inverse of dedup._mix)."""

    def unshift(v: int, s: int) -> int:
        x = v
        for _ in range(64 // s + 1):
            x = v ^ (x >> s)
        return x

    y = unshift(y, 31) * pow(0x94D049BB133111EB, -1, 2**64) % 2**64
    y = unshift(y, 27) * pow(0xBF58476D1CE4E5B9, -1, 2**64) % 2**64
    x = unshift(y, 30)
    return x - 2**64 if x >= 2**63 else x


def test_the_integer_keys_next_to_the_free_slot_mark_are_exact():
    marked, neighbour = _unmix(int(_FREE)), _unmix(int(_FREE) ^ 1)
    as_words = _mix(np.array([marked, neighbour], np.int64).view(np.uint64))
    assert as_words.tolist() == [int(_FREE), int(_FREE) ^ 1]
    d = Dedup("id", 10)
    pairs = [(marked, 0), (neighbour, 1), (marked, 2), (None, 3), (0, 4), (neighbour, 5)]
    table = events(*pairs)
    assert table.column("id").type == pa.int64()
    assert kept(d.process(table)) == [0, 1, 3, 4]
    restored = Dedup("id", 10)
    restored.restore(_ipc(d.snapshot()))
    assert restored.held_keys == 4
    later = events((marked, 9), (neighbour, 11), (None, 11), (0, 12), (marked, 13))
    assert kept(restored.process(later)) == [1, 4]


def test_key_table_probes_past_its_end_and_on_from_slot_zero():
    table = _KeyTable(1024)
    homes = np.array([1023] * 40 + [0] * 40 + [3] * 10, np.uint64)  # crowds at both ends
    h1 = homes + np.arange(90, dtype=np.uint64) * np.uint64(1024)
    h1 = np.concatenate([h1, h1[:5], h1[40:45]])  # ten of them again: found, not added
    slots = table.locate(h1, np.zeros(len(h1), np.uint64))
    assert len(set(slots[:90].tolist())) == 90 and table.used == 90
    assert (slots[90:] == np.concatenate([slots[:5], slots[40:45]])).all()
    assert slots[0] == 1023 and set(slots[:90].tolist()) == {1023, *range(89)}
    again = table.locate(h1[::-1].copy(), np.zeros(len(h1), np.uint64))
    assert (again == slots[::-1]).all() and table.used == 90


def test_key_table_tells_keys_apart_by_their_second_word_to_the_last_probe():
    """Keys that share a first word and a home slot differ in the second: the long probe
    sequences, finished one key at a time, must compare both words."""
    table = _KeyTable(1024)
    h1 = np.full(70, 1021, np.uint64)  # one first word: 70 keys in one run past the end
    h2 = np.arange(70, dtype=np.uint64) + np.uint64(1)
    slots = table.locate(h1, h2)
    assert len(set(slots.tolist())) == 70 and table.used == 70
    again = table.locate(h1[::-1].copy(), h2[::-1].copy())
    assert (again == slots[::-1]).all() and table.used == 70
    assert (table.h2[slots] == h2).all() and (table.h1[slots] == h1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_and_composite_keys_match_the_one_at_a_time_rule(seed):
    """Small key spaces (many repeats per batch), nulls, extreme values, disorder, batch cuts
    of every size, and tables that fill up and are rebuilt."""
    rng = np.random.default_rng(seed)
    n = 20_000
    pool = np.array([0, 1, -1, 2**63 - 1, -(2**63), *rng.integers(-(2**62), 2**62, 400)])
    keys = [None if rng.random() < 0.02 else int(k) for k in rng.choice(pool, n)]
    times = (np.cumsum(rng.integers(0, 3, n)) + rng.integers(-30, 30, n)) * 1_000_000
    cuts = [0, *np.sort(rng.choice(np.arange(1, n), 40, replace=False)), n]
    source = rng.integers(0, 3, n)
    table = pa.table(
        {
            "id": pa.array(keys, pa.int64()),
            "src": pa.array(np.array(["a", "b", "c"])[source]),
            "_ingest_time": pa.array(times, pa.timestamp("us")),
            "n": np.arange(n),
        }
    )
    for key, as_python in (
        ("id", keys),
        (["src", "id"], list(zip(source.tolist(), keys, strict=True))),
    ):
        d = Dedup(key, 300)
        keep = np.zeros(n, bool)
        for a, b in itertools.pairwise(cuts):
            keep[d.process(table.slice(a, b - a)).main.column("n").to_numpy()] = True
            occupied = int((d._table.h1 != _FREE).sum())  # rebuilds free what they drop
            assert occupied == d._table.used <= d._table.capacity // 2
        assert keep.tolist() == reference(as_python, times.tolist(), 300_000_000), key
        assert 0.1 < keep.mean() < 0.9


def test_a_stream_of_new_keys_keeps_the_table_small():
    """Each batch brings new keys and expires old ones: rebuilds reuse the table's arrays."""
    n, size = 60_000, 1_000
    rng = np.random.default_rng(3)
    ids = np.arange(n) // 2  # every key twice in a row
    ids[rng.choice(n, 600, replace=False)] = rng.integers(0, n // 2, 600)  # and some later
    table = pa.table(
        {
            "id": ids,
            "_ingest_time": pa.array(np.arange(n) * 100_000, pa.timestamp("us")),  # 10 a second
            "n": np.arange(n),
        }
    )
    d = Dedup("id", 30)
    keep = np.zeros(n, bool)
    tables = set()
    for start in range(0, n, size):
        keep[d.process(table.slice(start, size)).main.column("n").to_numpy()] = True
        tables.add(id(d._table))
        occupied = int((d._table.h1 != _FREE).sum())  # rebuilds free the slots they drop
        assert occupied == d._table.used <= d._table.capacity // 2
        assert d.held_keys <= 160  # 30 s of keys at 5 new keys a second, and a few more
    micros = (np.arange(n) * 100_000).tolist()
    assert keep.tolist() == reference(ids.tolist(), micros, 30_000_000)
    assert len(tables) <= 3 and d._table.capacity <= 8192


def test_state_hashed_by_polars_is_refused_with_the_way_out():
    # what headrace wrote before the stable hash: keys hashed with polars' (version-bound) hash
    d = Dedup("id", 10)
    d.process(events(("a", 0)))
    old = as_old_state(d.snapshot(), keys=["a"])
    with pytest.raises(StreamError, match="polars' hash") as info:
        Dedup("id", 10).restore(old)
    assert "headrace streams reset PIPELINE" in str(info.value)
    exact = Dedup("id", 10)  # integer keys were never hashed: their old state still restores
    exact.process(events((7, 0)))
    restored = Dedup("id", 10)
    restored.restore(as_old_state(exact.snapshot()))
    assert restored.process(events((7, 1))).main.num_rows == 0


def test_string_keys_dedup_the_same_after_a_restore_in_another_process(tmp_path):
    # the state is stable: a process that is not this one (another polars, another machine)
    # keeps dropping the keys this one saw
    import subprocess
    import sys

    from headrace.streams.log import encode_batch

    d = Dedup(["src", "id"], 3600)
    first = events(("a", 0), ("b", 1))
    first = first.append_column("src", pa.array(["x", "y"]))
    d.process(first)
    for name, table in d.snapshot().items():
        (tmp_path / f"{name}.arrow").write_bytes(encode_batch(table))
    child = f"""
import sys
from pathlib import Path
import pyarrow as pa
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from headrace.streams.log import decode_batch
from headrace.streams.operators import Dedup
from tests.test_streams_dedup import events
folder = Path({str(tmp_path)!r})
state = {{n: decode_batch((folder / (n + ".arrow")).read_bytes()) for n in ("meta", "keys")}}
d = Dedup(["src", "id"], 3600)
d.restore(state)
again = events(("a", 5), ("b", 6), ("c", 7)).append_column("src", pa.array(["x", "y", "z"]))
print(d.process(again).main.column("id").to_pylist())
"""
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "['c']"


def test_a_record_without_a_time_is_judged_at_the_clock_and_the_stream_goes_on():
    d = Dedup("id", 10, time_column="t")
    t = pa.timestamp("us")
    first = d.process(pa.table({"id": [1, 1, 2], "t": pa.array([None, None, T0], t)}))
    # before any time the clock is the beginning: the second untimed 1 is a duplicate
    assert first.main.column("id").to_pylist() == [1, 2]
    later = T0 + timedelta(seconds=5)
    out = d.process(pa.table({"id": [2, 3, 3, 4], "t": pa.array([None, None, later, later], t)}))
    # at the clock (T0) 2 is held; 3 is kept untimed and held until T0 + 10 s
    assert out.main.column("id").to_pylist() == [3, 4]


def test_a_number_key_widened_from_integer_to_double_keeps_its_keys():
    d = Dedup("k", 60, time_column="t")
    t = pa.timestamp("us")
    d.process(pa.table({"k": pa.array([1, 2], pa.int64()), "t": pa.array([T0, T0], t)}))
    out = d.process(
        pa.table(
            {
                "k": pa.array([1.0, 2.5, 2.5, None, -0.0, 2.0**70], pa.float64()),
                "t": pa.array([T0] * 6, t),
            }
        )
    )
    # 1.0 is the integer 1 seen before; 2.5 once; null, 0 and 2**70 are new keys
    assert out.main.column("k").to_pylist() == [2.5, None, 0.0, 2.0**70]
    again = d.process(pa.table({"k": pa.array([0, 2], pa.int64()), "t": pa.array([T0, T0], t)}))
    assert again.main.num_rows == 0


def test_the_compiled_kernel_is_used_when_numba_is_installed(dedup_path):
    pytest.importorskip("numba")
    d = Dedup("id", 10)
    assert d._kernels is None  # looked up when the first batch comes
    d.process(events((1, 0)))
    assert (d._kernels is not None) == (dedup_path == "compiled")
    assert d._table.kernels is d._kernels


def test_a_ttl_so_long_that_an_expiry_would_overflow_is_refused():
    # timedelta.max ("forever") failed at the first batch with an OverflowError, and a ttl
    # of 292,000 years wrapped the expiry below the record's time: duplicates went through
    for ttl in (timedelta.max, timedelta(days=365 * 292_000), 1e300):
        with pytest.raises(StreamError, match=r"ttl .* overflow"):
            Dedup("id", ttl)
    d = Dedup("id", timedelta(days=365 * 280_000))  # the longest keep their keys
    assert kept(d.process(events((1, 0), (1, 1), (1, 10**9)))) == [0]


def test_numba_with_its_jit_disabled_leaves_dedup_to_the_numpy_path(dedup_path, monkeypatch):
    # NUMBA_DISABLE_JIT (set to debug or measure coverage) runs the loops as Python, record by
    # record: a batch took 2.5 times as long as on the numpy path
    numba = pytest.importorskip("numba")
    if dedup_path == "numpy":
        pytest.skip("whether the compiled loops are used")
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert dedup_kernel.compiled.__wrapped__() is None


def test_a_cache_file_numba_cannot_read_compiles_the_loop_again(dedup_path, monkeypatch, tmp_path):
    # numba raises on a truncated cache file rather than compiling again (numba issue 10434):
    # every batch failed until someone deleted it
    numba = pytest.importorskip("numba")
    if dedup_path == "numpy":
        pytest.skip("the compiled loops only")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    compile_loops = dedup_kernel.compiled.__wrapped__  # new loops each time, cached in tmp_path
    for _ in range(2):
        kernels = compile_loops()
        monkeypatch.setattr(dedup_kernel, "compiled", lambda k=kernels: k)
        d = Dedup("id", 60)
        assert kept(d.process(events((1, 0), (1, 1), (2, 2), (1, 70)))) == [0, 2, 3]
        indexes = list(tmp_path.rglob("*.nbi"))
        assert indexes
        for index in indexes:  # as an interrupted write can leave it
            index.write_bytes(b"")


@pytest.mark.parametrize("rounds", [1, 16])
def test_keys_kept_many_times_in_one_batch_follow_the_rule(rounds, monkeypatch):
    # the numpy path decided such keys in one round per kept record: a million records of one
    # key, each kept, took a million rounds; past a few rounds they go one by one
    from headrace.streams.operators import dedup as dedup_module

    monkeypatch.setattr(dedup_module, "_ROUNDS", rounds)
    rng = np.random.default_rng(3)
    n = 20_000
    keys = rng.choice([1, 2, 3, 4, 5, 6], n, p=[0.5, 0.3, 0.1, 0.05, 0.03, 0.02])
    seconds = np.cumsum(rng.integers(0, 3, n)) - rng.integers(0, 4, n)  # some disorder
    table = pa.table(
        {
            "id": pa.array(keys),
            "_ingest_time": pa.array(seconds * 1_000_000, pa.timestamp("us")),
            "n": np.arange(n),
        }
    )
    d = Dedup("id", 2)  # each key is kept thousands of times in the batch
    got = np.zeros(n, bool)
    for start in (0, 15_000):
        part = table.slice(start, 15_000 if start == 0 else n - start)
        got[d.process(part).main.column("n").to_numpy()] = True
    want = reference(keys.tolist(), (seconds * 1_000_000).tolist(), 2_000_000)
    assert got.tolist() == want
    assert 1_000 < got.sum() < n - 1_000


def test_integer_keys_say_their_second_words_are_zeros_and_hashed_keys_do_not():
    for keys, zeros in ((range(1_010), ("h2",)), ([f"k{i}" for i in range(1_010)], ())):
        d = Dedup("id", 600)
        d.process(events(*((k, 0) for k in keys[:1_000])))
        d.changes()  # the whole table; from here on what changed
        d.process(events(*((k, 1) for k in keys[1_000:])))
        delta = d.changes()["keys"]
        assert not delta.reset and delta.upserts.num_rows == 10
        assert delta.zeros == zeros
