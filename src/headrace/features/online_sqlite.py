"""`SQLiteOnlineStore`: the embedded online store, one table per feature group in a WAL-mode
SQLite file (primary key: the entity key columns), writer sequences in one more table.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from headrace.errors import FeatureStoreError
from headrace.features.group import FeatureGroup
from headrace.features.online import (
    TIME_COLUMN,
    Key,
    Record,
    column_values,
    decode_list,
    event_times_us,
    newest_per_entity,
    scalar_decoder,
)


def _decoded(decoders: list[Callable[[Any], Any] | None], row: Record) -> Record:
    values = [v if d is None or v is None else d(v) for d, v in zip(decoders, row, strict=False)]
    values.append(row[-1])
    return tuple(values)


def sqlite_decoders(group: FeatureGroup) -> list[Callable[[Any], Any] | None]:
    """Per feature: how to turn the SQLite value back into the Python value (None: as is)."""
    out: list[Callable[[Any], Any] | None] = []
    for name in group.feature_names:
        t = group.schema.field(name).type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            out.append(decode_list(t.value_type))
        else:
            out.append(scalar_decoder(t))
    return out


_SQLITE_TYPES = (
    (pa.types.is_null, ""),  # an undeclared key: no affinity, values kept as written
    (pa.types.is_boolean, "INTEGER"),
    (pa.types.is_integer, "INTEGER"),
    (pa.types.is_floating, "REAL"),
    (pa.types.is_timestamp, "INTEGER"),
    (pa.types.is_date32, "INTEGER"),
    (pa.types.is_binary, "BLOB"),
    (pa.types.is_large_binary, "BLOB"),
)
WRITERS_TABLE = "headrace_feature_writers"


def _sqlite_type(t: pa.DataType) -> str:
    for test, name in _SQLITE_TYPES:
        if test(t):
            return name
    return "TEXT"  # strings, and lists as JSON


def _key_cast(t: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_integer(t):
        return int
    if pa.types.is_null(t):  # type not known yet: compare as given
        return lambda v: v
    return str


def _q(name: str) -> str:
    return f'"{name}"'


class _GroupSQL:
    """The statements of one group, built once per group schema (an undeclared key's type is
    only known after the first write)."""

    def __init__(self, group: FeatureGroup) -> None:
        self.schema = group.schema
        table = _q(f"fg_{group.name}")
        self.table = table
        keys = group.entity_keys
        feats = group.feature_names
        cols = [*keys, *feats, TIME_COLUMN]
        self.columns = cols
        kind = {c: _sqlite_type(group.schema.field(c).type) for c in [*keys, *feats]}
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} ("
            + ", ".join(f"{_q(k)} {kind[k]} NOT NULL" for k in keys)
            + ", "
            + ", ".join(f"{_q(f)} {kind[f]}" for f in feats)
            + f", {TIME_COLUMN} INTEGER NOT NULL, PRIMARY KEY ({', '.join(map(_q, keys))}))"
        )
        updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in [*feats, TIME_COLUMN])
        self.upsert = (
            f"INSERT INTO {table} ({', '.join(map(_q, cols))}) "
            f"VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(map(_q, keys))}) DO UPDATE SET {updates} "
            f"WHERE excluded.{TIME_COLUMN} >= {table}.{TIME_COLUMN}"
        )
        selected = ", ".join(_q(c) for c in [*feats, TIME_COLUMN])
        where = " AND ".join(f"{_q(k)} = ?" for k in keys)
        self.select_one = f"SELECT {selected} FROM {table} WHERE {where}"
        self.key_columns = ", ".join(map(_q, keys))
        self.selected = selected
        self.decoders = sqlite_decoders(group)
        self.plain = all(d is None for d in self.decoders)
        self.key_casts = [_key_cast(group.schema.field(k).type) for k in keys]

    def select_many(self, n: int, n_keys: int) -> str:
        if n_keys == 1:
            where = f"{self.key_columns} IN ({', '.join('?' * n)})"
        else:
            row = "(" + ", ".join("?" * n_keys) + ")"
            where = f"({self.key_columns}) IN (VALUES {', '.join([row] * n)})"
        return f"SELECT {self.key_columns}, {self.selected} FROM {self.table} WHERE {where}"


class SQLiteOnlineStore:
    """The embedded online store: a SQLite file in WAL mode, one table per feature group.

    Each thread gets its own connection (SQLite's statement cache then keeps the lookups
    prepared). SQLite stores NaN as NULL, so a NaN feature reads back as None.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = str(path)
        if path.startswith("sqlite:///"):
            path = path[len("sqlite:///") :]
        elif path.startswith("file://"):
            path = path[len("file://") :]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._sql: dict[str, _GroupSQL] = {}
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {WRITERS_TABLE} (grp TEXT NOT NULL, writer TEXT NOT NULL,"
            " sequence INTEGER NOT NULL, PRIMARY KEY (grp, writer))"
        )

    def __repr__(self) -> str:
        return f"SQLiteOnlineStore({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, cached_statements=256
                )
            except sqlite3.Error as exc:
                raise FeatureStoreError(
                    f"online store {str(self.path)!r}",
                    f"cannot open the SQLite file: {exc}",
                    "check the path exists and is writable",
                ) from exc
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _group_sql(self, group: FeatureGroup) -> _GroupSQL:
        sql = self._sql.get(group.name)
        if sql is None or sql.schema is not group.schema:
            self.ensure_group(group)
            sql = self._sql[group.name]
        return sql

    def ensure_group(self, group: FeatureGroup) -> None:
        sql = _GroupSQL(group)
        conn = self._conn()
        conn.execute(sql.create)
        existing = {row[1]: row for row in conn.execute(f"PRAGMA table_info({sql.table})")}
        stored_keys = [name for name, row in existing.items() if row[5]]
        if sorted(stored_keys) != sorted(group.entity_keys):
            raise FeatureStoreError(
                f"feature group {group.name!r}",
                f"the online table {sql.table} has entity keys {stored_keys}, the group "
                f"{list(group.entity_keys)}",
                "keep the keys, or drop the group's online data (OnlineStore.drop) first",
            )
        for name in group.feature_names:
            if name not in existing:  # a feature added to the group since the table was made
                ftype = _sqlite_type(group.schema.field(name).type)
                conn.execute(f"ALTER TABLE {sql.table} ADD COLUMN {_q(name)} {ftype}")
        self._sql[group.name] = sql

    def write(
        self, group: FeatureGroup, table: pa.Table, *, writer: str | None, sequence: int | None
    ) -> int | None:
        sql = self._group_sql(group)
        newest = newest_per_entity(group, table)
        columns = [column_values(newest.column(c)) for c in sql.columns[:-1]]
        columns.append(event_times_us(newest, group))
        rows = list(zip(*columns, strict=True))
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if writer is not None:
                applied = conn.execute(
                    f"SELECT sequence FROM {WRITERS_TABLE} WHERE grp = ? AND writer = ?",
                    (group.name, writer),
                ).fetchone()
                if applied is not None and applied[0] >= sequence:
                    conn.execute("ROLLBACK")
                    return None
            conn.executemany(sql.upsert, rows)
            if writer is not None:
                conn.execute(
                    f"INSERT INTO {WRITERS_TABLE} (grp, writer, sequence) VALUES (?, ?, ?) "
                    "ON CONFLICT (grp, writer) DO UPDATE SET sequence = excluded.sequence "
                    "WHERE excluded.sequence > sequence",
                    (group.name, writer, sequence),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def read(self, group: FeatureGroup, keys: Sequence[Key]) -> list[Record | None]:
        sql = self._group_sql(group)
        conn = getattr(self._local, "conn", None) or self._conn()
        casts = sql.key_casts
        if len(keys) == 1:
            key = keys[0]
            if len(casts) == 1:
                params: Key = (casts[0](key[0]),)
            else:
                params = tuple(c(v) for c, v in zip(casts, key, strict=True))
            row = conn.execute(sql.select_one, params).fetchone()
            found: list[Record | None] = [row]
        else:
            found = self._read_many(conn, sql, keys)
        if sql.plain:
            return found
        return [None if row is None else _decoded(sql.decoders, row) for row in found]

    def _read_many(
        self, conn: sqlite3.Connection, sql: _GroupSQL, keys: Sequence[Key]
    ) -> list[Record | None]:
        casts = sql.key_casts
        wanted = [tuple(c(v) for c, v in zip(casts, key, strict=True)) for key in keys]
        n_keys = len(casts)
        by_key: dict[Key, Record] = {}
        chunk = max(1, 900 // n_keys)  # stay under SQLite's bound-parameter limit
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            params = [v for key in part for v in key]
            for row in conn.execute(sql.select_many(len(part), n_keys), params):
                by_key[row[:n_keys]] = row[n_keys:]
        return [by_key.get(key) for key in wanted]

    def applied_sequence(self, group: str, writer: str) -> int | None:
        row = (
            self._conn()
            .execute(
                f"SELECT sequence FROM {WRITERS_TABLE} WHERE grp = ? AND writer = ?",
                (group, writer),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    def count(self, group: str) -> int:
        try:
            return self._conn().execute(f"SELECT count(*) FROM {_q('fg_' + group)}").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def drop(self, group: str) -> None:
        conn = self._conn()
        conn.execute(f"DROP TABLE IF EXISTS {_q('fg_' + group)}")
        conn.execute(f"DELETE FROM {WRITERS_TABLE} WHERE grp = ?", (group,))
        self._sql.pop(group, None)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
