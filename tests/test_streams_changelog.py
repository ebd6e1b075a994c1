"""Keyed operator state as a changelog: deltas per batch, compaction, restores, crashes.

The state a runner restores (base + deltas, a compacted base, a whole slot written by earlier
versions, a crash anywhere, inside a compaction too) must equal the state of a runner that never
stopped, and the outputs after it must be the same batch for batch.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy import func, select

from headrace.ledger import Ledger
from headrace.ledger.checkpoints import commit_batch, reset_pipeline
from headrace.ledger.schema import stream_state_changes
from headrace.streams.changelog import (
    bundle,
    decode_delta,
    decode_state,
    encode_delta,
    encode_state,
    encode_table,
    merge,
    unbundle,
)
from headrace.streams.log import encode_batch, open_log
from headrace.streams.operators.base import Delta, Meta, meta_table
from headrace.streams.operators.dedup import Dedup
from headrace.streams.operators.windows import _Cols
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import MemorySink, SinkContext
from tests import stream_changelog_child as child
from tests.stream_helpers import changelog_pipeline, changelog_trace

CHILD = Path(child.__file__)
KINDS = ["tumbling", "hopping", "session", "numpy-tumbling", "numpy-hopping"]
NO_COMPACTION = 1 << 60


def _runner(ledger: Ledger, log, kind: str) -> PartitionRunner:
    pipe = changelog_pipeline(kind, late=MemorySink("late"))
    pipe.sink(MemorySink("out"))
    runner = PartitionRunner(
        pipe, 0, log=log, ledger=ledger, context=SinkContext(pipe.name, 0, ledger=ledger)
    )
    runner.compactor.min_bytes = NO_COMPACTION
    runner.open()
    return runner


def _state(runner: PartitionRunner) -> dict[str, list]:
    """Every operator's snapshot, rows in a canonical order."""
    out = {}
    for name in runner.pipeline.stage_names:
        for slot, table in runner.stage(name).snapshot().items():
            rows = table.to_pylist()
            out[f"{name}/{slot}"] = rows if slot == "meta" else sorted(map(repr, rows))
    return out


def _outputs(*runners: PartitionRunner) -> dict[str, dict[int, pa.Table]]:
    merged: dict[str, dict[int, pa.Table]] = {"out": {}, "late": {}}
    for runner in runners:
        merged["out"].update(runner.stage("out").batches)
        window = runner.pipeline.stage_names[1]
        merged["late"].update(runner.stage(window, late=True).batches)
    return merged


def _deltas(ledger: Ledger) -> int:
    with ledger.reader.connect() as conn:
        return conn.execute(select(func.count()).select_from(stream_state_changes)).scalar()


@pytest.fixture
def events(tmp_path):
    log = open_log(str(tmp_path / "streams"), "events")
    data = changelog_trace(30_000)
    for start in range(0, data.num_rows, 1000):
        log.append(data.slice(start, 1000))
    yield log
    log.close()


def _reference(tmp_path: Path, events, kind: str) -> PartitionRunner:
    ledger = Ledger(f"sqlite:///{tmp_path / 'reference.db'}")
    runner = _runner(ledger, events, kind)
    runner.run_until_caught_up()
    runner.flush()
    ledger.close()
    return runner


def _same_outputs(got: dict, want: dict) -> None:
    for name in ("out", "late"):
        assert sorted(got[name]) == sorted(want[name]), name
        for seq, table in want[name].items():
            assert got[name][seq].equals(table), (name, seq)


@pytest.mark.parametrize("kind", KINDS)
def test_restore_from_deltas_equals_a_compacted_base_and_the_running_state(
    ledger, tmp_path, events, kind
):
    first = _runner(ledger, events, kind)
    first.run_until_caught_up(max_batches=40)
    running = _state(first)
    assert _deltas(ledger) >= 30  # most batches changed keyed state without rewriting it

    from_deltas = _runner(ledger, events, kind)
    assert _state(from_deltas) == running
    assert from_deltas.compact() >= 1
    assert _deltas(ledger) == 0
    from_base = _runner(ledger, events, kind)
    assert _state(from_base) == running

    from_base.run_until_caught_up()
    from_base.flush()
    _same_outputs(_outputs(first, from_base), _outputs(_reference(tmp_path, events, kind)))
    if kind.startswith("numpy"):  # restored into numpy columns, and kept so
        window = first.stage(first.pipeline.stage_names[1])
        assert window._numpy is not None and isinstance(window._state, _Cols)
        assert isinstance(from_deltas.stage(first.pipeline.stage_names[1])._state, _Cols)


@pytest.mark.parametrize("kind", ["session", "numpy-tumbling"])
def test_whole_slot_checkpoints_of_earlier_versions_restore(ledger, tmp_path, events, kind):
    """Earlier versions wrote every slot whole in stream_state, the operators' counters too
    (now JSON); they are read as the base."""
    old = Ledger(f"sqlite:///{tmp_path / 'old.db'}")
    first = _runner(old, events, kind)
    first.run_until_caught_up(max_batches=30)
    whole = {
        f"{name}/{slot}": encode_batch(table)
        for name in first.pipeline.stage_names
        for slot, table in first.stage(name).snapshot().items()
    }
    with ledger.begin() as conn:  # the layout those versions committed
        commit_batch(
            conn, first.pipeline.name, 0, seq=first.status.batches, offset=first.status.offset,
            watermark=first.status.watermark, log_end=first.status.offset,
            records=first.status.records, late=first.status.late, state=whole,
        )  # fmt: skip
    second = _runner(ledger, events, kind)
    assert _state(second) == _state(first)
    second.run_until_caught_up(max_batches=20)  # deltas on top of the old whole slots
    third = _runner(ledger, events, kind)
    assert _state(third) == _state(second)
    third.run_until_caught_up()
    third.flush()
    got = _outputs(first, second, third)
    _same_outputs(got, _outputs(_reference(tmp_path, events, kind)))
    old.close()


def test_reset_forgets_the_changelog_too(ledger, tmp_path, events):
    first = _runner(ledger, events, "tumbling")
    first.run_until_caught_up(max_batches=5)
    assert _deltas(ledger) >= 3
    with ledger.begin() as conn:
        reset_pipeline(conn, first.pipeline.name)
    assert _deltas(ledger) == 0
    again = _runner(ledger, events, "tumbling")
    assert again.status.offset == 0
    assert again.stage("dedup").held_keys == 0


# -- the changelog's merge rules --------------------------------------------------------------


def _delta(rng: np.random.Generator, keys: int, reset: bool, horizon: int) -> Delta:
    n = int(rng.integers(0, 8))
    up = pa.table(
        {
            "k": pa.array(rng.integers(0, keys, n), pa.int64()),
            "v": pa.array(rng.integers(0, 100, n), pa.int64()),
        }
    )
    up = pl.from_arrow(up).unique("k", keep="last", maintain_order=True).to_arrow()
    gone = pa.table({"k": pa.array(rng.integers(0, keys, int(rng.integers(0, 3))), pa.int64())})
    gone = gone.filter(pc.invert(pc.is_in(gone["k"], up["k"])))
    return Delta(("k",), up, gone, reset=reset, expires="v", horizon=horizon)


def _rows(table: pa.Table) -> list:
    return sorted(zip(table["k"].to_pylist(), table["v"].to_pylist(), strict=True))


def _apply(deltas: list[Delta]) -> list:
    """The rules one delta at a time, in Python: what `merge` must give."""
    rows: dict[int, int] = {}
    horizon = None
    for d in deltas:
        if d.reset:
            rows = {}
        for k, v in zip(d.upserts["k"].to_pylist(), d.upserts["v"].to_pylist(), strict=True):
            rows[k] = v
        for k in d.deletes["k"].to_pylist():
            rows.pop(k, None)
        horizon = d.horizon
    return sorted((k, v) for k, v in rows.items() if horizon is None or v > horizon)


@pytest.mark.parametrize("seed", range(30))
def test_merge_applies_deltas_in_order_and_any_prefix_can_be_folded_first(seed):
    rng = np.random.default_rng(seed)
    deltas = [_delta(rng, 12, reset=bool(rng.random() < 0.1), horizon=i * 3) for i in range(25)]
    blobs = [encode_delta(d) for d in deltas]
    whole = merge(None, blobs)
    assert _rows(whole) == _apply(deltas)
    cut = int(rng.integers(1, len(blobs)))
    base = encode_batch(merge(None, blobs[:cut]))  # what a compaction writes
    assert _rows(merge(base, blobs[cut:])) == _rows(whole)


# -- crashes ----------------------------------------------------------------------------------


def _committed(root: Path, pipeline: str) -> int:
    path = root / "ledger.db"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(
                'SELECT "offset" FROM stream_checkpoints WHERE pipeline = ?', (pipeline,)
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    return row[0] if row else 0


def _fill(root: Path, data: pa.Table) -> None:
    log = open_log(str(root / "streams"), "events")
    for start in range(0, data.num_rows, 1000):
        log.append(data.slice(start, 1000))
    log.close()


def _stream_rows(root: Path, name: str) -> list:
    log = open_log(str(root / "streams"), name)
    table = log.read(0, 0, log.end_offset(0))
    log.close()
    columns = [c for c in table.column_names if not c.startswith("_") or c.startswith("_late")]
    return sorted(map(repr, table.select(columns).to_pylist()))


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow
def test_kill_9_while_deltas_are_written_and_compacted(tmp_path):
    kind = "tumbling"
    data = changelog_trace(40_000, seed=8)
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for root in (reference, crashed):
        _fill(root, data)
    subprocess.run(
        [sys.executable, str(CHILD), str(reference), kind, "run"], env=_child_env(), check=True
    )
    rng = random.Random(3)
    pipeline = changelog_pipeline(kind).name
    kills = 0
    for target in sorted(rng.sample(range(2_000, 36_000), 6)):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(crashed), kind, "run"], env=_child_env()
        )
        while proc.poll() is None and _committed(crashed, pipeline) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    subprocess.run(
        [sys.executable, str(CHILD), str(crashed), kind, "run"], env=_child_env(), check=True
    )
    assert kills >= 4
    assert int((crashed / "done").read_text()) > 0  # compactions ran beside the batches
    for name in ("out", "late"):
        assert _stream_rows(crashed, name) == _stream_rows(reference, name), name


def test_kill_9_inside_a_compaction_restores_the_same_state(tmp_path):
    kind = "hopping"
    _fill(tmp_path, changelog_trace(20_000, seed=9))
    runner, ledger = child.runner_for(tmp_path, kind)
    runner.compactor.min_bytes = NO_COMPACTION
    runner.open()
    runner.run_until_caught_up(max_batches=30)
    before, deltas = _state(runner), _deltas(ledger)
    killed = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path), kind, "compact-kill"], env=_child_env()
    )
    assert killed.returncode == -signal.SIGKILL
    assert _deltas(ledger) == deltas  # the compaction's transaction never committed
    again, _ = child.runner_for(tmp_path, kind)
    again.open()
    assert _state(again) == before
    assert again.compact() >= 1
    compacted, _ = child.runner_for(tmp_path, kind)
    compacted.open()
    assert _state(compacted) == before
    ledger.close()


# -- an operator's own changes ----------------------------------------------------------------


def _ids(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64) % 30_000  # keys come back after a while
    times = 1_704_067_200_000_000 + np.arange(start, start + n, dtype=np.int64) * 10_000
    return pa.table({"id": ids, "ts": pa.array(times, pa.timestamp("us", tz="UTC"))})


def _keys(table: pa.Table) -> list:
    return sorted(zip(*(table[c].to_pylist() for c in ("h1", "h2", "expiry")), strict=True))


def test_dedup_changes_rebuild_its_keys_and_stay_bounded_when_nobody_reads_them():
    read, unread = (Dedup("id", ttl=120, time_column="ts") for _ in range(2))
    blobs = []
    for i in range(200):
        batch = _ids(i * 2_000, 2_000)
        read.process(batch)
        unread.process(batch)
        blobs.append(encode_delta(read.changes()["keys"]))
    assert _keys(merge(None, blobs)) == _keys(read.snapshot()["keys"])
    late = unread.changes()["keys"]  # 400,000 keys kept, never asked for: not recorded
    assert late.reset
    assert _keys(late.upserts) == _keys(read.snapshot()["keys"])


def test_counters_are_stored_as_json_and_read_back_as_their_one_row_table():
    values = {
        "config": "Dedup(key=['id'], ttl_us=60000000, time_column='ts')",
        "clock": -(2**63) + 1, "late_count": 0, "watermark": 1.5e15, "nan": float("nan"),
        "schema": b"\x00\xffarrow", "has_state": True, "mode": None,
    }  # fmt: skip
    data = encode_state(Meta(values))
    assert data.startswith(b"headrace.meta/1\n")
    back = decode_state(data)
    want = meta_table(**values)
    assert back.schema == want.schema
    got = back.to_pylist()[0]
    assert np.isnan(got.pop("nan")) and {**got, "nan": values["nan"]}.keys() == values.keys()
    assert got == {k: v for k, v in values.items() if k != "nan"}
    table = pa.table({"a": [1, 2]})  # other whole slots stay Arrow IPC
    assert decode_state(encode_state(table)).equals(table)


def _old_bundle(deltas: dict[str, bytes]) -> bytes:
    """How earlier versions bundled a batch's deltas: an Arrow table of slot and delta."""
    return encode_table(pa.table({"slot": list(deltas), "delta": list(deltas.values())}))


def test_bundles_of_both_formats_unbundle():
    deltas = {"dedup/keys": b"\x00" * 70_000, "w/é/windows": b"", "w/pending": b"abc"}
    assert unbundle(bundle(deltas)) == deltas
    assert unbundle(_old_bundle(deltas)) == deltas


def test_changelog_rows_of_earlier_versions_restore(ledger, events):
    first = _runner(ledger, events, "tumbling")
    first.run_until_caught_up(max_batches=30)
    with ledger.begin() as conn:  # the changelog as earlier versions wrote it
        c = stream_state_changes.c
        for seq, data in conn.execute(select(c.seq, c.data)).all():
            old = _old_bundle(unbundle(data))
            conn.execute(stream_state_changes.update().where(c.seq == seq).values(data=old))
    assert _deltas(ledger) >= 20
    assert _state(_runner(ledger, events, "tumbling")) == _state(first)


def test_columns_of_zeros_are_left_out_of_a_delta_and_put_back():
    n = 10_000
    upserts = pa.table(
        {
            "h1": pa.array(np.arange(1, n + 1, dtype=np.uint64)),
            "small": pa.array(np.zeros(n, np.int32)),
            "h2": pa.array(np.zeros(n, np.uint64)),
            "expiry": pa.array(np.arange(n, dtype=np.int64) + 10),
        }
    )
    delta = Delta(("h1", "h2"), upserts, expires="expiry", horizon=5, zeros=("small", "h2"))
    data = encode_delta(delta)
    assert len(data) < upserts.nbytes - 110_000  # h2 and small (120 KB) are not written
    back = decode_delta(data)
    assert back.replace_schema_metadata(None).equals(upserts)
    base = pa.table({"h1": pa.array([1, 99], pa.uint64()), "small": pa.array([0, 0], pa.int32()),
                     "h2": pa.array([0, 0], pa.uint64()), "expiry": pa.array([3, 50])})  # fmt: skip
    merged = merge(encode_table(base), [data]).sort_by("h1")
    assert merged.column_names == upserts.column_names
    assert merged["h1"].to_pylist() == [*range(1, n + 1)]  # 99 is among them, 1 upserted
    assert merged["expiry"].to_pylist()[:2] == [10, 11]
