"""Starting, reading and stopping executions in the ledger (what the CLI and scripts call)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from headrace.errors import AppError, HeadraceError
from headrace.ledger import Ledger, map_runs
from headrace.ledger import activities as activity_store
from headrace.ledger import executions as store
from headrace.workflows.activities import (
    ActivityError,
    activity_arn,
    check_activity_name,
    name_of,
)
from headrace.workflows.children import stop_children
from headrace.workflows.history import HISTORY_QUOTA
from headrace.workflows.names import check_execution_input, check_execution_name

STOP_TIMEOUT = 10.0  # seconds stop_execution keeps trying while the coordinator writes


class ExecutionError(HeadraceError):
    """An execution cannot be started, found or stopped."""


class HasStateMachines(Protocol):
    """Anything holding registered state machines by name, such as a `headrace.App`."""

    @property
    def state_machines(self) -> Mapping[str, dict[str, Any]]: ...


def execution_arn(state_machine: str, name: str) -> str:
    return f"arn:aws:states:local:000000000000:execution:{state_machine}:{name}"


def start_execution(
    ledger: Ledger,
    state_machines: Mapping[str, dict[str, Any]] | HasStateMachines,
    state_machine: str,
    input: Any = None,
    *,
    name: str | None = None,
) -> str:
    """Record a new execution of `state_machine`, one of `state_machines` (a name → definition
    mapping, or an App); the running coordinator picks it up. Returns its ARN."""
    machines = (
        state_machines if isinstance(state_machines, Mapping) else state_machines.state_machines
    )
    raw = machines.get(state_machine)
    if raw is None:
        known = ", ".join(sorted(machines)) or "none"
        raise AppError(
            f"state machine {state_machine!r}",
            f"is not registered (known: {known})",
            "check the name",
        )
    name = str(uuid.uuid4()) if name is None else check_execution_name(name)
    try:
        with ledger.begin() as conn:
            return record_execution(conn, state_machine, raw, input, name=name)
    except IntegrityError:
        raise ExecutionError(
            f"execution {name!r}", "already exists", "choose another --name, or omit it"
        ) from None


def record_execution(
    conn: Connection, state_machine: str, definition: dict[str, Any], input: Any, *, name: str
) -> str:
    """Write a new execution (its ExecutionStarted event) in the caller's transaction; returns
    its ARN. `name` must be valid (check_execution_name); the input is checked here."""
    check_execution_input(input)
    arn = execution_arn(state_machine, name)
    store.start_execution(
        conn,
        execution_id=arn,
        name=name,
        state_machine=state_machine,
        definition=definition,
        input={} if input is None else input,
        seed=random.randrange(2**31),
    )
    return arn


def _existing(conn: Connection, name_or_arn: str) -> dict[str, Any]:
    row = store.find(conn, name_or_arn)
    if row is None:
        raise ExecutionError(
            f"execution {name_or_arn!r}", "does not exist", "check the name or ARN"
        )
    return row


def describe_execution(ledger: Ledger, name_or_arn: str) -> dict[str, Any]:
    with ledger.reader.connect() as conn:
        row = _existing(conn, name_or_arn)
        links = map_run_links(conn, row["id"])
    for key in ("input", "output"):
        if row.get(key) is not None:
            row[key] = json.loads(row[key])
    row.pop("definition", None)
    row.update(links)
    return row


def map_run_links(conn: Connection, execution_id: str) -> dict[str, str]:
    """For a Distributed Map's child execution, its Map Run (DescribeExecution's mapRunArn)
    and its parent execution, as `map_run` and `parent`; nothing for any other execution."""
    run = map_runs.parent_of(conn, execution_id)
    return {} if run is None else {"map_run": run["id"], "parent": run["execution_id"]}


def get_history(ledger: Ledger, name_or_arn: str) -> list[dict[str, Any]]:
    execution = describe_execution(ledger, name_or_arn)
    with ledger.reader.connect() as conn:
        loaded = store.load(conn, execution["id"])
    assert loaded is not None
    return [
        {"id": seq, "type": kind, "timestamp": ts, "scope": scope, "details": details}
        for seq, kind, ts, scope, details in loaded[1]
    ]


def stop_execution(
    ledger: Ledger, name_or_arn: str, *, error: str = "", cause: str = ""
) -> dict[str, Any]:
    execution = describe_execution(ledger, name_or_arn)
    deadline = time.monotonic() + STOP_TIMEOUT
    while execution["status"] == "RUNNING":
        try:
            with ledger.begin() as conn:
                if not store.lock_running(conn, execution["id"]):
                    break  # it ended meanwhile
                store.append_next(
                    conn, execution["id"], "ExecutionAborted", {"error": error, "cause": cause}
                )
                store.finish_execution(
                    conn, execution["id"], "ABORTED", None, error or None, cause or None
                )
                stop_children(conn, execution["id"])  # its Map Runs' child executions too
            break
        except IntegrityError:
            # a writer that does not take lock_running appended first: count again
            if time.monotonic() >= deadline:
                raise ExecutionError(
                    f"execution {execution['name']!r}",
                    f"could not be stopped within {STOP_TIMEOUT:g} s: the coordinator kept "
                    "appending to its history",
                    "try again",
                ) from None
            time.sleep(0.01)
    return describe_execution(ledger, execution["id"])


def redrive_execution(ledger: Ledger, name_or_arn: str) -> dict[str, Any]:
    """Resume a FAILED, TIMED_OUT or ABORTED execution from where it stopped; the running
    coordinator picks it up. States that succeeded (and Map iterations) are not run again."""
    execution = describe_execution(ledger, name_or_arn)
    if execution["status"] not in ("FAILED", "TIMED_OUT", "ABORTED"):
        raise ExecutionError(
            f"execution {execution['name']!r}",
            f"is {execution['status']}; only failed, timed-out or aborted executions redrive",
            "start a new execution instead",
        )
    if execution.get("map_run"):
        raise ExecutionError(  # as on AWS: a Map Run's children are redriven with their parent
            f"execution {execution['name']!r}",
            f"is a child execution of Map Run {execution['map_run']}",
            f"redrive its parent execution {execution['parent']}; its failed and aborted "
            "children run again",
        )
    if f"maximum number of history events ({HISTORY_QUOTA})" in (execution["cause"] or ""):
        raise ExecutionError(  # as on AWS: its history has no room left
            f"execution {execution['name']!r}",
            f"reached the history quota of {HISTORY_QUOTA} events and cannot be redriven",
            "start a new execution instead",
        )
    with ledger.begin() as conn:
        # cumulative, as on AWS: the first redrive is 1, the next 2, ...
        count = store.count_events(conn, execution["id"], "ExecutionRedriven") + 1
        store.append_next(conn, execution["id"], "ExecutionRedriven", {"redriveCount": count})
        store.reopen_execution(conn, execution["id"])
    return describe_execution(ledger, execution["id"])


def list_map_runs(ledger: Ledger, name_or_arn: str) -> list[dict[str, Any]]:
    """The Map Runs of an execution's Distributed Map states, newest first (ListMapRuns)."""
    with ledger.reader.connect() as conn:
        return map_runs_of(conn, _existing(conn, name_or_arn)["id"])


def map_runs_of(conn: Connection, execution_id: str) -> list[dict[str, Any]]:
    """ListMapRuns for an execution known to exist."""
    return [_map_run(conn, run) for run in map_runs.list_runs(conn, execution_id)]


def describe_map_run(ledger: Ledger, map_run_arn: str) -> dict[str, Any]:
    """A Map Run's configuration and progress, as DescribeMapRun gives them: `itemCounts` and
    `executionCounts` (one child execution per item: the same counts)."""
    with ledger.reader.connect() as conn:
        return _map_run(conn, _existing_run(conn, map_run_arn))


def _existing_run(conn: Connection, map_run_arn: str) -> dict[str, Any]:
    run = map_runs.find_run(conn, map_run_arn)
    if run is None:
        raise ExecutionError(
            f"Map Run {map_run_arn!r}",
            "does not exist",
            "pass a MapRunArn from `headrace list-map-runs EXECUTION`",
        )
    return run


def _map_run(conn: Connection, run: dict[str, Any]) -> dict[str, Any]:
    counts = map_runs.counts(conn, run)
    return {
        "mapRunArn": run["id"],
        "executionArn": run["execution_id"],
        "stateName": run["state"],
        "executionType": run["execution_type"],
        "status": run["status"],
        "startDate": run["started_at"],
        "stopDate": run["stopped_at"],
        "maxConcurrency": run["max_concurrency"],
        "toleratedFailureCount": run["tolerated_count"],
        "toleratedFailurePercentage": run["tolerated_percentage"],
        "itemCounts": counts,
        "executionCounts": dict(counts),
        "redriveCount": run["redrive_count"],
        "redriveDate": run["redriven_at"],
    }


def map_run_executions(
    ledger: Ledger,
    map_run_arn: str,
    status: str | None = None,
    *,
    after: int = -1,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The child executions of a Map Run past item index `after`, by item index, at most
    `limit` (ListExecutions with mapRunArn)."""
    with ledger.reader.connect() as conn:
        _existing_run(conn, map_run_arn)
        return map_runs.children(conn, map_run_arn, status, after=after, limit=limit)


class TaskTokenError(HeadraceError):
    """SendTaskSuccess/Failure/Heartbeat named a token no task waits on; `code` is the error
    Step Functions returns: InvalidToken, TaskDoesNotExist or TaskTimedOut."""

    def __init__(self, subject: str, reason: str, fix: str | None = None) -> None:
        super().__init__(subject, reason, fix)
        self.code = reason.split(":", 1)[0]


#: Longest task token Step Functions accepts.
MAX_TOKEN_LENGTH = 1024

#: History events that close a task (in the scope that scheduled it).
_TASK_CLOSED = (
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "ActivitySucceeded",
    "ActivityFailed",
    "ActivityTimedOut",
    "ActivityScheduleFailed",
)


def check_task_token(ledger: Ledger, token: str) -> None:
    """Raise TaskTokenError unless a `.waitForTaskToken` task is waiting on `token`, as
    Step Functions answers SendTaskSuccess/Failure/Heartbeat: InvalidToken for a malformed
    token, TaskDoesNotExist for one no task handed out, TaskTimedOut for one whose task (or
    execution) has ended. The coordinator checks again when it applies the request."""
    shown = token if len(token) <= 120 else token[:120] + "…"
    subject = f"task token {shown!r}"
    if not 1 <= len(token) <= MAX_TOKEN_LENGTH:
        raise TaskTokenError(
            subject,
            f"InvalidToken: a token has 1 to {MAX_TOKEN_LENGTH} characters (it has {len(token)})",
            "pass the token exactly as the task received it ($$.Task.Token)",
        )
    with ledger.reader.connect() as conn:
        loaded = store.load(conn, token.split("#", 1)[0])
    if loaded is None or _task_open(loaded, token) is None:
        raise TaskTokenError(
            subject,
            "TaskDoesNotExist: no .waitForTaskToken or activity task was given this token",
            "pass the token exactly as the task received it ($$.Task.Token, or "
            "get-activity-task's taskToken)",
        )
    execution = loaded[0]
    if not _task_open(loaded, token):
        raise TaskTokenError(
            subject,
            "TaskTimedOut: its task has already ended"
            + (
                f" (execution {execution['name']} is {execution['status']})"
                if execution["status"] != "RUNNING"
                else ""
            ),
            "nothing waits on this token any more; check the execution's history",
        )


def _task_open(loaded: tuple[dict[str, Any], list[tuple]], token: str) -> bool | None:
    """Whether the task given `token` still waits for its outcome; None when no task of this
    execution was given it."""
    execution, events = loaded
    scheduled = None
    for seq, kind, _ts, scope, details in events:
        given = str(details.get("token", ""))
        if (
            kind == "TaskScheduled"
            and given.rsplit("#", 1)[0] == token
            and str(details.get("resource", "")).endswith(".waitForTaskToken")
        ) or (kind == "ActivityScheduled" and given == token):
            scheduled = (seq, scope)
    if scheduled is None:
        return None
    return execution["status"] == "RUNNING" and not any(
        seq > scheduled[0] and scope == scheduled[1] and kind in _TASK_CLOSED
        for seq, kind, _ts, scope, _details in events
    )


def send_task_success(ledger: Ledger, token: str, output: Any) -> None:
    """End the `.waitForTaskToken` task holding `token` with `output` (SendTaskSuccess)."""
    check_task_token(ledger, token)
    with ledger.begin() as conn:
        store.add_callback(conn, token, "success", output=output)


def send_task_failure(ledger: Ledger, token: str, error: str = "", cause: str = "") -> None:
    """Fail the task holding `token` with `error` and `cause` (SendTaskFailure)."""
    check_task_token(ledger, token)
    with ledger.begin() as conn:
        store.add_callback(conn, token, "failure", error=error, cause=cause)


def send_task_heartbeat(ledger: Ledger, token: str) -> None:
    """Tell the task holding `token` its worker is alive (SendTaskHeartbeat)."""
    check_task_token(ledger, token)
    with ledger.begin() as conn:
        store.add_callback(conn, token, "heartbeat")


def wait_for(ledger: Ledger, name_or_arn: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        row = describe_execution(ledger, name_or_arn)
        if row["status"] != "RUNNING" or time.time() >= deadline:
            return row
        time.sleep(0.05)


# -- activities ----------------------------------------------------------------------------------

#: How long GetActivityTask waits for a task before answering with none, as on AWS.
ACTIVITY_POLL_SECONDS = 60.0
_POLL_INTERVAL = 0.2


def create_activity(ledger: Ledger, name: str) -> dict[str, Any]:
    """Create activity `name` (CreateActivity; creating one that exists returns it)."""
    check_activity_name(name)
    with ledger.begin() as conn:
        created = activity_store.create(conn, name)
    return {"activityArn": activity_arn(name), "name": name, "creationDate": created}


def describe_activity(ledger: Ledger, name_or_arn: str) -> dict[str, Any]:
    name = name_of(name_or_arn)
    with ledger.reader.connect() as conn:
        row = activity_store.get(conn, name)
    if row is None:
        raise ActivityError(
            f"activity {name!r}",
            "ActivityDoesNotExist: no activity has this name",
            f"create it with `headrace create-activity {name}`",
        )
    return {"activityArn": activity_arn(name), "name": name, "creationDate": row["created_at"]}


def list_activities(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.reader.connect() as conn:
        rows = activity_store.list_all(conn)
    return [
        {"activityArn": activity_arn(r["name"]), "name": r["name"], "creationDate": r["created_at"]}
        for r in rows
    ]


def delete_activity(ledger: Ledger, name_or_arn: str) -> None:
    """Delete an activity (DeleteActivity). Tasks already scheduled on it stay answerable;
    new ones fail with ActivityScheduleFailed, as on AWS."""
    name = name_of(name_or_arn)
    with ledger.begin() as conn:
        activity_store.delete_activity(conn, name)


def get_activity_task(
    ledger: Ledger,
    activity: str,
    worker_name: str | None = None,
    *,
    timeout: float = ACTIVITY_POLL_SECONDS,
) -> dict[str, Any]:
    """Take the oldest task waiting on `activity` (its name or ARN), waiting up to `timeout`
    seconds for one (GetActivityTask's long poll). Returns `{"taskToken", "input"}` — `input` is
    the task's input as a JSON string, as on AWS — or `{}` when none came. The worker answers
    with send_task_success / send_task_failure, and keeps a task with HeartbeatSeconds alive
    with send_task_heartbeat."""
    name = name_of(activity)
    if worker_name is not None and not 1 <= len(worker_name) <= 80:
        raise ActivityError(
            f"worker name {worker_name[:100]!r}",
            f"InvalidName: a worker name has 1 to 80 characters (it has {len(worker_name)})",
            "shorten it",
        )
    describe_activity(ledger, name)  # ActivityDoesNotExist
    deadline = time.monotonic() + timeout
    while True:
        found = _take_activity_task(ledger, name, worker_name or "")
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return {}
        time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def _take_activity_task(ledger: Ledger, name: str, worker: str) -> dict[str, Any] | None:
    with ledger.reader.connect() as conn:
        candidates = activity_store.waiting(conn, name)
    for row in candidates:
        with ledger.reader.connect() as conn:
            loaded = store.load(conn, row["execution_id"])
        if loaded is None or not _task_open(loaded, row["token"]):
            with ledger.begin() as conn:  # timed out, or its execution ended, before a worker
                activity_store.close(conn, row["token"])
            continue
        with ledger.begin() as conn:
            if not activity_store.take(conn, row["token"], worker):
                continue  # another worker took it first
            # the coordinator writes ActivityStarted (it alone appends to the history)
            store.add_callback(conn, row["token"], "started", output={"workerName": worker})
        return {"taskToken": row["token"], "input": row["input"]}
    return None
