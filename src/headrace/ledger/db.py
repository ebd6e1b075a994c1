"""Opening the ledger database: SQLite in WAL mode by default, Postgres when machines share it."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, Table, create_engine, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from headrace.errors import LedgerError


def create_ledger_engine(url: str, *, sync: str = "normal", writer: bool = True) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LedgerError(
            f"ledger URL {url!r}", str(exc), "use sqlite:///path or postgresql://…"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8
        )
        _sqlite_pragmas(engine, sync, writer)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, pool_size=8, pool_pre_ping=True)
        except ModuleNotFoundError:
            raise LedgerError(
                f"ledger URL {url!r}",
                "the PostgreSQL driver is not installed",
                "pip install 'headrace[postgres]'",
            ) from None
    raise LedgerError(
        f"ledger URL {url!r}", f"unsupported database {backend!r}", "use sqlite or postgresql"
    )


def _sqlite_pragmas(engine: Engine, sync: str, writer: bool) -> None:
    # pysqlite's own transaction handling defers BEGIN and would upgrade read locks to write
    # locks mid-transaction (SQLITE_BUSY under concurrency); writers take the write lock up
    # front, readers use a plain BEGIN so they never block the coordinator (WAL).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={sync.upper()}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.connection.driver_connection.execute(begin)  # on the driver: no statement bookkeeping


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """`create_all`, safe when several processes open a fresh ledger at once: the loser of the
    race between "does it exist?" and CREATE TABLE finds it there on the next try."""
    for attempt in range(5):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if "already exists" not in str(exc) and "duplicate key" not in str(exc):
                raise
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


def add_indexes(metadata: MetaData, engine: Engine) -> None:
    """Create the indexes a ledger made by an older release lacks (`create_all` makes indexes
    only with their tables); concurrent openers may race, and the loser finds it there."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            try:
                index.create(engine, checkfirst=True)
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                if "already exists" not in str(exc) and "duplicate key" not in str(exc):
                    raise


def to_json(value: Any) -> str:
    """How the ledger stores JSON columns: compact, anything unknown as its string."""
    return json.dumps(value, separators=(",", ":"), default=str)


def insert_rows(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    on_conflict: tuple[Sequence[str], Mapping[str, str]] | None = None,
    driver: bool = False,
) -> None:
    """Insert many rows through the driver's executemany: at ten thousand rows a turn,
    SQLAlchemy's per-row parameter processing costs more than the inserts themselves.

    `on_conflict=(keys, update)` makes it an upsert, `ON CONFLICT (keys) DO UPDATE SET …`
    (the same text on SQLite 3.24+ and Postgres); `update` maps a column to an SQL
    expression over `excluded` and the stored row.

    `driver=True` runs it on the driver's own cursor, in the connection's transaction: that
    skips SQLAlchemy's bookkeeping of a statement (about 50 µs), which counts for statements run
    with every stream micro-batch; errors are then the driver's."""
    if not rows:
        return
    columns = tuple(rows[0])
    conflict = None
    if on_conflict is not None:
        conflict = (tuple(on_conflict[0]), tuple(on_conflict[1].items()))
    sql = _insert_sql(conn.dialect, table.name, columns, conflict)
    params = [tuple(row.get(c) for c in columns) for row in rows]
    if driver:
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(sql, params)
        finally:
            cursor.close()
    else:
        conn.exec_driver_sql(sql, params)


@functools.lru_cache(maxsize=256)
def _insert_sql(
    dialect: Dialect,
    table: str,
    columns: tuple[str, ...],
    conflict: tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None,
) -> str:
    """The statement's text (made once: the same few are run for every stream batch)."""
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    if conflict is not None:
        keys, update = conflict
        sets = ", ".join(f"{quote(c)} = {expr}" for c, expr in update)
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET {sets}"
    return sql


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
