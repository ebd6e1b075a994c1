"""The stream log contract, run against every backend on real servers.

Embedded (SQLite files in tmp_path), Redis Streams on 127.0.0.1:6379 and NATS JetStream on
127.0.0.1:4222 (override with HEADRACE_TEST_REDIS / HEADRACE_TEST_NATS). Each test uses fresh
stream names and drops them afterwards. A backend's tests skip only when its server is down.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import StreamError
from headrace.streams import Appended, StreamLog, key_partitions, open_log
from headrace.streams.log import encode_batch, fnv1a_32, stamp_ingest_time


def _table(start: int, rows: int) -> pa.Table:
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table({"id": ids, "value": ids * 0.5, "name": [f"n{i}" for i in ids]})


def _ids(table: pa.Table) -> list[int]:
    return table.column("id").to_pylist()


def test_round_trip_of_several_schemas(open_stream):
    log = open_stream()
    first = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "tags": [["a"], ["b", "c"]],
            "at": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
        }
    )
    second = pa.table({"id": pa.array([3], pa.int64()), "score": [0.25], "flag": [True]})
    third = pa.table({"id": pa.array([4], pa.int64()), "blob": [b"\x00\xff"]})
    for batch in (first, second, third):
        log.append(batch)

    table = log.read(0, 0, 100)

    assert table.column("_offset").to_pylist() == [0, 1, 2, 3]
    assert table.column("_offset").type == pa.int64()
    assert table.column("id").type == pa.int64()  # int32 and int64 unified
    assert _ids(table) == [1, 2, 3, 4]
    assert table.column("tags").to_pylist() == [["a"], ["b", "c"], None, None]
    assert table.column("score").to_pylist() == [None, None, 0.25, None]
    assert table.column("blob").to_pylist() == [None, None, None, b"\x00\xff"]
    assert table.column("at").type == pa.timestamp("us", tz="UTC")
    assert table.column("_ingest_time").type == pa.timestamp("us", tz="UTC")
    ingest = table.column("_ingest_time").to_pylist()
    assert all(abs(datetime.now(UTC) - t) < timedelta(minutes=1) for t in ingest)
    assert log.read(0, 1, 2).column("_offset").to_pylist() == [1, 2]


def test_given_ingest_time_is_kept_and_offset_column_is_reassigned(open_stream):
    log = open_stream()
    moment = datetime(2020, 5, 17, 12, tzinfo=UTC)
    batch = pa.table(
        {
            "id": [7],
            "_ingest_time": pa.array([moment], pa.timestamp("ms", tz="UTC")),
            "_offset": pa.array([99], pa.int64()),
        }
    )
    log.append(batch)
    table = log.read(0, 0, 10)
    assert table.column("_ingest_time").to_pylist() == [moment]
    assert table.column("_offset").to_pylist() == [0]


def test_offsets_are_dense_across_many_batches(open_stream):
    log = open_stream()
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 40, size=120).tolist()
    expected_first = 0
    for size in sizes:
        (appended,) = log.append(_table(expected_first, size))
        assert appended == Appended(0, expected_first, expected_first + size)
        expected_first += size
    total = sum(sizes)
    assert (log.start_offset(0), log.end_offset(0)) == (0, total)

    seen: list[int] = []
    offset = 0
    while offset < total:
        chunk = log.read(0, offset, 37)
        assert chunk.column("_offset").to_pylist() == list(range(offset, offset + chunk.num_rows))
        seen += _ids(chunk)
        offset += chunk.num_rows
    assert seen == list(range(total))
    assert log.read(0, total, 10).num_rows == 0
    assert log.read(0, total + 5, 10).num_rows == 0
    assert log.read(0, 3, 0).num_rows == 0


def test_slices_of_stored_batches_read_back_right_in_any_order(open_stream):
    """A reader in slices smaller than the stored batches (a pipeline's micro-batches) gets
    each record where it is, whichever partition or batch it read before."""
    log = open_stream(partitions=2)
    for partition in (0, 1):
        for start in (0, 100):
            log.append(_table(1000 * partition + start, 100), partition=partition)
    rng = np.random.default_rng(3)
    for _ in range(60):
        partition, offset = int(rng.integers(0, 2)), int(rng.integers(0, 200))
        size = int(rng.integers(1, 60))
        chunk = log.read(partition, offset, size)
        want = list(range(offset, min(200, offset + size)))
        assert chunk.column("_offset").to_pylist() == want
        assert _ids(chunk) == [1000 * partition + i for i in want]


def test_a_batch_larger_than_a_message_reads_back_whole(open_stream):
    log = open_stream()
    rows = 300_000  # ~5 MB of Arrow: over NATS's default 1 MiB max_payload
    batch = _table(0, rows)
    assert log.append(batch) == [Appended(0, 0, rows)]
    table = log.read(0, 0, rows)
    assert table.num_rows == rows
    assert table.column("id").equals(batch.column("id"))


def _fnv1a_reference(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) % 2**32
    return value


def test_fnv1a_matches_the_published_test_vectors():
    hashes = fnv1a_32(pa.array(["", "a", "foobar"])).tolist()
    assert hashes == [0x811C9DC5, 0xE40C292C, 0xBF9CF968]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=40))
def test_key_partitions_follow_the_documented_rule(keys):
    partitions = key_partitions(pa.array(keys, pa.string()), 7).tolist()
    expected = [_fnv1a_reference((k or "").encode()) % 7 for k in keys]
    assert partitions == expected


def test_key_partitioning_is_stable(open_stream):
    log = open_stream(partitions=4)
    stations = [f"station-{i}" for i in range(25)]
    expected = {s: _fnv1a_reference(s.encode()) % 4 for s in stations}
    for round_ in range(3):
        batch = pa.table(
            {"station": stations[::-1] if round_ else stations, "round": [round_] * 25}
        )
        appended = log.append(batch, key="station")
        assert sum(a.records for a in appended) == 25
        assert [a.partition for a in appended] == sorted({a.partition for a in appended})
    for partition in range(4):
        table = log.read(partition, 0, 1000)
        got = table.column("station").to_pylist()
        assert {expected[s] for s in got} <= {partition}
        assert len(got) == 3 * sum(1 for s in stations if expected[s] == partition)
    # integer keys route by their decimal text
    numbers = pa.table({"n": pa.array([12, 345, 6789], pa.int64())})
    routed = {a.partition for a in log.append(numbers, key="n")}
    assert routed == {_fnv1a_reference(str(n).encode()) % 4 for n in (12, 345, 6789)}


def test_partition_argument_round_robin_and_errors(open_stream):
    log = open_stream(partitions=3)
    assert [log.append(_table(0, 1))[0].partition for _ in range(4)] == [0, 1, 2, 0]
    assert log.append(_table(0, 2), partition=2) == [Appended(2, 1, 3)]
    with pytest.raises(StreamError, match="partition 3 does not exist"):
        log.append(_table(0, 1), partition=3)
    with pytest.raises(StreamError, match="partition 5 does not exist"):
        log.read(5, 0, 1)
    with pytest.raises(StreamError, match="key column 'nope'"):
        log.append(_table(0, 1), key="nope")
    with pytest.raises(StreamError, match="has no text form"):
        log.append(pa.table({"k": [[1], [2]]}), key="k")
    with pytest.raises(StreamError, match="producer and sequence go together"):
        log.append(_table(0, 1), producer="p")


def test_idempotent_producer_retries_write_once(open_stream):
    log = open_stream(partitions=2)
    batch = pa.table({"k": ["a", "b", "c", "d", "e"], "v": [1, 2, 3, 4, 5]})
    first = log.append(batch, key="k", producer="ingest-1", sequence=41)
    again = log.append(batch, key="k", producer="ingest-1", sequence=41)
    assert again == first
    ends = [log.end_offset(p) for p in range(2)]
    assert sum(ends) == 5

    # a restarted producer (another connection) retrying the same sequence
    other = open_stream(log.name)
    assert other.append(batch, key="k", producer="ingest-1", sequence=41) == first
    assert [other.end_offset(p) for p in range(2)] == ends

    nxt = other.append(batch, partition=0, producer="ingest-1", sequence=42)
    assert nxt == [Appended(0, ends[0], ends[0] + 5)]
    assert log.append(batch, partition=1, producer="ingest-2", sequence=41) == [
        Appended(1, ends[1], ends[1] + 5)
    ]


def test_empty_batch_is_a_no_op(open_stream):
    log = open_stream()
    empty = _table(0, 0)
    assert log.append(empty) == []
    assert log.append(empty, producer="p", sequence=1) == []
    assert log.end_offset(0) == 0
    assert log.append(_table(0, 2), producer="p", sequence=1) == [Appended(0, 0, 2)]


def test_an_append_no_read_could_combine_is_refused_and_the_log_stays_readable(open_stream):
    log = open_stream()
    log.append(pa.table({"k": pa.array([1, 2], pa.int64())}))
    log.append(pa.table({"k": [2.5]}))  # widened, as reads promote it
    with pytest.raises(StreamError, match=r"column 'k' is string here, but the stream holds"):
        log.append(pa.table({"k": ["x"]}))
    again = open_stream(log.name)  # a fresh instance learns the stream's types from its tail
    with pytest.raises(StreamError, match=r"cast 'k' to double"):
        again.append(pa.table({"k": ["1"]}))
    assert log.read(0, 0, 10).column("k").to_pylist() == [1.0, 2.0, 2.5]


def test_reopen_after_close_keeps_data_and_offsets(open_stream):
    log = open_stream(partitions=2)
    log.append(_table(0, 5), partition=1)
    log.commit("reporting", 1, 3)
    log.close()

    again = open_stream(log.name)  # partitions=None takes the stored count
    assert again.partitions == 2
    assert again.end_offset(1) == 5
    assert _ids(again.read(1, 3, 10)) == [3, 4]
    assert again.committed("reporting", 1) == 3
    assert again.append(_table(5, 1), partition=1) == [Appended(1, 5, 6)]


def test_partition_count_mismatch_is_a_clear_error(open_stream):
    log = open_stream(partitions=2)
    with pytest.raises(StreamError, match=r"created with 2 partitions, not 3") as info:
        open_stream(log.name, partitions=3)
    assert log.name in str(info.value) and "partitions=2" in str(info.value)
    assert open_stream(log.name, partitions=2).partitions == 2


def test_bad_names_and_urls_are_refused(tmp_path):
    with pytest.raises(StreamError, match="letters, digits"):
        open_log(tmp_path, "no spaces")
    with pytest.raises(StreamError, match="scheme 'kafka'"):
        open_log("kafka://host:9092", "ok")


def _ingest_ms(log: StreamLog, offset: int) -> int:
    moment = log.read(0, offset, 1).column("_ingest_time")[0].as_py()
    return int(moment.timestamp() * 1000)


def test_retention_by_time(open_stream):
    log = open_stream(retention_seconds=60)
    log.append(_table(0, 4))
    time.sleep(0.05)
    log.append(_table(4, 3))
    old_ms, young_ms = _ingest_ms(log, 0), _ingest_ms(log, 4)
    assert young_ms - old_ms >= 40
    between = datetime.fromtimestamp((old_ms + young_ms) / 2000 + 60, UTC)

    assert log.enforce_retention(now=datetime.now(UTC)) == 0
    assert log.enforce_retention(now=between) == 4
    assert (log.start_offset(0), log.end_offset(0)) == (4, 7)
    assert _ids(log.read(0, 4, 10)) == [4, 5, 6]

    assert log.enforce_retention(now=datetime.now(UTC) + timedelta(seconds=61)) == 3
    assert (log.start_offset(0), log.end_offset(0)) == (7, 7)
    assert log.read(0, 7, 10).num_rows == 0
    assert log.append(_table(7, 2)) == [Appended(0, 7, 9)]  # offsets stay dense
    assert log.enforce_retention(now=datetime.now(UTC)) == 0
    assert _ids(log.read(0, 7, 10)) == [7, 8]


def test_reading_below_the_retention_start_is_a_clear_error(open_stream):
    log = open_stream(retention_seconds=1)
    log.append(_table(0, 3))
    log.append(_table(3, 3))
    log.enforce_retention(now=datetime.now(UTC) + timedelta(seconds=5))
    log.append(_table(6, 2))

    for offset in (0, 5):
        with pytest.raises(StreamError) as info:
            log.read(0, offset, 10)
        message = str(info.value)
        assert log.name in message and "partition 0" in message
        assert "earliest available offset is 6" in message
        assert "reset the consumer" in message
    assert _ids(log.read(0, 6, 10)) == [6, 7]


def test_retention_by_bytes_keeps_the_newest_whole_batches(open_stream):
    rows = 50
    size = len(encode_batch(stamp_ingest_time(_table(0, rows), datetime.now(UTC))))
    log = open_stream(partitions=2, retention_bytes=int(size * 3.5))
    for i in range(10):
        log.append(_table(i * rows, rows), partition=0)
    log.append(_table(0, rows), partition=1)

    assert log.enforce_retention() == 7 * rows
    assert (log.start_offset(0), log.end_offset(0)) == (7 * rows, 10 * rows)
    assert _ids(log.read(0, 7 * rows, 1000)) == list(range(7 * rows, 10 * rows))
    assert (log.start_offset(1), log.end_offset(1)) == (0, rows)
    assert log.enforce_retention() == 0


def test_retention_by_another_instance_is_seen_by_a_reader(open_stream):
    rows = 20
    size = len(encode_batch(stamp_ingest_time(_table(0, rows), datetime.now(UTC))))
    reader = open_stream()
    for i in range(10):
        reader.append(_table(i * rows, rows))
    assert reader.read(0, 0, 1000).num_rows == 10 * rows  # the reader knows every batch now

    trimmer = open_stream(reader.name, retention_bytes=int(size * 6.5))
    assert trimmer.enforce_retention() == 4 * rows

    with pytest.raises(StreamError, match=f"earliest available offset is {4 * rows}"):
        reader.read(0, 0, 1000)
    with pytest.raises(StreamError, match=f"earliest available offset is {4 * rows}"):
        reader.read(0, rows, 10)
    assert reader.start_offset(0) == 4 * rows
    assert _ids(reader.read(0, 4 * rows, 1000)) == list(range(4 * rows, 10 * rows))
    assert reader.append(_table(0, 1)) == [Appended(0, 10 * rows, 10 * rows + 1)]


def _producer_records(log: StreamLog) -> int:
    """How many idempotency records the backend holds (white-box: retention must prune them)."""
    if log.url_kind == "embedded":
        with sqlite3.connect(log.path) as db:
            return db.execute("SELECT COUNT(DISTINCT sequence) FROM producer_parts").fetchone()[0]
    if log.url_kind == "redis":
        return log._redis.hlen(log._key("producers"))
    messages = log._run(log._consume(f"$KV.{log.bucket}.producer.>", 1, None))
    return sum(1 for m in messages if not (m.headers or {}).get("KV-Operation"))


def test_retention_keeps_idempotency_records_of_retained_batches_only(open_stream):
    log = open_stream(retention_seconds=60)
    log.url_kind = open_stream.backend
    log.append(_table(0, 2), producer="p", sequence=1)
    time.sleep(0.05)
    log.append(_table(2, 2), producer="p", sequence=2)
    between = datetime.fromtimestamp((_ingest_ms(log, 0) + _ingest_ms(log, 2)) / 2000 + 60, UTC)
    assert _producer_records(log) == 2

    assert log.enforce_retention(now=between) == 2
    assert _producer_records(log) == 1
    assert log.append(_table(2, 2), producer="p", sequence=2) == [Appended(0, 2, 4)]
    assert log.end_offset(0) == 4


def test_consumer_offsets(open_stream):
    log = open_stream(partitions=2)
    assert log.committed("g1", 0) is None
    log.commit("g1", 0, 10)
    log.commit("g1", 1, 4)
    log.commit("g2:odd name", 0, 1)
    log.commit("g1", 0, 12)
    assert log.committed("g1", 0) == 12
    assert log.committed("g1", 1) == 4
    assert log.committed("g2:odd name", 0) == 1
    assert log.committed("g2", 0) is None
    with pytest.raises(StreamError, match="commit the next offset"):
        log.commit("g1", 0, -1)


def test_two_writers_in_threads_never_share_offsets(open_stream):
    name = open_stream().name
    writers = [open_stream(name), open_stream(name)]
    results: dict[int, list[Appended]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for i in range(25):
                batch = pa.table({"writer": [w] * 3, "i": [i] * 3, "row": [0, 1, 2]})
                results[w] += writers[w].append(batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    ranges = sorted((a.first_offset, a.end_offset) for rs in results.values() for a in rs)
    assert ranges == [(i * 3, i * 3 + 3) for i in range(50)]
    table = writers[0].read(0, 0, 1000)
    assert table.column("_offset").to_pylist() == list(range(150))
    for w in (0, 1):
        for appended in results[w]:
            rows = table.slice(appended.first_offset, 3)
            assert set(rows.column("writer").to_pylist()) == {w}
            assert rows.column("row").to_pylist() == [0, 1, 2]


def _append_from_process(folder: str, name: str, writer: int, batches: int) -> list[tuple]:
    log = open_log(folder, name)
    try:
        out = []
        for i in range(batches):
            batch = pa.table({"writer": [writer] * 2, "i": [i, i]})
            out += [(a.first_offset, a.end_offset) for a in log.append(batch)]
        return out
    finally:
        log.close()


def test_two_writer_processes_on_the_embedded_log(tmp_path: Path):
    folder = str(tmp_path / "streams")
    open_log(folder, "shared").close()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        futures = [pool.submit(_append_from_process, folder, "shared", w, 40) for w in (0, 1)]
        ranges = sorted(r for future in futures for r in future.result())
    assert ranges == [(i * 2, i * 2 + 2) for i in range(80)]
    log = open_log(folder, "shared")
    table = log.read(0, 0, 1000)
    log.close()
    assert table.num_rows == 160
    assert sorted(table.column("writer").to_pylist()) == [0] * 80 + [1] * 80


def test_slices_of_one_stored_batch_read_its_bytes_once(tmp_path):
    """An embedded log hands the bytes of the stored batch it read last out again: a
    pipeline's micro-batches cut from one stored batch do not each read all of it."""
    log = open_log(str(tmp_path), "s")
    for start in (0, 1000):
        log.append(_table(start, 1000))
    reads = []
    log._db.set_trace_callback(lambda sql: reads.append(sql) if "SELECT data" in sql else None)
    for offset in range(0, 2000, 100):
        chunk = log.read(0, offset, 100)
        assert _ids(chunk) == list(range(offset, offset + 100))
    assert len(reads) == 2  # once per stored batch
    log.close()
