"""What a micro-batch's checkpoint costs as the state grows, and how long a restore takes.

    .venv/bin/python benchmarks/stream_checkpoint.py [--keys 10000,100000,1000000] [--batches 50]
        [--before PATH_TO_SRC] [--ledger postgresql://postgres@127.0.0.1:5432/postgres]

A pipeline `dedup("id")` → sink over an embedded log, checkpointing to a SQLite ledger. The log
holds `keys` distinct ids first (read in micro-batches of 100,000, not timed), so the dedup holds
that many live keys (the TTL outlasts the run), then `batches` micro-batches of 1,000 new ids.
For those it reports, per batch (median):

- checkpoint: the runner serialising the state it writes plus the time inside ledger
  transactions (plan and commit), measured by wrapping both;
- batch: the whole step (log read, dedup, checkpoint).

and the time to open a fresh runner on that ledger (load the checkpoint, restore the dedup).

With `--ledger` the ledger is that PostgreSQL server instead, a fresh database per measurement
(made and dropped by the script). With `--before PATH` the same measurements also run with
headrace imported from PATH (a checkout of an earlier version's `src`), in a subprocess, in the
same run: the ratio is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

T0 = 1_704_067_200_000_000  # 2024-01-01Z in microseconds
FILL_BATCH = 100_000
BATCH = 1_000


def events(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "ts": pa.array(T0 + ids * 1_000, pa.timestamp("us", tz="UTC")),
            "fee": np.ones(n, np.int64),
        }
    )


@contextmanager
def ledger_url(tmp: str, server: str | None):
    """SQLite in `tmp`, or a fresh database on the PostgreSQL `server`, dropped afterwards."""
    if server is None:
        yield f"sqlite:///{tmp}/ledger.db"
        return
    import psycopg

    name = f"headrace_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(keys: int, batches: int, server: str | None = None) -> dict:
    from headrace.ledger import Ledger
    from headrace.streams.log import open_log
    from headrace.streams.pipeline import Pipeline
    from headrace.streams.runner import PartitionRunner
    from headrace.streams.sinks import MemorySink, SinkContext

    with tempfile.TemporaryDirectory() as tmp, ledger_url(tmp, server) as url:
        log = open_log(str(Path(tmp) / "streams"), "events")
        for start in range(0, keys, FILL_BATCH):
            log.append(events(start, min(FILL_BATCH, keys - start)))
        ledger = Ledger(url)

        def runner(batch_size: int) -> PartitionRunner:
            pipe = Pipeline("bench", "events", batch_size=batch_size)
            pipe.dedup("id", ttl=86_400 * 365, time_column="ts")
            pipe.sink(MemorySink("out"))
            return PartitionRunner(pipe, 0, log=log, ledger=ledger, context=SinkContext("b", 0))

        fill = runner(FILL_BATCH)
        fill.open()
        fill.run_until_caught_up()
        getattr(fill, "close", lambda: None)()
        for start in range(keys, keys + batches * BATCH, BATCH):  # as a live stream appends
            log.append(events(start, BATCH))

        small = runner(BATCH)
        small.open()
        spent = [0.0]
        begin = ledger.begin
        changed = small._changed_state

        @contextmanager
        def timed_begin():
            start = time.perf_counter()
            with begin() as conn:
                yield conn
            spent[0] += time.perf_counter() - start

        def timed_changed(*args):
            start = time.perf_counter()
            try:
                return changed(*args)
            finally:
                spent[0] += time.perf_counter() - start

        ledger.begin = timed_begin
        small._changed_state = timed_changed
        checkpoint, batch = [], []
        for _ in range(batches):
            spent[0] = 0.0
            start = time.perf_counter()
            assert small.step() == BATCH
            batch.append(time.perf_counter() - start)
            checkpoint.append(spent[0])
        ledger.begin = begin
        getattr(small, "close", lambda: None)()
        held = small.stage("dedup").held_keys
        start = time.perf_counter()
        reopened = runner(BATCH)
        reopened.open()
        restore = time.perf_counter() - start
        assert reopened.stage("dedup").held_keys == held
        ledger.close()
        log.close()
    return {
        "keys": held,
        "checkpoint_ms": statistics.median(checkpoint) * 1e3,
        "batch_ms": statistics.median(batch) * 1e3,
        "restore_s": restore,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="10000,100000,1000000")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--before", help="an earlier version's src directory, measured too")
    parser.add_argument("--ledger", help="a PostgreSQL server's URL (default: SQLite)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(k) for k in args.keys.split(",")]
    if args.json:
        print(json.dumps([measure(k, args.batches, args.ledger) for k in sizes]))
        return 0
    sides = {"after": [measure(k, args.batches, args.ledger) for k in sizes]}
    if args.before:
        out = subprocess.run(
            [sys.executable, __file__, "--json", "--keys", args.keys, "--batches",
             str(args.batches), *(["--ledger", args.ledger] if args.ledger else [])],
            env={**os.environ, "PYTHONPATH": args.before},
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        sides["before"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'side':<7} {'keys':>10} {'checkpoint ms':>14} {'batch ms':>9} {'restore s':>10}")
    for side, rows in sides.items():
        for row in rows:
            print(
                f"{side:<7} {row['keys']:>10,} {row['checkpoint_ms']:>14.2f} "
                f"{row['batch_ms']:>9.2f} {row['restore_s']:>10.3f}"
            )
    if "before" in sides:
        for old, new in zip(sides["before"], sides["after"], strict=True):
            cheaper = old["checkpoint_ms"] / new["checkpoint_ms"]
            faster = old["batch_ms"] / new["batch_ms"]
            restore = new["restore_s"] / old["restore_s"]
            print(
                f"{new['keys']:>10,} keys: checkpoint {cheaper:.1f}x cheaper, batch "
                f"{faster:.1f}x faster, restore {restore:.2f}x the time"
            )
    print(json.dumps(sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
