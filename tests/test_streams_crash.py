"""kill -9 during a replay of 1M events (5% duplicates, 2% late): exactly-once results.

The log is filled first; a child process runs dedup → 60 s tumbling window → output stream,
checkpointing every micro-batch, and is killed with SIGKILL at random points, then restarted
until it finishes. The windows must equal a DuckDB recomputation over the first copy of every
id, and every late record must be in the late stream, once.
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

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from headrace.streams.log import open_log

CHILD = Path(__file__).with_name("stream_crash_child.py")
LATE_ID = 10**9


def make_trace(n: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = int(n * 0.93)
    ts = 1_704_067_200.0 + np.arange(base) * 0.1 + rng.uniform(-2, 2, base)
    ids = np.arange(base, dtype=np.int64)
    fee = rng.integers(1, 50_000, base, dtype=np.int64)
    # 5%: a copy of an event from the last ~100 positions, placed right after it
    dup_at = np.sort(rng.choice(np.arange(100, base), int(n * 0.05), replace=False))
    src = dup_at - rng.integers(0, 100, dup_at.size)
    # 2%: late events, an hour of event time behind where they land
    late_at = np.sort(rng.choice(np.arange(40_000, base), n - base - dup_at.size, replace=False))
    late_ts = ts[late_at] - 3600
    late_ids = LATE_ID + np.arange(late_at.size, dtype=np.int64)
    late_fee = rng.integers(1, 50_000, late_at.size, dtype=np.int64)
    order_key = np.concatenate([np.arange(base) * 2.0, dup_at * 2.0 + 1, late_at * 2.0 + 1.5])
    order = np.argsort(order_key, kind="stable")
    all_ids = np.concatenate([ids, ids[src], late_ids])[order]
    all_ts = np.concatenate([ts, ts[src], late_ts])[order]
    all_fee = np.concatenate([fee, fee[src], late_fee])[order]
    micros = np.round(all_ts * 1e6).astype(np.int64)
    return pa.table(
        {
            "id": all_ids,
            "ts": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "fee": all_fee,
        }
    )


def committed_offset(root: Path) -> int:
    path = root / "ledger.db"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(
                "SELECT \"offset\" FROM stream_checkpoints WHERE pipeline = 'crash'"
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    return row[0] if row else 0


@pytest.mark.slow
def test_kill_9_during_a_million_event_replay(tmp_path):
    data = make_trace(1_000_000)
    events = open_log(str(tmp_path / "streams"), "events")
    for start in range(0, data.num_rows, 10_000):
        events.append(data.slice(start, 10_000))
    events.close()
    rng = random.Random(4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # kill when the committed offset passes each target, after a random extra delay, so the
    # kills land anywhere: mid-batch, between plan and commit, inside a sink write
    targets = sorted(rng.sample(range(50_000, 950_000), 5))
    killed_at = []
    for target in targets:
        child = subprocess.Popen([sys.executable, str(CHILD), str(tmp_path)], env=env)
        while child.poll() is None and committed_offset(tmp_path) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            killed_at.append(committed_offset(tmp_path))
    final = subprocess.run([sys.executable, str(CHILD), str(tmp_path)], env=env, timeout=600)
    assert final.returncode == 0
    assert (tmp_path / "done").exists()
    assert len(killed_at) >= 4, killed_at
    assert max(killed_at) > 500_000

    windows = open_log(str(tmp_path / "streams"), "windows")
    late = open_log(str(tmp_path / "streams"), "late")
    got = windows.read(0, 0, windows.end_offset(0))
    late_rows = late.read(0, 0, late.end_offset(0))
    con = duckdb.connect()
    con.register("t", data)
    con.register("got", got)
    truth = con.execute(
        f"""
        WITH numbered AS (SELECT *, row_number() OVER () AS rn FROM t),
             firsts AS (SELECT * FROM numbered
                        QUALIFY row_number() OVER (PARTITION BY id ORDER BY rn) = 1)
        SELECT epoch_us(time_bucket(INTERVAL 60 SECOND, ts)) AS window_start, count(*) AS n,
               sum(fee)::BIGINT AS total, min(fee) AS lo, max(fee) AS hi
        FROM firsts WHERE id < {LATE_ID} GROUP BY 1 ORDER BY 1
        """
    ).fetchall()
    mine = con.execute(
        "SELECT epoch_us(window_start), n, total::BIGINT, lo, hi FROM got ORDER BY 1"
    ).fetchall()
    assert len(mine) == len(truth)
    assert mine == truth
    late_ids = late_rows["id"].to_pylist()
    assert len(late_ids) == len(set(late_ids))
    expected_late = {i for i in data["id"].to_pylist() if i >= LATE_ID}
    assert set(late_ids) == expected_late
    windows.close()
    late.close()
