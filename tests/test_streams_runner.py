"""Pipeline runner: checkpointed micro-batches, replays after failures, sinks, flush."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.errors import StreamError
from headrace.ledger.checkpoints import list_checkpoints, load_checkpoint, read_stats
from headrace.storage import ObjectStore
from headrace.streams.log import open_log
from headrace.streams.pipeline import Pipeline
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import ArchiveSink, FunctionSink, MemorySink, SinkContext, StreamSink
from tests.stream_helpers import archived, fee_windows

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def trace(n: int, *, seed: int = 1, dup_every: int = 20, late_every: int = 50) -> pa.Table:
    """Events 1 s apart with ±2 s jitter, a duplicate every `dup_every`, a very late event
    (an hour behind) every `late_every` (0: none); integer fees so sums are exact."""
    import random

    rng = random.Random(seed)
    ids, times, fees = [], [], []
    for i in range(n):
        ids.append(i)
        times.append(T0 + timedelta(seconds=i + rng.uniform(-2, 2)))
        fees.append(rng.randrange(1, 10_000))
        if dup_every and i % dup_every == 7:
            ids.append(i)
            times.append(times[-1])
            fees.append(fees[-1])
        if late_every and i % late_every == 49 and i > 3600:
            ids.append(1_000_000 + i)
            times.append(T0 + timedelta(seconds=i - 3600))
            fees.append(rng.randrange(1, 10_000))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            "fee": pa.array(fees, pa.int64()),
        }
    )


def fill(log, table: pa.Table, chunk: int = 1000) -> None:
    for start in range(0, table.num_rows, chunk):
        log.append(table.slice(start, chunk))


def make_pipeline(batch_size: int = 700) -> Pipeline:
    pipe = Pipeline("fees", "events", batch_size=batch_size)
    pipe.dedup("id", ttl=3600 * 24, time_column="_ingest_time")
    return fee_windows(pipe)


def runner_for(pipe, ledger, log, tmp_path, *, streams=None) -> PartitionRunner:
    context = SinkContext(
        pipe.name,
        0,
        store=ObjectStore(str(tmp_path / "buckets")),
        ledger=ledger,
        open_log=streams.__getitem__ if streams else None,
    )
    return PartitionRunner(pipe, 0, log=log, ledger=ledger, context=context)


def batch_truth(table: pa.Table) -> tuple[pa.Table, set[int]]:
    """DuckDB recomputation: first copy of each id, minus the injected late ids."""
    con = duckdb.connect()
    con.register("t", table)
    rows = con.sql(
        """
        WITH firsts AS (
            SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY rn) AS k
                           FROM (SELECT *, row_number() OVER () AS rn FROM t)) WHERE k = 1
        )
        SELECT time_bucket(INTERVAL 60 SECOND, ts) AS window_start, count(*) AS n,
               sum(fee) AS total, min(fee) AS lo, max(fee) AS hi
        FROM firsts WHERE id < 1000000 GROUP BY 1 ORDER BY 1
        """
    ).to_arrow_table()
    late = {i for i in table["id"].to_pylist() if i >= 1_000_000}
    return rows, late


def as_rows(table: pa.Table) -> list[tuple]:
    table = table.sort_by("window_start")
    return list(
        zip(
            [t.timestamp() for t in table["window_start"].to_pylist()],
            table["n"].to_pylist(),
            table["total"].to_pylist(),
            table["lo"].to_pylist(),
            table["hi"].to_pylist(),
            strict=True,
        )
    )


def test_pipeline_matches_batch_recomputation(ledger, tmp_path):
    data = trace(6000)
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, data)
    pipe = make_pipeline()
    out = MemorySink("out")
    pipe.sink(out)
    late = MemorySink("late")
    pipe.stages[1].late = late
    runner = runner_for(pipe, ledger, log, tmp_path)
    runner.open()
    assert runner.run_until_caught_up() == data.num_rows
    runner.flush()
    truth, late_ids = batch_truth(data)
    assert as_rows(runner.stage("out").table()) == as_rows(truth)
    late_rows = runner.stage("tumbling", late=True).table()
    assert sorted(late_rows["id"].to_pylist()) == sorted(late_ids)
    assert runner.status.late == len(late_ids)
    with ledger.reader.connect() as conn:
        (checkpoint,) = list_checkpoints(conn, "fees")
        stats = read_stats(conn, "fees")
    assert checkpoint["offset"] == data.num_rows
    assert checkpoint["late"] == len(late_ids)
    by_stage = {}
    for row in stats:
        by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + row["records_in"]
    assert by_stage["dedup"] == data.num_rows
    log.close()


class Explodes:
    """A sink that fails once at a given batch, after the sinks before it have written."""

    name = "explodes"

    def __init__(self, at: int) -> None:
        self.at = at
        self.fired = False

    def bind(self, context):
        pass

    def write(self, table, batch):
        if batch.seq == self.at and not self.fired:
            self.fired = True
            raise RuntimeError("crash between sink writes and the checkpoint")

    def commit(self, conn, batch):
        pass

    def flush(self, batch):
        pass

    def snapshot(self):
        return {}

    def restore(self, state):
        pass


def test_failed_batch_replays_exactly_once(ledger, tmp_path):
    data = trace(5000, seed=3)
    root = str(tmp_path / "streams")
    log = open_log(root, "events")
    fill(log, data)
    outputs = {name: open_log(root, name) for name in ("windows", "fees-late")}
    pipe = make_pipeline(batch_size=500)
    pipe.to_stream("windows")
    pipe.stages[1].late = StreamSink("fees-late")
    explodes = Explodes(at=6)
    pipe.sink(explodes)
    runner = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    runner.open()
    with pytest.raises(StreamError, match="crash between sink writes"):
        runner.run_until_caught_up()
    # the same template object is copied per runner: a fresh runner sees `fired` as at copy time
    pipe.stages[-1].template.fired = True
    again = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    again.open()
    with ledger.reader.connect() as conn:
        assert load_checkpoint(conn, "fees", 0).pending_plan is not None
    again.run_until_caught_up()
    again.flush()
    windows = outputs["windows"].read(0, 0, 10**6)
    truth, late_ids = batch_truth(data)
    assert as_rows(windows) == as_rows(truth)  # no window twice, none missing
    late = outputs["fees-late"].read(0, 0, 10**6)
    assert sorted(late["id"].to_pylist()) == sorted(late_ids)
    for stream in (log, *outputs.values()):
        stream.close()


class Records(Explodes):
    """Explodes on the first batch, and keeps the `_offset` of every record it is handed."""

    name = "records"
    seen: list[int] = []

    def write(self, table, batch):
        Records.seen.extend(table.column("_offset").to_pylist())
        super().write(table, batch)


def test_a_failed_first_batch_is_replayed_from_where_it_started(ledger, tmp_path):
    """start="latest": the records already in the log are never read, even when the first
    planned batch fails and the runner reopens."""
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, trace(10, dup_every=0, late_every=0))
    pipe = Pipeline("newest", "events", batch_size=100, start="latest")
    Records.seen = []
    pipe.sink(Records(at=1))
    first = runner_for(pipe, ledger, log, tmp_path)
    first.open()
    log.append(trace(3, seed=2, dup_every=0, late_every=0))
    with pytest.raises(StreamError, match="crash between sink writes"):
        first.step()
    pipe.stages[-1].template.fired = True  # each runner copies the template
    again = runner_for(pipe, ledger, log, tmp_path)
    again.open()
    assert again.step() == 3
    assert Records.seen == [10, 11, 12, 10, 11, 12]  # the failed try, then the replay
    log.close()


def test_interrupted_flush_is_replayed_as_a_flush(ledger, tmp_path):
    data = trace(800, seed=5, late_every=0)
    root = str(tmp_path / "streams")
    log = open_log(root, "events")
    fill(log, data)
    outputs = {name: open_log(root, name) for name in ("windows", "fees-late")}
    pipe = make_pipeline(batch_size=10_000)
    pipe.to_stream("windows")
    pipe.sink(Explodes(at=2))  # batch 1 reads everything, batch 2 is the flush
    runner = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    runner.open()
    runner.run_until_caught_up()
    with pytest.raises(StreamError):
        runner.flush()
    pipe.stages[-1].template.fired = True
    again = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    again.open()
    assert again.step() == 0  # replays the flush
    windows = outputs["windows"].read(0, 0, 10**6)
    assert as_rows(windows) == as_rows(batch_truth(data)[0])
    for stream in (log, *outputs.values()):
        stream.close()


def test_archive_sink_partitions_by_hour_and_replays_idempotently(ledger, tmp_path):
    data = trace(9000, seed=7, dup_every=0, late_every=0)
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, data)
    pipe = Pipeline("raw", "events", batch_size=1000)
    pipe.sink(ArchiveSink("archive", "events", time_column="ts", max_records=2500))
    runner = runner_for(pipe, ledger, log, tmp_path)
    runner.open()
    runner.run_until_caught_up()
    runner.flush()
    root = tmp_path / "buckets" / "archive" / "events"
    files = sorted(root.rglob("*.parquet"))
    partitions = {(f.parent.parent.name, f.parent.name) for f in files}
    expected = {(f"date={t:%Y-%m-%d}", f"hour={t:%H}") for t in data["ts"].to_pylist()}
    assert partitions == expected
    assert ("date=2023-12-31", "hour=23") in partitions  # the first events' jitter
    table = pq.read_table(files[0].parent)
    assert table.schema.field("fee").type == pa.int64()
    # a replay from scratch with fresh state rewrites the same files: nothing doubles
    with ledger.begin() as conn:
        from headrace.ledger.checkpoints import reset_pipeline

        reset_pipeline(conn, "raw")
    again = runner_for(pipe, ledger, log, tmp_path)
    again.open()
    again.run_until_caught_up()
    again.flush()
    n, distinct = archived(root)
    assert n == distinct == data.num_rows
    log.close()


def test_function_sink_enqueues_one_invocation_per_batch(ledger, tmp_path):
    data = trace(300, dup_every=0, late_every=0)
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, data, chunk=100)
    pipe = Pipeline("calls", "events", batch_size=100)
    pipe.sink(FunctionSink("score"))
    runner = runner_for(pipe, ledger, log, tmp_path)
    runner.open()
    runner.run_until_caught_up()
    rows = ledger.list_invocations(function="score")
    assert len(rows) == 3
    payloads = sorted(
        (
            r["payload"]
            if isinstance(r["payload"], dict)
            else __import__("json").loads(r["payload"])
        )["batch"]
        for r in rows
    )
    assert payloads == [1, 2, 3]
    log.close()


def test_records_removed_by_retention_are_a_clear_error(ledger, tmp_path):
    log = open_log(str(tmp_path / "streams"), "events", retention_bytes=1)
    fill(log, trace(500, dup_every=0, late_every=0), chunk=100)
    log.enforce_retention()
    pipe = Pipeline("fees", "events").dedup("id", ttl=60)
    runner = runner_for(pipe, ledger, log, tmp_path)
    runner.open()
    # a new pipeline starts at the retention start; an old checkpoint behind it is an error
    with ledger.begin() as conn:
        from headrace.ledger.checkpoints import commit_batch

        commit_batch(
            conn,
            "fees",
            0,
            seq=1,
            offset=0,
            watermark=None,
            log_end=0,
            records=0,
            late=0,
            state={},
        )
    stale = runner_for(pipe, ledger, log, tmp_path)
    stale.open()
    assert log.start_offset(0) > 0
    with pytest.raises(StreamError, match="retention"):
        stale.step()
    log.close()


def test_archive_buffer_survives_a_restart(ledger, tmp_path):
    data = trace(3000, seed=9, dup_every=0, late_every=0)
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, data)
    pipe = Pipeline("raw", "events", batch_size=500)
    pipe.sink(ArchiveSink("archive", "events/", time_column="ts", max_records=10**6))
    first = runner_for(pipe, ledger, log, tmp_path)
    first.open()
    assert first.step() == 500 and first.step() == 500  # buffered, checkpointed, not written
    root = tmp_path / "buckets" / "archive" / "events"
    assert not list(root.rglob("*.parquet"))
    again = runner_for(pipe, ledger, log, tmp_path)  # a new process after a crash
    again.open()
    again.run_until_caught_up()
    again.drain()
    n, distinct = archived(root)
    assert n == distinct == data.num_rows
    log.close()


def test_replay_is_exactly_once_on_every_log_backend(open_stream, tmp_path):
    """The same crash-between-sink-and-commit replay with the log on embedded, Redis, NATS."""
    from headrace.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    data = trace(5000, seed=21)
    source = open_stream()
    fill(source, data, chunk=250)
    outputs = {"windows": open_stream(), "late": open_stream()}
    pipe = Pipeline("fees", "events", batch_size=400)
    pipe.dedup("id", ttl=3600 * 24)
    fee_windows(pipe, late=StreamSink(outputs["late"].name))
    pipe.to_stream(outputs["windows"].name)
    pipe.sink(Explodes(at=4))
    streams = {log.name: log for log in outputs.values()}
    runner = runner_for(pipe, ledger, source, tmp_path, streams=streams)
    runner.open()
    with pytest.raises(StreamError):
        runner.run_until_caught_up()
    pipe.stages[-1].template.fired = True
    again = runner_for(pipe, ledger, source, tmp_path, streams=streams)
    again.open()
    again.run_until_caught_up()
    again.flush()
    windows = outputs["windows"].read(0, 0, outputs["windows"].end_offset(0))
    truth, late_ids = batch_truth(data)
    assert as_rows(windows) == as_rows(truth)
    late = outputs["late"].read(0, 0, outputs["late"].end_offset(0))
    assert sorted(late["id"].to_pylist()) == sorted(late_ids)
    ledger.close()


def test_a_window_ending_past_the_year_9999_flushes_and_reads(ledger, tmp_path):
    """A record of 9999-12-31 falls in a window that ends in year 10000, past Python's
    datetimes: the flush, the watermark, a function payload and `streams read` still work."""
    from headrace.streams.operators import aggregations as agg
    from headrace.streams.rows import python_rows

    root = str(tmp_path / "streams")
    log = open_log(root, "events")
    times = [datetime(2024, 5, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC)]
    log.append(pa.table({"id": [1, 2], "t": pa.array(times, pa.timestamp("us", tz="UTC"))}))
    outputs = {name: open_log(root, name) for name in ("windows", "future-late")}
    pipe = Pipeline("future", "events")
    pipe.tumbling(60, time_column="t", aggs={"n": agg.count()})
    pipe.to_stream("windows")
    pipe.sink(FunctionSink("on_windows"))
    runner = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    runner.open()
    runner.run_until_caught_up()
    runner.flush()
    assert runner.status.watermark is not None
    rows = python_rows(outputs["windows"].read(0, 0, 10))
    assert [r["n"] for r in rows] == [1, 1]
    assert rows[-1]["window_end"] == "10000-01-01T00:00:00.000000+0000"
    calls = ledger.list_invocations(function="on_windows")
    payloads = [
        c["payload"] if isinstance(c["payload"], dict) else json.loads(c["payload"]) for c in calls
    ]
    sent = [record["window_end"] for payload in payloads for record in payload["records"]]
    assert sorted(sent) == ["10000-01-01T00:00:00.000000+0000", "2024-05-01 00:01:00+00:00"]
    for stream in (log, *outputs.values()):
        stream.close()


@pytest.mark.parametrize("operator", ["dedup", "tumbling", "session"])
def test_a_checkpoint_taken_before_the_operator_saw_a_record_restores(ledger, tmp_path, operator):
    """A first batch that a filter empties commits before the next operator kept anything; a
    fresh runner (a restart, a flush) restores that checkpoint and goes on."""
    from headrace.streams.operators import aggregations as agg

    root = str(tmp_path / "streams")
    log = open_log(root, "events")
    at = pa.timestamp("us", tz="UTC")
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    log.append(pa.table({"id": [1, 2, 3], "t": pa.array([t0] * 3, at)}))
    outputs = {name: open_log(root, name) for name in ("out", "p-late")}

    def pipeline() -> Pipeline:
        pipe = Pipeline("p", "events")
        pipe.filter(lambda table: pa.compute.greater(table["id"], 100))
        if operator == "dedup":
            pipe.dedup("id", ttl=60, time_column="t")
        elif operator == "tumbling":
            pipe.tumbling(60, time_column="t", aggs={"n": agg.count()})
        else:
            pipe.session(60, time_column="t", key="id", aggs={"n": agg.count()})
        pipe.to_stream("out")
        return pipe

    first = runner_for(pipeline(), ledger, log, tmp_path, streams=outputs)
    first.open()
    assert first.run_until_caught_up() == 3
    log.append(pa.table({"id": [200, 201], "t": pa.array([t0] * 2, at)}))
    again = runner_for(pipeline(), ledger, log, tmp_path, streams=outputs)
    again.open()
    assert again.run_until_caught_up() == 2
    again.flush()
    out = outputs["out"].read(0, 0, 10)
    assert out.num_rows == (2 if operator != "tumbling" else 1)
    for stream in (log, *outputs.values()):
        stream.close()


class CommitFails(Explodes):
    """Fails once inside the batch's ledger transaction (its commit), at a given batch."""

    name = "commit-fails"

    def write(self, table, batch):
        pass

    def commit(self, conn, batch):
        if batch.seq == self.at and not self.fired:
            self.fired = True
            raise RuntimeError("the ledger transaction failed")


def test_a_caught_up_run_holds_one_connection_and_lets_it_go(ledger, tmp_path):
    """The batches of one catch-up share a ledger connection, returned to the pool at the
    end; a transaction that fails lets it go as well, and the replay gives the same result."""
    data = trace(3000, seed=4)
    root = str(tmp_path / "streams")
    log = open_log(root, "events")
    fill(log, data)
    outputs = {"windows": open_log(root, "windows")}
    pipe = make_pipeline(batch_size=300)
    pipe.to_stream("windows")
    pipe.sink(CommitFails(at=4))
    pipe.stages[1].late = MemorySink("late")
    runner = runner_for(pipe, ledger, log, tmp_path, streams=outputs)
    runner.open()
    pool = ledger.engine.pool
    held = []
    runner.on_batch = lambda r, counts: held.append((r._conn is not None, pool.checkedout()))
    with pytest.raises(RuntimeError, match="the ledger transaction failed"):
        runner.run_until_caught_up()
    assert runner._conn is None and pool.checkedout() == 0
    assert held == [(True, 1)] * 3  # batches 1-3 committed on the one held connection
    pipe.stages[-1].template.fired = True  # the runner rebuilds its stages from the template
    runner.run_until_caught_up()  # reopens from batch 3's commit
    runner.flush()
    runner.close()
    assert pool.checkedout() == 0
    truth, _ = batch_truth(data)
    assert as_rows(outputs["windows"].read(0, 0, 10**6)) == as_rows(truth)
    for stream in (log, *outputs.values()):
        stream.close()


def test_a_catch_up_asks_the_log_for_its_end_once_in_many_batches(tmp_path):
    """The end offset only grows: while the one last read covers the next batch, planning it
    needs no new one (a second at most, for the lag shown)."""
    from headrace.ledger import Ledger

    data = trace(3000, seed=5)
    log = open_log(str(tmp_path / "streams"), "events")
    fill(log, data)
    asked = []
    end_offset = log.end_offset
    log.end_offset = lambda partition: asked.append(partition) or end_offset(partition)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    pipe = Pipeline("ends", "events", batch_size=100)
    pipe.sink(MemorySink("out"))
    runner = PartitionRunner(pipe, 0, log=log, ledger=ledger, context=SinkContext("ends", 0))
    n = data.num_rows
    assert runner.run_until_caught_up() == n
    assert runner.status.batches == -(-n // 100) and runner.status.log_end == n
    assert len(asked) < 10
    runner.close()
    ledger.close()
    log.close()
