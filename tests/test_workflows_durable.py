"""State machines run durably by the coordinator: Task states become invocations."""

import json
import random
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from headrace.app import load_app
from headrace.config import load_settings
from headrace.errors import LedgerError
from headrace.ledger import Ledger
from headrace.ledger.schema import attempts, invocations
from headrace.workflows import api
from tests.coordinator_thread import coordinator_thread
from tests.e2e_helpers import Up

APP_DIR = Path(__file__).parent / "apps" / "flows"


@pytest.fixture
def flows(tmp_path):
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=2)
    app = load_app(settings)
    with coordinator_thread(settings, app):
        ledger = Ledger(settings.ledger_url)
        yield app, ledger, tmp_path / "marks"
    ledger.close()


def test_map_fans_out_to_invocations(flows):
    app, ledger, marks = flows
    data = {"items": list(range(20)), "sleep": 0, "marks": str(marks)}
    arn = api.start_execution(ledger, app, "squares", data)
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"]["n"] == 20
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(20)]
    events = api.get_history(ledger, arn)
    types = [e["type"] for e in events]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert types.count("MapIterationStarted") == 20 and types.count("MapIterationSucceeded") == 20
    assert types.count("TaskSucceeded") == 20
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert len(list(marks.iterdir())) == 20
    # workflow tasks are not dead letters even when they fail; they are the machine's to handle
    assert ledger.list_dead_letters() == []


def test_retry_and_catch_through_the_coordinator(flows):
    app, ledger, marks = flows
    data = {"id": 7, "marks": str(marks)}
    arn = api.start_execution(ledger, app, "retry_and_catch", data, name="rc-1")
    row = api.wait_for(ledger, "rc-1", timeout=60)
    assert row["status"] == "SUCCEEDED", row
    out = row["output"]
    assert out["id"] == 7 and out["flaky"] == {"attempts": 3}, out
    assert out["error"]["Error"] == "ValueError"
    assert json.loads(out["error"]["Cause"])["errorMessage"].startswith("cannot handle")
    types = [e["type"] for e in api.get_history(ledger, arn)]
    assert types.count("TaskFailed") == 3 and types.count("TaskScheduled") == 4
    with pytest.raises(api.ExecutionError, match="already exists"):
        api.start_execution(ledger, app, "retry_and_catch", data, name="rc-1")


@pytest.mark.slow
def test_kill9_during_a_500_item_map(tmp_path):
    rng = random.Random(7)
    home = tmp_path / "home"
    marks = tmp_path / "marks"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    try:
        data = {"items": list(range(500)), "sleep": 0.005, "marks": str(marks)}
        arn = api.start_execution(ledger, app, "squares", data)
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 1.5))
            up.kill9()
            up.start()
        row = api.wait_for(ledger, arn, timeout=240)
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    assert row["status"] == "SUCCEEDED", (row, up.output())
    assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(500)]
    with ledger.engine.connect() as conn:
        per_token = conn.execute(
            select(invocations.c.idempotency_key, func.count())
            .where(invocations.c.execution_id == arn)
            .group_by(invocations.c.idempotency_key)
        ).all()
        ok = conn.execute(
            select(attempts.c.invocation_id, func.count())
            .where(attempts.c.status == "ok", attempts.c.function == "record")
            .group_by(attempts.c.invocation_id)
        ).all()
    assert len(per_token) == 500 and {n for _, n in per_token} == {1}
    # no item's task completed twice
    assert len(ok) == 500 and {n for _, n in ok} == {1}
    events = api.get_history(ledger, arn)
    assert [e["type"] for e in events].count("MapIterationSucceeded") == 500
    ledger.close()


def test_a_task_state_visited_again_runs_again(flows):
    app, ledger, _ = flows
    arn = api.start_execution(ledger, app, "doubling", {"value": 3})
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED" and row["output"] == {"value": 192}
    with ledger.engine.connect() as conn:
        n = conn.execute(
            select(func.count()).select_from(invocations).where(invocations.c.execution_id == arn)
        ).scalar_one()
    assert n == 6


def test_redrive_reruns_only_what_failed(flows):
    app, ledger, marks = flows
    gate = marks / "gate"
    items = list(range(6))
    data = {"items": items, "gate": str(gate), "marks": str(marks)}
    arn = api.start_execution(ledger, app, "gated", data, name="gated-1")
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "FAILED" and row["error"] == "FileNotFoundError", row
    done = api.start_execution(ledger, app, "doubling", {"value": 200})
    api.wait_for(ledger, done, timeout=30)
    with pytest.raises(api.ExecutionError, match="only failed"):
        api.redrive_execution(ledger, done)
    gate.mkdir(parents=True, exist_ok=True)
    (gate / "open").touch()
    assert api.redrive_execution(ledger, "gated-1")["status"] == "RUNNING"
    row = api.wait_for(ledger, arn, timeout=60)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"] == [{"item": i, "square": i * i} for i in items]
    # iterations that had succeeded before the redrive ran once; the gated one ran again
    # (and so may iterations the failure aborted while they ran)
    history = api.get_history(ledger, arn)
    redriven = next(e["id"] for e in history if e["type"] == "ExecutionRedriven")
    kept = {
        e["details"]["index"]
        for e in history
        if e["type"] == "MapIterationSucceeded" and e["id"] < redriven
    }
    runs = {i: len(list(marks.glob(f"{i}.*"))) for i in items}
    assert 3 not in kept and runs[3] == 2, runs
    assert kept and all(runs[i] == 1 for i in kept), (kept, runs)


def test_redrive_count_is_cumulative(flows):
    app, ledger, marks = flows
    gate = marks / "gate"
    data = {"items": [0, 3], "gate": str(gate), "marks": str(marks)}
    arn = api.start_execution(ledger, app, "gated", data, name="gated-twice")
    assert api.wait_for(ledger, arn, timeout=60)["status"] == "FAILED"
    api.redrive_execution(ledger, arn)
    assert api.wait_for(ledger, arn, timeout=60)["status"] == "FAILED"  # the gate is shut
    gate.mkdir(parents=True, exist_ok=True)
    (gate / "open").touch()
    api.redrive_execution(ledger, arn)
    assert api.wait_for(ledger, arn, timeout=60)["status"] == "SUCCEEDED"
    counts = [
        e["details"]["redriveCount"]
        for e in api.get_history(ledger, arn)
        if e["type"] == "ExecutionRedriven"
    ]
    assert counts == [1, 2]


def test_a_name_two_state_machines_used_is_ambiguous(flows):
    app, ledger, marks = flows
    first = api.start_execution(ledger, app, "doubling", {"value": 1}, name="twin")
    second = api.start_execution(
        ledger, app, "squares", {"items": [], "sleep": 0, "marks": str(marks)}, name="twin"
    )
    for call in (api.describe_execution, api.stop_execution, api.redrive_execution):
        with pytest.raises(LedgerError, match="more than one state machine") as e:
            call(ledger, "twin")
        assert first in str(e.value) and second in str(e.value) and "pass the" in str(e.value)
    with pytest.raises(LedgerError, match="more than one state machine"):
        api.get_history(ledger, "twin")
    assert api.describe_execution(ledger, "squares:twin")["id"] == second
    assert api.describe_execution(ledger, first)["id"] == first
    assert api.wait_for(ledger, "doubling:twin", timeout=60)["status"] == "SUCCEEDED"


def test_a_task_result_over_256_kib_fails_and_stays_out_of_the_history(flows):
    app, ledger, _ = flows
    arn = api.start_execution(ledger, app, "oversized", {"n": 300 * 1024})
    row = api.wait_for(ledger, arn, timeout=60)
    assert (row["status"], row["error"]) == ("FAILED", "States.DataLimitExceeded"), row
    history = api.get_history(ledger, arn)
    assert "TaskSucceeded" not in [e["type"] for e in history]
    assert all(len(json.dumps(e)) < 10_000 for e in history)
    ok = api.start_execution(ledger, app, "oversized", {"n": 1024})
    assert api.wait_for(ledger, ok, timeout=60)["output"] == {"n": 1024}


@pytest.mark.postgres
def test_map_on_a_postgres_ledger(tmp_path, pg_url):
    settings = load_settings(
        APP_DIR, home=str(tmp_path / "home"), ledger=pg_url, poll_interval=0.2, workers=2
    )
    app = load_app(settings)
    with coordinator_thread(settings, app):
        ledger = Ledger(settings.ledger_url)
        data = {"items": list(range(30)), "sleep": 0, "marks": str(tmp_path / "marks")}
        arn = api.start_execution(ledger, app, "squares", data)
        row = api.wait_for(ledger, arn, timeout=60)
        assert row["status"] == "SUCCEEDED", row
        assert row["output"]["results"] == [{"item": i, "square": i * i} for i in range(30)]
        events = api.get_history(ledger, arn)
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        ledger.close()


def _token(marks, timeout=20.0):
    path = marks / "token.txt"
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    return path.read_text()


def test_wait_for_task_token_with_heartbeats(flows):
    app, ledger, marks = flows
    arn = api.start_execution(ledger, app, "approval", {"marks": str(marks)})
    token = _token(marks)
    for _ in range(3):  # longer than HeartbeatSeconds in all, kept alive by heartbeats
        time.sleep(1.0)
        api.send_task_heartbeat(ledger, token)
    assert api.describe_execution(ledger, arn)["status"] == "RUNNING"
    api.send_task_success(ledger, token, {"approved": True})
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"]["approval"] == {"approved": True}
    types = [e["type"] for e in api.get_history(ledger, arn)]
    assert types.count("TaskHeartbeat") == 3
    # a token nobody waits for any more is refused, as Step Functions does, and not applied
    with pytest.raises(api.TaskTokenError, match="TaskTimedOut"):
        api.send_task_success(ledger, token, {"again": True})
    time.sleep(0.6)
    assert api.describe_execution(ledger, arn)["output"]["approval"] == {"approved": True}


def test_heartbeat_timeout_and_task_failure(flows):
    app, ledger, marks = flows
    arn = api.start_execution(ledger, app, "approval", {"marks": str(marks)}, name="silent")
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "SUCCEEDED" and row["output"]["error"]["Error"] == (
        "States.HeartbeatTimeout"
    )
    (marks / "token.txt").unlink()
    arn = api.start_execution(ledger, app, "approval", {"marks": str(marks)}, name="refused")
    api.send_task_failure(ledger, _token(marks), "Rejected", "not approved")
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "FAILED" and (row["error"], row["cause"]) == (
        "Rejected",
        "not approved",
    )


def test_stop_execution_while_it_waits(flows):
    app, ledger, marks = flows
    arn = api.start_execution(ledger, app, "approval", {"marks": str(marks)}, name="stopped")
    token = _token(marks)
    row = api.stop_execution(ledger, arn, error="Cancelled", cause="by the test")
    assert row["status"] == "ABORTED" and row["error"] == "Cancelled"
    time.sleep(3)  # past HeartbeatSeconds: the coordinator must not revive or fail it
    with pytest.raises(api.TaskTokenError, match="TaskTimedOut"):
        api.send_task_success(ledger, token, {"late": True})
    time.sleep(0.6)
    row = api.describe_execution(ledger, arn)
    assert row["status"] == "ABORTED" and row["output"] is None
    assert api.get_history(ledger, arn)[-1]["type"] == "ExecutionAborted"
    # and the coordinator carries on with other executions
    other = api.start_execution(ledger, app, "doubling", {"value": 50})
    assert api.wait_for(ledger, other, timeout=30)["status"] == "SUCCEEDED"


def test_execute_refuses_callback_tasks():
    from headrace.workflows import execute
    from headrace.workflows.asl import DefinitionError

    machine = load_app(load_settings(APP_DIR)).state_machines["approval"]
    with pytest.raises(DefinitionError, match="waitForTaskToken"):
        execute(machine, {}, resources={"ask": lambda e: None})
