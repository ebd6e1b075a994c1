"""Checkpoints of a SQLite ledger's write-ahead log in the background, for a connection that
commits in a tight loop (a stream runner catching up).

In WAL mode SQLite copies the log back into the database file (a checkpoint: the copy and an
fsync of each file) inside the commit that finds the log past 1,000 pages. A runner commits a
micro-batch every millisecond or two, so one commit in about sixty paid 5-40 ms for the
checkpoint: a quarter of the time of 1,000-record batches. While a runner holds its connection
(`hold` to `release`), that connection does not checkpoint on commit
(`PRAGMA wal_autocheckpoint=0`); a thread runs passive checkpoints on a connection of its own
instead, which wait for no writer or reader and make none wait (sqlite.org/wal.html,
"Application-Initiated Checkpoints"). A checkpoint only copies committed pages into the
database file: what a commit makes durable is unchanged.

The log starts over from its beginning only at a write that follows a checkpoint which copied
all of it; with commits arriving during every background checkpoint it keeps growing. So when
a background checkpoint finds the log past `limit_pages`, the held connection runs one passive
checkpoint itself after its next commit (nearly everything is copied by then), and the log
starts over at the following write. PostgreSQL ledgers have none of this (`for_ledger` gives
None).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

log = logging.getLogger("headrace.ledger")

INTERVAL_S = 0.05  # between background checkpoints: the log grows by what commits write in it
START_AFTER = 8  # commits in one hold before the thread starts (short holds need none)
LIMIT_PAGES = 8192  # 32 MiB of 4 KiB pages: past this the writer checkpoints once itself
_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"


class WalCheckpoints:
    """Background checkpoints for one writing connection at a time (see the module)."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = INTERVAL_S,
        start_after: int = START_AFTER,
        limit_pages: int = LIMIT_PAGES,
    ) -> None:
        self.engine = engine  # the checkpoints' connections come from its pool
        self.interval = interval
        self.start_after = start_after
        self.limit_pages = limit_pages
        self.checkpoints = 0  # background checkpoints run (for tests and curiosity)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active = False
        self._before = 1000  # the held connection's own setting, put back on release
        self._commits = 0
        self._over_limit = False
        self._thread: threading.Thread | None = None

    @classmethod
    def for_ledger(cls, ledger: Any) -> WalCheckpoints | None:
        """For a SQLite ledger, checkpoints run through its reader engine; None for Postgres."""
        return None if ledger.postgres else cls(ledger.reader)

    def hold(self, conn: Connection) -> None:
        """From now on `conn` leaves checkpoints to the background (call `committed` after each
        of its commits) until `release(conn)`, which must come before it goes back to the pool."""
        driver = conn.connection.driver_connection
        (self._before,) = driver.execute("PRAGMA wal_autocheckpoint").fetchone()
        driver.execute("PRAGMA wal_autocheckpoint=0")
        with self._lock:
            self._active, self._commits, self._over_limit = True, 0, False
            self._wake.clear()

    def release(self, conn: Connection) -> None:
        """`conn` checkpoints on commit again; the thread ends after the checkpoint it may be
        running."""
        with self._lock:
            if not self._active:
                return
            self._active = False
            self._wake.set()
        with contextlib.suppress(Exception):  # a broken connection is discarded anyway
            conn.connection.driver_connection.execute(
                f"PRAGMA wal_autocheckpoint={int(self._before)}"
            )

    def committed(self, conn: Connection) -> None:
        """The held connection committed (outside any transaction now)."""
        with self._lock:
            self._commits += 1
            start = self._thread is None and self._commits >= self.start_after
            inline, self._over_limit = self._over_limit, False
            if start:
                self._thread = threading.Thread(
                    target=self._run, name="headrace-wal-checkpoints", daemon=True
                )
                self._thread.start()
        if inline:
            conn.connection.driver_connection.execute(_CHECKPOINT).fetchall()

    def wait(self) -> None:
        """Until the background thread has ended (after the hold ended, with a last
        checkpoint)."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    active = self._active
                pages = self._checkpoint()
                if not active:  # that one copied the hold's last commits: the log starts over
                    return  # at the next write, whoever makes it
                if pages > self.limit_pages:
                    with self._lock:
                        self._over_limit = True
                self._wake.wait(self.interval)
        except Exception:  # the writer's next hold checkpoints on commit again meanwhile
            log.exception("a background checkpoint of the ledger's log failed")
        finally:
            with self._lock:
                self._thread = None

    def _checkpoint(self) -> int:
        """One passive checkpoint; returns the log's size in pages."""
        raw = self.engine.raw_connection()
        try:
            _busy, pages, _copied = raw.driver_connection.execute(_CHECKPOINT).fetchone()
        finally:
            raw.close()
        self.checkpoints += 1
        return int(pages)
