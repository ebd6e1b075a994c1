"""Background checkpoints of a SQLite ledger's log for a connection that commits in a loop."""

import os
import time

import pyarrow as pa

from headrace.ledger import Ledger
from headrace.ledger.wal import WalCheckpoints
from headrace.streams.log import open_log
from headrace.streams.pipeline import Pipeline
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import MemorySink, SinkContext


def _autocheckpoint(conn) -> int:
    return conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def _commits(conn, wal: WalCheckpoints, n: int, size: int) -> None:
    for i in range(n):
        with conn.begin():
            conn.exec_driver_sql("INSERT INTO scratch VALUES (?, ?)", (i, os.urandom(size)))
        wal.committed(conn)


def _ledger(tmp_path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with ledger.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (i INTEGER, data BLOB)")
    return ledger


def test_a_held_connection_leaves_checkpoints_to_a_thread_then_takes_them_back(tmp_path):
    ledger = _ledger(tmp_path)
    wal = WalCheckpoints(ledger.reader, interval=0.001, start_after=1)
    conn = ledger.engine.connect()
    assert _autocheckpoint(conn) == 1000  # SQLite's default
    wal.hold(conn)
    assert _autocheckpoint(conn) == 0
    deadline = time.monotonic() + 30
    while wal.checkpoints < 2 and time.monotonic() < deadline:
        _commits(conn, wal, 5, 8192)
    assert wal.checkpoints >= 2
    wal.release(conn)
    assert _autocheckpoint(conn) == 1000
    wal.wait()
    conn.close()
    rows = ledger.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM scratch").scalar()
    assert rows >= 10
    ledger.close()


def test_the_log_starts_over_when_it_passed_the_limit(tmp_path):
    ledger = _ledger(tmp_path)
    wal = WalCheckpoints(ledger.reader, interval=0.001, start_after=1, limit_pages=64)
    conn = ledger.engine.connect()
    wal.hold(conn)
    # 16 MiB through the log in commits of 64 KiB: it is reused from its beginning, not grown
    for _ in range(16):
        _commits(conn, wal, 16, 65536)
        time.sleep(0.005)  # the thread gets its turn to find the log past the limit
    wal.release(conn)
    wal.wait()
    conn.close()
    assert os.path.getsize(f"{tmp_path / 'ledger.db'}-wal") < 8 << 20
    ledger.close()


def test_a_runner_gives_its_connection_back_checkpointing_on_commit(tmp_path):
    log = open_log(str(tmp_path / "streams"), "s")
    log.append(pa.table({"id": pa.array(range(10_000), pa.int64())}))
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    pipe = Pipeline("p", "s", batch_size=50)
    pipe.sink(MemorySink("out"))
    runner = PartitionRunner(pipe, 0, log=log, ledger=ledger, context=SinkContext("p", 0))
    held = []
    runner.on_batch = lambda r, _counts: held.append(_autocheckpoint(r._conn))
    assert runner.run_until_caught_up() == 10_000
    runner.close()
    assert set(held) == {0}  # no checkpoint inside a batch's commit
    assert runner._wal is not None and runner._wal.checkpoints >= 1
    pooled = [ledger.engine.connect() for _ in range(8)]  # the pool's: checkpointing again
    assert {_autocheckpoint(conn) for conn in pooled} == {1000}
    for conn in pooled:
        conn.close()
    assert runner.stage("out").table().num_rows == 10_000
    ledger.close()
    log.close()


def test_after_a_hold_the_log_is_copied_so_the_next_write_starts_it_over(tmp_path):
    ledger = _ledger(tmp_path)
    wal = WalCheckpoints(ledger.reader, interval=0.001, start_after=1)
    conn = ledger.engine.connect()
    wal.hold(conn)
    _commits(conn, wal, 200, 16384)  # about 800 pages through the log
    wal.release(conn)
    wal.wait()
    _commits(conn, wal, 1, 100)
    raw = ledger.reader.raw_connection()
    _busy, pages, _copied = raw.driver_connection.execute("PRAGMA wal_checkpoint").fetchone()
    raw.close()
    assert pages < 16  # the last write's pages only
    conn.close()
    ledger.close()
