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
from headrace.ledger import Ledger
from headrace.ledger import executions as store
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


def describe_execution(ledger: Ledger, name_or_arn: str) -> dict[str, Any]:
    with ledger.reader.connect() as conn:
        row = store.find(conn, name_or_arn)
    if row is None:
        raise ExecutionError(
            f"execution {name_or_arn!r}", "does not exist", "check the name or ARN"
        )
    for key in ("input", "output"):
        if row.get(key) is not None:
            row[key] = json.loads(row[key])
    row.pop("definition", None)
    return row


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


class TaskTokenError(HeadraceError):
    """SendTaskSuccess/Failure/Heartbeat named a token no task waits on; `code` is the error
    Step Functions returns: InvalidToken, TaskDoesNotExist or TaskTimedOut."""

    def __init__(self, subject: str, reason: str, fix: str | None = None) -> None:
        super().__init__(subject, reason, fix)
        self.code = reason.split(":", 1)[0]


#: Longest task token Step Functions accepts.
MAX_TOKEN_LENGTH = 1024

#: History events that close a task (in the scope that scheduled it).
_TASK_CLOSED = ("TaskSucceeded", "TaskFailed", "TaskTimedOut")


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
    scheduled = None
    for seq, kind, _ts, scope, details in loaded[1] if loaded else ():
        if (
            kind == "TaskScheduled"
            and str(details.get("token", "")).rsplit("#", 1)[0] == token
            and str(details.get("resource", "")).endswith(".waitForTaskToken")
        ):
            scheduled = (seq, scope)
    if loaded is None or scheduled is None:
        raise TaskTokenError(
            subject,
            "TaskDoesNotExist: no .waitForTaskToken task was given this token",
            "pass the token exactly as the task received it ($$.Task.Token)",
        )
    execution, events = loaded
    closed = execution["status"] != "RUNNING" or any(
        seq > scheduled[0] and scope == scheduled[1] and kind in _TASK_CLOSED
        for seq, kind, _ts, scope, _details in events
    )
    if closed:
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
