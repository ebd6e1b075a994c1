"""Streaming: a read -> map_batches -> write pipeline holds a few blocks at a time, not the
dataset: the memory it takes does not grow with the dataset's size."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace import data


def _plus_one(df):
    df["b"] = df["b"] + 1
    return df


def _tree_rss(me: psutil.Process) -> int:
    """This process and its dataset workers."""
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _peak(folder, rows: int) -> int:
    source = folder / f"in-{rows}"
    source.mkdir()
    per = 500_000
    schema = pa.schema([("a", pa.int64()), ("b", pa.int64())])
    with pq.ParquetWriter(source / "narrow.parquet", schema) as out:
        for start in range(0, rows, per):
            ids = np.arange(start, start + per, dtype=np.int64)
            out.write_table(pa.table({"a": ids, "b": ids * 3}), row_group_size=per)
    me = psutil.Process()
    peak = _tree_rss(me)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(me))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        target = folder / f"out-{rows}"
        data.read_parquet(str(source)).map_batches(_plus_one).write_parquet(str(target))
    finally:
        done.set()
        sampler.join()
    assert data.read_parquet(str(target)).count() == rows
    return peak


@pytest.mark.slow
def test_memory_does_not_grow_with_the_dataset(tmp_path):
    warm = data.range(10).rename_columns({"id": "b"})
    assert warm.map_batches(_plus_one).count() == 10  # workers and imports up first
    start = _tree_rss(psutil.Process())
    small = _peak(tmp_path, 4_000_000) - start  # 64 MB as Arrow
    large = _peak(tmp_path, 20_000_000) - start  # 320 MB as Arrow, 5 times more
    print(f"peak growth: {small / 1e6:.0f} MB for 64 MB of data, {large / 1e6:.0f} MB for 320 MB")
    assert large < small + 96e6, (small, large)
