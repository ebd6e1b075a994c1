"""The default batch and the Arrow-computed row filters give exactly what plain pandas gives on
`pd.read_parquet` of the same file: nulls, float32 constants, emptied blocks, big constants."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from headrace import data


def _both(path, fn):
    expected = fn(pd.read_parquet(path))["id"].tolist()
    got = data.read_parquet(str(path)).map_batches(fn).to_pandas()["id"].tolist()
    return expected, got


def test_null_strings_kept_by_not_equal_as_pandas_keeps_them(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [0, 1, 2, 3], "country": [None, "US", "DE", None]}), path)
    unchanged = 1  # a closure: not recognised, the function runs on the default batch
    filters = [
        lambda df: df[df["country"] != "US"],
        lambda df: df[~(df["country"] == "US")],
        lambda df: df[df["country"] == "US"],
        lambda df: df[df["country"] < "Z"],
        lambda df: df[(df["country"] != "US") & (df["id"] > 0)],
        lambda df: df[df["country"] != "US" * unchanged],
        lambda df: df[~(df["country"] == "US" * unchanged)],
    ]
    for fn in filters:
        expected, got = _both(path, fn)
        assert sorted(got) == sorted(expected), fn
    assert _both(path, filters[0])[0] == [0, 2, 3]


def test_arrow_mask_follows_the_pandas_rule_for_null_strings():
    from headrace.data.rowfilters import apply_filter, row_filter

    table = pa.table({"id": [0, 1, 2, 3], "country": [None, "US", "DE", None]})
    for fn in (
        lambda df: df[df["country"] != "US"],
        lambda df: df[~(df["country"] == "US")],
        lambda df: df[df["country"] == "US"],
        lambda df: df[df["country"] >= "A"],
    ):
        kept = apply_filter(row_filter(fn), table)
        assert kept is not None, "computed with Arrow, not handed to pandas"
        assert kept["id"].to_pylist() == fn(table.to_pandas())["id"].tolist()


def test_float32_column_compared_in_float32_as_numpy_does(tmp_path):
    path = tmp_path / "a.parquet"
    scores = pa.array([0.1, 0.2, 0.3, 0.4], pa.float32())
    pq.write_table(
        pa.table({"id": [0, 1, 2, 3], "score": scores, "n": pa.array([1, 2, 3, 4], pa.int32())}),
        path,
    )
    for fn in (
        lambda df: df[df["score"] == 0.3],
        lambda df: df[df["score"] > 0.3],
        lambda df: df[df["score"] <= 0.2],
        lambda df: df[0.3 == df["score"]],  # noqa: SIM300 (the constant on the left)
        lambda df: df[df["n"] > 2.5],
        lambda df: df[df["n"] != 3],
    ):
        expected, got = _both(path, fn)
        assert got == expected, fn
    assert _both(path, lambda df: df[df["score"] == 0.3]) == ([2], [2])


def test_a_filter_that_empties_blocks_keeps_the_schema_for_a_sort(tmp_path):
    import datetime as dt

    path = tmp_path / "a.parquet"
    days = [dt.date(2024, 1, 1 + k) for k in range(8)]
    pq.write_table(pa.table({"id": list(range(8)), "day": days}), path, row_group_size=4)
    limit = 2  # a closure: runs in pandas as written, the second block comes back empty
    ds = data.read_parquet(str(path)).map_batches(lambda df: df[df["id"] < limit])
    table = ds.sort("id").to_arrow()
    assert table["id"].to_pylist() == [0, 1]
    assert table["day"].to_pylist() == days[:2]
    assert table.schema.field("day").type == pa.date32()
    written = tmp_path / "out"
    ds.write_parquet(str(written))
    assert data.read_parquet(str(written)).sort("id").to_pandas()["id"].tolist() == [0, 1]


def test_constants_beyond_the_column_type_run_as_pandas_runs_them(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(
        pa.table({"id": [0, 1, 2], "i": [1, 2, 3], "small": pa.array([1, 2, 3], pa.int8())}), path
    )
    for fn in (
        lambda df: df[df["i"] < 2**63],
        lambda df: df[df["i"] > -(2**70)],
        lambda df: df[df["small"] < 300],
        lambda df: df[df["small"] != 1000],
    ):
        expected, got = _both(path, fn)
        assert got == expected == [0, 1, 2], fn
    rows = data.from_items([{"id": 0, "i": 1}, {"id": 1, "i": 2}])
    assert rows.map_batches(lambda df: df[df["i"] < 2**63]).take_all() == [
        {"id": 0, "i": 1},
        {"id": 1, "i": 2},
    ]


def test_a_comparison_pandas_refuses_is_a_user_function_error(tmp_path):
    import pytest

    from headrace.data import UserFunctionError

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [0, 1], "d": pa.array([1, None], pa.date32())}), path)
    with pytest.raises(UserFunctionError, match="MapBatches"):
        data.read_parquet(str(path)).map_batches(lambda df: df[df["d"] < "x"]).take_all()
