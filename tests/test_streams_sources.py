"""Stream sources: the HTTP poller against the real simulator over HTTP, and the object source
on real local files and fsspec's memory:// store."""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import fsspec
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.errors import StreamError
from headrace.streams.simulator import Simulator, make_transaction
from headrace.streams.source_files import ObjectSource
from headrace.streams.source_http import HttpPoller
from headrace.streams.sources import Source, parse_retry_after, records_to_table


class FakeClock:
    """Wall clock for the simulator's arrivals, advanced by the test."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim():
    with Simulator(rate_per_s=20.0, seed=7) as s:
        yield s


def poll_until_table(poller: HttpPoller, deadline_s: float = 10.0) -> tuple[pa.Table, int]:
    """Call poll() in a tight loop (as a careless runner would) until it returns rows."""
    calls = 0
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        calls += 1
        table = poller.poll()
        if table is not None:
            return table, calls
        time.sleep(0.002)
    raise AssertionError(f"no records within {deadline_s}s; failures: {poller.failures}")


def gaps(sim: Simulator) -> list[float]:
    times = [t for t, _ in sim.request_log]
    return [b - a for a, b in itertools.pairwise(times)]


# ------------------------------------------------------------------ the simulator


def test_simulator_serves_the_newest_hundred_shaped_like_the_api(sim):
    body = httpx.get(sim.url).json()
    txs = body["txs"]
    assert len(txs) == 100
    times = [tx["time"] for tx in txs]
    assert times == sorted(times, reverse=True)  # newest first
    for tx in txs:
        assert len(tx["hash"]) == 64 and int(tx["hash"], 16) >= 0
        assert tx["vin_sz"] == len(tx["inputs"]) and tx["vout_sz"] == len(tx["out"])
        spent = sum(i["prev_out"]["value"] for i in tx["inputs"])
        assert sum(o["value"] for o in tx["out"]) == spent - tx["fee"]
        assert tx["fee"] > 0 and tx["size"] * 2 < tx["weight"] <= tx["size"] * 4
        assert all(o["addr"].startswith("bc1q") for o in tx["out"])
    assert httpx.get(sim.base_url + "/nope").status_code == 404


def test_simulator_is_deterministic_from_seed_and_clock():
    clock = FakeClock()
    with (
        Simulator(rate_per_s=5, seed=3, clock=clock) as a,
        Simulator(rate_per_s=5, seed=3, clock=clock) as b,
    ):
        clock.now += 2.5
        assert httpx.get(a.url).content == httpx.get(b.url).content
    assert make_transaction(3, 10, 1.0) == make_transaction(3, 10, 1.0)
    assert make_transaction(3, 10, 1.0) != make_transaction(4, 10, 1.0)


def test_fee_and_size_distributions_are_long_tailed():
    txs = [make_transaction(0, i, 0.0) for i in range(2000)]
    fees = sorted(tx["fee"] for tx in txs)
    sizes = sorted(tx["size"] for tx in txs)
    median_fee, p99_fee = fees[1000], fees[1980]
    assert 300 < median_fee < 10_000
    assert p99_fee > 8 * median_fee  # lognormal tail, not a bell
    assert 120 < sizes[1000] < 400 and sizes[1980] > 2 * sizes[1000]


def test_cli_serves_on_the_given_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace.streams.simulator", "--port", str(port), "--rate", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}/unconfirmed-transactions" in line
        assert len(httpx.get(f"http://127.0.0.1:{port}/unconfirmed-transactions").json()["txs"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------ HTTP poller


def test_polls_overlap_and_keep_nested_types():
    clock = FakeClock()
    with Simulator(rate_per_s=20, seed=1, clock=clock) as s, HttpPoller("tx", s.url) as poller:
        assert isinstance(poller, Source)
        first = poller.poll()
        clock.now += 1.0
        second = poller.poll()
    assert first.num_rows == second.num_rows == 100
    seen = set(first.column("hash").to_pylist())
    again = set(second.column("hash").to_pylist())
    assert 0 < len(seen & again) < 100  # duplicates the consumer must drop, and new ones
    inputs = first.schema.field("inputs").type
    assert pa.types.is_list(inputs) and pa.types.is_struct(inputs.value_type)
    assert inputs.value_type.field("prev_out").type.field("value").type == pa.int64()
    assert poller.stats["records"] == 200 and poller.stats["requests"] == 2


def test_500_then_recovery_with_backoff(sim):
    sim.fail_next(3, status=500)
    with HttpPoller("tx", sim.url, interval=0.01, backoff_base=0.2, max_backoff=1.0) as poller:
        table, calls = poll_until_table(poller)
        assert table.num_rows == 100
        # the tight loop called poll() many times, but backoff let only 4 requests through
        assert sim.requests == 4 and calls > 5
        failures = poller.failures
        assert [f["status"] for f in failures] == [500, 500, 500]
        assert all(f["kind"] == "http" and sim.url in f["error"] for f in failures)
        assert "500" in failures[0]["error"]
        for k, failure in enumerate(failures, start=1):
            assert 0.01 <= failure["retry_in"] <= min(1.0, 0.2 * 2 ** (k - 1))
        for gap, failure in zip(gaps(sim), failures, strict=True):
            assert gap >= failure["retry_in"] - 0.005
        assert poller.stats["failures"] == 3
        assert poller.stats["consecutive_failures"] == 0  # reset by the success
        assert poller.stats["backoff_until"] is None
        assert poller.stats["last_error"] == failures[-1]["error"]


def test_backoff_ceiling_grows_and_is_capped():
    from headrace.streams.sources import Backoff

    backoff = Backoff(base=0.5, cap=4.0, floor=0.1)
    delays = [backoff.failure(now=0.0) for _ in range(8)]
    ceilings = [min(4.0, 0.5 * 2**k) for k in range(8)]
    assert all(0.1 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert backoff.ceiling() == 4.0
    assert backoff.failure(retry_after=30, now=0.0) == 30
    backoff.success()
    assert backoff.consecutive == 0 and not backoff.active()


def test_429_retry_after_is_honoured(sim):
    sim.fail_next(1, status=429, retry_after=1)
    with HttpPoller("tx", sim.url, interval=0.01, backoff_base=0.01) as poller:
        table, _ = poll_until_table(poller)
        assert table.num_rows == 100
        (failure,) = poller.failures
    assert failure["kind"] == "rate_limited" and failure["status"] == 429
    assert "Retry-After 1" in failure["error"] and failure["retry_in"] >= 1.0
    assert [status for _, status in sim.request_log] == [429, 200]
    assert gaps(sim)[0] >= 1.0


def test_429_without_retry_after_backs_off(sim):
    sim.fail_next(1, status=429)
    with HttpPoller("tx", sim.url, interval=0.01, backoff_base=0.05) as poller:
        poll_until_table(poller)
        assert poller.failures[0]["retry_in"] <= 0.05


def test_malformed_body_is_a_failure_not_an_exception(sim):
    sim.malformed_next(1)
    with HttpPoller("tx", sim.url, interval=0.01, backoff_base=0.05) as poller:
        assert poller.poll() is None
        (failure,) = poller.failures
        assert failure["kind"] == "malformed" and failure["status"] == 200
        assert sim.url in failure["error"] and "not JSON" in failure["error"]
        assert poller.stats["consecutive_failures"] == 1 and poller.stats["backoff_until"]
        table, _ = poll_until_table(poller)
        assert table.num_rows == 100


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.items", "records path 'data.items' not found: no key 'data' at the top level"),
        ("txs.0", "'txs.0' is dict, not a list of records"),
        ("", "the body is dict, not a list of records"),
        ("txs.0.hash.x", "txs.0.hash is str, not an object with key 'x'"),
    ],
)
def test_records_path_that_does_not_lead_to_a_list(sim, path, expected):
    with HttpPoller("tx", sim.url, records=path) as poller:
        assert poller.poll() is None
        (failure,) = poller.failures
    assert failure["kind"] == "malformed"
    assert expected in failure["error"] and sim.url in failure["error"]
    if path == "data.items":
        assert "keys there: txs" in failure["error"]


def test_schema_casts_nested_fields(sim):
    schema = pa.schema(
        [
            ("hash", pa.string()),
            ("time", pa.timestamp("s")),
            ("fee", pa.int64()),
            ("out", pa.list_(pa.struct([("value", pa.int64()), ("addr", pa.string())]))),
        ]
    )
    with HttpPoller("tx", sim.url, schema=schema) as poller:
        table = poller.poll()
    assert table.schema == schema and table.num_rows == 100
    assert poller.failures == []


def test_schema_cast_error_names_the_field_and_keeps_the_rest(sim):
    # int16 holds fees up to 32767 sat: the lognormal tail of the stream does not fit
    schema = pa.schema([("hash", pa.string()), ("fee", pa.int16())])
    with HttpPoller("tx", sim.url, schema=schema) as poller:
        table = poller.poll()
        (failure,) = poller.failures
    rejected = poller.stats["rejected"]
    assert 0 < rejected < 100 and table.num_rows + rejected == 100
    assert failure["kind"] == "schema"
    assert f"{rejected} of 100 records do not fit the schema" in failure["error"]
    assert "field 'fee'" in failure["error"] and "int16" in failure["error"]
    assert max(table.column("fee").to_pylist()) <= 32767


def test_schema_with_a_required_field_that_is_missing(sim):
    schema = pa.schema([pa.field("block_height", pa.int64(), nullable=False)])
    with HttpPoller("tx", sim.url, schema=schema) as poller:
        assert poller.poll() is None
        (failure,) = poller.failures
    assert "field 'block_height': missing, but the field is not null" in failure["error"]
    assert poller.stats["rejected"] == 100
    assert poller.stats["consecutive_failures"] == 0  # the request worked: no backoff


def test_unreachable_server_is_a_network_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    url = f"http://127.0.0.1:{port}/x"
    with HttpPoller("tx", url, timeout=2, interval=0.5, max_backoff=5) as poller:
        assert poller.poll() is None
        (failure,) = poller.failures
        assert failure["kind"] == "network" and url in failure["error"]
        assert "ConnectError" in failure["error"]
        assert poller.poll() is None  # backing off: no second request
        assert poller.stats["requests"] == 1


def test_state_restores_counters_and_backoff(sim):
    sim.fail_next(1, status=503, retry_after=30)
    with HttpPoller("tx", sim.url, params={"limit": 5}) as poller:
        assert poller.poll() is None
        state = json.loads(json.dumps(poller.state()))
    assert "limit=5" in state["last_error"] and "503" in state["last_error"]
    assert state["failures"] == 1 and state["consecutive_failures"] == 1
    assert state["backoff_until"] > time.time() + 25
    with HttpPoller("tx", sim.url) as restarted:
        restarted.restore(state)
        assert restarted.next_poll_at > time.monotonic() + 25
        assert restarted.poll() is None  # the server's Retry-After still holds after a restart
        assert sim.requests == 1
        assert restarted.stats["failures"] == 1 and restarted.stats["last_error"]


def test_constructor_rejects_bad_arguments():
    with pytest.raises(StreamError, match="HTTP source 'x': interval must be > 0"):
        HttpPoller("x", "http://127.0.0.1/", interval=0)
    with pytest.raises(StreamError, match=r"schema must be a pyarrow\.Schema"):
        HttpPoller("x", "http://127.0.0.1/", schema={"a": "int"})


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= parse_retry_after(in_ten, now=now) <= 10
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True)) == 0.0


def test_records_to_table_without_schema_sets_aside_the_record_that_disagrees():
    table, rejected = records_to_table([{"a": 1, "b": 1}, {"a": 2, "b": "two"}, {"a": 3}])
    assert table.to_pylist() == [{"a": 1, "b": 1}, {"a": 3, "b": None}]
    ((index, record, reason),) = rejected
    assert index == 1 and record == {"a": 2, "b": "two"}
    assert "field 'b'" in reason and "text" in reason and "a number" in reason
    table, rejected = records_to_table([{"a": 1}, 5])
    assert table.num_rows == 1 and rejected[0].reason == "record 1 is int, not an object"
    table, problems = records_to_table([{"a": 1}, 5, {"a": "x"}], pa.schema([("a", pa.int64())]))
    assert table.column("a").to_pylist() == [1]
    assert problems[0].reason == "record 1 is int, not an object"
    assert problems[1].reason.startswith("record 2 field 'a': 'x' does not fit int64")


def test_records_to_table_without_schema_keeps_fields_the_first_record_lacks():
    # the trial: a 300 KB field on the second record of a poll vanished without a failure
    big = "x" * 300_000
    records = [{"id": "a"}, {"id": "b", "blob": big, "meta": {"k": 1}}, {"id": "c", "n": 2.5}]
    table, rejected = records_to_table(records)
    assert rejected == []
    assert table.column_names == ["id", "blob", "meta", "n"]
    assert table.column("blob").to_pylist() == [None, big, None]
    assert table.to_pylist()[2] == {"id": "c", "blob": None, "meta": None, "n": 2.5}
    nested, _ = records_to_table([{"m": {"x": 1}}, {"m": {"y": "z"}}])
    assert nested.column("m").to_pylist() == [{"x": 1, "y": None}, {"x": None, "y": "z"}]


def test_records_to_table_sets_aside_conflicting_nested_shapes_and_huge_ints():
    table, rejected = records_to_table(
        [{"m": {"x": [1]}}, {"m": {"x": {"y": 1}}}, {"m": {"x": [2]}}, {"m": {"x": 2**70}}]
    )
    assert table.column("m").to_pylist() == [{"x": [1]}, {"x": [2]}]
    assert [r.index for r in rejected] == [1, 3]
    assert all(r.reason.startswith(f"record {r.index} ") for r in rejected)


def test_poller_without_schema_keeps_late_fields_and_sets_aside_conflicts(sim):
    sim.serve_next([{"hash": "a", "fee": 1}, {"hash": "b", "fee": 2, "memo": "m" * 300_000}])
    sim.serve_next([{"hash": "c", "fee": 3}, {"hash": "d", "fee": "lots"}])
    with HttpPoller("tx", sim.url) as poller:
        first = poller.poll()
        assert first.column("memo").to_pylist() == [None, "m" * 300_000]
        assert poller.failures == [] and poller.take_rejected() == []
        poller._health.poll_again_at(0.0)
        second = poller.poll()
        (rejected,) = poller.take_rejected()
        assert poller.take_rejected() == []  # taken once
    assert second.column("hash").to_pylist() == ["c"]
    assert rejected.record == {"hash": "d", "fee": "lots"} and "field 'fee'" in rejected.reason
    assert poller.stats["rejected"] == 1
    (failure,) = poller.failures
    assert failure["kind"] == "records" and "1 of 2 records do not fit" in failure["error"]


# ------------------------------------------------------------------ object source


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def age(path, seconds: float = 600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_reads_each_new_object_once_in_every_format(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}])
    (tmp_path / "b.csv").write_text("id,v\n3,z\n")
    pq.write_table(pa.table({"id": [4], "v": ["w"]}), tmp_path / "c.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.json").write_text(json.dumps([{"id": 5, "v": "u"}]))
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".headrace-tmp-123-e.jsonl").write_text('{"id": 99}\n')
    for p in tmp_path.rglob("*"):
        if p.is_file():
            age(p)

    source = ObjectSource("files", str(tmp_path))
    assert isinstance(source, Source)
    table = source.poll()
    ids, keys = table.column("id").to_pylist(), table.column("_source_key").to_pylist()
    assert sorted(zip(ids, keys, strict=True)) == [
        (1, "a.jsonl"),
        (2, "a.jsonl"),
        (3, "b.csv"),
        (4, "c.parquet"),
        (5, "sub/d.json"),
    ]
    assert table.schema.field("v").type == pa.string()  # same type from every format
    assert source.poll() is None
    write_jsonl(tmp_path / "e.jsonl", [{"id": 6, "v": "t"}])
    age(tmp_path / "e.jsonl")
    assert source.poll().column("_source_key").to_pylist() == ["e.jsonl"]
    assert source.stats["objects_read"] == 5 and source.stats["records"] == 6


def test_restore_never_reads_an_object_twice(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": 1}])
    source = ObjectSource("files", f"file://{tmp_path}", settle_seconds=0)
    assert source.poll().num_rows == 1
    state = json.loads(json.dumps(source.state()))

    restarted = ObjectSource("files", f"file://{tmp_path}", settle_seconds=0)
    restarted.restore(state)
    assert restarted.poll() is None
    write_jsonl(tmp_path / "b.jsonl", [{"id": 2}])
    assert restarted.poll().column("_source_key").to_pylist() == ["b.jsonl"]
    # an overwrite is a new version of the key: read again
    write_jsonl(tmp_path / "a.jsonl", [{"id": 10}, {"id": 11}])
    os.utime(tmp_path / "a.jsonl", (time.time() - 100, time.time() - 100))
    assert restarted.poll().column("id").to_pylist() == [10, 11]
    assert restarted.poll() is None


def test_growing_file_is_read_only_once_stable(tmp_path):
    path = tmp_path / "grow.jsonl"
    source = ObjectSource("files", str(tmp_path), settle_seconds=60)
    with path.open("w") as f:
        f.write('{"id": 1}\n')
        f.flush()
        assert source.poll() is None  # first look
        assert source.stats["objects_pending"] == 1
        f.write('{"id": 2}\n')
        f.flush()
        assert source.poll() is None  # size changed since the last look
    assert source.poll().column("id").to_pylist() == [1, 2]  # unchanged across two looks
    assert source.stats["objects_pending"] == 0 and source.poll() is None


def test_memory_url_with_prefix():
    bucket = f"memory://headrace-test-{uuid.uuid4().hex[:8]}"
    fs, root = fsspec.core.url_to_fs(bucket)
    try:
        fs.pipe(f"{root}/raw/2024/a.jsonl", b'{"x": 1}\n{"x": 2}\n')
        fs.pipe(f"{root}/raw/2024/b.json", b'[{"x": 3}]')
        fs.pipe(f"{root}/other/c.jsonl", b'{"x": 4}\n')
        source = ObjectSource("mem", bucket, prefix="raw/", settle_seconds=0)
        table = source.poll()
        assert sorted(table.column("x").to_pylist()) == [1, 2, 3]
        keys = set(table.column("_source_key").to_pylist())
        assert keys == {"raw/2024/a.jsonl", "raw/2024/b.json"}
        assert source.poll() is None
        fs.pipe(f"{root}/raw/2025/d.jsonl", b'{"x": 5}\n')
        assert source.poll().column("x").to_pylist() == [5]
    finally:
        fs.rm(root, recursive=True)


def test_unreadable_object_is_recorded_and_skipped_until_rewritten(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    write_jsonl(tmp_path / "good.jsonl", [{"id": 1}])
    source = ObjectSource("files", str(tmp_path), settle_seconds=0)
    assert source.poll().column("_source_key").to_pylist() == ["good.jsonl"]
    (failure,) = source.failures
    assert failure["kind"] == "read" and failure["key"] == "bad.jsonl"
    assert "bad.jsonl cannot be read as jsonl" in failure["error"]
    assert source.poll() is None and len(source.failures) == 1  # not retried
    assert source.state()["unreadable"] == {"bad.jsonl": source.state()["unreadable"]["bad.jsonl"]}
    write_jsonl(tmp_path / "bad.jsonl", [{"id": 2}])
    os.utime(tmp_path / "bad.jsonl", (time.time() - 100, time.time() - 100))
    assert source.poll().column("id").to_pylist() == [2]


def test_max_objects_per_poll_and_next_poll_now(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"{i}.jsonl", [{"id": i}])
    source = ObjectSource("files", str(tmp_path), settle_seconds=0, max_objects=2, interval=30)
    assert source.poll().num_rows == 2
    assert source.next_poll_at <= time.monotonic()
    assert source.poll().num_rows == 1
    assert source.next_poll_at > time.monotonic() + 20


def test_object_source_rejects_bad_arguments(tmp_path):
    with pytest.raises(StreamError, match="format 'xml' is not supported"):
        ObjectSource("files", str(tmp_path), format="xml")
    with pytest.raises(StreamError, match="cannot open"):
        ObjectSource("files", "nosuchscheme://bucket")


def test_a_closed_poller_polls_again_when_a_new_coordinator_runs_it(sim):
    # an app's sources outlive a coordinator that stopped (and closed them) in the same process
    poller = HttpPoller("tx", sim.url, interval=0.01)
    poll_until_table(poller)
    poller.close()
    table, _ = poll_until_table(poller)
    assert table.num_rows > 0 and poller.failures == []
    poller.close()
