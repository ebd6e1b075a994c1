"""Pieces the stream tests share (the crash child runs in its own process, so not fixtures)."""

from __future__ import annotations

from pathlib import Path

import duckdb

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
