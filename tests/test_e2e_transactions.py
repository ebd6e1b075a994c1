"""System 2 end to end: `headrace up` with the transactions example against the simulator.

The simulator's clock runs 30x faster so minutes of event time pass in seconds. The coordinator
is killed with SIGKILL mid-stream and restarted; afterwards every transaction is archived once,
every closed minute is in the offline feature table once with the counts a batch recomputation
over the archive gives, and the CLI reads stats, SQL and the online store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from headrace.streams.simulator import Simulator
from tests.e2e_helpers import Up, headrace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "transactions_features"


def accelerated(speed: float):
    start = time.time()
    return lambda: start + (time.time() - start) * speed


def _polled(simulator: Simulator, at_least: int, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while simulator.requests < at_least:
        assert time.time() < deadline, f"only {simulator.requests} polls in {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_transactions_pipeline_survives_kill_9(tmp_path):
    home = tmp_path / "home"
    with Simulator(rate_per_s=3.0, seed=3, clock=accelerated(30.0)) as simulator:
        env = {
            "HEADRACE_HOME": str(home),
            "TX_API_URL": simulator.url,
            "TX_GRACE_SECONDS": "5",
        }
        up = Up(EXAMPLE, env, tmp_path / "up.log").start()
        _polled(simulator, at_least=5)  # mid-stream, however slow the machine is today
        up.kill9()
        up = Up(EXAMPLE, env, tmp_path / "up.log").start()
        _polled(simulator, at_least=simulator.requests + 8)
        time.sleep(2)
        assert up.terminate() == 0, up.output()

    stats = headrace("streams", "stats", "--json", project=EXAMPLE, env=env)
    assert stats.returncode == 0, stats.stderr
    positions = json.loads(stats.stdout)["positions"]
    (tx,) = [p for p in positions if p["pipeline"] == "tx"]
    assert tx["records"] > 0 and tx["lag"] == 0

    archive = home / "buckets" / "archive" / "transactions"
    con = duckdb.connect()
    n, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT hash) FROM read_parquet('{archive}/**/*.parquet')"
    ).fetchone()
    assert n == distinct > 0, "a transaction was archived twice"

    query = headrace(
        "query",
        "SELECT window_start, tx_count, total_fee FROM tx_minute ORDER BY window_start",
        "--json",
        project=EXAMPLE,
        env=env,
    )
    assert query.returncode == 0, query.stderr
    minutes = json.loads(query.stdout)
    assert len(minutes) >= 2
    starts = [m["window_start"] for m in minutes]
    assert len(starts) == len(set(starts)), "a minute was written twice"
    # every closed minute equals a recomputation over the archived transactions of that minute
    # that were not late (a minute closes only after its grace; a transaction that arrived after
    # that is archived but goes to tx-late, not into the minute)
    late = headrace(
        "streams", "read", "tx-late", "--limit", "1000000", "--json", project=EXAMPLE, env=env
    )
    assert late.returncode == 0, late.stderr
    late_hashes = sorted({r["hash"] for r in json.loads(late.stdout)}) or [""]
    truth = dict(
        con.execute(
            f"""SELECT strftime(time_bucket(INTERVAL 60 SECOND, _event_time), '%Y-%m-%d %H:%M'),
                       count(*)
                FROM read_parquet('{archive}/**/*.parquet')
                WHERE hash NOT IN (SELECT unnest(?)) GROUP BY 1""",
            [late_hashes],
        ).fetchall()
    )
    for minute in minutes:
        key = str(minute["window_start"])[:16].replace("T", " ")
        assert truth.get(key) == minute["tx_count"], (key, minute)

    online = headrace("features", "get", "tx_minute", "bitcoin", project=EXAMPLE, env=env)
    assert online.returncode == 0, online.stderr
    newest = json.loads(online.stdout)[0]
    assert newest is not None and newest["tx_count"] == minutes[-1]["tx_count"]

    # the compaction schedule ran as a function invocation in a worker
    runs = json.loads(headrace("invocations", "--json", project=EXAMPLE, env=env).stdout)
    compactions = [r for r in runs if r["function"] == "__compact_features__"]
    assert compactions and all(r["status"] == "succeeded" for r in compactions), compactions

    listed = json.loads(headrace("streams", "list", "--json", project=EXAMPLE, env=env).stdout)
    (transactions,) = [s for s in listed if s["stream"] == "transactions"]
    assert transactions["end"] == tx["offset"] and transactions["pipelines"] == {"tx": tx["offset"]}
    late = headrace("streams", "read", "tx-late", "--json", project=EXAMPLE, env=env)
    assert late.returncode == 0 and isinstance(json.loads(late.stdout), list)
    raw = json.loads(
        headrace(
            "streams", "read", "transactions", "--limit", "3", "--json", project=EXAMPLE, env=env
        ).stdout
    )
    assert len(raw) == 3 and {"hash", "fee", "_event_time", "_offset"} <= set(raw[0])
