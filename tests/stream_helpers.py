"""Pieces the stream tests share (the crash child runs in its own process, so not fixtures)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from headrace.streams.operators import aggregations as agg
from headrace.streams.pipeline import Pipeline


def fee_windows(pipe: Pipeline, **options) -> Pipeline:
    """Per-minute count/total/min/max of `fee` on `ts`, 5 s disorder, 30 s grace."""
    return pipe.tumbling(
        60,
        time_column="ts",
        aggs={
            "n": agg.count(),
            "total": agg.sum("fee"),
            "lo": agg.min("fee"),
            "hi": agg.max("fee"),
        },
        delay=5,
        grace=30,
        **options,
    )


def archived(root: Path) -> tuple[int, int]:
    """Rows in the archive under `root`, and how many distinct log offsets they hold."""
    return (
        duckdb.connect()
        .execute(
            f"SELECT count(*), count(DISTINCT _offset) FROM read_parquet('{root}/**/*.parquet')"
        )
        .fetchone()
    )


def changelog_trace(n: int, seed: int = 5) -> pa.Table:
    """Events 50 ms apart with ±2 s jitter over 400 accounts; 5% re-sent (an id seen shortly
    before), 1% five minutes late: state with hundreds of keys and open windows."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    resent = rng.random(n) < 0.05
    ids[resent] = np.maximum(0, ids[resent] - rng.integers(1, 50, int(resent.sum())))
    ts = 1_704_067_200.0 + np.arange(n) * 0.05 + rng.uniform(-2, 2, n)
    ts[rng.random(n) < 0.01] -= 300
    return pa.table(
        {
            "id": ids,
            "acct": rng.integers(0, 400, n, dtype=np.int64),
            "ts": pa.array(np.round(ts * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
            "fee": rng.integers(1, 10_000, n, dtype=np.int64),
        }
    )


def changelog_pipeline(kind: str, *, late=None, batch_size: int = 300) -> Pipeline:
    """dedup(id) → a keyed window of `kind` (tumbling, hopping, session) with HLL state, or a
    keyless one (numpy-tumbling, numpy-hopping) that aggregates in numpy."""
    pipe = Pipeline(f"cl-{kind}", "events", batch_size=batch_size)
    pipe.dedup("id", ttl=60, time_column="ts")
    aggs = {"n": agg.count(), "total": agg.sum("fee"), "ids": agg.approx_distinct("id")}
    common = {"time_column": "ts", "key": "acct", "aggs": aggs, "delay": 5, "late": late}
    if kind == "tumbling":
        return pipe.tumbling(60, grace=10, **common)
    if kind == "hopping":
        return pipe.hopping(60, 20, **common)
    if kind in ("numpy-tumbling", "numpy-hopping"):
        # keyless count/sum/mean/min/max: the numpy path; 1 s windows and a long grace keep
        # hundreds open, so their changes are found row by row, not written whole
        fee = {"n": agg.count(), "total": agg.sum("fee"), "avg": agg.mean("fee")}
        fee |= {"lo": agg.min("fee"), "hi": agg.max("fee")}
        keyless = {"time_column": "ts", "aggs": fee, "delay": 5, "late": late, "grace": 400}
        if kind == "numpy-tumbling":
            return pipe.tumbling(1, **keyless)
        return pipe.hopping(3, 1, **keyless)
    return pipe.session(20, grace=5, **common)
