"""The rest of the Dataset API: sources, row and batch transforms, reordering, grouping,
consumption, laziness."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace import data


def test_sources_from_memory():
    assert data.from_items([1, 2]).take_all() == [{"item": 1}, {"item": 2}]
    assert data.from_items([{"a": 1}]).schema().names == ["a"]
    df = pd.DataFrame({"a": [3, 1, 2], "b": ["x", "y", "z"]})
    assert data.from_pandas(df).to_pandas().equals(df)
    table = pa.table({"a": [1, 2]})
    assert data.from_arrow([table, table]).count() == 4
    assert data.range(5).take_all() == [{"id": i} for i in range(5)]


def test_csv_and_json_folders_globs_and_partitions(tmp_path):
    for part in ("x", "y"):
        folder = tmp_path / "csv" / f"part={part}"
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text("n,s\n1,one\n2,two\n")
        (folder / "_SUCCESS").write_text("")
    ds = data.read_csv(str(tmp_path / "csv"))
    rows = ds.take_all()
    assert len(rows) == 4 and {r["part"] for r in rows} == {"x", "y"}
    assert data.read_csv(str(tmp_path / "csv" / "part=x" / "*.csv")).count() == 2
    (tmp_path / "lines.json").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "array.json").write_text(json.dumps([{"a": 3}]))
    both = data.read_json([str(tmp_path / "lines.json"), str(tmp_path / "array.json")])
    assert sorted(r["a"] for r in both.take_all()) == [1, 2, 3]


def test_bucket_paths_resolve_to_the_projects_object_store(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    bucket = tmp_path / "home" / "buckets" / "reviews"
    (bucket / "parquet").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2, 3]}), bucket / "parquet" / "p.parquet")
    assert data.read_parquet("s3://reviews/parquet/").count() == 3
    data.read_parquet("s3://reviews/parquet").write_parquet("headrace://curated/out")
    assert data.read_parquet(str(tmp_path / "home/buckets/curated/out")).count() == 3
    data.from_items([{"a": 9}]).write_parquet("s3://curated/out")  # now a bucket: append
    assert data.read_parquet("s3://curated/out").count() == 4


def test_row_transforms_and_laziness(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()

    def tag(row):
        (calls / str(row["id"])).touch()  # runs in a worker: leaves a trace on disk
        return {"id": row["id"], "sq": row["id"] ** 2}

    ds = data.range(10).map(tag)
    assert not list(calls.iterdir())  # nothing ran yet: lazy
    assert ds.filter(lambda r: r["sq"] > 20).take_all() == [
        {"id": i, "sq": i * i} for i in range(5, 10)
    ]
    pairs = data.range(3).flat_map(lambda r: [{"v": r["id"]}, {"v": -r["id"]}])
    assert [r["v"] for r in pairs.take_all()] == [0, 0, 1, -1, 2, -2]


def test_columns_sort_limit_union_shuffle_repartition():
    ds = data.from_items([{"a": i % 3, "b": i, "c": "x"} for i in range(10)])
    assert ds.select_columns(["b"]).schema().names == ["b"]
    assert ds.rename_columns({"b": "bee"}).columns() == ["a", "bee", "c"]
    assert ds.drop_columns(["c"]).columns() == ["a", "b"]
    rows = ds.sort(["a", "b"], descending=[False, True]).take(4)
    assert [(r["a"], r["b"]) for r in rows] == [(0, 9), (0, 6), (0, 3), (0, 0)]
    assert ds.limit(3).count() == 3
    assert ds.union(ds).count() == 20
    shuffled = [r["b"] for r in ds.random_shuffle(seed=1).take_all()]
    assert sorted(shuffled) == list(range(10)) and shuffled != list(range(10))
    assert ds.repartition(4).num_blocks() == 4
    assert ds.unique("a") == [0, 1, 2]


def test_groupby_aggregations_match_pandas():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"k": rng.choice(["a", "b", "c"], 5000), "v": rng.normal(size=5000)})
    ds = data.from_pandas([df.iloc[:2000], df.iloc[2000:]])
    expected = df.groupby("k")["v"]
    out = ds.groupby("k").count().to_pandas()
    assert out["count()"].tolist() == expected.count().tolist()
    for name, fn in [("sum", "sum"), ("mean", "mean"), ("min", "min"), ("max", "max")]:
        got = getattr(ds.groupby("k"), name)("v").to_pandas()[f"{name}(v)"]
        np.testing.assert_allclose(got, getattr(expected, fn)().to_numpy())
    std = ds.groupby("k").std("v").to_pandas()["std(v)"]
    np.testing.assert_allclose(std, expected.std().to_numpy(), rtol=1e-9)
    multi = ds.groupby("k").aggregate(data.Count(), data.Max("v", alias_name="top")).to_pandas()
    assert list(multi.columns) == ["k", "count()", "top"]
    assert ds.sum("v") == pytest.approx(df["v"].sum())
    assert ds.max("v") == df["v"].max()


def test_groupby_on_a_missing_column_lists_all_the_columns(tmp_path):
    table = pa.table({"id": [1, 2], "cat": ["a", "b"], "v": [1.0, 2.0], "votes": [3, 4]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    ds = data.read_parquet(str(tmp_path))
    # the run reads only the columns it needs: the error must still name all of them
    for make in (
        lambda: ds.groupby("nope").count().take_all(),
        lambda: ds.groupby("cat").sum("nope").take_all(),
        lambda: ds.sum("nope"),
    ):
        with pytest.raises(data.DatasetError) as refused:
            make()
        assert "'nope'" in str(refused.value), refused.value
        assert "['id', 'cat', 'v', 'votes']" in str(refused.value), refused.value
    assert ds.groupby("cat").count().count() == 2


def test_consumption_methods():
    ds = data.range(1000)
    batches = list(ds.iter_batches(batch_size=300))
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert isinstance(batches[0], pd.DataFrame)
    numpy_batch = ds.take_batch(5, batch_format="numpy")
    assert numpy_batch["id"].tolist() == [0, 1, 2, 3, 4]
    assert ds.to_arrow().num_rows == 1000
    assert len(list(ds.iter_rows())) == 1000
    done = ds.map_batches(lambda df: df.assign(x=df["id"] + 1)).materialize()
    assert "MapBatches" in done.stats()
    assert done.count() == 1000 and done.take(1) == [{"id": 0, "x": 1}]


def test_add_column_batch_formats():
    ds = data.range(4)
    assert ds.add_column("p", lambda t: pa.compute.multiply(t["id"], 2), batch_format="pyarrow")
    got = ds.add_column("n", lambda b: b["id"] + 10, batch_format="numpy").take_all()
    assert [r["n"] for r in got] == [10, 11, 12, 13]
    got = ds.add_column("p", lambda t: pa.compute.multiply(t["id"], 2), batch_format="pyarrow")
    assert [r["p"] for r in got.take_all()] == [0, 2, 4, 6]


def test_sort_larger_than_its_memory_spills_to_disk(tmp_path):
    ctx = data.DataContext.get_current()
    saved = (ctx.sort_memory_bytes, ctx.spill_dir)
    ctx.sort_memory_bytes, ctx.spill_dir = 200_000, str(tmp_path)
    try:
        rng = np.random.default_rng(0)
        tables = [pa.table({"k": rng.integers(0, 10**6, 20_000)}) for _ in range(10)]
        ds = data.from_arrow(tables).sort("k", descending=True)
        keys = ds.to_arrow().column("k").to_numpy()
        assert len(keys) == 200_000
        assert (np.diff(keys) <= 0).all()
        assert "Sort(k)" in ds.stats()
        assert not list(tmp_path.iterdir())  # the spill folder is removed afterwards
    finally:
        ctx.sort_memory_bytes, ctx.spill_dir = saved


def test_concurrency_and_num_cpus_cap_the_tasks_running_at_once(tmp_path):
    import os
    import time

    marks = tmp_path / "marks"
    marks.mkdir()

    def slow(df):
        (marks / f"{os.getpid()}-{time.monotonic_ns()}-start").touch()
        time.sleep(0.2)
        (marks / f"{os.getpid()}-{time.monotonic_ns()}-end").touch()
        return df

    ds = data.from_arrow([pa.table({"a": [i]}) for i in range(4)])
    assert ds.map_batches(slow, concurrency=1).count() == 4
    events = sorted(marks.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    running = peak = 0
    for event in events:
        running += 1 if event.name.endswith("start") else -1
        peak = max(peak, running)
    assert peak == 1
    for p in marks.iterdir():
        p.unlink()
    assert ds.map_batches(slow, num_cpus=64).count() == 4  # more than the machine: one at a time
    events = sorted(marks.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    running = peak = 0
    for event in events:
        running += 1 if event.name.endswith("start") else -1
        peak = max(peak, running)
    assert peak == 1


def test_datasets_consumed_from_two_threads_share_the_workers():
    from concurrent.futures import ThreadPoolExecutor

    def total(n):
        ds = data.range(n * 1000).map_batches(lambda df: df.assign(x=df["id"] * 2))
        return ds.sum("x")

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(total, [3, 5, 7, 9]))
    assert got == [n * 1000 * (n * 1000 - 1) for n in (3, 5, 7, 9)]


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    import io
    import sys

    pq.write_table(pa.table({"a": list(range(1000))}), tmp_path / "t.parquet", row_group_size=100)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        ds = data.read_parquet(str(tmp_path)).map_batches(lambda df: df.assign(b=df["a"] + 1))
        assert ds.count() == 1000
        assert ("ReadParquet->MapBatches" in stream.getvalue()) is shown
