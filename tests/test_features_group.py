"""FeatureGroup: validation of the definition and of the batches written to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from headrace.errors import FeatureStoreError
from headrace.features import FeatureGroup

SCHEMA = {
    "user_id": pa.int64(),
    "ts": pa.timestamp("ns"),
    "clicks": pa.int32(),
    "score": pa.float32(),
}


def group(**overrides) -> FeatureGroup:
    args = dict(name="user_stats", entity_keys="user_id", event_time="ts", features=SCHEMA)
    args.update(overrides)
    return FeatureGroup(**args)


def test_definition_normalises_keys_and_storage_schema():
    g = group(ttl=timedelta(hours=1))
    assert g.entity_keys == ("user_id",)
    assert g.feature_names == ("clicks", "score")
    assert g.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert g.schema.field("score").type == pa.float32()
    assert g.ttl_us == 3_600_000_000
    schema_form = group(features=pa.schema(list(SCHEMA.items())))
    assert schema_form.schema == g.schema


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"name": "user-stats"}, "not a valid identifier"),
        ({"entity_keys": ["user_id", "user_id"]}, "repeat"),
        ({"event_time": "clicks"}, "has type int32"),
        ({"features": {**SCHEMA, "date": pa.date32()}}, "reserved"),
        ({"features": {"user_id": pa.int64(), "ts": pa.timestamp("us")}}, "no feature columns"),
        ({"features": {**SCHEMA, "tags": pa.struct([("a", pa.int8())])}}, "cannot hold"),
        ({"features": {**SCHEMA, "user_id": pa.float64()}}, "entity key 'user_id' has type"),
        ({"features": {**SCHEMA, "__x": pa.int8()}}, "not a valid name"),
        ({"features": {**SCHEMA, "score": "float"}}, "not a pyarrow DataType"),
        ({"ttl": timedelta(0)}, "not a positive timedelta"),
        ({"online": False, "offline": False}, "nothing would store it"),
    ],
)
def test_invalid_definitions_say_what_is_wrong(overrides, words):
    with pytest.raises(FeatureStoreError, match=words) as info:
        group(**overrides)
    assert "feature group" in str(info.value)


def test_conform_casts_orders_and_drops_extra_columns():
    g = group()
    naive = datetime(2024, 1, 1, 12, 0, 0, 123456)
    batch = pa.table(
        {
            "extra": ["x"],
            "score": pa.array([1.5], pa.float64()),
            "clicks": pa.array([3], pa.int64()),
            "ts": pa.array([naive], pa.timestamp("us")),
            "user_id": pa.array([7], pa.int32()),
        }
    )
    out = g.conform(batch)
    assert out.schema.names == ["user_id", "ts", "clicks", "score"]
    assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert out.column("ts")[0].as_py() == naive.replace(tzinfo=UTC)  # naive is read as UTC
    assert out.column("clicks").type == pa.int32()


def test_conform_truncates_nanoseconds_and_keeps_zoned_instants():
    g = group()
    ns = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="Europe/Paris"))
    out = g.conform(pa.table({"user_id": [1], "ts": ns, "clicks": [1], "score": [1.0]}))
    assert out.column("ts").cast(pa.int64())[0].as_py() == 1_700_000_000_123_456


@pytest.mark.parametrize(
    ("batch", "words"),
    [
        ({"user_id": [1], "ts": [datetime(2024, 1, 1)], "clicks": [1]}, "no column 'score'"),
        (
            {"user_id": [1], "ts": [datetime(2024, 1, 1)], "clicks": ["many"], "score": [1.0]},
            "column 'clicks' has type string and cannot be cast to int32",
        ),
        (
            {"user_id": [1], "ts": [datetime(2024, 1, 1)], "clicks": [2**40], "score": [1.0]},
            "column 'clicks'",
        ),
        (
            {
                "user_id": [None, 2],
                "ts": [datetime(2024, 1, 1)] * 2,
                "clicks": [1, 2],
                "score": [1.0, 2.0],
            },
            "column 'user_id' has 1 null",
        ),
    ],
)
def test_conform_errors_name_group_and_column(batch, words):
    with pytest.raises(FeatureStoreError, match=words) as info:
        group().conform(pa.table(batch))
    assert "'user_stats'" in str(info.value)


def test_keys_and_event_time_may_be_left_out_of_features():
    g = FeatureGroup("minutes", ["network", "shard"], "window_end", {"tx_count": pa.int64()})
    assert g.undeclared_keys == ("network", "shard")
    assert g.schema.field("window_end").type == pa.timestamp("us", tz="UTC")
    assert g.feature_names == ("tx_count",)
    batch = pa.table(
        {
            "network": pa.array(["btc"], pa.large_string()),
            "shard": pa.array([3], pa.int16()),
            "window_end": [datetime(2024, 1, 1)],
            "tx_count": [5],
        }
    )
    out = g.conform(batch)
    assert out.schema.field("network").type == pa.string()
    assert out.schema.field("shard").type == pa.int64()
    assert g.undeclared_keys == ()  # the first batch fixed the key types
    with pytest.raises(FeatureStoreError, match=r"column 'shard'.*cannot be cast to int64"):
        g.conform(batch.set_column(1, "shard", pa.array(["x"])))
    other = FeatureGroup("minutes2", "network", "window_end", {"tx_count": pa.int64()})
    with pytest.raises(FeatureStoreError, match="entity key 'network' has type double"):
        other.conform(batch.set_column(0, "network", pa.array([1.5])))
