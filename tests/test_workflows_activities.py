"""Step Functions activities: worker processes poll a running coordinator's ledger for tasks
(get-activity-task), heartbeat and answer them (send-task-*), across a coordinator restart."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.ledger.schema import activity_tasks
from headrace.workflows import api
from headrace.workflows.activities import ActivityError
from tests.coordinator_thread import coordinator_thread
from tests.e2e_helpers import Up

APP_DIR = Path(__file__).parent / "apps" / "flows"
ARN = "arn:aws:states:us-east-1:123456789012:activity:resize"

WORKER = """
import json, sys
from headrace.ledger import Ledger
from headrace.workflows import api

ledger = Ledger(sys.argv[1])
while True:
    task = api.get_activity_task(ledger, sys.argv[2], sys.argv[3], timeout=float(sys.argv[4]))
    if not task:
        break
    data = json.loads(task["input"])
    api.send_task_heartbeat(ledger, task["taskToken"])
    api.send_task_success(ledger, task["taskToken"], {"by": sys.argv[3], "image": data["image"]})
"""


@pytest.fixture
def flows(tmp_path, request):
    home = tmp_path / "home"
    # a test marked `postgres` runs on a PostgreSQL ledger, the others on SQLite
    extra = (
        {"ledger": request.getfixturevalue("pg_url")}
        if request.node.get_closest_marker("postgres")
        else {}
    )
    settings = load_settings(APP_DIR, home=str(home), poll_interval=0.2, workers=1, **extra)
    app = load_app(settings)
    with coordinator_thread(settings, app):
        ledger = Ledger(settings.ledger_url)
        yield app, ledger, home
    ledger.close()


def _cli(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "headrace.cli", "-C", str(APP_DIR), *args],
        env={**os.environ, "HEADRACE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _types(ledger, arn):
    return [e["type"] for e in api.get_history(ledger, arn)]


@pytest.mark.slow
def test_a_worker_process_takes_heartbeats_and_answers_a_task(flows):
    app, ledger, home = flows
    made = _cli(home, "create-activity", "resize")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "arn:aws:states:local:000000000000:activity:resize"
    listed = json.loads(_cli(home, "list-activities", "--json").stdout)
    assert [a["name"] for a in listed["activities"]] == ["resize"]

    arn = api.start_execution(ledger, app, "resize", {"image": "cat.png"}, name="r1")
    taken = _cli(home, "get-activity-task", ARN, "--worker-name", "cli-worker", "--timeout", "30")
    assert taken.returncode == 0, taken.stderr
    task = json.loads(taken.stdout)
    assert json.loads(task["input"]) == {"image": "cat.png", "width": 640}
    beat = _cli(home, "send-task-heartbeat", task["taskToken"])
    assert beat.returncode == 0, beat.stderr
    for _ in range(4):  # longer than HeartbeatSeconds (15) in all, kept alive by heartbeats
        time.sleep(4)
        api.send_task_heartbeat(ledger, task["taskToken"])
    assert api.describe_execution(ledger, arn)["status"] == "RUNNING"
    done = _cli(home, "send-task-success", task["taskToken"], "--output", '{"width": 640}')
    assert done.returncode == 0, (done.stderr, api.get_history(ledger, arn))
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "SUCCEEDED", row
    assert row["output"] == {"image": "cat.png", "resized": {"width": 640}}
    events = api.get_history(ledger, arn)
    types = [e["type"] for e in events]
    assert [t for t in types if t.startswith("Activity")] == [
        "ActivityScheduled",
        "ActivityStarted",
        "ActivitySucceeded",
    ]
    assert "TaskScheduled" not in types and types.count("TaskHeartbeat") == 5
    started = next(e for e in events if e["type"] == "ActivityStarted")
    assert started["details"]["workerName"] == "cli-worker"
    # answered once: the token is refused after, as AWS does
    again = _cli(home, "send-task-success", task["taskToken"])
    assert again.returncode != 0 and "TaskTimedOut" in again.stderr
    # nothing waits: the long poll answers {} when its time is up
    empty = _cli(home, "get-activity-task", ARN, "--timeout", "0.5")
    assert empty.returncode == 0 and json.loads(empty.stdout) == {}


def _competing_workers(flows, tmp_path):
    app, ledger, _ = flows
    api.create_activity(ledger, "resize")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    arns = [
        api.start_execution(ledger, app, "resize_patient", {"image": f"{i}.png"}) for i in range(8)
    ]
    url = str(ledger.url)
    workers = [
        subprocess.Popen([sys.executable, str(script), url, ARN, f"w{n}", "4"], cwd=os.getcwd())
        for n in (1, 2)
    ]
    try:
        rows = [api.wait_for(ledger, arn, timeout=60) for arn in arns]
    finally:
        for w in workers:
            w.wait(60)
    assert [r["status"] for r in rows] == ["SUCCEEDED"] * 8, rows
    assert sorted(r["output"]["image"] for r in rows) == sorted(f"{i}.png" for i in range(8))
    assert {r["output"]["by"] for r in rows} <= {"w1", "w2"}
    for arn in arns:
        types = _types(ledger, arn)
        assert types.count("ActivityStarted") == 1 and types.count("ActivitySucceeded") == 1
    with ledger.engine.connect() as conn:
        taken = conn.execute(select(activity_tasks.c.worker)).scalars().all()
    assert len(taken) == 8 and set(taken) <= {"w1", "w2"}


def test_competing_worker_processes_take_each_task_once(flows, tmp_path):
    _competing_workers(flows, tmp_path)


@pytest.mark.postgres
def test_competing_worker_processes_on_a_postgres(flows, tmp_path):
    _competing_workers(flows, tmp_path)


@pytest.mark.slow
def test_silent_worker_heartbeat_timeout_and_no_worker_timeout(flows):
    app, ledger, _ = flows
    api.create_activity(ledger, "resize")
    arn = api.start_execution(ledger, app, "resize", {"image": "a.png"})
    task = api.get_activity_task(ledger, ARN, "silent", timeout=20)
    assert task["taskToken"]
    row = api.wait_for(ledger, arn, timeout=60)  # no heartbeat within 15 s
    assert row["status"] == "SUCCEEDED" and row["output"]["error"]["Error"] == (
        "States.HeartbeatTimeout"
    )
    assert "ActivityTimedOut" in _types(ledger, arn)
    with pytest.raises(api.TaskTokenError, match="TaskTimedOut"):
        api.send_task_success(ledger, task["taskToken"], {})

    # no worker comes at all: TimeoutSeconds (2) from ActivityScheduled
    arn = api.start_execution(ledger, app, "resize_soon", {})
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "FAILED" and row["error"] == "States.Timeout", row
    types = _types(ledger, arn)
    assert "ActivityStarted" not in types and "ActivityTimedOut" in types
    # and the timed-out task is not handed to a worker that comes later
    assert api.get_activity_task(ledger, ARN, "late", timeout=0.5) == {}


def test_failure_unknown_activity_and_deleted_activity(flows):
    app, ledger, home = flows
    api.create_activity(ledger, "resize")
    arn = api.start_execution(ledger, app, "resize_patient", {})
    task = api.get_activity_task(ledger, ARN, "w", timeout=20)
    failed = _cli(home, "send-task-failure", task["taskToken"], "--error", "Bad", "--cause", "x")
    assert failed.returncode == 0, failed.stderr
    row = api.wait_for(ledger, arn, timeout=30)
    assert (row["status"], row["error"], row["cause"]) == ("FAILED", "Bad", "x")
    assert "ActivityFailed" in _types(ledger, arn)

    arn = api.start_execution(ledger, app, "unknown_activity", {})
    row = api.wait_for(ledger, arn, timeout=30)
    assert row["status"] == "FAILED" and "ActivityDoesNotExist" in row["cause"], row
    assert "ActivityScheduleFailed" in _types(ledger, arn)
    with pytest.raises(ActivityError, match="ActivityDoesNotExist"):
        api.get_activity_task(ledger, "arn:aws:states:us-east-1:1:activity:nobody", timeout=0)
    polled = _cli(home, "get-activity-task", "arn:aws:states:us-east-1:1:activity:nobody")
    assert polled.returncode != 0 and "ActivityDoesNotExist" in polled.stderr

    assert _cli(home, "delete-activity", ARN).returncode == 0
    assert api.list_activities(ledger) == []
    with pytest.raises(ActivityError, match="InvalidName"):
        api.create_activity(ledger, "bad name")


@pytest.mark.slow
def test_a_task_handed_out_stays_answerable_after_the_coordinator_restarts(tmp_path):
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    api.create_activity(ledger, "resize")
    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    try:
        arn = api.start_execution(ledger, app, "resize_patient", {"image": "b.png"})
        taken = _cli(home, "get-activity-task", ARN, "--worker-name", "survivor", "--timeout", "30")
        task = json.loads(taken.stdout)
        deadline = time.time() + 20  # the coordinator has written ActivityStarted
        while "ActivityStarted" not in _types(ledger, arn) and time.time() < deadline:
            time.sleep(0.1)
        up.kill9()
        assert _cli(home, "send-task-heartbeat", task["taskToken"]).returncode == 0
        up.start()
        done = _cli(home, "send-task-success", task["taskToken"], "--output", '{"ok": true}')
        assert done.returncode == 0, done.stderr
        row = api.wait_for(ledger, arn, timeout=60)
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    assert row["status"] == "SUCCEEDED" and row["output"] == {"ok": True}, (row, up.output())
    types = _types(ledger, arn)
    assert types.count("ActivityScheduled") == 1 and types.count("ActivityStarted") == 1
    assert types.count("ActivitySucceeded") == 1 and types.count("TaskHeartbeat") == 1
    ledger.close()


def test_execute_in_process_refuses_activity_tasks():
    from headrace.workflows import execute
    from headrace.workflows.asl import DefinitionError

    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Task", "Resource": ARN, "End": True}},
    }
    with pytest.raises(DefinitionError, match="needs a coordinator"):
        execute(definition, {})
