"""The embedded stream log: one SQLite file per stream, no server.

The file `{folder}/{name}.stream.sqlite` (WAL mode) holds the stored batches (partition, offset
range, ingest time, size and the Arrow IPC bytes), each partition's start and end offsets, the
results of idempotent appends and the consumer offsets. One append is one `BEGIN IMMEDIATE`
transaction, so a crash never leaves part of a batch and concurrent writers, in threads or
processes, take turns on the partition's end offset. Waiting for the write lock is bounded by a
busy timeout. Only SQLite 3.26 features are used (ecCodes can load that old a library).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from headrace.errors import StreamError
from headrace.streams.log import (
    Appended,
    EncodedPart,
    StoredBatch,
    StreamLog,
    check_offset_args,
    partition_mismatch,
    retention_cut,
)

BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    partition INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (partition, end_offset)
);
CREATE TABLE IF NOT EXISTS producer_parts (
    producer TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    PRIMARY KEY (producer, sequence, partition)
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
);
"""


class EmbeddedLog(StreamLog):
    """A stream stored in one SQLite file in `folder`."""

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        partitions: int | None = None,
        retention_seconds: float | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        super().__init__(name, retention_seconds=retention_seconds, retention_bytes=retention_bytes)
        self.path = Path(folder) / f"{name}.stream.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._lock = threading.RLock()
            self._last_blob: tuple[int, int, int, bytes] | None = None  # see `_fetch`
            self.partitions = self._create_or_open(partitions)
        except (OSError, sqlite3.Error) as exc:
            raise StreamError(
                f"stream {name!r} at {self.path}",
                f"cannot open its SQLite file: {exc}",
                "check that the folder exists, is writable and is on a local disk",
            ) from exc

    def _create_or_open(self, partitions: int | None) -> int:
        db = self._db
        # auto_vacuum must be chosen before the first table exists; freed pages are then handed
        # back to the file system after retention.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in _statements():  # not executescript: it would COMMIT first
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
            if row is None:
                count = partitions or 1
                db.execute("INSERT INTO meta VALUES ('partitions', ?)", (str(count),))
                db.execute("INSERT INTO meta VALUES ('name', ?)", (self.name,))
                db.executemany(
                    "INSERT INTO partitions VALUES (?, 0, 0, 0)", [(p,) for p in range(count)]
                )
                return count
        stored = int(row[0])
        if partitions is not None and partitions != stored:
            raise partition_mismatch(self.name, str(self.path), stored, partitions)
        return stored

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    # -- writing -------------------------------------------------------------------------------

    def _write(
        self, parts: list[EncodedPart], producer: str | None, sequence: int | None, now_ms: int
    ) -> list[Appended]:
        db = self._db
        with self._transaction():
            if producer is not None:
                earlier = db.execute(
                    "SELECT partition, first_offset, end_offset FROM producer_parts"
                    " WHERE producer = ? AND sequence = ? ORDER BY partition",
                    (producer, sequence),
                ).fetchall()
                if earlier:
                    return [Appended(*row) for row in earlier]
            appended = []
            for part in parts:
                (first,) = db.execute(
                    "SELECT end_offset FROM partitions WHERE partition = ?", (part.partition,)
                ).fetchone()
                end = first + part.records
                size = len(part.data)
                db.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                    (part.partition, end, first, now_ms, size, part.data),
                )
                db.execute(
                    "UPDATE partitions SET end_offset = ?, stored_bytes = stored_bytes + ?"
                    " WHERE partition = ?",
                    (end, size, part.partition),
                )
                appended.append(Appended(part.partition, first, end))
            if producer is not None:
                db.executemany(
                    "INSERT INTO producer_parts VALUES (?, ?, ?, ?, ?)",
                    [
                        (producer, sequence, a.partition, a.first_offset, a.end_offset)
                        for a in appended
                    ],
                )
            return appended

    # -- reading -------------------------------------------------------------------------------

    def _fetch(self, partition: int, offset: int, stop: int) -> list[tuple[int, bytes]]:
        # Consecutive micro-batches are cut from one stored batch (10,000 records, say): its
        # bytes, read once, are handed out again (the same object, which `read` decodes once).
        # A stored batch's offsets are never reused for other bytes (offsets only grow), and
        # this connection keeps reading its own file if another process drops the stream.
        with self._lock:
            ranges = self._db.execute(
                "SELECT first_offset, end_offset FROM batches"
                " WHERE partition = ? AND end_offset > ? AND first_offset < ?"
                " ORDER BY end_offset",
                (partition, offset, stop),
            ).fetchall()
            out = []
            for first, end in ranges:
                held = self._last_blob
                if held is not None and held[:3] == (partition, first, end):
                    out.append((first, held[3]))
                    continue
                row = self._db.execute(
                    "SELECT data FROM batches WHERE partition = ? AND end_offset = ?",
                    (partition, end),
                ).fetchone()
                if row is None:  # removed by retention between the two reads
                    break
                self._last_blob = (partition, first, end, row[0])
                out.append((first, row[0]))
            return out

    def start_offset(self, partition: int) -> int:
        return self._partition_row(partition)[0]

    def end_offset(self, partition: int) -> int:
        return self._partition_row(partition)[1]

    def _partition_row(self, partition: int) -> tuple[int, int, int]:
        self._check_partition(partition)
        with self._lock:
            return self._db.execute(
                "SELECT start_offset, end_offset, stored_bytes FROM partitions WHERE partition = ?",
                (partition,),
            ).fetchone()

    # -- consumer offsets ------------------------------------------------------------------------

    def commit(self, group: str, partition: int, offset: int) -> None:
        check_offset_args(self, group, partition, offset)
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO consumer_offsets VALUES (?, ?, ?)",
                (group, partition, offset),
            )

    def committed(self, group: str, partition: int) -> int | None:
        check_offset_args(self, group, partition, None)
        with self._lock:
            row = self._db.execute(
                "SELECT next_offset FROM consumer_offsets WHERE grp = ? AND partition = ?",
                (group, partition),
            ).fetchone()
        return None if row is None else row[0]

    # -- retention -------------------------------------------------------------------------------

    def enforce_retention(self, *, now: datetime | None = None) -> int:
        cutoff_ms = self._retention_cutoff_ms(now)
        if cutoff_ms is None and self.retention_bytes is None:
            return 0
        removed = 0
        db = self._db
        with self._transaction():
            for partition in range(self.partitions):
                start, _end, stored = self._partition_row(partition)
                new_start = retention_cut(
                    self._stored_batches(partition),
                    start=start,
                    total_bytes=stored,
                    cutoff_ms=cutoff_ms,
                    max_bytes=self.retention_bytes,
                )
                if new_start == start:
                    continue
                (freed,) = db.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM batches"
                    " WHERE partition = ? AND end_offset <= ?",
                    (partition, new_start),
                ).fetchone()
                db.execute(
                    "DELETE FROM batches WHERE partition = ? AND end_offset <= ?",
                    (partition, new_start),
                )
                db.execute(
                    "UPDATE partitions SET start_offset = ?, stored_bytes = stored_bytes - ?"
                    " WHERE partition = ?",
                    (new_start, freed, partition),
                )
                removed += new_start - start
            if removed:
                # An idempotency record lives as long as any batch it points to.
                db.execute(
                    "DELETE FROM producer_parts WHERE (producer, sequence) IN ("
                    " SELECT pp.producer, pp.sequence FROM producer_parts pp"
                    " JOIN partitions p ON p.partition = pp.partition"
                    " GROUP BY pp.producer, pp.sequence"
                    " HAVING MAX(pp.end_offset > p.start_offset) = 0)"
                )
        if removed:
            with self._lock:
                db.execute("PRAGMA incremental_vacuum")
        return removed

    def _stored_batches(self, partition: int) -> Iterator[StoredBatch]:
        rows = self._db.execute(
            "SELECT first_offset, end_offset, ingest_ms, size FROM batches"
            " WHERE partition = ? ORDER BY end_offset",
            (partition,),
        )
        for row in rows:
            yield StoredBatch(*row)

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def drop(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _statements() -> list[str]:
    return [s for s in _SCHEMA.split(";") if s.strip()]


class _Transaction:
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK` on error) under the instance lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
