"""The durable driver: runs executions inside the coordinator, one ledger transaction a turn.

A Task state bound to a headrace function becomes an invocation (keyed by the task's token), so
leases, workers, timeouts and crash recovery are the invocation machinery's. The TaskScheduled
event and its invocation are written in one transaction, and so are an invocation's end and the
TaskSucceeded/TaskFailed event, so after a crash every execution resumes from its history: no
task is lost and none is run again once its outcome is recorded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from headrace.functions.spec import FunctionSpec
from headrace.ledger import Ledger, NewInvocation, new_id
from headrace.ledger import executions as store
from headrace.workflows.asl import parse
from headrace.workflows.history import Event
from headrace.workflows.integrations import (
    Target,
    call_payload,
    error_from_outcome,
    resolve,
    shape_result,
)
from headrace.workflows.interpreter import Interpreter
from headrace.workflows.items import StorageMapIO

log = logging.getLogger("headrace.workflows")


@dataclass(slots=True)
class _Task:
    execution_id: str
    scope: str
    name: str
    token: str
    target: Target


class WorkflowDriver:
    def __init__(
        self,
        ledger: Ledger,
        functions: Mapping[str, FunctionSpec],
        env: dict[str, Any] | None = None,
    ) -> None:
        self.ledger = ledger
        self.functions = functions  # the app's registry itself: later registrations count
        self.env = {"ledger": ledger.url, **(env or {})}  # what service tasks are told
        self.active: dict[str, Interpreter] = {}
        self.dirty: set[str] = set()
        self.tasks: dict[str, _Task] = {}  # invocation id -> the Task state waiting for it
        self.linked: set[str] = set()  # tokens of tasks that have an invocation
        self.saved: dict[str, int] = {}  # execution id -> events already in the ledger

    def reset(self) -> None:
        """Forget the in-memory state after a failed transaction; the ledger rebuilds it."""
        self.active.clear()
        self.dirty.clear()
        self.tasks.clear()
        self.linked.clear()
        self.saved.clear()

    # -- loading ------------------------------------------------------------------------------

    def refresh(self, conn: Connection) -> None:
        """Pick up executions started by others (CLI, API) or left running by a crash."""
        for execution_id in store.running_ids(conn):
            if execution_id not in self.active:
                self._load(conn, execution_id)

    def _load(self, conn: Connection, execution_id: str) -> None:
        loaded = store.load(conn, execution_id)
        if loaded is None:
            return
        row, events = loaded
        interp = Interpreter(
            parse(json.loads(row["definition"])),
            {
                "Id": execution_id,
                "Name": row["name"],
                "StateMachineId": f"arn:aws:states:local:000000000000:stateMachine:"
                f"{row['state_machine']}",
                "StateMachineName": row["state_machine"],
            },
            StorageMapIO(self.env.get("storage")),
        )
        for seq, kind, ts, scope, details in events:
            interp.apply(Event(seq, kind, ts, scope, details))
        self.active[execution_id] = interp
        self.saved[execution_id] = len(events)
        self.dirty.add(execution_id)
        # tasks scheduled before the restart: find their invocations, and outcomes already in
        pending = interp.pending_tasks()
        found = self.ledger.invocations_by_key(conn, [t["token"] for _, t in pending])
        outcomes: list[tuple[str, str, dict[str, Any]]] = []
        for scope, task in pending:
            target = resolve(task["resource"], task["parameters"])
            inv = found.get(task["token"])
            if inv is None or target is None:
                continue  # advance() schedules it again under the same token
            info = _Task(execution_id, scope, task["name"], task["token"], target)
            if target.shape == "callback" and inv["status"] == "succeeded":
                self.linked.add(task["token"])  # handed out; waiting for SendTaskSuccess
                continue
            if inv["status"] in ("succeeded", "dead"):
                outcomes.append(
                    self._outcome_event(
                        info, inv["status"], inv["result"], inv["error"], inv["traceback"]
                    )
                )
            else:
                self.tasks[inv["id"]] = info
                self.linked.add(task["token"])
        self._append(execution_id, outcomes)

    # -- the turn -----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        times = [t for i in self.active.values() if (t := i.next_timer()) is not None]
        return min(times) if times else None

    def advance(self, conn: Connection, now: float) -> list[NewInvocation]:
        """Decide and record what every changed execution does next; return its new tasks."""
        due = {
            eid for eid, i in self.active.items() if (t := i.next_timer()) is not None and t <= now
        }
        new: list[NewInvocation] = []
        for execution_id in sorted(self.dirty | due):
            interp = self.active.get(execution_id)
            if interp is None:
                continue
            failed_any = True
            while failed_any:
                failed_any = False
                while decisions := interp.decide(now):
                    for decision in decisions:
                        self._apply(interp, decision, now)
                # tasks waiting without an invocation: new ones, or ones lost before a crash
                for scope, task in interp.take_new_tasks():
                    if task["token"] in self.linked:
                        continue
                    inv = self._invocation(execution_id, scope, task)
                    if inv is not None:
                        new.append(inv)
                        continue
                    cause = f"resource {task['resource']!r} names no registered function"
                    failed = (
                        "TaskFailed",
                        scope,
                        {"name": task["name"], "error": "States.Runtime", "cause": cause},
                    )
                    self._apply(interp, failed, now)
                    failed_any = True
            self._persist(conn, execution_id, interp)
        self.dirty.clear()
        return new

    def _apply(self, interp: Interpreter, decision: tuple[str, str, dict], now: float) -> None:
        kind, scope, details = decision
        interp.apply(Event(len(interp.history) + 1, kind, now, scope, details))

    def _persist(self, conn: Connection, execution_id: str, interp: Interpreter) -> None:
        """Write the events not yet in the ledger, all in the caller's transaction."""
        start = self.saved.get(execution_id, 0)
        fresh = interp.history[start:]
        if fresh:
            store.append_events(
                conn, execution_id, [(e.id, e.type, e.timestamp, e.scope, e.details) for e in fresh]
            )
            self.saved[execution_id] = len(interp.history)
        if interp.status != "RUNNING":
            store.finish_execution(
                conn, execution_id, interp.status, interp.output, interp.error, interp.cause
            )
            del self.active[execution_id]
            self.saved.pop(execution_id, None)

    def _invocation(
        self, execution_id: str, scope: str, task: dict[str, Any]
    ) -> NewInvocation | None:
        target = resolve(task["resource"], task["parameters"])
        if target is None or target.name not in self.functions:
            return None
        spec = self.functions[target.name]
        inv_id = new_id()
        self.tasks[inv_id] = _Task(execution_id, scope, task["name"], task["token"], target)
        self.linked.add(task["token"])
        timeout = float(task["timeout"]) if task.get("timeout") else None
        env = dict(self.env, idempotency_key=task["token"])
        return NewInvocation(
            function=spec.name,
            payload=call_payload(target, task["parameters"], env),
            max_attempts=1,  # the state's Retry decides about retries, not the function's
            source="workflow",
            idempotency_key=task["token"],
            id=inv_id,
            execution_id=execution_id,
            not_before=float(task.get("not_before") or 0) or None,
            timeout=timeout,
        )

    # -- outcomes -----------------------------------------------------------------------------

    def owns(self, invocation_id: str) -> bool:
        return invocation_id in self.tasks

    def finished(
        self,
        conn: Connection,
        invocation_id: str,
        status: str,
        result: Any,
        error: str | None,
        traceback: str | None,
    ) -> None:
        """An invocation of a Task state ended (in the caller's transaction)."""
        info = self.tasks.pop(invocation_id, None)
        if info is None:
            return
        if info.target.shape == "callback" and status == "succeeded":
            return  # the function handed the token on: SendTaskSuccess/Failure ends the task
        self.linked.discard(info.token)
        event = self._outcome_event(info, status, result, error, traceback)
        self._append(info.execution_id, [event])

    def apply_callbacks(self, conn: Connection) -> None:
        """SendTaskSuccess/Failure/Heartbeat requests: into the waiting task's history."""
        for cb in store.pending_callbacks(conn):
            execution_id = cb["token"].split("#", 1)[0]
            interp = self.active.get(execution_id)
            waiting = None
            if interp is not None:
                for scope, task in interp.pending_tasks():
                    base = task["token"].rsplit("#", 1)[0]
                    if base == cb["token"] and task["resource"].endswith(".waitForTaskToken"):
                        waiting = (scope, task)
                        break
            if waiting is None:
                store.mark_callback(conn, cb["id"], "rejected")
                continue
            scope, task = waiting
            if cb["kind"] == "heartbeat":
                event = ("TaskHeartbeat", scope, {"name": task["name"]})
            elif cb["kind"] == "success":
                output = json.loads(cb["output"]) if cb["output"] is not None else None
                event = ("TaskSucceeded", scope, {"name": task["name"], "output": output})
            else:
                event = (
                    "TaskFailed",
                    scope,
                    {"name": task["name"], "error": cb["error"] or "", "cause": cb["cause"] or ""},
                )
            self._append(execution_id, [event])
            if cb["kind"] != "heartbeat":
                self.linked.discard(task["token"])
            store.mark_callback(conn, cb["id"], "applied")

    def _outcome_event(
        self, info: _Task, status: str, result: Any, error: str | None, tb: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        if status == "succeeded":
            value = json.loads(result) if isinstance(result, str) else result
            return (
                "TaskSucceeded",
                info.scope,
                {"name": info.name, "output": shape_result(info.target, value)},
            )
        if error and error.startswith("InvocationTimeout"):
            return (
                "TaskTimedOut",
                info.scope,
                {"name": info.name, "error": "States.Timeout", "cause": error},
            )
        exc = error_from_outcome(error, tb)
        return (
            "TaskFailed",
            info.scope,
            {"name": info.name, "error": exc.error, "cause": exc.cause},
        )

    def _append(self, execution_id: str, events: list) -> None:
        """Apply outcome events; advance() writes them with whatever they lead to."""
        interp = self.active.get(execution_id)
        if interp is None or not events:
            return
        now = time.time()
        for decision in events:
            self._apply(interp, decision, now)
        self.dirty.add(execution_id)
