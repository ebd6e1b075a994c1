"""The Ray Data notebook (reviews) runs as written with `from headrace import data`."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace import data
from headrace.data import ActorPoolStrategy
from tests.data_helpers import DROP, expected_notebook_output, reviews_module


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews") / "parquet"
    reviews_module().generate(str(folder), rows=4_000, files_per_category=2, seed=1)
    return folder


class HelpfulVotes:
    """A stateful transform: records which process (and instance) served each batch."""

    def __init__(self, scale: float = 1.0) -> None:
        self.pid = os.getpid()
        self.instance = id(self)
        self.scale = scale
        self.batches = 0

    def __call__(self, df):
        self.batches += 1
        df["worker_pid"] = self.pid
        df["instance"] = self.instance
        df["helpful_votes_ratio"] = df["helpful_votes_ratio"] * self.scale
        return df


@pytest.mark.slow
def test_notebook_steps_as_written(reviews, tmp_path):
    ds = data.read_parquet(str(reviews))
    assert ds.count() == 4_000
    schema = ds.schema()
    assert schema.names[:3] == ["marketplace", "customer_id", "review_id"]
    assert schema.names[-1] == "product_category"  # the hive partition
    assert ds.size_bytes() > 0
    assert len(ds.input_files()) == 10
    ds.show(1)

    ds = ds.add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] / df["total_votes"])
    ds = ds.drop_columns(DROP)
    ds = ds.sort("total_votes")
    ds = ds.map_batches(lambda df: df[df["total_votes"] < 100])
    ds = ds.map_batches(
        HelpfulVotes, compute=ActorPoolStrategy(2, 4), batch_size=4, fn_constructor_args=(1.0,)
    )
    ds = ds.map_batches(lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")])
    out = tmp_path / "out"
    ds.write_parquet(str(out))

    written = sorted(out.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in written])
    votes = table.column("total_votes").to_pylist()
    assert votes == sorted(votes)  # files and rows keep the sort's order
    pids = set(table.column("worker_pid").to_pylist())
    assert 2 <= len(pids) <= 4
    # one instance per worker process, however many batches it served
    per_pid = table.group_by("worker_pid").aggregate([("instance", "count_distinct")])
    assert set(per_pid.column("instance_count_distinct").to_pylist()) == {1}

    got = table.drop_columns(["worker_pid", "instance"]).to_pandas()
    got = got.sort_values("review_id").reset_index(drop=True)
    expected = expected_notebook_output(reviews)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert ds.count() == len(expected)


def test_numpy_style_function_on_the_default_batch(reviews):
    ds = data.read_parquet(str(reviews)).select_columns(["review_id", "total_votes"])

    def doubled(batch):  # today's Ray style: a dict of numpy arrays in, a dict out
        return {"review_id": batch["review_id"], "twice": batch["total_votes"] * 2}

    rows = ds.map_batches(doubled).take(5)
    assert [r["twice"] for r in rows] == [2 * r["total_votes"] for r in ds.take(5)]

    def in_place(batch):
        batch["ones"] = batch["total_votes"] * 0 + 1
        return batch

    assert {r["ones"] for r in ds.map_batches(in_place).take_all()} == {1}


def test_explicit_batch_formats_are_rays(reviews):
    import numpy as np

    ds = data.read_parquet(str(reviews)).select_columns(["review_id", "total_votes"])
    seen = {}

    def record(fmt):
        def fn(batch):
            seen[fmt] = type(batch)
            if fmt == "numpy":
                assert isinstance(batch["total_votes"], np.ndarray)
            return batch

        return fn

    for fmt in ("pandas", "pyarrow", "numpy"):
        batch = (
            ds.limit(10).map_batches(record(fmt), batch_format=fmt).take_batch(10, batch_format=fmt)
        )
        if fmt == "pandas":
            assert isinstance(batch, pd.DataFrame)
        elif fmt == "pyarrow":
            assert isinstance(batch, pa.Table)
        else:
            assert isinstance(batch, dict) and isinstance(batch["total_votes"], np.ndarray)


def test_concurrency_tuple_and_positional_pool(reviews):
    ds = data.read_parquet(str(reviews)).select_columns(["review_id", "helpful_votes"])
    ds = ds.add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] * 1.0)
    out = ds.map_batches(HelpfulVotes, concurrency=(2, 3), batch_size=500).to_arrow()
    assert out.num_rows == 4_000
    assert 2 <= len(set(out.column("worker_pid").to_pylist())) <= 3
    assert out.column("review_id").to_pylist() == ds.to_arrow().column("review_id").to_pylist()
    fixed = ds.map_batches(HelpfulVotes, compute=ActorPoolStrategy(size=2)).to_arrow()
    assert len(set(fixed.column("worker_pid").to_pylist())) <= 2


def test_writes_csv_and_json(reviews, tmp_path):
    ds = data.read_parquet(str(reviews)).select_columns(["review_id", "star_rating"]).limit(100)
    ds.write_csv(str(tmp_path / "csv"))
    ds.write_json(str(tmp_path / "json"))
    back_csv = data.read_csv(str(tmp_path / "csv")).to_pandas()
    back_json = data.read_json(str(tmp_path / "json")).to_pandas()
    assert len(back_csv) == len(back_json) == 100
    assert set(back_json["review_id"]) == set(ds.to_pandas()["review_id"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".headrace-tmp")]


def test_metadata_questions_read_no_data_pages(tmp_path):
    """count/schema/size_bytes/input_files read the footers only: a 2M-row file answers in
    milliseconds, and the bytes read are a tiny part of the file."""
    import fsspec
    import numpy as np
    import pyarrow.fs as pafs

    table = pa.table(
        {
            "id": np.arange(2_000_000),
            "text": pa.array(np.char.add("row-", np.arange(2_000_000).astype(str))),
        }
    )
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=250_000)
    size = path.stat().st_size

    read_bytes = []

    class Counting(fsspec.implementations.local.LocalFileSystem):
        def _open(self, *args, **kwargs):
            handle = super()._open(*args, **kwargs)
            original = handle.read

            def read(n=-1):
                chunk = original(n)
                read_bytes.append(len(chunk))
                return chunk

            handle.read = read
            return handle

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(Counting()))
    ds = data.read_parquet(str(path), filesystem=fs)
    assert ds.count() == 2_000_000
    assert ds.schema().names == ["id", "text"]
    assert ds.size_bytes() > 0
    assert ds.input_files() == [str(path)]
    assert ds.drop_columns(["text"]).count() == 2_000_000  # no user code: still metadata
    assert sum(read_bytes) < size / 50, (sum(read_bytes), size)
    before = sum(read_bytes)
    assert ds.select_columns(["id"]).take(1) == [{"id": 0}]
    assert sum(read_bytes) > before  # reading data does go through the same counter


def test_actors_read_their_own_row_groups(tmp_path):
    """read -> map_batches(class): the actor pool reads the row groups itself (one fused
    stage), and gives the same rows, in the same order, as the pool fed from this process."""
    import numpy as np

    folder = tmp_path / "features"
    folder.mkdir()
    for part in range(3):
        ids = np.arange(part * 3_000, (part + 1) * 3_000)
        table = pa.table({"id": ids, "x": ids * 0.5, "helpful_votes_ratio": ids * 1.0})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=1_000)
    ds = data.read_parquet(str(folder)).map_batches(
        HelpfulVotes, compute=ActorPoolStrategy(2, 2), batch_size=256, batch_format="pandas"
    )
    fused = ds.to_arrow()
    assert "ReadParquet->MapBatches(HelpfulVotes)" in ds.stats()
    assert len(set(fused.column("worker_pid").to_pylist())) == 2
    fed = data.from_arrow(pq.read_table(folder)).map_batches(
        HelpfulVotes, compute=ActorPoolStrategy(2, 2), batch_size=256, batch_format="pandas"
    )
    expected = fed.to_arrow()
    columns = ["id", "x", "helpful_votes_ratio"]
    assert fused.select(columns).equals(expected.select(columns))
    assert fused.column("id").to_pylist() == list(range(9_000))
