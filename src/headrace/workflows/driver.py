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
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from headrace.functions.spec import FunctionSpec
from headrace.ledger import Ledger, NewInvocation, map_runs, new_id, ownership
from headrace.ledger import activities as activity_store
from headrace.ledger import executions as store
from headrace.workflows.activities import activity_name, event_kind
from headrace.workflows.asl import parse
from headrace.workflows.children import child_definition, child_event, redrive_child, stop_children
from headrace.workflows.errors import RUNTIME
from headrace.workflows.history import TERMINAL_EXECUTION_EVENTS, Event
from headrace.workflows.integrations import (
    Target,
    call_payload,
    error_from_outcome,
    resolve,
    shape_result,
)
from headrace.workflows.interpreter import Interpreter, task_outcome
from headrace.workflows.items import StorageMapIO

log = logging.getLogger("headrace.workflows")

# One execution's share of a coordinator turn. A state machine may loop forever (legal ASL) or
# fan out thousands of iterations; past its share it yields to the others (executions, objects,
# streams) and carries on next turn, at the back of the queue. Until the history quota ends it.
SLICE_SECONDS = 0.05
SLICE_EVENTS = 5000
WRITE_EVERY = 250  # events written in batches of this many while a slice runs
TURN_SECONDS = 0.1  # all executions' work in one turn; what is left waits for the next
# Coordinators sharing a ledger own executions through leases (headrace.ledger.ownership): one
# not renewed for this long is free, when its holder is on another host (a dead holder on this
# host frees it at once). Renewed every quarter of it.
OWNERSHIP_TTL = 60.0


@dataclass(slots=True)
class _Child:
    """Where a child execution of a Distributed Map reports its end."""

    parent: str  # the parent execution's ARN
    run: str  # the MapRunArn
    scope: str  # the parent's scope the Map state runs in
    index: int
    express: bool


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
        # executions with something to decide, in the order they get their turn (a run queue)
        self.dirty: dict[str, None] = {}
        self.tasks: dict[str, _Task] = {}  # invocation id -> the Task state waiting for it
        self.linked: set[str] = set()  # tokens of tasks that have an invocation
        self.saved: dict[str, int] = {}  # execution id -> events already in the ledger
        self.broken: dict[str, str] = {}  # execution id -> why it must fail (found off-turn)
        self._created: list[str] = []  # invocation ids made in the current savepoint
        # the coordinator id this driver runs executions for, under their leases; set at start
        self.owner = ""
        self._next_renewal = 0.0
        self._others: set[str] = set()  # running executions other coordinators run
        self.children: dict[str, _Child] = {}  # child execution id -> its Map Run
        self._spawned: list[str] = []  # child executions started or redriven this savepoint

    def reset(self) -> None:
        """Forget the in-memory state after a failed transaction; the ledger rebuilds it."""
        self.active.clear()
        self.dirty.clear()
        self.tasks.clear()
        self.linked.clear()
        self.saved.clear()
        self.broken.clear()
        self.children.clear()
        self._spawned.clear()

    def has_work(self) -> bool:
        """Executions left with work by the last turn (they used up their share of it)."""
        return bool(self.dirty or self.broken)

    def _drop(self, execution_id: str) -> None:
        self.active.pop(execution_id, None)
        self.saved.pop(execution_id, None)
        self.dirty.pop(execution_id, None)
        self.broken.pop(execution_id, None)
        self.children.pop(execution_id, None)

    def _forget(self, execution_id: str) -> None:
        """Drop an execution whose memory may be ahead of the ledger; if the ledger still
        says RUNNING, refresh() loads it again from its history. (Its tasks stay known, so
        their invocations' outcomes still go to it, not to the dead-letter list.)"""
        self._drop(execution_id)
        prefix = f"{execution_id}#"
        self.linked = {t for t in self.linked if not t.startswith(prefix)}

    # -- loading ------------------------------------------------------------------------------

    def refresh(self, conn: Connection) -> None:
        """Pick up executions started by others (CLI, API) or left running by a crash, and
        drop those others stopped (stop-execution)."""
        running = set(store.running_ids(conn))
        for execution_id in [e for e in self.active if e not in running]:
            self._forget(execution_id)
        mine = self._owned(conn, running)
        self._others = running - mine
        for execution_id in sorted(mine):
            if execution_id not in self.active:
                self._guarded(conn, execution_id, self._load)
        self._collect_outcomes(conn)
        self._collect_children(conn)

    def _collect_children(self, conn: Connection, only: str | None = None) -> None:
        """Child executions (of the Distributed Maps of executions run here) that ended where
        this driver did not see it (another coordinator ran them, or before a restart): their
        ends into their parents' histories."""
        for parent_id, interp in list(self.active.items()):
            if only is not None and parent_id != only:
                continue
            live = interp.live_children()
            runs = {
                run: [i for i, arn in children.items() if arn not in self.active or only]
                for run, (_scope, children) in live.items()
            }
            ended = map_runs.ended_children(conn, runs)
            events = [child_event(live[run][0], index, row) for run, index, row in ended if row]
            self._append(parent_id, events)

    def _owned(self, conn: Connection, running: set[str]) -> set[str]:
        """The running executions this driver may run: those whose lease it holds or takes.
        All leases are renewed every quarter of their time to live; in between only executions
        not run here yet are asked for (started meanwhile, or freed by a dead coordinator)."""
        if not self.owner:
            return running
        now = time.time()
        renew = now >= self._next_renewal
        wanted = running if renew else running - set(self.active)
        mine = ownership.take(conn, "execution", wanted, self.owner, ttl=OWNERSHIP_TTL)
        if renew:
            self._next_renewal = now + OWNERSHIP_TTL / 4
            for execution_id in [e for e in self.active if e not in mine]:
                log.warning("execution %s: another coordinator runs it now", execution_id)
                self._forget(execution_id)
            return mine
        return mine | (running & set(self.active))

    def _collect_outcomes(self, conn: Connection) -> None:
        """Outcomes of this driver's tasks that another coordinator recorded (it claimed and ran
        the invocation): into the executions' histories, as if recorded here."""
        if not self.tasks:
            return
        for inv_id, inv in self.ledger.ended(conn, list(self.tasks)).items():
            self.finished(
                conn, inv_id, inv["status"], inv["result"], inv["error"], inv["traceback"]
            )

    def start(self, owner: str) -> None:
        """Run executions for the coordinator `owner`, each under its lease (created here, not
        inside a turn: SQLite has one writer)."""
        ownership.ensure_tables(self.ledger)
        self.owner = owner

    def release(self) -> None:
        """Give up the leases of the executions run here (a clean stop)."""
        if not self.owner:
            return
        try:
            ownership.ensure_tables(self.ledger)
            with self.ledger.begin() as conn:
                ownership.release(conn, self.owner, "execution")
        except Exception:  # they expire, or this process's end frees them, anyway
            log.exception("releasing the execution leases failed")

    def _load(self, conn: Connection, execution_id: str, fresh: bool = False) -> None:
        """Rebuild a running execution from its history (`fresh`: a child execution just
        started or redriven here, which has not run anywhere yet)."""
        run = map_runs.parent_of(conn, execution_id)
        if run is not None and run["execution_type"] == "EXPRESS" and not fresh:
            # an EXPRESS child keeps no history: taken over, it runs again from its start,
            # under new task tokens (what ran before may have run or be running still)
            map_runs.reset_history(conn, execution_id)
        loaded = store.load(conn, execution_id)
        if loaded is None:
            return
        row, events = loaded
        self.saved[execution_id] = len(events)  # first: a failure below is numbered after them
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
            child_executions=True,
        )
        for seq, kind, ts, scope, details in events:
            interp.apply(Event(seq, kind, ts, scope, details))
        interp.history.clear()  # in the ledger already
        self.active[execution_id] = interp
        self.dirty[execution_id] = None
        if run is not None:
            self.children[execution_id] = _Child(
                run["execution_id"],
                run["id"],
                run["scope"],
                int(run["idx"]),
                run["execution_type"] == "EXPRESS",
            )
        self._collect_children(conn, only=execution_id)
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
        """The earliest timer of any execution (the coordinator loop's wake-up)."""
        times = self._timers().values()
        return min(times) if times else None

    def _timers(self) -> dict[str, float]:
        out = {}
        for execution_id, interp in self.active.items():
            if execution_id in self.broken:
                continue
            try:
                t = interp.next_timer()
            except Exception as exc:  # never into the coordinator's loop: advance() fails it
                self.broken[execution_id] = f"{type(exc).__name__}: {exc}"
                continue
            if t is not None:
                out[execution_id] = t
        return out

    def advance(self, conn: Connection, now: float) -> list[NewInvocation]:
        """Decide and record what changed executions do next, each within its share of the
        turn; return their new tasks. Executions left with work stay queued (`has_work`)."""
        for execution_id, t in self._timers().items():
            if t <= now and execution_id not in self.dirty:
                self.dirty[execution_id] = None
        for execution_id in list(self.broken):
            self._fail(conn, execution_id, self.broken.pop(execution_id))
        new: list[NewInvocation] = []
        turn_ends = time.monotonic() + TURN_SECONDS
        # fair shares of the turn: an execution alone may use all of it
        share = max(SLICE_SECONDS, TURN_SECONDS / max(1, len(self.dirty)))
        for execution_id in list(self.dirty):
            if time.monotonic() >= turn_ends:
                break  # the rest go first next turn
            if execution_id not in self.dirty:
                continue  # a Map that failed dropped its children from the queue meanwhile
            del self.dirty[execution_id]
            if execution_id not in self.active:
                continue
            tasks = self._guarded(conn, execution_id, self._step, now, share)
            new.extend(tasks or [])
            self._load_spawned(conn)
        return new

    def _load_spawned(self, conn: Connection) -> None:
        """Run the child executions a Distributed Map just started (or redrove) here, under
        this coordinator's leases (if it rolled back, they do not exist: nothing loads)."""
        spawned, self._spawned = self._spawned, []
        if not spawned:
            return
        mine = set(spawned)
        if self.owner:
            mine = ownership.take(conn, "execution", mine, self.owner, ttl=OWNERSHIP_TTL)
        for child_id in spawned:
            if child_id in mine and child_id not in self.active:
                self._guarded(conn, child_id, self._load, True)

    def _savepoint(self, conn: Connection, execution_id: str, work: Any, *args: Any) -> Any:
        self._created = []
        spawned = len(self._spawned)
        try:
            with conn.begin_nested():
                return work(conn, execution_id, *args)
        except BaseException:
            for inv_id in self._created:  # rolled back: these invocations never existed
                self.tasks.pop(inv_id, None)
            del self._spawned[spawned:]  # ... nor these child executions
            raise
        finally:
            self._created = []

    def _guarded(self, conn: Connection, execution_id: str, work: Any, *args: Any) -> Any:
        """Run `work(conn, execution_id, ...)` in a savepoint. If it fails, its writes are
        undone and that execution alone pays: it fails with States.Runtime (or, when another
        writer got to its history first, it is reloaded from the ledger)."""
        try:
            return self._savepoint(conn, execution_id, work, *args)
        except IntegrityError:  # e.g. stop-execution appended to the history meanwhile
            log.info("execution %s changed in the ledger meanwhile; reloading it", execution_id)
            self._forget(execution_id)
        except DBAPIError:
            raise  # the ledger itself is in trouble: the turn is retried
        except Exception as exc:
            log.exception("execution %s failed inside headrace", execution_id)
            self._fail(conn, execution_id, f"{type(exc).__name__}: {exc}")
        return None

    def _step(
        self, conn: Connection, execution_id: str, now: float, share: float = SLICE_SECONDS
    ) -> list[NewInvocation]:
        """Decide and write what one execution does next, until it waits or its share of the
        turn (SLICE_SECONDS, writing included; at most SLICE_EVENTS events) is used up."""
        if not store.lock_running(conn, execution_id):
            self._forget(execution_id)  # stopped by someone else (stop-execution)
            return []
        interp = self.active[execution_id]
        new: list[NewInvocation] = []
        stop_at = time.monotonic() + share
        budget = SLICE_EVENTS
        more = True
        while more and budget > 0:
            more = False
            while budget > 0 and (decisions := interp.decide(now)):
                for decision in decisions:
                    self._apply(interp, decision, now)
                    if decision[0] in _MAP_RUN_EVENTS:
                        self._map_run_effect(conn, execution_id, interp, decision)
                budget -= len(decisions)
                if len(interp.history) >= WRITE_EVERY:
                    self._write(conn, execution_id, interp)  # so the clock counts the writes
                if time.monotonic() >= stop_at:
                    budget = 0
            # tasks waiting without an invocation: new ones, or ones lost before a crash
            for scope, task in interp.take_new_tasks():
                if task["token"] in self.linked:
                    continue
                activity = activity_name(task["resource"])
                if activity is not None:
                    failed = self._offer(conn, execution_id, activity, task)
                    if failed is not None:
                        self._apply(interp, ("ActivityScheduleFailed", scope, failed), now)
                        more = True
                    continue
                inv = self._invocation(execution_id, scope, task)
                if inv is not None:
                    new.append(inv)
                    continue
                cause = f"resource {task['resource']!r} names no registered function"
                params = task["parameters"]
                if isinstance(params, dict) and "FunctionName" in params:
                    cause += f" (FunctionName is {params['FunctionName']!r})"
                failed = (
                    "TaskFailed",
                    scope,
                    {"name": task["name"], "error": "States.Runtime", "cause": cause},
                )
                self._apply(interp, failed, now)
                more = True
        if budget <= 0 and interp.status == "RUNNING":
            self.dirty[execution_id] = None  # its share is used up: back of the queue
        self._persist(conn, execution_id, interp)
        return new

    def _apply(self, interp: Interpreter, decision: tuple[str, str, dict], now: float) -> None:
        kind, scope, details = decision
        interp.apply(Event(interp.length + 1, kind, now, scope, details))

    def _write(self, conn: Connection, execution_id: str, interp: Interpreter) -> None:
        """Write the events not yet in the ledger, in the caller's transaction."""
        fresh = interp.history
        child = self.children.get(execution_id)
        if fresh and child is not None and child.express:
            # an EXPRESS child keeps no history but its end: a takeover runs it from its start
            ended = [e for e in fresh if e.type in TERMINAL_EXECUTION_EVENTS]
            seq = self.saved.get(execution_id, 1)
            store.append_events(
                conn,
                execution_id,
                [(seq + i + 1, e.type, e.timestamp, "", e.details) for i, e in enumerate(ended)],
            )
            self.saved[execution_id] = seq + len(ended)
            interp.history = []
            return
        if fresh:
            store.append_events(
                conn, execution_id, [(e.id, e.type, e.timestamp, e.scope, e.details) for e in fresh]
            )
            self.saved[execution_id] = interp.length
            interp.history = []  # stored: memory stays flat however long the history grows

    def _persist(self, conn: Connection, execution_id: str, interp: Interpreter) -> None:
        """Write the events not yet in the ledger and, if it ended, the execution's end."""
        self._write(conn, execution_id, interp)
        if interp.status != "RUNNING":
            store.finish_execution(
                conn, execution_id, interp.status, interp.output, interp.error, interp.cause
            )
            child = self.children.get(execution_id)
            self._drop(execution_id)
            if interp.status != "SUCCEEDED":
                stop_children(conn, execution_id)
            if child is not None and child.parent in self.active:
                row = {
                    "id": execution_id,
                    "status": interp.status,
                    "output": json.dumps(interp.output),
                    "error": interp.error,
                    "cause": interp.cause,
                }
                self._append(child.parent, [child_event(child.scope, child.index, row)])

    def _map_run_effect(
        self, conn: Connection, execution_id: str, interp: Interpreter, decision: tuple
    ) -> None:
        """What a Distributed Map's events do in the ledger, in the same transaction as the
        events: the Map Run row, the child executions (created exactly once: with the event
        that names them), their stop and their redrive."""
        kind, scope, details = decision
        frame = interp.frames[scope]
        run = frame.map_run
        if run is None:
            return
        if kind == "MapRunStarted":
            map_runs.create_run(
                conn,
                run_id=details["mapRunArn"],
                execution_id=execution_id,
                scope=scope,
                state=details["name"],
                execution_type=details["executionType"],
                total=details["total"],
                max_concurrency=details["maxConcurrency"],
                tolerated_count=details["toleratedFailureCount"],
                tolerated_percentage=details["toleratedFailurePercentage"],
            )
        elif kind == "MapIterationStarted":
            child_id = details["execution"]
            state = frame.machine["States"][frame.state]
            store.start_execution(
                conn,
                execution_id=child_id,
                name=child_id.rsplit(":", 1)[1],
                state_machine=str(interp.execution.get("StateMachineName", "")),
                definition=child_definition(state, interp.query_language),
                input=details["input"],
                seed=random.randrange(2**31),
            )
            map_runs.link_child(conn, run["arn"], details["index"], child_id)
            self._spawned.append(child_id)
        elif kind == "IterationsAborted":
            stop_children(conn, execution_id, run["arn"], error="States.Aborted")
            for child_id in list(self.active):
                if self.children.get(child_id, _NO_CHILD).run == run["arn"]:
                    self._forget(child_id)
        elif kind in ("MapStateSucceeded", "MapStateFailed"):
            map_runs.finish_run(conn, run["arn"], kind.removeprefix("MapState").upper())
        elif kind == "MapRunRedriven":
            map_runs.redrive_run(conn, run["arn"])
            for index in details["indexes"]:
                child_id = map_runs.child_id(conn, run["arn"], index)
                if child_id is not None and redrive_child(conn, child_id, run["type"]):
                    self._forget(child_id)
                    self._spawned.append(child_id)

    def _fail(self, conn: Connection, execution_id: str, reason: str) -> None:
        """End an execution headrace could not run on: ExecutionFailed after what the ledger
        holds (what was in memory only is dropped with the interpreter)."""
        self._forget(execution_id)
        with conn.begin_nested():
            if not store.lock_running(conn, execution_id):
                return  # stopped meanwhile: nothing to fail
            seq = store.history_length(conn, execution_id)
            cause = f"headrace could not run this execution: {reason}"
            store.append_events(
                conn,
                execution_id,
                [(seq + 1, "ExecutionFailed", time.time(), "", {"error": RUNTIME, "cause": cause})],
            )
            store.finish_execution(conn, execution_id, "FAILED", None, RUNTIME, cause)

    def _offer(
        self, conn: Connection, execution_id: str, activity: str, task: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Offer an activity task to the activity's workers (again after a restart: once);
        the ActivityScheduleFailed details when the activity does not exist."""
        if activity_store.get(conn, activity) is None:
            return {
                "name": task["name"],
                "error": RUNTIME,
                "cause": f"ActivityDoesNotExist: activity {activity!r} does not exist; "
                f"create it with `headrace create-activity {activity}`",
            }
        activity_store.schedule(conn, task["token"], activity, execution_id, task.get("parameters"))
        self.linked.add(task["token"])
        return None

    def _invocation(
        self, execution_id: str, scope: str, task: dict[str, Any]
    ) -> NewInvocation | None:
        target = resolve(task["resource"], task["parameters"])
        if target is None or target.name not in self.functions:
            return None
        spec = self.functions[target.name]
        inv_id = new_id()
        self.tasks[inv_id] = _Task(execution_id, scope, task["name"], task["token"], target)
        self._created.append(inv_id)
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
            if interp is None and execution_id in self._others:
                continue  # another coordinator runs that execution: it applies the callback
            waiting = None
            if interp is not None:
                for scope, task in interp.pending_tasks():
                    if _answers(task, cb["token"]):
                        waiting = (scope, task)
                        break
            if waiting is None:
                store.mark_callback(conn, cb["id"], "rejected")
                continue
            scope, task = waiting
            resource = task["resource"]
            output = json.loads(cb["output"]) if cb["output"] is not None else None
            if cb["kind"] == "heartbeat":
                event = ("TaskHeartbeat", scope, {"name": task["name"]})
            elif cb["kind"] == "started":  # a worker took an activity task
                details = {"name": task["name"], "workerName": (output or {}).get("workerName")}
                event = ("ActivityStarted", scope, details)
            elif cb["kind"] == "success":
                kind, details = task_outcome(task["name"], output)
                event = (event_kind(kind, resource), scope, details)
            else:
                event = (
                    event_kind("TaskFailed", resource),
                    scope,
                    {"name": task["name"], "error": cb["error"] or "", "cause": cb["cause"] or ""},
                )
            self._append(execution_id, [event])
            if cb["kind"] in ("success", "failure"):
                self.linked.discard(task["token"])
                if activity_name(resource):
                    activity_store.close(conn, task["token"])
            store.mark_callback(conn, cb["id"], "applied")

    def _outcome_event(
        self, info: _Task, status: str, result: Any, error: str | None, tb: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        if status == "succeeded":
            value = json.loads(result) if isinstance(result, str) else result
            kind, details = task_outcome(info.name, shape_result(info.target, value))
            return (kind, info.scope, details)
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
        try:
            for decision in events:
                self._apply(interp, decision, now)
        except Exception as exc:  # the interpreter is in doubt now: advance() fails it
            log.exception("execution %s failed inside headrace", execution_id)
            self.broken[execution_id] = f"{type(exc).__name__}: {exc}"
            return
        self.dirty[execution_id] = None


# the events of a Distributed Map run as child executions that change the ledger
_MAP_RUN_EVENTS = frozenset(
    (
        "MapRunStarted",
        "MapIterationStarted",
        "IterationsAborted",
        "MapStateSucceeded",
        "MapStateFailed",
        "MapRunRedriven",
    )
)
_NO_CHILD = _Child("", "", "", -1, False)


def _answers(task: dict[str, Any], token: str) -> bool:
    """Whether a callback with `token` is for this waiting task: a `.waitForTaskToken` task's
    token is the state's visit (any attempt); an activity task's is the attempt's own."""
    if activity_name(task["resource"]):
        return bool(task["token"] == token)
    return task["resource"].endswith(".waitForTaskToken") and (
        task["token"].rsplit("#", 1)[0] == token
    )
