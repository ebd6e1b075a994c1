"""The plan optimizer: column pruning, row filters recognised from bytecode and moved, answers
that stay those of running the functions as written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from headrace import data
from headrace.data.plan import MapOp, Read, Sort, optimize
from headrace.data.rowfilters import elementwise, row_filter


def _leaf(node):
    while node.children():
        node = node.children()[0]
    return node


def test_recognised_shapes():
    assert row_filter(lambda df: df[df["a"] < 100]) is not None
    assert row_filter(lambda df: df[(df["a"] > 0) & ~(df["b"] == "US")]) is not None
    threshold = 3
    assert row_filter(lambda df: df[df["a"] > threshold]) is None  # a closure: not proven
    assert row_filter(lambda df: df[df["a"] > df["a"].mean()]) is None  # depends on the batch
    assert row_filter(lambda df: df.head(2)) is None
    assert elementwise(lambda df: df["helpful_votes"] / df["total_votes"])
    assert not elementwise(lambda df: df["a"] - df["a"].mean())


def test_filters_move_below_the_sort_into_the_read(tmp_path):
    pq.write_table(pa.table({"a": [3, 1, 2, 5], "b": ["x", "y", "x", "x"]}), tmp_path / "t.parquet")
    ds = data.read_parquet(str(tmp_path))
    ds = ds.add_column("twice", lambda df: df["a"] * 2).sort("a")
    ds = ds.map_batches(lambda df: df[df["b"] == "x"])
    plan = optimize(ds._plan)
    assert isinstance(plan, Sort)  # the filter now runs before the sort
    read = _leaf(plan)
    assert isinstance(read, Read) and len(read.prefilters) == 1
    assert ds.take_all() == [{"a": a, "b": "x", "twice": 2 * a} for a in (2, 3, 5)]


def test_batch_dependent_functions_stay_where_written():
    ds = data.from_items([{"x": i} for i in range(10)]).sort("x", descending=True)
    above_mean = ds.map_batches(lambda df: df[df["x"] > df["x"].mean()])
    assert isinstance(optimize(above_mean._plan), MapOp)
    assert [r["x"] for r in above_mean.take_all()] == [9, 8, 7, 6, 5]


def test_arrow_fast_path_gives_what_pandas_gives(tmp_path):
    """NaN, nulls in integers, strings with nulls: the recognised filter returns what running
    it in pandas returns (here: explicit batch_format="pandas" runs it as written)."""
    df = pd.DataFrame(
        {
            "f": [1.0, np.nan, 3.0, 4.0],
            "i": pd.array([1, None, 3, 4], dtype="Int64"),
            "s": ["US", None, "US", "DE"],
        }
    )
    on_f, on_i = (lambda d: d[d["f"] > 1]), (lambda d: d[d["i"] > 1])
    assert row_filter(on_f) is not None and row_filter(on_i) is not None
    for columns, fn in ((["f", "i"], on_f), (["f"], on_f), (["i"], on_i), (["s", "i"], on_i)):
        ds = data.from_pandas(df[columns])
        fast = ds.map_batches(fn)
        slow = ds.map_batches(fn, batch_format="pandas")
        assert _same(fast.take_all(), slow.take_all()), columns
    strings = pa.table({"s": ["US", "DE", "US"], "n": [1, 2, 3]})
    pq.write_table(strings, tmp_path / "s.parquet")
    ds = data.read_parquet(str(tmp_path / "s.parquet"))
    got = ds.sort("n", descending=True).map_batches(lambda d: d[d["s"] == "US"]).take_all()
    assert got == [{"s": "US", "n": 3}, {"s": "US", "n": 1}]


def _same(a: list[dict], b: list[dict]) -> bool:
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [{k: norm(v) for k, v in r.items()} for r in a] == [
        {k: norm(v) for k, v in r.items()} for r in b
    ]


def test_only_needed_columns_are_read(tmp_path):
    pq.write_table(pa.table({"a": [1], "b": ["big text"], "c": [2]}), tmp_path / "t.parquet")
    ds = data.read_parquet(str(tmp_path)).add_column("d", lambda df: df["a"] + df["c"])
    ds = ds.drop_columns(["b"])
    assert _leaf(optimize(ds._plan)).columns == ("a", "c")
    assert ds.take_all() == [{"a": 1, "c": 2, "d": 3}]
    opaque = data.read_parquet(str(tmp_path)).add_column("d", lambda df: df.sum(axis=1))
    assert _leaf(optimize(opaque.drop_columns(["b"])._plan)).columns is None
