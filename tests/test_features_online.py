"""Online stores (SQLite and a real Redis, same tests): newest record per entity, newer-only
upserts, idempotent batches, TTL, key forms and value types."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from headrace.errors import FeatureStoreError
from headrace.features import FeatureGroup, FeatureStore, RedisOnlineStore, SQLiteOnlineStore

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _tracked(store):
    store.made = []  # the test's groups, dropped afterwards (unique names: Redis is shared)
    yield store
    for name in store.made:
        store.drop(name)
    store.close()


@pytest.fixture
def sqlite_online(tmp_path):
    yield from _tracked(SQLiteOnlineStore(tmp_path / "online.sqlite"))


@pytest.fixture
def redis_online():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield from _tracked(RedisOnlineStore(REDIS_URL))


@pytest.fixture(params=["sqlite", "redis"])
def online(request):
    return request.getfixturevalue(f"{request.param}_online")


def make_store(tmp_path, online, group: FeatureGroup) -> tuple[FeatureStore, str]:
    store = FeatureStore(tmp_path / "offline", online=online)
    store.register(group)
    online.made.append(group.name)
    return store, group.name


def stats_group(**kwargs) -> FeatureGroup:
    return FeatureGroup(
        f"stats_{uuid.uuid4().hex[:8]}",
        "user_id",
        "ts",
        {"user_id": pa.int64(), "ts": pa.timestamp("us", tz="UTC"), "x": pa.float64()},
        **kwargs,
    )


def batch(ids, hours, xs) -> pa.Table:
    return pa.table({"user_id": ids, "ts": [T0 + timedelta(hours=h) for h in hours], "x": xs})


def xs(store, name, keys):
    return [None if r is None else r["x"] for r in store.get_online(name, keys)]


def test_newest_record_per_entity_within_a_batch(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group())
    # entity 1: newest is hour 5 even though it is not last; entity 2: equal times, later wins
    report = store.write(name, batch([1, 1, 1, 2, 2], [1, 5, 3, 2, 2], [1.0, 5.0, 3.0, 20.0, 21.0]))
    assert report.online_entities == 2
    assert xs(store, name, [1, 2, 3]) == [5.0, 21.0, None]
    record = store.get_online(name, 1)[0]
    assert record["ts"] == T0 + timedelta(hours=5)
    assert online.count(name) == 2


def test_out_of_order_writes_keep_the_newest(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group())
    store.write(name, batch([1, 2], [10, 10], [10.0, 20.0]))
    store.write(name, batch([1, 2], [5, 11], [5.0, 21.0]))  # 1 is older: ignored; 2 is newer
    assert xs(store, name, [1, 2]) == [10.0, 21.0]
    store.write(name, batch([1], [10], [10.5]))  # same event time replaces
    assert xs(store, name, [1]) == [10.5]


def test_a_newer_record_with_nulls_replaces_the_whole_record(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group())
    store.write(name, batch([1], [1], [1.0]))
    store.write(name, batch([1], [2], [None]))
    assert store.get_online(name, [1]) == [{"x": None, "ts": T0 + timedelta(hours=2)}]


def test_idempotent_batches_by_writer_and_sequence(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group())
    first = store.write(name, batch([1], [1], [1.0]), writer="w", sequence=1)
    assert not first.online_skipped and first.online_entities == 1
    # another writer moves the entity on; a retry of w's batch 1 must not bring 1.0 back
    store.write(name, batch([1], [1], [9.0]), writer="v", sequence=1)
    again = store.write(name, batch([1], [1], [1.0]), writer="w", sequence=1)
    assert again.online_skipped and again.offline_skipped
    assert xs(store, name, [1]) == [9.0]
    assert online.applied_sequence(name, "w") == 1
    assert store.write(name, batch([1], [0], [0.0]), writer="w", sequence=0).online_skipped
    store.write(name, batch([1], [2], [2.0]), writer="w", sequence=2)
    assert xs(store, name, [1]) == [2.0]
    assert online.applied_sequence(name, "w") == 2
    assert online.applied_sequence(name, "nobody") is None


def test_ttl_hides_records_older_than_ttl(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group(ttl=timedelta(hours=1)))
    now = datetime.now(UTC)
    store.write(
        name,
        pa.table({"user_id": [1, 2], "ts": [now - timedelta(hours=2), now], "x": [1.0, 2.0]}),
    )
    assert xs(store, name, [1, 2]) == [None, 2.0]


def test_key_forms_and_composite_keys(tmp_path, online):
    g = FeatureGroup(
        f"pairs_{uuid.uuid4().hex[:8]}",
        ["shop", "item"],
        "ts",
        {"shop": pa.string(), "item": pa.int32(), "ts": pa.timestamp("us"), "x": pa.float64()},
    )
    store, name = make_store(tmp_path, online, g)
    store.write(
        name,
        pa.table(
            {
                "shop": ["a:b", "a", "a"],  # a ':' in a key must not collide with another key
                "item": [1, 1, 2],
                "ts": [T0, T0, T0],
                "x": [1.0, 2.0, 3.0],
            }
        ),
    )
    found = xs(store, name, [("a:b", 1), {"shop": "a", "item": 2}, ("a", 1), ("b", 1)])
    assert found == [1.0, 3.0, 2.0, None]
    assert xs(store, name, ("a", 2)) == [3.0]
    with pytest.raises(FeatureStoreError, match="has 1 value"):
        store.get_online(name, [("a",)])
    with pytest.raises(FeatureStoreError, match="no value for entity key 'item'"):
        store.get_online(name, [{"shop": "a"}])
    with pytest.raises(FeatureStoreError, match="single value"):
        store.get_online(name, ["a"])


def test_many_keys_in_one_read(tmp_path, online):
    store, name = make_store(tmp_path, online, stats_group())
    n = 2_500
    store.write(name, batch(list(range(n)), [1] * n, [float(i) for i in range(n)]))
    keys = list(range(n + 10))[::-1]
    assert xs(store, name, keys) == [None if k >= n else float(k) for k in keys]
    assert xs(store, name, [str(7)]) == [7.0]  # keys are cast to the key column's type


def test_value_types_round_trip(tmp_path, online):
    schema = {
        "id": pa.string(),
        "ts": pa.timestamp("ms"),
        "i": pa.int64(),
        "f32": pa.float32(),
        "flag": pa.bool_(),
        "s": pa.string(),
        "raw": pa.binary(),
        "seen": pa.timestamp("us", tz="UTC"),
        "day": pa.date32(),
        "vec": pa.list_(pa.float32()),
        "tags": pa.list_(pa.string()),
    }
    g = FeatureGroup(f"types_{uuid.uuid4().hex[:8]}", "id", "ts", schema)
    store, name = make_store(tmp_path, online, g)
    row = {
        "id": "u1",
        "ts": T0,
        "i": -(2**40),
        "f32": 0.1,
        "flag": False,
        "s": "héllo",
        "raw": b"\x00\xff",
        "seen": T0 + timedelta(microseconds=5),
        "day": date(2024, 2, 29),
        "vec": [0.5, -1.25],
        "tags": ["a", "b:c"],
    }
    nulls = {k: (v if k in ("id", "ts") else None) for k, v in row.items()} | {"id": "u2"}
    store.write(name, pa.Table.from_pylist([row, nulls], schema=pa.schema(list(schema.items()))))
    got, empty = store.get_online(name, ["u1", "u2"])
    expected = {k: v for k, v in row.items() if k != "id"}
    expected["f32"] = pa.scalar(0.1, pa.float32()).as_py()  # the float32 value, exactly
    assert got == expected
    assert empty == {k: None for k in expected} | {"ts": T0}
    assert type(got["flag"]) is bool and type(got["i"]) is int


def test_unknown_and_offline_only_groups(tmp_path, online):
    store, _ = make_store(tmp_path, online, stats_group())
    with pytest.raises(FeatureStoreError, match=r"'nope'.*not registered"):
        store.get_online("nope", [1])
    offline_only = stats_group(online=False)
    store.register(offline_only)
    with pytest.raises(FeatureStoreError, match="not kept online"):
        store.get_online(offline_only.name, [1])


def test_redis_layout_and_expiry(tmp_path, redis_online):
    online = redis_online
    store, name = make_store(tmp_path, online, stats_group(ttl=timedelta(days=1)))
    now = datetime.now(UTC).replace(microsecond=0)
    store.write(name, pa.table({"user_id": [42], "ts": [now], "x": [1.5]}))
    client = online._redis
    stored = client.hgetall(f"headrace:features:{name}:42")
    assert stored == {b"x": b"1.5", b"__event_time": str(int(now.timestamp()) * 10**6).encode()}
    assert 0 < client.pttl(f"headrace:features:{name}:42") <= 86_400_000
    store.write(name, batch([42], [0], [0.0]), writer="w", sequence=3)
    assert client.hget(f"headrace:features:{name}", "w") == b"3"
    online.drop(name)
    assert not list(client.scan_iter(match=f"headrace:features:{name}*"))


def test_sqlite_reads_from_several_threads(tmp_path, sqlite_online):
    online = sqlite_online
    store, name = make_store(tmp_path, online, stats_group())
    store.write(name, batch(list(range(100)), [1] * 100, [float(i) for i in range(100)]))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: xs(store, name, [k])[0], range(100)))
    assert results == [float(i) for i in range(100)]


def test_an_undeclared_key_reads_the_same_as_a_declared_one(tmp_path, online):
    """The key's type is learnt from the first write; reads after it cast keys by that type,
    as they do for a declared key ("42" finds the entity 42)."""
    g = FeatureGroup(
        f"undeclared_{uuid.uuid4().hex[:8]}",
        "user_id",
        "ts",
        {"ts": pa.timestamp("us", tz="UTC"), "x": pa.float64()},
    )
    store, name = make_store(tmp_path, online, g)
    store.write(name, batch([42], [1], [1.5]))
    assert xs(store, name, [42, "42", 7]) == [1.5, 1.5, None]
    assert xs(store, name, ["42"]) == [1.5]
