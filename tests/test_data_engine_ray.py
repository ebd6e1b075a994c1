"""The same dataset script on the local engine and on Ray Data gives the same rows."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from headrace import data
from headrace.data import ActorPoolStrategy, DataContext, DatasetError
from headrace.data.context import get_engine
from headrace.data.engine_ray import RayEngine
from tests.data_helpers import DROP, expected_notebook_output, reviews_module

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews") / "parquet"
    reviews_module().generate(str(folder), rows=3_000, files_per_category=2, seed=7)
    return folder


@pytest.fixture
def engine(request):
    context = DataContext.get_current()
    before = context.engine
    yield context
    context.engine = before


def notebook(folder, out):
    """The notebook's steps, as a user writes them (functions and the class defined here, so
    Ray ships them by value to its workers). Its pool of 2 to 4 actors is larger than the 2
    CPUs Ray has here: actors then get a share of a CPU, or the reads feeding them never run."""

    class Scale:
        def __init__(self, factor):
            self.factor = factor
            self.pid = os.getpid()

        def __call__(self, df):
            df["helpful_votes_ratio"] = df["helpful_votes_ratio"] * self.factor
            return df

    ds = data.read_parquet(str(folder))
    ds = ds.add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] / df["total_votes"])
    ds = ds.drop_columns(DROP)
    ds = ds.sort("total_votes")
    ds = ds.map_batches(lambda df: df[df["total_votes"] < 100])
    ds = ds.map_batches(
        Scale, compute=ActorPoolStrategy(2, 4), batch_size=64, fn_constructor_args=(1.0,)
    )
    ds = ds.map_batches(lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")])
    ds.write_parquet(str(out))
    return ds


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order: Ray's sort is not stable, so equal keys may come in any order."""
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def test_the_notebook_gives_the_same_rows_on_both_engines(ray_cluster, reviews, tmp_path, engine):
    outputs = {}
    for name in ("local", "ray"):
        engine.engine = name
        ds = notebook(reviews, tmp_path / name)
        assert ds.count() == len(expected_notebook_output(reviews))
        files = sorted((tmp_path / name).glob("*.parquet"))
        table = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
        votes = table["total_votes"].tolist()
        assert votes == sorted(votes)  # both keep the sort's order through the actor pool
        outputs[name] = canonical(table)
    pd.testing.assert_frame_equal(outputs["local"], outputs["ray"])
    expected = canonical(expected_notebook_output(reviews))
    pd.testing.assert_frame_equal(
        outputs["ray"], expected[outputs["ray"].columns], check_dtype=False
    )


def test_aggregations_unions_and_limits_match(ray_cluster, reviews, engine):
    def run():
        ds = data.read_parquet(str(reviews)).select_columns(
            ["product_category", "star_rating", "total_votes"]
        )
        grouped = ds.groupby("product_category").aggregate(
            data.Count(), data.Mean("star_rating"), data.Max("total_votes")
        )
        return (
            grouped.to_pandas(),
            ds.union(ds).count(),
            ds.limit(7).count(),
            ds.filter(lambda row: row["star_rating"] >= 4).count(),
        )

    engine.engine = "local"
    local = run()
    engine.engine = "ray"
    on_ray = run()
    pd.testing.assert_frame_equal(local[0], on_ray[0])
    assert local[1:] == on_ray[1:]


def test_a_failing_write_on_ray_leaves_nothing(ray_cluster, reviews, tmp_path, engine):
    engine.engine = "ray"

    def broken(df):
        if df["total_votes"].max() > 50:
            raise ValueError("no votes above 50")
        return df

    target = tmp_path / "out"
    ds = data.read_parquet(str(reviews)).map_batches(broken)
    with pytest.raises(Exception, match="no votes above 50"):
        ds.write_parquet(str(target))
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".headrace-tmp")]


def test_the_engine_comes_from_the_setting(monkeypatch):
    monkeypatch.setenv("HEADRACE_DATA_ENGINE", "ray")
    context = DataContext()
    assert context.engine == "ray"
    assert isinstance(get_engine(context), RayEngine)
    context.engine = "ray://127.0.0.1:10001"
    assert get_engine(context).address == "ray://127.0.0.1:10001"
    context.engine = "spark"
    with pytest.raises(DatasetError, match="'spark'") as caught:
        get_engine(context)
    assert "ray://head:10001" in str(caught.value)


def test_the_docs_snippet_selects_ray(engine):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if '= "ray"' in b]
    exec(snippet, {})
    assert isinstance(get_engine(), RayEngine) and get_engine().address is None
