"""The coordinator in-process with the real local executor, ledger and watcher."""

import itertools
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger, NewInvocation
from headrace.server.coordinator import Coordinator

APP_DIR = Path(__file__).parent / "apps" / "basic"


class Running:
    def __init__(self, tmp_path: Path, ledger_url: str | None = None):
        self.settings = load_settings(
            APP_DIR, home=str(tmp_path / "home"), ledger=ledger_url, poll_interval=0.2, workers=2
        )
        self.app = load_app(self.settings)
        self.start()

    def start(self):
        self.coordinator = Coordinator(self.settings, self.app)
        self.thread = threading.Thread(target=self.coordinator.run, kwargs={"drain_timeout": 5})
        self.thread.start()
        assert self.coordinator.ready.wait(30)
        self.ledger = Ledger(self.settings.ledger_url)
        self.buckets = Path(self.settings.storage_url)

    def stop(self):
        self.coordinator.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.ledger.close()

    def invoke(self, function, payload=None, max_attempts=None):
        spec = self.app.spec(function)
        (inv,) = self.ledger.enqueue(
            [NewInvocation(function, payload or {}, max_attempts or spec.max_attempts)]
        )
        return inv

    def wait(self, inv, statuses=("succeeded", "dead"), timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            row = self.ledger.get_invocation(inv)
            if row and row["status"] in statuses:
                return row
            time.sleep(0.02)
        raise AssertionError(f"{inv} still {self.ledger.get_invocation(inv)['status']}")

    def wait_all(self, function, n, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.ledger.list_invocations(function=function, limit=10_000)
            done = [r for r in rows if r["status"] in ("succeeded", "dead")]
            if len(done) >= n:
                return rows
            time.sleep(0.05)
        raise AssertionError(f"only {len(done)} of {n} {function} invocations finished")


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    yield r
    r.stop()


def test_copied_file_triggers_lambda_style_handler(running):
    (running.buckets / "inbox" / "echo").mkdir(parents=True)
    src = running.buckets.parent / "a file.bin"
    src.write_bytes(b"12345")
    shutil.copy(src, running.buckets / "inbox" / "echo" / "a file.bin")
    (row,) = running.wait_all("echo", 1)
    assert row["status"] == "succeeded" and row["source"] == "object"
    result = json.loads(row["result"])
    rec = result["event"]["Records"][0]
    assert rec["eventName"] == "ObjectCreated:Put"
    assert rec["s3"]["object"]["key"] == "echo/a+file.bin"
    assert rec["s3"]["object"]["size"] == 5
    ctx = result["context"]
    assert ctx["function_name"] == "echo" and ctx["aws_request_id"] == row["id"]
    assert ctx["invoked_function_arn"].endswith(":function:echo")
    assert ctx["log_group_name"] == "/aws/lambda/echo" and ctx["memory_limit_in_mb"] == 1024
    assert 0 < ctx["remaining_ms"] <= 60_000
    (attempt,) = running.ledger.list_attempts(invocation_id=row["id"])
    log = Path(attempt["log_path"]).read_text()
    assert "hello from print" in log and "hello from logging" in log
    assert f"\t{row['id']}\t" in log  # Lambda's log line format carries the request id


def test_each_object_version_triggers_once(running):
    inbox = running.buckets / "inbox"
    (inbox / "copy").mkdir(parents=True)
    for i in range(20):
        (inbox / "copy" / f"f{i}.dat").write_bytes(b"v1-%d" % i)
    running.wait_all("copy", 20)
    time.sleep(0.6)  # a few poll passes: nothing is reported twice
    assert len(running.ledger.list_invocations(function="copy", limit=100)) == 20
    # a new version of one key triggers again
    time.sleep(0.01)
    (inbox / "copy" / "f3.dat").write_bytes(b"version two")
    running.wait_all("copy", 21)
    assert (running.buckets / "outbox" / "copy" / "f3.dat").read_bytes() == b"version two"


def test_objects_seen_before_a_restart_do_not_trigger_again(tmp_path):
    r = Running(tmp_path)
    try:
        (r.buckets / "inbox" / "copy").mkdir(parents=True)
        for i in range(5):
            (r.buckets / "inbox" / "copy" / f"{i}.dat").write_bytes(b"x")
        r.wait_all("copy", 5)
        r.stop()
        (r.buckets / "inbox" / "copy" / "new.dat").write_bytes(b"arrived while down")
        r.start()
        rows = r.wait_all("copy", 6)
        time.sleep(0.5)
        assert len(r.ledger.list_invocations(function="copy", limit=100)) == 6
        assert sum(1 for x in rows if x["status"] == "succeeded") == 6
    finally:
        r.stop()


def test_plain_handler_registered_by_reference(running):
    (running.buckets / "inbox" / "note.txt").write_text("hi")
    (row,) = running.wait_all("plain", 1)
    assert json.loads(row["result"]) == {
        "key": "note.txt",
        "request": row["id"],
        "event": "ObjectCreated:Put",
    }


def test_failures_retry_with_backoff_then_dead_letter_then_redrive(running):
    (running.buckets / "inbox" / "fail").mkdir(parents=True)
    (running.buckets / "inbox" / "fail" / "x.dat").write_bytes(b"bad")
    (row,) = running.wait_all("always_fails", 1)
    assert row["status"] == "dead" and row["attempts"] == 3
    assert row["error"] == "RuntimeError: this input is not acceptable"
    attempts = running.ledger.list_attempts(invocation_id=row["id"])
    assert [a["status"] for a in attempts] == ["error"] * 3
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # backoff doubles: 0.2 s then 0.4 s, half jittered
    (dead,) = running.ledger.list_dead_letters(function="always_fails")
    assert "raise RuntimeError" in dead["traceback"]
    assert running.ledger.redrive(function="always_fails") == [row["id"]]
    row = running.wait(row["id"])
    assert (
        row["status"] == "dead" and len(running.ledger.list_attempts(invocation_id=row["id"])) == 6
    )


def test_timeout_stops_the_worker_and_retries(running):
    inv = running.invoke("too_slow")
    row = running.wait(inv, timeout=30)
    assert row["status"] == "dead" and row["attempts"] == 2
    assert "InvocationTimeout" in row["error"] and "2 s" in row["error"]
    attempts = running.ledger.list_attempts(invocation_id=inv)
    assert [a["status"] for a in attempts] == ["timeout", "timeout"]
    assert all(a["duration_ms"] < 5000 for a in attempts)
    log = Path(attempts[0]["log_path"]).read_text()
    assert "going to sleep" in log and "InvocationTimeout" in log
    # the pool still works
    assert running.wait(running.invoke("noop"))["status"] == "succeeded"


def test_retry_succeeds_on_second_attempt(running):
    inv = running.invoke("flaky_once", max_attempts=2)
    row = running.wait(inv)
    assert row["status"] == "succeeded" and json.loads(row["result"]) == {"attempt": 2}


def test_reserved_concurrency_is_respected(running):
    ids = [running.invoke("one_at_a_time") for _ in range(5)]
    spans = sorted(
        (
            json.loads(running.wait(i)["result"])["started"],
            json.loads(running.wait(i)["result"])["finished"],
        )
        for i in ids
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01, "two invocations of a concurrency=1 function overlapped"


def test_scratch_space_is_removed_and_limited(running):
    row = running.wait(running.invoke("scratch", {"bytes": 100}))
    result = json.loads(row["result"])
    assert result["exists"] and not Path(result["tmp_dir"]).exists()
    row = running.wait(running.invoke("scratch", {"bytes": 2 * 1024 * 1024}))
    assert row["status"] == "dead" and "TmpSpaceExceeded" in row["error"]
    assert "1 MB limit" in row["error"]


def test_bad_results_and_unknown_functions_are_dead_letters(running):
    row = running.wait(running.invoke("bad_result"))
    assert row["status"] == "dead" and "not JSON" in row["error"]
    (inv,) = running.ledger.enqueue([NewInvocation("no_such_function", {}, 1)])
    row = running.wait(inv)
    assert row["status"] == "dead" and "not registered" in row["error"]
    # the coordinator carries on
    assert running.wait(running.invoke("noop"))["status"] == "succeeded"


def test_malformed_event_is_a_clear_error(running):
    row = running.wait(running.invoke("plain", {"bogus": True}))
    assert row["status"] == "dead" and row["error"].startswith("KeyError")
    row = running.wait(running.invoke("copy", {"Records": "nope"}))
    assert row["status"] == "dead" and "TypeError" in row["error"]


def test_metrics_endpoint(running):
    import urllib.request

    running.wait(running.invoke("noop"))
    assert running.coordinator.metrics_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(running.coordinator.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    assert 'headrace_invocations_total{function="noop",outcome="succeeded"} 1.0' in text


@pytest.mark.postgres
def test_runs_on_a_postgres_ledger(tmp_path, pg_url):
    r = Running(tmp_path, ledger_url=pg_url)
    try:
        (r.buckets / "inbox" / "copy").mkdir(parents=True)
        for i in range(10):
            (r.buckets / "inbox" / "copy" / f"{i}.dat").write_bytes(b"pg %d" % i)
        rows = r.wait_all("copy", 10)
        assert {x["status"] for x in rows} == {"succeeded"}
        assert r.wait(r.invoke("flaky_once", max_attempts=2))["status"] == "succeeded"
    finally:
        r.stop()
