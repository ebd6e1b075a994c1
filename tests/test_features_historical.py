"""Point-in-time joins: the latest value at or before each entity row, never a later one, TTL,
several groups and entities, input order and columns kept, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from headrace.errors import FeatureStoreError
from headrace.features import FeatureGroup, FeatureStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "features")
    s.register(
        FeatureGroup(
            "users",
            "user_id",
            "ts",
            {
                "user_id": pa.int64(),
                "ts": pa.timestamp("us", tz="UTC"),
                "age": pa.int32(),
                "score": pa.float64(),
            },
        )
    )
    s.register(
        FeatureGroup(
            "items",
            "item_id",
            "ts",
            {"item_id": pa.string(), "ts": pa.timestamp("us", tz="UTC"), "price": pa.float64()},
            ttl=timedelta(hours=2),
        )
    )
    s.write(
        "users",
        pa.table(
            {
                "user_id": [1, 1, 1, 2],
                "ts": [at(10), at(20), at(30), at(15)],
                "age": [30, 31, 32, 40],
                "score": [0.1, 0.2, 0.3, 0.4],
            }
        ),
    )
    s.write("items", pa.table({"item_id": ["a", "a"], "ts": [at(10), at(20)], "price": [1.0, 2.0]}))
    yield s
    s.close()


def test_point_in_time_values_for_one_group(store):
    rows = pa.table(
        {
            "user_id": [1, 1, 1, 1, 1, 2, 3],
            "event_timestamp": [at(5), at(10), at(19.99), at(20), at(99), at(14), at(50)],
        }
    )
    out = store.get_historical(rows, ["users:age", "users:score"])
    # before any value -> null; exactly at the value's time -> visible; between -> the earlier
    # one, never the later; after the last -> the last; no value yet / unknown entity -> null
    assert out.column("age").to_pylist() == [None, 30, 30, 31, 32, None, None]
    assert out.column("score").to_pylist() == [None, 0.1, 0.1, 0.2, 0.3, None, None]
    assert out.column_names == ["user_id", "event_timestamp", "age", "score"]


def test_ttl_nulls_values_older_than_ttl(store):
    rows = pa.table(
        {
            "item_id": ["a", "a", "a", "a", "b"],
            "event_timestamp": [at(11), at(12), at(12.001), at(21), at(21)],
        }
    )
    out = store.get_historical(rows, ["items:price"])
    # ttl 2 h: age exactly 2 h is still valid, a moment more is not
    assert out.column("price").to_pylist() == [1.0, 1.0, None, 2.0, None]


def test_several_groups_keep_input_order_and_columns(store):
    rows = pd.DataFrame(
        {
            "label": [1, 0, 1, 0],
            "user_id": [2, 1, 1, 9],
            "item_id": ["a", "a", "b", "a"],
            "when": pd.to_datetime([at(16), at(21), at(31), at(10)]).astype("datetime64[ns, UTC]"),
        }
    )
    out = store.get_historical(rows, ["users:*", "items:price"], timestamp_column="when")
    assert out.column_names == ["label", "user_id", "item_id", "when", "age", "score", "price"]
    assert out.column("label").to_pylist() == [1, 0, 1, 0]
    assert out.column("user_id").to_pylist() == [2, 1, 1, 9]
    assert out.column("age").to_pylist() == [40, 31, 32, None]
    assert out.column("price").to_pylist() == [None, 2.0, None, 1.0]  # 16h: 6h old > ttl
    assert out.column("when").type == pa.timestamp("ns", tz="UTC")  # input types untouched


def test_naive_and_polars_entity_rows(store):
    rows = pl.DataFrame(
        {"user_id": [1, 1], "event_timestamp": [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 9)]}
    )
    out = store.get_historical(rows, ["users:age"])  # naive times are read as UTC
    assert out.column("age").to_pylist() == [30, None]


def test_feature_name_collisions_and_full_names(store):
    rows = pa.table({"user_id": [1], "age": [5], "event_timestamp": [at(40)]})
    with pytest.raises(FeatureStoreError, match="'age' would appear twice"):
        store.get_historical(rows, ["users:age"])
    out = store.get_historical(rows, ["users:age"], full_feature_names=True)
    assert out.column("users__age").to_pylist() == [32]


def test_group_without_offline_rows_gives_nulls(store):
    store.register(
        FeatureGroup(
            "empty",
            "user_id",
            "ts",
            {"user_id": pa.int64(), "ts": pa.timestamp("us"), "z": pa.int8()},
        )
    )
    out = store.get_historical(pa.table({"user_id": [1], "event_timestamp": [at(1)]}), ["empty:z"])
    assert out.column("z").to_pylist() == [None]


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (["nope:x"], "unknown feature group 'nope'"),
        (["users:height"], "has no feature 'height'"),
        (["users"], "not a feature reference"),
        ([], "no features"),
    ],
)
def test_bad_feature_references(store, features, words):
    rows = pa.table({"user_id": [1], "event_timestamp": [at(1)]})
    with pytest.raises(FeatureStoreError, match=words):
        store.get_historical(rows, features)


def test_bad_entity_rows(store):
    with pytest.raises(FeatureStoreError, match="no timestamp column 'event_timestamp'"):
        store.get_historical(pa.table({"user_id": [1], "t": [at(1)]}), ["users:age"])
    with pytest.raises(FeatureStoreError, match="no column 'user_id'"):
        store.get_historical(pa.table({"event_timestamp": [at(1)]}), ["users:age"])
    with pytest.raises(FeatureStoreError, match="has type string"):
        store.get_historical(pa.table({"user_id": [1], "event_timestamp": ["x"]}), ["users:age"])


@pytest.mark.parametrize("parallel_from_rows", [0, 10**9], ids=["parallel", "serial"])
def test_matches_a_brute_force_reference_on_random_data(tmp_path, monkeypatch, parallel_from_rows):
    """Many entities, ties between feature and entity times, composite keys, TTL: every row
    checked against a direct scan (rows put back in order by threads, and without)."""
    from headrace.features import historical

    monkeypatch.setattr(historical, "_PARALLEL_TAKE_ROWS", parallel_from_rows)
    rng = np.random.default_rng(3)
    s = FeatureStore(tmp_path / "random")
    ttl = timedelta(hours=30)
    s.register(
        FeatureGroup(
            "pairs",
            ["a", "b"],
            "ts",
            {"a": pa.int32(), "b": pa.string(), "ts": pa.timestamp("us"), "v": pa.int64()},
            ttl=ttl,
        )
    )
    n_feat, n_rows = 400, 600
    fa = rng.integers(0, 5, n_feat)
    fb = rng.choice(["x", "y", "z"], n_feat)
    # whole hours, each (a, b, hour) once: ties with the entity rows' times are common
    hours = rng.permutation(100 * 15)[:n_feat] % 100
    fv = np.arange(n_feat)
    feats = pa.table(
        {"a": fa.astype(np.int32), "b": fb, "ts": [at(int(h)) for h in hours], "v": fv}
    )
    keep = ~pd.DataFrame({"a": fa, "b": fb, "h": hours}).duplicated().to_numpy()
    feats = feats.filter(pa.array(keep))
    s.write("pairs", feats.slice(0, 200))
    s.write("pairs", feats.slice(200))
    ea = rng.integers(0, 6, n_rows)
    eb = rng.choice(["x", "y", "z"], n_rows)
    eh = rng.integers(-5, 110, n_rows)
    rows = pa.table({"a": ea, "b": eb, "event_timestamp": [at(int(h)) for h in eh]})
    got = s.get_historical(rows, ["pairs:v"]).column("v").to_pylist()
    fdf = feats.to_pandas()
    fdf["h"] = (fdf["ts"] - pd.Timestamp(T0)).dt.total_seconds() / 3600
    for i in range(n_rows):
        cand = fdf[(fdf.a == ea[i]) & (fdf.b == eb[i]) & (fdf.h <= eh[i])]
        expected = None
        if len(cand):
            best = cand.loc[cand.h.idxmax()]
            if eh[i] - best.h <= ttl.total_seconds() / 3600:
                expected = int(best.v)
        assert got[i] == expected, (i, ea[i], eb[i], eh[i])
    assert sum(v is not None for v in got) > n_rows // 4  # the check saw real matches


def test_joins_from_several_threads_do_not_see_each_others_tables(store):
    """Joins share one DuckDB database per process, each on its own cursor with temporary
    views: concurrent joins over different groups must each read their own."""
    from concurrent.futures import ThreadPoolExecutor

    users = pa.table({"user_id": [1, 1, 2], "event_timestamp": [at(25), at(35), at(16)]})
    items = pa.table({"item_id": ["a", "a"], "event_timestamp": [at(11), at(21)]})
    expected_users = store.get_historical(users, ["users:age"]).column("age").to_pylist()
    expected_items = store.get_historical(items, ["items:price"]).column("price").to_pylist()
    assert expected_users == [31, 32, 40] and expected_items == [1.0, 2.0]

    def join(i: int) -> list:
        if i % 2:
            return store.get_historical(items, ["items:price"]).column("price").to_pylist()
        return store.get_historical(users, ["users:age"]).column("age").to_pylist()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(join, range(40)))
    assert results == [expected_items if i % 2 else expected_users for i in range(40)]
