"""FeatureStore: idempotent writes on both stores, compaction while a writer appends, SQL over
groups and Parquet archives, history and counts, and the errors users see."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.errors import FeatureStoreError
from headrace.features import FeatureGroup, FeatureStore, SQLiteOnlineStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)
GROUP = FeatureGroup(
    "clicks",
    "user_id",
    "ts",
    {"user_id": pa.int64(), "ts": pa.timestamp("us", tz="UTC"), "n": pa.int64()},
    description="clicks per user",
)


def rows(ids, start_hour=0, n=None) -> pa.Table:
    ids = list(ids)
    return pa.table(
        {
            "user_id": ids,
            "ts": [T0 + timedelta(hours=start_hour + i % 72) for i in range(len(ids))],
            "n": n if n is not None else ids,
        }
    )


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "features")
    s.register(GROUP)
    yield s
    s.close()


def test_write_lands_offline_partitioned_and_online(store, tmp_path):
    report = store.write("clicks", rows(range(100)))
    assert report.rows == 100 and report.online_entities == 100 and report.offline_version == 0
    assert (tmp_path / "features" / "online.sqlite").exists()
    days = sorted(p.name for p in (tmp_path / "features" / "clicks").iterdir() if "=" in p.name)
    assert days == ["date=2024-01-01", "date=2024-01-02", "date=2024-01-03"]
    assert store.row_counts("clicks") == {
        "offline_rows": 100,
        "offline_files": 3,
        "online_entities": 100,
    }
    assert store.get_online("clicks", [99])[0]["n"] == 99
    assert store.history("clicks")[0]["operation"] == "WRITE"


def test_same_writer_and_sequence_twice_is_one_copy(store):
    batch = rows(range(10))
    first = store.write("clicks", batch, writer="ingest-1", sequence=7)
    again = store.write("clicks", batch, writer="ingest-1", sequence=7)
    assert not first.offline_skipped and again.offline_skipped and again.online_skipped
    assert store.row_counts("clicks")["offline_rows"] == 10
    assert len(store.history("clicks")) == 1
    assert store.offline.applied_sequence("clicks", "ingest-1") == 7
    assert store.online.applied_sequence("clicks", "ingest-1") == 7
    # another writer is independent; a new sequence is applied
    store.write("clicks", batch, writer="ingest-2", sequence=7)
    store.write("clicks", rows(range(10, 15)), writer="ingest-1", sequence=8)
    assert store.row_counts("clicks")["offline_rows"] == 25


def test_retry_after_a_crash_between_the_two_stores_completes_the_write(store):
    batch = rows([1, 2], n=[10, 20])
    g = store.group("clicks")
    # the first attempt committed offline, then the process died before the online write
    store.offline.append(g, g.conform(batch), writer="w", sequence=1)
    assert store.get_online("clicks", [1]) == [None]
    retry = store.write("clicks", batch, writer="w", sequence=1)
    assert retry.offline_skipped and not retry.online_skipped
    assert store.row_counts("clicks")["offline_rows"] == 2
    assert [r["n"] for r in store.get_online("clicks", [1, 2])] == [10, 20]


def test_a_failed_online_write_leaves_nothing_half_applied(store, tmp_path):
    class Failing(SQLiteOnlineStore):
        def write(self, group, table, *, writer, sequence):
            raise ConnectionError("online store down")

    flaky = FeatureStore(tmp_path / "features", online=Failing(tmp_path / "other.sqlite"))
    flaky.register(GROUP)
    with pytest.raises(ConnectionError):
        flaky.write("clicks", rows([5]), writer="w", sequence=3)
    retry = store.write("clicks", rows([5]), writer="w", sequence=3)  # same root, healthy
    # the online store is written first: its failure left the offline table untouched too
    assert not retry.online_skipped and not retry.offline_skipped
    assert store.get_online("clicks", [5])[0]["n"] == 5
    assert store.row_counts("clicks")["offline_rows"] == 1


def test_compaction_while_a_writer_appends_loses_and_duplicates_nothing(store):
    batches, per_batch = 40, 25
    store.write("clicks", rows(range(per_batch)))
    errors: list[BaseException] = []

    def append():
        try:
            for b in range(1, batches):
                ids = range(b * per_batch, (b + 1) * per_batch)
                store.write("clicks", rows(ids, start_hour=b), writer="stream", sequence=b)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    reports = []
    while writer.is_alive() or not reports:
        reports.append(store.compact("clicks", target_size=1 << 20))
    writer.join()
    assert not errors, errors
    reports.append(store.compact("clicks", target_size=1 << 20))
    assert sum(r.files_removed for r in reports) > 0
    stats = store.query("SELECT count(*) AS n, count(DISTINCT user_id) AS u FROM clicks")
    assert stats.to_pylist() == [{"n": batches * per_batch, "u": batches * per_batch}]
    assert store.offline.applied_sequence("clicks", "stream") == batches - 1
    assert store.row_counts("clicks")["offline_files"] <= 3  # one file per day partition
    assert any(h["operation"] == "OPTIMIZE" for h in store.history("clicks"))


def test_vacuum_only_removes_files_older_than_the_retention(store, tmp_path):
    for b in range(4):
        store.write("clicks", rows(range(b * 10, b * 10 + 10)))
    table_dir = tmp_path / "features" / "clicks"

    def parquet_files():
        return {p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}

    before = parquet_files()
    report = store.compact("clicks")
    assert report.files_removed == len(before) and report.files_vacuumed == []
    assert before <= parquet_files()  # replaced files stay for readers of older versions
    later = store.compact("clicks", now=datetime.now(UTC) + timedelta(hours=169))
    assert len(later.files_vacuumed) == len(before)
    assert not (before & parquet_files())
    assert store.row_counts("clicks")["offline_rows"] == 40
    with pytest.raises(FeatureStoreError, match="below 1 hour"):
        store.compact("clicks", vacuum_retention_hours=0)


def test_query_over_groups_and_a_registered_parquet_folder(store, tmp_path):
    store.register(
        FeatureGroup(
            "profiles",
            "user_id",
            "ts",
            {"user_id": pa.int64(), "ts": pa.timestamp("us"), "country": pa.string()},
        )
    )
    store.write("clicks", rows([1, 2, 3], n=[5, 6, 7]))
    store.write(
        "profiles",
        pa.table({"user_id": [1, 2], "ts": [T0, T0], "country": ["fr", "de"]}),
    )
    archive = tmp_path / "archive"
    for day, ids in (("2024-01-01", [1, 2]), ("2024-01-02", [3])):
        folder = archive / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": ids, "raw": ["x"] * len(ids)}), folder / "p.parquet")
    store.register_parquet("raw_events", archive)
    out = store.query(
        """
        SELECT c.user_id, c.n, p.country, r.day
        FROM clicks c
        LEFT JOIN profiles p USING (user_id)
        JOIN raw_events r USING (user_id)
        ORDER BY c.user_id
        """
    )
    assert out.to_pylist() == [
        {"user_id": 1, "n": 5, "country": "fr", "day": datetime(2024, 1, 1).date()},
        {"user_id": 2, "n": 6, "country": "de", "day": datetime(2024, 1, 1).date()},
        {"user_id": 3, "n": 7, "country": None, "day": datetime(2024, 1, 2).date()},
    ]
    glob = store.query("SELECT count(*) AS c FROM raw_events")
    assert glob.column("c").to_pylist() == [3]
    store.register_parquet("one_day", f"file://{archive}/day=2024-01-02/*.parquet")
    assert store.query("SELECT user_id FROM one_day").column(0).to_pylist() == [3]


def test_query_and_parquet_errors(store, tmp_path):
    with pytest.raises(FeatureStoreError, match="feature groups \\['clicks'\\]"):
        store.query("SELECT * FROM nowhere")
    with pytest.raises(FeatureStoreError, match="a feature group already has that name"):
        store.register_parquet("clicks", tmp_path)
    with pytest.raises(FeatureStoreError, match="not a valid identifier"):
        store.register_parquet("raw events", tmp_path)


def test_write_errors_name_the_group_and_column(store):
    with pytest.raises(FeatureStoreError, match=r"'clicks'.*column 'n' has type string"):
        store.write("clicks", pa.table({"user_id": [1], "ts": [T0], "n": ["many"]}))
    with pytest.raises(FeatureStoreError, match=r"'clicks'.*no column 'ts'"):
        store.write("clicks", pa.table({"user_id": [1], "n": [1]}))
    with pytest.raises(FeatureStoreError, match=r"'unknown'.*not registered"):
        store.write("unknown", rows([1]))
    with pytest.raises(FeatureStoreError, match="together"):
        store.write("clicks", rows([1]), writer="w")
    with pytest.raises(FeatureStoreError, match="not an integer >= 0"):
        store.write("clicks", rows([1]), writer="w", sequence=-1)
    assert store.row_counts("clicks")["offline_rows"] == 0


def test_registration_rules(store, tmp_path):
    assert store.register(GROUP) is GROUP  # the same definition again is fine
    other = FeatureGroup(
        "clicks", "user_id", "ts", {"user_id": pa.int64(), "ts": pa.timestamp("us"), "m": pa.int8()}
    )
    with pytest.raises(FeatureStoreError, match="already registered"):
        store.register(other)
    assert list(store.groups) == ["clicks"]
    with pytest.raises(FeatureStoreError, match="not a local folder"):
        FeatureStore("s3://bucket/features")
    path = tmp_path / "elsewhere" / "online.db"
    with FeatureStore(tmp_path / "f2", online=str(path)) as s2:
        s2.register(GROUP)
        s2.write("clicks", rows([1]))
    assert os.path.exists(path)


def test_offline_only_and_online_only_groups(store):
    store.register(
        FeatureGroup(
            "cold",
            "k",
            "ts",
            {"k": pa.int64(), "ts": pa.timestamp("us"), "v": pa.int8()},
            online=False,
        )
    )
    store.register(
        FeatureGroup(
            "hot",
            "k",
            "ts",
            {"k": pa.int64(), "ts": pa.timestamp("us"), "v": pa.int8()},
            offline=False,
        )
    )
    batch = pa.table({"k": [1], "ts": [T0], "v": [3]})
    cold, hot = store.write("cold", batch), store.write("hot", batch)
    assert cold.online_entities == 0 and cold.offline_version == 0
    assert hot.offline_version is None and hot.online_entities == 1
    assert store.row_counts("hot") == {"offline_rows": 0, "offline_files": 0, "online_entities": 1}
    with pytest.raises(FeatureStoreError, match="no offline table"):
        store.get_historical(pa.table({"k": [1], "event_timestamp": [T0]}), ["hot:v"])
    assert store.query("SELECT v FROM cold").column(0).to_pylist() == [3]


def test_scheduled_compaction_function(store, tmp_path):
    from headrace.features.jobs import compact

    for b in range(3):
        store.write("clicks", rows([b]))
    event = {
        "group": "clicks",
        "features": str(tmp_path / "features"),
        "online_store": "",
        "schedule": "compact-clicks",
        "period": 1,
        "vacuum_retention_hours": 24,
    }
    result = compact(event, None)
    assert result["files_removed"] == 3 and result["files_added"] == 1
    assert store.row_counts("clicks") == {
        "offline_rows": 3,
        "offline_files": 1,
        "online_entities": 3,
    }


def test_a_group_with_undeclared_key_types_round_trips(store, tmp_path):
    store.register(
        FeatureGroup("minutes", "network", "window_end", {"tx_count": pa.int64()}, description="")
    )
    batch = pa.table({"network": ["btc", "eth"], "window_end": [T0, T0], "tx_count": [5, 7]})
    store.write("minutes", batch)
    assert [r["tx_count"] for r in store.get_online("minutes", ["eth", "btc"])] == [7, 5]
    # a fresh store on the same root reads before it writes: the types come from the tables
    with FeatureStore(tmp_path / "features") as again:
        again.register(FeatureGroup("minutes", "network", "window_end", {"tx_count": pa.int64()}))
        assert again.get_online("minutes", ["btc"])[0]["tx_count"] == 5
        rows_ = pa.table({"network": ["eth"], "event_timestamp": [T0 + timedelta(seconds=1)]})
        assert again.get_historical(rows_, ["minutes:tx_count"]).column(2).to_pylist() == [7]
