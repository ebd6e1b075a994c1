"""Feature store: feature groups kept online (newest record per entity, SQLite or Redis) and
offline (a Delta Lake table per group), read by key, as point-in-time training sets and with SQL.

    store = FeatureStore("features/")
    store.register(FeatureGroup("user_stats", "user_id", "ts", {...}, ttl=timedelta(days=30)))
    store.write("user_stats", batch, writer="stream-1", sequence=42)
    store.get_online("user_stats", [42])
    store.get_historical(entity_rows, ["user_stats:*"])
"""

from headrace.features.compaction import CompactionReport
from headrace.features.group import FeatureGroup
from headrace.features.offline import DeltaOfflineStore
from headrace.features.online import OnlineStore
from headrace.features.online_redis import RedisOnlineStore
from headrace.features.online_sqlite import SQLiteOnlineStore
from headrace.features.store import FeatureStore, WriteReport

__all__ = [
    "CompactionReport",
    "DeltaOfflineStore",
    "FeatureGroup",
    "FeatureStore",
    "OnlineStore",
    "RedisOnlineStore",
    "SQLiteOnlineStore",
    "WriteReport",
]
