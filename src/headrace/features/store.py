"""`FeatureStore`: feature groups written once to an offline Delta table and an online store,
read back online by entity key, as point-in-time training sets, and with SQL.

A write goes to the offline table first, then the online store. With (writer, sequence) each
side records the sequence atomically with the rows and skips a batch it already holds, so a
retry after a crash anywhere in between completes the write without duplicating it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from headrace.errors import FeatureStoreError
from headrace.features.compaction import CompactionReport, compact
from headrace.features.group import FeatureGroup
from headrace.features.historical import GroupSelection, parse_feature_refs, point_in_time_join
from headrace.features.offline import DeltaOfflineStore
from headrace.features.online import EPOCH, OnlineStore, normalise_keys, writer_args
from headrace.features.online_redis import RedisOnlineStore
from headrace.features.online_sqlite import SQLiteOnlineStore
from headrace.features.query import check_view_name, run_sql


@dataclass
class WriteReport:
    """What `FeatureStore.write` did with one batch."""

    group: str
    rows: int
    offline_version: int | None = None  # the Delta version committed, None if not written
    offline_skipped: bool = False  # (writer, sequence) already in the offline table
    online_entities: int = 0  # entities sent to the online store (newest row of each)
    online_skipped: bool = False  # (writer, sequence) already in the online store
    seconds: float = 0.0


def open_online_store(online: OnlineStore | str | None, root: str, local: bool) -> OnlineStore:
    """The online store `online=` names: an `OnlineStore` as given, a `redis://` URL, a SQLite
    path, or (None) `<root>/online.sqlite` when the root is a local folder."""
    if online is None:
        if not local:
            raise FeatureStoreError(
                f"feature store {root!r}",
                "the default online store is a SQLite file under the root, which is not a "
                "local folder",
                "pass online='redis://host:6379/0' or a local SQLite path",
            )
        return SQLiteOnlineStore(os.path.join(root, "online.sqlite"))
    if isinstance(online, str):
        if online.startswith(("redis://", "rediss://", "unix://")):
            return RedisOnlineStore(online)
        return SQLiteOnlineStore(online)
    if not isinstance(online, OnlineStore):
        raise FeatureStoreError(
            f"feature store {root!r}",
            f"online={online!r} is not an online store",
            "pass an OnlineStore, a redis:// URL or a SQLite file path",
        )
    return online


class FeatureStore:
    """Feature groups over an offline Delta root and an online store.

    `root` is a folder or fsspec URL holding one Delta table per group; `online` is an
    `OnlineStore`, a `redis://` URL or a SQLite path (default: `<root>/online.sqlite`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        online: OnlineStore | str | None = None,
        *,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.offline = DeltaOfflineStore(root, storage_options)
        self.online: OnlineStore = open_online_store(
            online, self.offline.root, self.offline.is_local
        )
        self._groups: dict[str, FeatureGroup] = {}
        self._parquet: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"FeatureStore({self.offline.root!r}, online={self.online!r})"

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.online.close()

    # -- groups ------------------------------------------------------------------------------

    def register(self, group: FeatureGroup) -> FeatureGroup:
        """Add a group (registering an identical one again is a no-op)."""
        if not isinstance(group, FeatureGroup):
            raise FeatureStoreError(
                "feature store", f"{group!r} is not a FeatureGroup", "build one with FeatureGroup"
            )
        known = self._groups.get(group.name)
        if known is not None and known != group:
            raise FeatureStoreError(
                f"feature group {group.name!r}",
                "a different group with this name is already registered",
                "give the new group another name",
            )
        if group.name in self._parquet:
            raise FeatureStoreError(
                f"feature group {group.name!r}",
                "a parquet source is registered under this name",
                "give the group another name",
            )
        if group.online:
            self.online.ensure_group(group)
        self._groups[group.name] = group
        return group

    @property
    def groups(self) -> dict[str, FeatureGroup]:
        return dict(self._groups)

    def group(self, group: FeatureGroup | str) -> FeatureGroup:
        """The registered group of that name (or that group, once registered)."""
        name = group.name if isinstance(group, FeatureGroup) else group
        found = self._groups.get(name)
        if found is None:
            raise FeatureStoreError(
                f"feature group {name!r}",
                "it is not registered with this feature store",
                f"call store.register(group) first; registered: {sorted(self._groups)}",
            )
        return found

    # -- writes ------------------------------------------------------------------------------

    def write(
        self,
        group: FeatureGroup | str,
        table: Any,
        *,
        writer: str | None = None,
        sequence: int | None = None,
    ) -> WriteReport:
        """Validate `table` against the group and write it offline and online.

        With `writer` and `sequence` the write is idempotent: a batch whose sequence this
        writer already wrote is skipped on each store (sequences of a writer must grow).
        """
        started = time.perf_counter()
        g = self.group(group)
        writer_args(writer, sequence, g.name)
        batch = g.conform(table)
        report = WriteReport(g.name, batch.num_rows)
        if batch.num_rows:
            # online first: readers of the newest values wait for it, not for the Delta commit
            # (each store skips a batch it has, so a retry after a failure in between is safe)
            if g.online:
                sent = self.online.write(g, batch, writer=writer, sequence=sequence)
                report.online_entities = sent or 0
                report.online_skipped = sent is None
            if g.offline:
                version = self.offline.append(g, batch, writer=writer, sequence=sequence)
                report.offline_version = version
                report.offline_skipped = version is None
        report.seconds = time.perf_counter() - started
        return report

    # -- reads -------------------------------------------------------------------------------

    def get_online(self, group: FeatureGroup | str, keys: Any) -> list[dict[str, Any] | None]:
        """The newest record of each key (dicts, tuples, or scalars for one-key groups) as
        {feature: value, <event time column>: datetime}, None where there is none or it is
        older than the group's TTL."""
        g = self._groups.get(group) if isinstance(group, str) else group
        if g is None or self._groups.get(g.name) is not g:
            g = self.group(group)
        if not g.online:
            raise FeatureStoreError(
                f"feature group {g.name!r}",
                "it is not kept online (online=False)",
                "read it with get_historical or query, or set online=True",
            )
        if type(keys) is list and len(keys) == 1 and type(keys[0]) in (int, str):
            normal = [(keys[0],)] if len(g.entity_keys) == 1 else normalise_keys(g, keys)
        else:
            normal = normalise_keys(g, keys)
        records = self.online.read(g, normal)
        names = g.feature_names
        ttl = g.ttl_us
        cutoff = None if ttl is None else time.time_ns() // 1000 - ttl
        out: list[dict[str, Any] | None] = []
        for record in records:
            if record is None or (cutoff is not None and record[-1] < cutoff):
                out.append(None)
                continue
            values = dict(zip(names, record, strict=False))
            values[g.event_time] = EPOCH + timedelta(microseconds=record[-1])
            out.append(values)
        return out

    def get_historical(
        self,
        entity_rows: Any,
        features: Sequence[str],
        *,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
    ) -> pa.Table:
        """Point-in-time correct features for each entity row (see headrace.features.historical).

        `features` are "group:feature" or "group:*" references; the result holds every input
        column, in input order, then one column per feature ("group__feature" when
        `full_feature_names`).
        """
        wanted = parse_feature_refs(features, self._groups)
        selections = []
        for name, feats in wanted.items():
            g = self._groups[name]
            if not g.offline:
                raise FeatureStoreError(
                    f"feature group {name!r}",
                    "it has no offline table (offline=False)",
                    "set offline=True to build training sets from it",
                )
            selections.append(GroupSelection(g, feats, self.offline.scan_source(g)))
        return point_in_time_join(
            entity_rows,
            selections,
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
        )

    def query(self, sql: str) -> pa.Table:
        """Run DuckDB SQL over every offline group (a view per group name) and the parquet
        sources registered with `register_parquet`."""
        datasets = {name: self.offline.dataset(g) for name, g in self._groups.items() if g.offline}
        return run_sql(sql, datasets, self._parquet)

    def register_parquet(self, name: str, glob_or_url: str | os.PathLike[str]) -> None:
        """Make Parquet files (a folder, a glob, a file; local or fsspec URL) queryable as
        `name`, with hive partitioning (`key=value` folders become columns)."""
        check_view_name(name, self._groups)
        self._parquet[name] = str(glob_or_url)

    # -- maintenance -------------------------------------------------------------------------

    def compact(
        self,
        group: FeatureGroup | str,
        *,
        target_size: int | None = None,
        vacuum_retention_hours: float = 168,
        now: datetime | None = None,
    ) -> CompactionReport:
        """Compact the group's offline table and vacuum files older than the retention (safe
        while writers append; see headrace.features.compaction)."""
        g = self.group(group)
        return compact(
            self.offline,
            g.name,
            target_size=target_size,
            vacuum_retention_hours=vacuum_retention_hours,
            now=now,
        )

    def history(self, group: FeatureGroup | str, limit: int | None = None) -> list[dict]:
        """The Delta commit history of the group's offline table, newest first."""
        return self.offline.history(self.group(group).name, limit)

    def row_counts(self, group: FeatureGroup | str) -> dict[str, int]:
        """{"offline_rows", "offline_files", "online_entities"} of the group."""
        g = self.group(group)
        table = self.offline.table(g.name) if g.offline else None
        return {
            "offline_rows": 0 if table is None else table.count(),
            "offline_files": 0 if table is None else len(table.file_uris()),
            "online_entities": self.online.count(g.name) if g.online else 0,
        }


def open_app_store(settings: Any, app: Any, objects: Any = None) -> FeatureStore:
    """The feature store an app declares: its groups registered, and each pipeline's archive
    queryable as `{pipeline}_archive` ('-' read as '_'). `objects` is the object store the
    archives are in (default: the settings' storage)."""
    if objects is None:
        from headrace.storage import ObjectStore

        objects = ObjectStore(settings.storage_url)
    store = FeatureStore(settings.features_url, online=settings.online_store or None)
    for group in app.feature_groups.values():
        store.register(group)
    for pipe in app.pipelines.values():
        for sink in pipe.archives():
            root = objects.bucket(sink.bucket, create=True).url(sink.prefix.rstrip("/"))
            store.register_parquet(f"{pipe.name}_archive".replace("-", "_"), root)
    return store
