"""The interpreter: the state of an execution is a fold over its history, and the next events
are a pure function of that state and the clock.

`Interpreter.apply(event)` folds one event in; `Interpreter.decide(now)` returns the events that
should happen next (as `(type, scope, details)` tuples, not yet numbered). A driver appends them
to the history (the ledger, or a list), applies them, runs the tasks they schedule, and appends
the tasks' outcomes. Anything non-deterministic (retry jitter, `States.UUID`, the clock) is
decided once and recorded in an event, so replaying a history always rebuilds the same state
and a resumed execution continues exactly where it stopped.

Scopes name where an event happened: "" is the top-level state machine, "Fan[3]" is iteration 3
of the Map state "Fan", "Fan[3]/Inner[0]" nests, "Both{1}" is branch 1 of a Parallel state.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headrace.errors import HeadraceError
from headrace.workflows import choice, dataflow, jsonata_lang, paths, variables
from headrace.workflows.activities import activity_name, event_kind
from headrace.workflows.errors import (
    DATA_LIMIT_EXCEEDED,
    EXCEEDED_TOLERATED_FAILURE_THRESHOLD,
    HEARTBEAT_TIMEOUT,
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    TIMEOUT,
    StatesError,
    find_catcher,
    find_retrier,
    retry_allowed,
    retry_delay,
)
from headrace.workflows.history import HISTORY_QUOTA, STATE_EVENT_PREFIX, Event
from headrace.workflows.items import STATE_DATA, StorageMapIO, batches, iteration_items

Decision = tuple[str, str, dict[str, Any]]

# AWS's quota on an execution's input and on every state's output (and Assign's values)
MAX_PAYLOAD_BYTES = 256 * 1024


def oversized(state: str, value: Any) -> str | None:
    """The States.DataLimitExceeded cause if ``value`` is over the 256 KiB payload quota."""
    n = variables.size(value)
    if n <= MAX_PAYLOAD_BYTES:
        return None
    return (
        f"The state/task {state!r} returned a result with a size of {n} bytes, "
        f"exceeding the maximum number of bytes service limit ({MAX_PAYLOAD_BYTES})."
    )


def task_outcome(state: str, output: Any) -> tuple[str, dict[str, Any]]:
    """The history event of a task that returned ``output``: TaskSucceeded, or TaskFailed with
    States.DataLimitExceeded if it is over the quota (so the history never holds it)."""
    cause = oversized(state, output)
    if cause is not None:
        return "TaskFailed", {"name": state, "error": DATA_LIMIT_EXCEEDED, "cause": cause}
    return "TaskSucceeded", {"name": state, "output": output}


class UnknownEvent(HeadraceError):
    """A history holds an event type this interpreter cannot fold in."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Frame:
    """One running state machine: the top level, a Map iteration or a Parallel branch."""

    scope: str
    machine: dict[str, Any]  # {"StartAt", "States"}
    parent: str | None = None
    index: int = 0  # iteration / branch number within the parent
    item: Any = None  # $$.Map.Item.Value
    state: str | None = None
    input: Any = None
    phase: str = "enter"  # enter, entered, task, task_done, task_failed, map, parallel, done
    entered_at: float = 0.0
    entered_id: int = 0  # the id of the StateEntered event: tells visits of a state apart
    status: str = "running"  # running, succeeded, failed, aborted
    output: Any = None
    error: str | None = None
    cause: str | None = None
    reported: bool = False  # the parent has been told how this frame ended
    failed_phase: str = ""  # the phase it was in when an uncaught error ended it
    entered_iso: tuple[float, str] = (-1.0, "")  # entered_at as text, computed once
    retry_at: float = 0.0  # when a retried Map/Parallel state starts over
    # whose history quota its events count against: "" (the execution), or the scope of a
    # DISTRIBUTED Map iteration (a child workflow execution on AWS, with a history of its own)
    unit: str = ""
    # Task
    task: dict[str, Any] | None = None
    task_result: Any = None
    retries: dict[int, int] = field(default_factory=dict)  # retrier index -> retries used
    # Map / Parallel
    effective: Any = None
    items: list[Any] = field(default_factory=list)
    started: int = 0
    running: int = 0
    results: dict[int, Any] = field(default_factory=dict)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)  # JSONata MaxConcurrency, Tolerated*
    # the workflow variables this scope assigned (outer scopes' are read through `parent`)
    variables: dict[str, Any] = field(default_factory=dict)
    # a DISTRIBUTED Map run as child executions: {"arn", "type", "label"} (MapRunStarted)
    map_run: dict[str, Any] | None = None
    live: dict[int, str] = field(default_factory=dict)  # index -> running child execution ARN
    child_arns: dict[int, str] = field(default_factory=dict)  # index -> child execution ARN
    aborted: set[int] = field(default_factory=set)  # children stopped by IterationsAborted
    redrive: list[int] = field(default_factory=list)  # children a redrive runs again
    # where a Map's items came from: a JSON object's keys ($$.Map.Item.Key) and the source
    # ($$.Map.Item.Source: one for all items, or one per item)
    keys: list[str] | None = None
    source: str | list[str] = STATE_DATA
    # for a ResultWriter: index -> the iteration's input, and its [start, stop] times
    inputs: dict[int, Any] = field(default_factory=dict)
    times: dict[int, list[float]] = field(default_factory=dict)


class Interpreter:
    def __init__(
        self,
        machine: Any,
        execution: dict[str, Any],
        io: StorageMapIO | None = None,
        *,
        child_executions: bool = False,
    ) -> None:
        """`machine` is a parsed StateMachine (or anything with `.raw`), `execution` holds
        Id, Name, StateMachine Id/Name for the context object. With `child_executions` (the
        coordinator's driver), a DISTRIBUTED Map's iterations are child executions the driver
        runs (MapRunStarted, MapIterationStarted with an `execution` ARN); without (the
        in-process `execute()`), they are scopes of this execution."""
        self.raw = machine.raw if hasattr(machine, "raw") else machine
        self.child_executions = child_executions
        self._map_runs: dict[str, None] = {}  # scopes of frames that started a Map Run
        self.attempt = 0  # an EXPRESS child's run from its start (its task tokens differ)
        self.io = io or StorageMapIO(None)  # ItemReader / ResultWriter
        self.execution = execution
        self.frames: dict[str, Frame] = {}
        # the events applied, in order; a driver that has stored them may clear the list (the
        # state is in the frames), so an execution's memory does not grow with its history
        self.history: list[Event] = []
        self.length = 0  # events applied in all: the next event's id is length + 1
        self.status = "RUNNING"
        self.output: Any = None
        self.error: str | None = None
        self.cause: str | None = None
        self.input: Any = None
        self.start_time = 0.0
        self.seed = 0
        # frames whose next step may have changed (an ordered set), and frames in Wait states:
        # deciding looks only at these, so a 10,000-item Map costs O(items), not O(items^2)
        self._dirty: dict[str, None] = {}
        self._waiting: dict[str, None] = {}
        self._pending: dict[str, None] = {}  # frames with a scheduled task
        self._fresh: dict[str, None] = {}  # ... scheduled since the driver last looked
        self._beating: dict[str, None] = {}  # ... whose state has HeartbeatSeconds
        self._execution_ctx: tuple[float, dict, dict] | None = None
        self.redrives = 0
        self._deciding = ""  # the scope decide() is looking at: named when it fails
        self._counts: dict[str, int] = {"": 0}  # events per history-quota unit (Frame.unit)
        self._fullest = ""  # the unit with the most events
        self.query_language = self.raw.get("QueryLanguage", "JSONPath")
        self._input_bytes = 0

    # -- folding ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is None:
            raise UnknownEvent(
                f"history event {event.id} ({event.type!r}) of execution "
                f"{self.execution.get('Name', '')!r}",
                "is not an event type this version of headrace knows",
                "run the headrace version that wrote this history",
            )
        self.history.append(event)
        self.length += 1
        self._dirty[event.scope] = None
        if handler is not _record_only:
            handler(self, event)
        unit = self._unit(event)
        if unit == "#children":
            return
        count = self._counts[unit] = self._counts.get(unit, 0) + 1
        if count > self._counts[self._fullest]:
            self._fullest = unit

    def _unit(self, e: Event) -> str:
        f = self.frames.get(e.scope)
        if f is None:
            return ""
        if e.type.startswith("MapIteration") or e.type.startswith("MapRun"):
            if f.map_run is not None:  # child executions: AWS's parent history has none of these
                return "#children"
            child = self._child(f, e.details["index"])
            return child.unit if child is not None else f.unit
        return f.unit

    def _on_ExecutionStarted(self, e: Event) -> None:
        self.input = e.details["input"]
        self.start_time = e.timestamp
        self.seed = int(e.details.get("seed", 0))
        self.attempt = int(e.details.get("attempt", 0))
        self._input_bytes = variables.size(self.input)
        self.frames[""] = Frame(
            "", self.raw, state=self.raw["StartAt"], input=self.input, phase="enter"
        )

    def _on_state_entered(self, e: Event) -> None:
        f = self.frames[e.scope]
        f.state = e.details["name"]
        f.input = e.details["input"]
        f.entered_at = e.timestamp
        f.entered_id = e.id
        f.phase = "entered"
        self._waiting.pop(f.scope, None)
        if f.machine["States"][f.state]["Type"] == "Wait":
            self._waiting[f.scope] = None

    def _on_state_exited(self, e: Event) -> None:
        f = self.frames[e.scope]
        self._waiting.pop(f.scope, None)
        nxt = e.details.get("next")
        f.output = e.details.get("output")
        assigned = e.details.get("assignedVariables")
        if assigned:
            f.variables.update({k: json.loads(v) for k, v in assigned.items()})
        elif e.details.get("assign"):  # a history written before headrace 16's event shape
            f.variables.update(e.details["assign"])
        f.task = None
        f.task_result = None
        f.retries = {}
        if nxt:
            f.state, f.input, f.phase = nxt, f.output, "enter"
        else:
            f.phase, f.status = "done", "succeeded"

    def _on_StateRetryScheduled(self, e: Event) -> None:
        f = self.frames[e.scope]
        index = e.details["retrier"]
        f.retries[index] = f.retries.get(index, 0) + 1
        f.phase, f.retry_at = "retry_wait", float(e.details["not_before"])
        self._waiting[e.scope] = None

    def _on_TaskHeartbeat(self, e: Event) -> None:
        f = self.frames.get(e.scope)
        if f is not None and f.phase == "task" and f.task is not None:
            f.task["beat"] = e.timestamp

    def _on_TaskScheduled(self, e: Event) -> None:
        f = self.frames[e.scope]
        self._pending[e.scope] = None
        self._fresh[e.scope] = None
        f.phase = "task"
        f.task = dict(e.details)
        f.task["beat"] = max(e.timestamp, float(e.details.get("not_before") or 0))
        f.task["scheduled_at"] = e.timestamp
        if activity_name(e.details.get("resource")):
            # an activity's heartbeat clock starts when a worker takes it (ActivityStarted);
            # its TimeoutSeconds runs from now, whether or not a worker ever comes
            f.task["activity"] = True
            if e.details.get("timeout"):
                self._beating[e.scope] = None
        elif e.details.get("heartbeat"):
            self._beating[e.scope] = None
        retrier = e.details.get("retrier")
        if retrier is not None:
            f.retries[retrier] = f.retries.get(retrier, 0) + 1

    def _on_ActivityStarted(self, e: Event) -> None:
        f = self.frames.get(e.scope)
        if f is not None and f.phase == "task" and f.task is not None:
            f.task["beat"] = e.timestamp
            f.task["started"] = True
            if f.task.get("heartbeat"):
                self._beating[e.scope] = None

    def _on_TaskSucceeded(self, e: Event) -> None:
        f = self.frames.get(e.scope)
        if f is None or f.phase != "task" or f.status != "running":
            return  # a late outcome for a frame that was aborted
        self._pending.pop(e.scope, None)
        self._beating.pop(e.scope, None)
        f.phase, f.task_result = "task_done", e.details.get("output")

    def _task_failed(self, e: Event) -> None:
        f = self.frames.get(e.scope)
        if f is None or f.phase != "task" or f.status != "running":
            return
        self._pending.pop(e.scope, None)
        self._beating.pop(e.scope, None)
        f.phase, f.error, f.cause = "task_failed", e.details["error"], e.details.get("cause", "")

    _on_TaskFailed = _task_failed
    _on_TaskTimedOut = _task_failed
    _on_ActivityScheduled = _on_TaskScheduled
    _on_ActivitySucceeded = _on_TaskSucceeded
    _on_ActivityFailed = _task_failed
    _on_ActivityTimedOut = _task_failed
    _on_ActivityScheduleFailed = _task_failed

    def _on_StateFailed(self, e: Event) -> None:
        """An uncaught error ends a frame (headrace's event; AWS reports it on the parent)."""
        f = self.frames[e.scope]
        f.failed_phase = f.phase  # a redrive resumes a Map/Parallel here
        f.phase, f.status = "done", "failed"
        f.error, f.cause = e.details["error"], e.details.get("cause", "")
        self._pending.pop(e.scope, None)
        self._beating.pop(e.scope, None)

    def _on_MapStateStarted(self, e: Event) -> None:
        f = self.frames[e.scope]
        f.phase = "map"
        f.items = e.details["items"]
        f.effective = e.details.get("effective")
        f.limits = e.details.get("limits") or {}
        f.started = f.running = 0
        f.results, f.failures = {}, []
        f.map_run, f.live, f.child_arns, f.aborted, f.redrive = None, {}, {}, set(), []
        f.keys = e.details.get("keys")
        f.source = e.details.get("source", STATE_DATA)
        f.inputs, f.times = {}, {}

    def _on_MapRunStarted(self, e: Event) -> None:
        f = self.frames[e.scope]
        self._map_runs[e.scope] = None
        f.map_run = {
            "arn": e.details["mapRunArn"],
            "type": e.details["executionType"],
            "label": e.details["label"],
        }

    def _on_MapRunRedriven(self, e: Event) -> None:
        f = self.frames[e.scope]
        for index in e.details["indexes"]:
            f.live[index] = f.child_arns[index]
            f.running += 1
            f.results.pop(index, None)
        f.redrive = []

    def _on_ParallelStateStarted(self, e: Event) -> None:
        f = self.frames[e.scope]
        f.phase = "parallel"
        f.items = list(range(e.details["branches"]))
        f.effective = e.details["input"]
        f.started = f.running = 0
        f.results, f.failures = {}, []

    def _on_MapIterationStarted(self, e: Event) -> None:
        parent = self.frames[e.scope]
        if "ResultWriter" in parent.machine["States"][parent.state]:
            parent.inputs[e.details["index"]] = e.details["input"]
            parent.times[e.details["index"]] = [e.timestamp, e.timestamp]
        if "execution" in e.details:  # a child execution: the driver runs it
            index = e.details["index"]
            parent.live[index] = parent.child_arns[index] = e.details["execution"]
            parent.started += 1
            parent.running += 1
            parent.results.pop(index, None)
            return
        state = parent.machine["States"][parent.state]
        processor = state.get("ItemProcessor") or state.get("Iterator")
        index = e.details["index"]
        self._start_child(parent, processor, f"{parent.state}[{index}]", index, e.details["input"])
        parent.results.pop(index, None)

    def _on_ParallelBranchStarted(self, e: Event) -> None:
        parent = self.frames[e.scope]
        state = parent.machine["States"][parent.state]
        index = e.details["index"]
        branch = state["Branches"][index]
        self._start_child(parent, branch, f"{parent.state}{{{index}}}", index, e.details["input"])

    def _start_child(self, parent: Frame, machine: dict, name: str, index: int, data: Any) -> None:
        scope = f"{parent.scope}/{name}" if parent.scope else name
        item = parent.items[index] if parent.phase == "map" else None
        config = machine.get("ProcessorConfig") or {}
        distributed = parent.phase == "map" and config.get("Mode") == "DISTRIBUTED"
        self.frames[scope] = Frame(
            scope,
            machine,
            parent=parent.scope,
            index=index,
            item=item,
            state=machine["StartAt"],
            input=data,
            phase="enter",
            unit=scope if distributed else parent.unit,
        )
        self._dirty[scope] = None
        parent.started += 1
        parent.running += 1

    def _child_done(self, e: Event, ok: bool) -> None:
        parent = self.frames[e.scope]
        index = e.details["index"]
        if parent.map_run is not None:
            # a child execution's end, told by the driver: once, while the parent waits for it
            if parent.live.pop(index, None) is None or parent.phase != "map":
                return
        else:
            child = self._child(parent, index)
            if child is not None:
                child.reported = True
            if parent.phase not in ("map", "parallel"):
                return
        parent.running -= 1
        if index in parent.times:
            parent.times[index][1] = e.timestamp
        if ok:
            parent.results[index] = e.details.get("output")
        else:
            parent.failures.append((index, e.details["error"], e.details.get("cause", "")))

    def _on_MapIterationSucceeded(self, e: Event) -> None:
        self._child_done(e, True)

    def _on_MapIterationFailed(self, e: Event) -> None:
        self._child_done(e, False)

    def _on_ParallelBranchSucceeded(self, e: Event) -> None:
        self._child_done(e, True)

    def _on_ParallelBranchFailed(self, e: Event) -> None:
        self._child_done(e, False)

    def _on_IterationsAborted(self, e: Event) -> None:
        parent = self.frames[e.scope]
        if parent.map_run is not None:  # the driver stops the running children
            parent.aborted |= set(parent.live)
            parent.running -= len(parent.live)
            parent.live = {}
            return
        for f in self._children(parent):
            if f.status == "running":
                parent.running -= 1
                f.status, f.phase, f.reported = "aborted", "done", True
                self._waiting.pop(f.scope, None)
                self._pending.pop(f.scope, None)
                self._beating.pop(f.scope, None)

    def _on_ExecutionRedriven(self, e: Event) -> None:
        """Resume a failed, timed-out or aborted execution where it stopped (AWS's
        RedriveExecution): failed and aborted states run again with the input they had;
        Map iterations and Parallel branches that succeeded keep their results."""
        self.status, self.output, self.error, self.cause = "RUNNING", None, None, None
        self.start_time = e.timestamp  # TimeoutSeconds counts from the redrive
        self.redrives += 1
        for f in self.frames.values():
            if f.status not in ("failed", "aborted"):
                continue
            parent = self.frames.get(f.parent) if f.parent is not None else None
            if parent is not None and f.reported:
                parent.failures = [x for x in parent.failures if x[0] != f.index]
                parent.running += 1
            resume = f.failed_phase if f.failed_phase in ("map", "parallel") else "enter"
            if resume == "map" and f.map_run is not None:
                # failed and aborted children run again (MapRunRedriven); succeeded ones keep
                # their results
                f.redrive = sorted({i for i, _, _ in f.failures} | f.aborted | set(f.live))
                f.running -= len(f.live)
                f.live, f.aborted = {}, set()
            if resume in ("map", "parallel"):
                f.failures = []
            f.status, f.phase, f.reported, f.failed_phase = "running", resume, False, ""
            f.error = f.cause = None
            f.task, f.retries = None, {}
            self._dirty[f.scope] = None
        for f in self.frames.values():
            if f.status == "running" and f.phase in ("task", "retry_wait"):
                # a state aborted in the middle (stop-execution) runs again from its start,
                # as on AWS: its task is scheduled anew, whatever the old one did after
                f.phase, f.task, f.retries = "enter", None, {}
                self._pending.pop(f.scope, None)
                self._beating.pop(f.scope, None)
                self._waiting.pop(f.scope, None)
                self._dirty[f.scope] = None
        for f in self.frames.values():  # a Map still running when the execution stopped
            if f.status == "running" and f.phase == "map" and f.map_run is not None and f.live:
                f.redrive = sorted(set(f.redrive) | set(f.live))  # its children were stopped
                f.running -= len(f.live)
                f.live = {}
                self._dirty[f.scope] = None
        root = self.frames.get("")
        if root is not None and root.status == "running":
            self._dirty[""] = None

    def _on_ExecutionSucceeded(self, e: Event) -> None:
        self.status, self.output = "SUCCEEDED", e.details.get("output")

    def _on_ExecutionFailed(self, e: Event) -> None:
        self.status, self.error, self.cause = "FAILED", e.details["error"], e.details.get("cause")

    def _on_ExecutionTimedOut(self, e: Event) -> None:
        self.status, self.error, self.cause = "TIMED_OUT", "States.Timeout", e.details.get("cause")

    def _on_ExecutionAborted(self, e: Event) -> None:
        self.status, self.error, self.cause = (
            "ABORTED",
            e.details.get("error"),
            e.details.get("cause"),
        )

    # -- deciding -----------------------------------------------------------------------------

    def decide(self, now: float) -> list[Decision]:
        """The next events, given the history so far. Empty when waiting on tasks or timers.

        Never raises: an error the interpreter did not foresee (a bug, or input no check
        caught) fails the execution with States.Runtime and the error as its cause."""
        if self.status != "RUNNING":
            return []
        if self._counts[self._fullest] >= HISTORY_QUOTA - 1:  # the failure event is the last
            cause = f"The execution reached the maximum number of history events ({HISTORY_QUOTA})."
            if self._fullest:
                cause = f"Map iteration {self._fullest!r}: {cause}"
            return [("ExecutionFailed", "", {"error": RUNTIME, "cause": cause})]
        try:
            return self._decide(now)
        except Exception as exc:
            f = self.frames.get(self._deciding)
            where = f" in state {f.state!r}" if f is not None and f.state else ""
            cause = f"unexpected {type(exc).__name__}{where}: {exc}"
            return [("ExecutionFailed", "", {"error": RUNTIME, "cause": cause})]

    def _decide(self, now: float) -> list[Decision]:
        self._deciding = ""
        if self._input_bytes > MAX_PAYLOAD_BYTES:
            cause = (
                f"The execution input has a size of {self._input_bytes} bytes, exceeding the "
                f"maximum number of bytes service limit ({MAX_PAYLOAD_BYTES})."
            )
            return [("ExecutionFailed", "", {"error": DATA_LIMIT_EXCEEDED, "cause": cause})]
        timeout = self.raw.get("TimeoutSeconds")
        if timeout and now - self.start_time >= float(timeout):
            return [
                (
                    "ExecutionTimedOut",
                    "",
                    {"error": "States.Timeout", "cause": f"execution ran over {timeout} s"},
                )
            ]
        while self._dirty:
            scope = self._deciding = next(iter(self._dirty))
            decisions = self._decide_one(self.frames[scope], now)
            if decisions:
                return decisions
            del self._dirty[scope]
        for scope in list(self._waiting):
            self._deciding = scope
            decisions = self._decide_one(self.frames[scope], now)
            if decisions:
                return decisions
        for scope in list(self._beating):
            f = self.frames[scope]
            due = _task_deadline(f)
            if due is not None and now >= due[0] and f.status == "running":
                _, error, cause = due
                return [
                    (
                        event_kind("TaskTimedOut", f.task["resource"]),  # type: ignore[index]
                        scope,
                        {"name": f.state, "error": error, "cause": cause},
                    )
                ]
        return []

    def _decide_one(self, frame: Frame, now: float) -> list[Decision]:
        if frame.status != "running":
            if frame.parent is None:
                return [self._end_execution(frame)] if frame.status != "aborted" else []
            return [] if frame.reported else [self._report_child(frame)]
        return self._decide_frame(frame, now)

    def _end_execution(self, root: Frame) -> Decision:
        if root.status == "succeeded":
            return ("ExecutionSucceeded", "", {"output": root.output})
        return ("ExecutionFailed", "", {"error": root.error, "cause": root.cause})

    def _report_child(self, f: Frame) -> Decision:
        assert f.parent is not None
        parent = self.frames[f.parent]
        kind = "MapIteration" if parent.phase == "map" else "ParallelBranch"
        if f.status == "succeeded":
            return (f"{kind}Succeeded", f.parent, {"index": f.index, "output": f.output})
        return (
            f"{kind}Failed",
            f.parent,
            {"index": f.index, "error": f.error, "cause": f.cause},
        )

    def _context(self, f: Frame) -> dict[str, Any]:
        # the execution part is the same for every state: built once (it is read-only)
        if self._execution_ctx is None or self._execution_ctx[0] != self.start_time:
            self._execution_ctx = (
                self.start_time,
                {
                    "Id": self.execution.get("Id", ""),
                    "Name": self.execution.get("Name", ""),
                    "StartTime": iso(self.start_time),
                    "Input": self.input,
                    "RoleArn": "arn:aws:iam::000000000000:role/headrace",
                    "RedriveCount": self.redrives,
                },
                {
                    "Id": self.execution.get("StateMachineId", ""),
                    "Name": self.execution.get("StateMachineName", ""),
                },
            )
        _, execution, machine = self._execution_ctx
        entered = f.entered_at or self.start_time
        if f.entered_iso[0] != entered:
            f.entered_iso = (entered, iso(entered))
        ctx = paths.Context.of(
            {
                "Execution": execution,
                "StateMachine": machine,
                "State": {
                    "Name": f.state,
                    "EnteredTime": f.entered_iso[1],
                    "RetryCount": sum(f.retries.values()),
                },
            },
            self.visible_variables(f),
        )
        if f.parent is not None and self.frames[f.parent].phase == "map":
            ctx["Map"] = {"Item": _item_context(self.frames[f.parent], f.index, f.item)}
        return ctx

    def visible_variables(self, f: Frame) -> dict[str, Any]:
        """The variables a state in frame ``f`` reads: its own scope's over the enclosing
        scopes' (none past a DISTRIBUTED Map iteration, a child execution on AWS)."""
        if f.parent is None or (f.unit and f.unit == f.scope):
            return f.variables
        outer = self.visible_variables(self.frames[f.parent])
        if not f.variables:
            return outer
        if not outer:
            return f.variables
        return {**outer, **f.variables}

    def is_jsonata(self, state: dict) -> bool:
        return state.get("QueryLanguage", self.query_language) == "JSONata"

    def _assign(self, f: Frame, spec: Any, data: Any, ctx: dict, jsonata: dict | None) -> Any:
        """The values of an ``Assign`` (None without one), evaluated against the state's data
        and the variables it entered with, all before any is assigned."""
        if spec is None:
            return None
        if jsonata is not None:
            values = jsonata_lang.resolve(spec, jsonata, "Assign")
        else:
            values = dataflow.resolve_template(spec, data, ctx)
        # the 10 MiB limit is per execution: count every variable this state can see
        variables.check_sizes(f.state or "", values, getattr(ctx, "variables", f.variables))
        return values

    def _decide_frame(self, f: Frame, now: float) -> list[Decision]:
        state = f.machine["States"][f.state]
        kind = state["Type"]
        prefix = STATE_EVENT_PREFIX[kind]
        if f.phase == "enter" or (f.phase == "retry_wait" and now >= f.retry_at):
            # a retried Map or Parallel state starts over: entered again with the same input
            return [(f"{prefix}StateEntered", f.scope, {"name": f.state, "input": f.input})]
        if f.phase == "retry_wait":
            return []
        ctx = self._context(f)
        try:
            if f.phase == "entered":
                return self._on_enter(f, state, kind, ctx, now)
            if f.phase == "task_done":
                return [self._finish(f, state, f.task_result, ctx)]
            if f.phase == "task_failed":
                return self._handle_error(f, state, f.error or "States.TaskFailed", f.cause, now)
            if f.phase == "map":
                return self._advance_map(f, state, ctx, now)
            if f.phase == "parallel":
                return self._advance_parallel(f, state, ctx, now)
        except StatesError as exc:
            return self._handle_error(f, state, exc.error, exc.cause, now, retry=False)
        return []  # task or timer pending

    def _finish(self, f: Frame, state: dict, result: Any, ctx: dict) -> Decision:
        """The exit of a Task, Map or Parallel state that produced ``result``."""
        # as on AWS, the raw result counts, before Output/ResultSelector/ResultPath trim it
        cause = oversized(f.state, result)
        if cause is not None:
            return (
                "StateFailed",
                f.scope,
                {"name": f.state, "error": DATA_LIMIT_EXCEEDED, "cause": cause},
            )
        if self.is_jsonata(state):
            b = jsonata_lang.bindings(ctx.variables, ctx, f.input, result=result)  # type: ignore[attr-defined]
            assign = self._assign(f, state.get("Assign"), None, ctx, b)
            output = (
                jsonata_lang.resolve(state["Output"], b, "Output") if "Output" in state else result
            )
            return self._exit(f, state, output, assign=assign)
        selected = dataflow.select_result(state, result, ctx)
        assign = self._assign(f, state.get("Assign"), selected, ctx, None)
        output = dataflow.state_output(state, f.input, selected, ctx, selected=True)
        return self._exit(f, state, output, assign=assign)

    def _exit(
        self,
        f: Frame,
        state: dict,
        output: Any,
        nxt: str | None = None,
        *,
        assign: dict[str, Any] | None = None,
    ) -> Decision:
        prefix = STATE_EVENT_PREFIX[state["Type"]]
        if nxt is None and not state.get("End"):
            nxt = state.get("Next")
        cause = oversized(f.state, output)
        if cause is not None:
            return (
                "StateFailed",
                f.scope,
                {"name": f.state, "error": DATA_LIMIT_EXCEEDED, "cause": cause},
            )
        details: dict[str, Any] = {"name": f.state, "output": output, "next": nxt}
        if assign:
            # as AWS's stateExitedEventDetails: each value as JSON text (what the console and
            # GetExecutionHistory show); the interpreter folds them back from there
            details["assignedVariables"] = {
                k: json.dumps(v, separators=(",", ":"), ensure_ascii=False)
                for k, v in assign.items()
            }
            details["assignedVariablesDetails"] = {"truncated": False}
        return (f"{prefix}StateExited", f.scope, details)

    def _on_enter(self, f: Frame, state: dict, kind: str, ctx: dict, now: float) -> list[Decision]:
        if self.is_jsonata(state):
            return self._on_enter_jsonata(f, state, kind, ctx, now)
        if kind == "Pass":
            effective = dataflow.state_input(state, f.input, ctx)
            result = dataflow.pass_result(state, effective)
            assign = self._assign(f, state.get("Assign"), result, ctx, None)
            output = dataflow.state_output(state, f.input, result, ctx)
            return [self._exit(f, state, output, assign=assign)]
        if kind == "Task":
            ctx["Task"] = {"Token": self.callback_token(f)}  # $$.Task.Token
            effective = dataflow.state_input(state, f.input, ctx)
            return [self._schedule(f, state, effective, now, attempt=1)]
        if kind == "Choice":
            effective = dataflow.state_input(state, f.input, ctx)
            nxt, rule = choice.choose_rule(state, effective, ctx)
            spec = rule.get("Assign") if rule is not None else state.get("Assign")
            assign = self._assign(f, spec, effective, ctx, None)
            output = dataflow.state_output(state, effective, effective, ctx)
            return [self._exit(f, state, output, nxt, assign=assign)]
        if kind == "Wait":
            effective = dataflow.state_input(state, f.input, ctx)
            if now < self._wait_until(f, state, effective, ctx):
                return []
            assign = self._assign(f, state.get("Assign"), effective, ctx, None)
            output = dataflow.state_output(state, effective, effective, ctx)
            return [self._exit(f, state, output, assign=assign)]
        if kind == "Succeed":
            effective = dataflow.state_input(state, f.input, ctx)
            return [self._exit(f, state, dataflow.state_output(state, effective, effective, ctx))]
        if kind == "Fail":
            error, cause = dataflow.fail_error_cause(state, f.input, ctx)
            return [("StateFailed", f.scope, {"name": f.state, "error": error, "cause": cause})]
        if kind == "Map":
            effective = dataflow.state_input(state, f.input, ctx)
            if "ItemReader" in state:
                reader = state["ItemReader"]
                params = dataflow.resolve_template(reader.get("Parameters", {}), effective, ctx)
                config = reader.get("ReaderConfig") or {}
                if "MaxItemsPath" in config:
                    number = _path_number(config, "MaxItemsPath", effective, ctx, integer=True)
                    reader = {**reader, "ReaderConfig": {**config, "MaxItems": int(number)}}
                read = self.io.read_items(reader, params)
                items, keys, source = read.items, read.keys, read.source
            else:
                found = iteration_items(
                    paths.evaluate_path(state.get("ItemsPath", "$"), effective, ctx)
                )
                if found is None:
                    raise StatesError(
                        "States.Runtime",
                        f"the ItemsPath of Map state {f.state!r} did not select a JSON array "
                        "or object",
                    )
                (items, keys), source = found, STATE_DATA
            if "ItemBatcher" in state:
                batcher = dict(state["ItemBatcher"])
                for field in ("MaxItemsPerBatchPath", "MaxInputBytesPerBatchPath"):
                    if field in batcher:
                        number = _path_number(batcher, field, effective, ctx, integer=True)
                        batcher[field.removesuffix("Path")] = int(number)
                batch_input = batcher.get("BatchInput")
                if batch_input is not None:
                    batch_input = dataflow.resolve_template(batch_input, effective, ctx)
                items = self._select_items(state, ctx, effective, f.input, items, keys, source)
                items, keys = batches(items, batcher, batch_input), None
            # the ...Path limits are checked now, as AWS does when the Map state starts
            count, pct = _tolerated_config(state, effective, ctx)
            limits = {
                "MaxConcurrency": _max_concurrency(state, effective, ctx),
                "Tolerated": _tolerance(count, pct, len(items)),
                # as configured, for the Map Run (DescribeMapRun gives them apart)
                "Count": int(count or 0),
                "Pct": float(pct or 0),
            }
            details = {"name": f.state, "items": items, "effective": effective, "limits": limits}
            return [("MapStateStarted", f.scope, _item_origin(details, keys, source))]
        if kind == "Parallel":
            effective = dataflow.state_input(state, f.input, ctx)
            n = len(state["Branches"])
            return [("ParallelStateStarted", f.scope, {"branches": n, "input": effective})]
        raise StatesError("States.Runtime", f"unknown state type {kind!r}")

    def _on_enter_jsonata(
        self, f: Frame, state: dict, kind: str, ctx: dict, now: float
    ) -> list[Decision]:
        """A JSONata state: ``Arguments`` in, ``Output`` and ``Assign`` out, ``$states``."""
        if kind == "Task":
            ctx["Task"] = {"Token": self.callback_token(f)}
        b = jsonata_lang.bindings(ctx.variables, ctx, f.input)  # type: ignore[attr-defined]

        def out(default: Any) -> Any:
            if "Output" in state:
                return jsonata_lang.resolve(state["Output"], b, "Output")
            return copy.deepcopy(default)

        if kind == "Pass":
            assign = self._assign(f, state.get("Assign"), None, ctx, b)
            return [self._exit(f, state, out(f.input), assign=assign)]
        if kind == "Task":
            arguments = jsonata_lang.resolve(state.get("Arguments", f.input), b, "Arguments")
            timeouts = {
                key: _jsonata_number(state, key, b, integer=True, least=1)
                for key in ("TimeoutSeconds", "HeartbeatSeconds")
                if key in state
            }
            return [self._schedule(f, state, arguments, now, attempt=1, **timeouts)]
        if kind == "Choice":

            def test(rule: dict) -> bool:
                value = jsonata_lang.resolve(rule["Condition"], b, "Condition")
                if not isinstance(value, bool):
                    raise StatesError(
                        QUERY_EVALUATION_ERROR,
                        f"The Condition {rule['Condition']!r} of Choice state {f.state!r} "
                        f"returned {json.dumps(value)[:200]}, not a boolean",
                    )
                return value

            nxt, rule = choice.choose_rule(state, f.input, ctx, test)
            spec = rule.get("Assign") if rule is not None else state.get("Assign")
            assign = self._assign(f, spec, None, ctx, b)
            return [self._exit(f, state, out(f.input), nxt, assign=assign)]
        if kind == "Wait":
            if now < self._wait_until(f, state, f.input, ctx, b):
                return []
            assign = self._assign(f, state.get("Assign"), None, ctx, b)
            return [self._exit(f, state, out(f.input), assign=assign)]
        if kind == "Succeed":
            return [self._exit(f, state, out(f.input))]
        if kind == "Fail":
            fields = []
            for key in ("Error", "Cause"):
                value = jsonata_lang.resolve(state[key], b, key) if key in state else None
                if value is not None and not isinstance(value, str):
                    raise StatesError(
                        QUERY_EVALUATION_ERROR,
                        f"The {key} of Fail state {f.state!r} must be a string, "
                        f"got {json.dumps(value)[:200]}",
                    )
                fields.append(value)
            error, cause = fields
            return [("StateFailed", f.scope, {"name": f.state, "error": error, "cause": cause})]
        if kind == "Map":
            if "ItemReader" in state:
                reader = state["ItemReader"]
                params = jsonata_lang.resolve(reader.get("Arguments", {}), b, "ItemReader")
                read = self.io.read_items(reader, params)
                items, keys, source = read.items, read.keys, read.source
            else:
                value = jsonata_lang.resolve(state.get("Items", f.input), b, "Items")
                found = iteration_items(value)
                if found is None:
                    raise StatesError(
                        QUERY_EVALUATION_ERROR,
                        f"The Items of Map state {f.state!r} must be a JSON array or object, "
                        f"got {json.dumps(value)[:200]}",
                    )
                (items, keys), source = found, STATE_DATA
            if "ItemBatcher" in state:
                batcher = jsonata_lang.resolve(state["ItemBatcher"], b, "ItemBatcher")
                items = self._select_items(state, ctx, f.input, f.input, items, keys, source)
                items, keys = batches(items, batcher, batcher.get("BatchInput")), None
            limits: dict[str, Any] = {"MaxConcurrency": 0, "Tolerated": 0}
            if "MaxConcurrency" in state:
                limits["MaxConcurrency"] = int(
                    _jsonata_number(state, "MaxConcurrency", b, integer=True)
                )
            tolerated = []
            if "ToleratedFailureCount" in state:
                count = _jsonata_number(state, "ToleratedFailureCount", b, integer=True)
                tolerated.append(int(count))
                limits["Count"] = int(count)
            if "ToleratedFailurePercentage" in state:
                pct = _jsonata_number(
                    state, "ToleratedFailurePercentage", b, integer=False, most=100
                )
                tolerated.append(int(pct / 100.0 * len(items)))
                limits["Percentage"] = True
                limits["Pct"] = float(pct)
            limits["Tolerated"] = max(tolerated) if tolerated else 0
            details = {"name": f.state, "items": items, "effective": f.input, "limits": limits}
            return [("MapStateStarted", f.scope, _item_origin(details, keys, source))]
        if kind == "Parallel":
            arguments = jsonata_lang.resolve(state.get("Arguments", f.input), b, "Arguments")
            n = len(state["Branches"])
            return [("ParallelStateStarted", f.scope, {"branches": n, "input": arguments})]
        raise StatesError("States.Runtime", f"unknown state type {kind!r}")

    def _wait_until(
        self, f: Frame, state: dict, effective: Any, ctx: dict, b: dict | None = None
    ) -> float:
        if b is None and self.is_jsonata(state):
            b = jsonata_lang.bindings(ctx.variables, ctx, f.input)  # type: ignore[attr-defined]
        if b is not None:  # JSONata: Seconds / Timestamp may be expressions
            if "Seconds" in state:
                seconds = state["Seconds"]
                if jsonata_lang.is_expression(seconds):
                    seconds = _jsonata_number(state, "Seconds", b, integer=True)
                return f.entered_at + float(seconds)
            stamp = jsonata_lang.resolve(state.get("Timestamp"), b, "Timestamp")
            return _timestamp(f, stamp, QUERY_EVALUATION_ERROR)
        if "Seconds" in state:
            return f.entered_at + float(state["Seconds"])
        if "SecondsPath" in state:
            return f.entered_at + _path_number(state, "SecondsPath", effective, ctx, integer=True)
        stamp = state.get("Timestamp")
        if "TimestampPath" in state:
            stamp = paths.evaluate_path(state["TimestampPath"], effective, ctx)
        return _timestamp(f, stamp, RUNTIME)

    def _schedule(
        self,
        f: Frame,
        state: dict,
        parameters: Any,
        now: float,
        *,
        attempt: int,
        retrier: int | None = None,
        delay: float = 0.0,
        # a JSONata state's evaluated TimeoutSeconds / HeartbeatSeconds
        TimeoutSeconds: float | None = None,
        HeartbeatSeconds: float | None = None,
    ) -> Decision:
        details: dict[str, Any] = {
            "name": f.state,
            "resource": state["Resource"],
            "parameters": parameters,
            "attempt": attempt,
            "not_before": now + delay,
            "timeout": TimeoutSeconds
            if TimeoutSeconds is not None
            else _static(state, "TimeoutSeconds"),
            "heartbeat": HeartbeatSeconds
            if HeartbeatSeconds is not None
            else _static(state, "HeartbeatSeconds"),
            # identifies this attempt everywhere: a re-dispatch after a crash reuses it
            "token": f"{self.callback_token(f)}#{attempt}",
        }
        if retrier is not None:
            details["retrier"] = retrier
        return (event_kind("TaskScheduled", state["Resource"]), f.scope, details)

    def callback_token(self, f: Frame) -> str:
        """The task token of this visit of the frame's state (`$$.Task.Token`): what a
        `.waitForTaskToken` task hands out and SendTaskSuccess/Failure/Heartbeat name."""
        token = f"{self.execution.get('Id', '')}#{f.scope}#{f.state}@{f.entered_id}"
        return f"{token}.{self.attempt}" if self.attempt else token

    def _handle_error(
        self,
        f: Frame,
        state: dict,
        error: str,
        cause: str | None,
        now: float,
        *,
        retry: bool = True,
    ) -> list[Decision]:
        cause = cause or ""
        if retry and state["Type"] in ("Map", "Parallel"):
            found = find_retrier(state, error)
            if found is not None and retry_allowed(found[1], f.retries.get(found[0], 0)):
                index, retrier = found
                used = f.retries.get(index, 0)
                rng = random.Random(f"{self.seed}:{f.scope}:{f.state}:{index}:{used}")
                delay = retry_delay(retrier, used + 1, rng.random())
                details = {"name": f.state, "retrier": index, "not_before": now + delay}
                return [("StateRetryScheduled", f.scope, details)]
        if retry and state["Type"] == "Task" and f.task is not None:
            found = find_retrier(state, error)
            if found is not None:
                index, retrier = found
                used = f.retries.get(index, 0)
                if retry_allowed(retrier, used):
                    rng = random.Random(f"{self.seed}:{f.scope}:{f.state}:{index}:{used}")
                    delay = retry_delay(retrier, used + 1, rng.random())
                    attempt = int(f.task.get("attempt", 1)) + 1
                    return [
                        self._schedule(
                            f,
                            state,
                            f.task["parameters"],
                            now,
                            attempt=attempt,
                            retrier=index,
                            delay=delay,
                            TimeoutSeconds=f.task.get("timeout"),
                            HeartbeatSeconds=f.task.get("heartbeat"),
                        )
                    ]
        catcher = (
            find_catcher(state, error) if state["Type"] in ("Task", "Map", "Parallel") else None
        )
        if catcher is not None:
            error_output = {"Error": error, "Cause": cause}
            try:
                ctx = self._context(f)
                if self.is_jsonata(state):
                    b = jsonata_lang.bindings(ctx.variables, ctx, f.input, errorOutput=error_output)
                    assign = self._assign(f, catcher.get("Assign"), None, ctx, b)
                    output = (
                        jsonata_lang.resolve(catcher["Output"], b, "Output")
                        if "Output" in catcher
                        else error_output
                    )
                else:
                    assign = self._assign(f, catcher.get("Assign"), error_output, ctx, None)
                    output = paths.set_result_path(
                        f.input, catcher.get("ResultPath", "$"), error_output
                    )
            except StatesError as exc:
                error, cause = exc.error, exc.cause
            else:
                return [self._exit(f, state, output, catcher["Next"], assign=assign)]
        return [("StateFailed", f.scope, {"name": f.state, "error": error, "cause": cause})]

    def _children(self, parent: Frame) -> list[Frame]:
        prefix = f"{parent.scope}/" if parent.scope else ""
        name = f"{prefix}{parent.state}"
        return [
            f
            for s, f in self.frames.items()
            if f.parent == parent.scope
            and s.startswith(name)
            and s[len(name) : len(name) + 1] in "[{"
        ]

    def _child(self, parent: Frame, index: int) -> Frame | None:
        prefix = f"{parent.scope}/" if parent.scope else ""
        for brackets in ("[{}]", "{{{}}}"):
            f = self.frames.get(f"{prefix}{parent.state}{brackets.format(index)}")
            if f is not None:
                return f
        return None

    def _advance_map(self, f: Frame, state: dict, ctx: dict, now: float) -> list[Decision]:
        total = len(f.items)
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        as_children = (
            self.child_executions
            and (processor.get("ProcessorConfig") or {}).get("Mode") == "DISTRIBUTED"
        )
        if as_children and f.map_run is None:
            return [self._map_run_started(f, state, processor)]
        if f.redrive:
            details = {"name": f.state, "mapRunArn": f.map_run["arn"], "indexes": f.redrive}  # type: ignore[index]
            return [("MapRunRedriven", f.scope, details)]
        if "Tolerated" in f.limits:
            tolerated = f.limits["Tolerated"]
        else:  # a history written before the limits were recorded at the start
            tolerated = _tolerated(state, f.effective, ctx, total)
        if len(f.failures) > tolerated:
            index, error, cause = sorted(f.failures)[0]
            if tolerated > 0 or "ToleratedFailurePercentage" in state or f.limits.get("Percentage"):
                error = EXCEEDED_TOLERATED_FAILURE_THRESHOLD
                cause = (
                    f"Map state {f.state!r}: {len(f.failures)} of {total} iterations failed, "
                    f"more than the {tolerated} tolerated"
                )
            out: list[Decision] = []
            if f.running:
                out.append(("IterationsAborted", f.scope, {"name": f.state}))
            out.append(
                ("MapStateFailed", f.scope, {"name": f.state, "error": error, "cause": cause})
            )
            return out + self._handle_error(f, state, error, cause, now)
        if "MaxConcurrency" in f.limits:
            limit = f.limits["MaxConcurrency"] or total
        else:
            limit = _max_concurrency(state, f.effective, ctx) or total
        if f.started < total and f.running < limit:
            index = f.started
            item = f.items[index]
            if "ItemBatcher" in state:  # the selector ran per item before batching
                data = item
            else:
                item_ctx = ctx.extend(Map={"Item": _item_context(f, index, item)})  # type: ignore[attr-defined]
                data = self._select_item(state, item_ctx, f.effective, f.input, item)
            details = {"name": f.state, "index": index, "input": data}
            if as_children:
                details["execution"] = self._child_arn(f, index)
            return [("MapIterationStarted", f.scope, details)]
        if f.started == total and f.running == 0:
            results = [f.results.get(i) for i in range(total)]
            if "ResultWriter" in state:
                results = self._write_results(f, state, ctx, results)
            return [
                ("MapStateSucceeded", f.scope, {"name": f.state}),
                self._finish(f, state, results, ctx),
            ]
        return []

    def _select_item(
        self, state: dict, item_ctx: Any, effective: Any, state_input: Any, item: Any
    ) -> Any:
        """One item through the Map's ItemSelector (or legacy Parameters), or unchanged."""
        if self.is_jsonata(state):
            selector = state.get("ItemSelector")
            if selector is None:
                return copy.deepcopy(item)
            b = jsonata_lang.bindings(item_ctx.variables, item_ctx, state_input)
            return jsonata_lang.resolve(selector, b, "ItemSelector")
        selector = state.get("ItemSelector", state.get("Parameters"))
        if selector is None:
            return item
        return dataflow.resolve_template(selector, effective, item_ctx)

    def _select_items(
        self,
        state: dict,
        ctx: Any,
        effective: Any,
        state_input: Any,
        items: list,
        keys: list[str] | None,
        source: str | list[str],
    ) -> list:
        """Every item through the ItemSelector before an ItemBatcher groups them, each with its
        own `$$.Map.Item` (AWS: ItemReader, ItemsPath, ItemSelector per item, then ItemBatcher)."""
        if state.get("ItemSelector", state.get("Parameters")) is None:
            return items
        return [
            self._select_item(
                state,
                ctx.extend(Map={"Item": _map_item(index, item, keys, source)}),
                effective,
                state_input,
                item,
            )
            for index, item in enumerate(items)
        ]

    def _write_results(self, f: Frame, state: dict, ctx: dict, results: list) -> Any:
        """A Map's ResultWriter: its children's entries written to a bucket (Resource and
        Parameters/Arguments), or, with only a WriterConfig, transformed into the state's
        result. A failed child's entry is never transformed (as if Transformation were NONE)."""
        writer = state["ResultWriter"]
        failed_at = {i: (e, c) for i, e, c in f.failures}
        succeeded, failed, entries = [], [], []
        for i, output in enumerate(results):
            entry = self._result_entry(f, i, output, failed_at.get(i))
            (failed if i in failed_at else succeeded).append(entry)
            entries.append(entry)
        if "Resource" not in writer:
            config = writer.get("WriterConfig") or {}
            transformation = str(config.get("Transformation", "COMPACT")).upper()
            if transformation == "NONE":
                return entries
            out: list[Any] = []
            for i, output in enumerate(results):
                if i in failed_at:
                    out.append(entries[i])
                elif transformation == "FLATTEN" and isinstance(output, list):
                    out.extend(output)
                else:
                    out.append(output)
            return out
        if self.is_jsonata(state):
            b = jsonata_lang.bindings(ctx.variables, ctx, f.input)  # type: ignore[attr-defined]
            params = jsonata_lang.resolve(writer.get("Arguments", {}), b, "ResultWriter")
        else:
            params = dataflow.resolve_template(writer.get("Parameters", {}), f.effective, ctx)
        run = f.map_run["arn"] if f.map_run is not None else None
        return self.io.write_results(writer, params, self.execution, succeeded, failed, map_run=run)

    def _result_entry(
        self, f: Frame, index: int, output: Any, failure: tuple[str, str] | None
    ) -> dict[str, Any]:
        """One child's entry in a ResultWriter's files, as AWS writes them: its execution's
        ARN and name (a Map run as scopes has none), Input and Output as JSON text, status,
        start and stop dates."""
        entry: dict[str, Any] = {}
        arn = f.child_arns.get(index)
        if arn is not None:
            entry["ExecutionArn"] = arn
        entry["Input"] = json.dumps(f.inputs.get(index), separators=(",", ":"))
        entry["InputDetails"] = {"Included": True}
        if arn is not None:
            entry["Name"] = arn.rsplit(":", 1)[1]
        if failure is None:
            entry["Output"] = json.dumps(output, separators=(",", ":"))
            entry["OutputDetails"] = {"Included": True}
        else:
            entry["Error"], entry["Cause"] = failure
        start, stop = f.times.get(index, (0.0, 0.0))
        entry["StartDate"] = iso(start)
        if f.map_run is not None:
            machine = self.execution.get("StateMachineName", "")
            entry["StateMachineArn"] = (
                f"arn:aws:states:local:000000000000:stateMachine:{machine}/{f.map_run['label']}"
            )
        status = "SUCCEEDED"
        if failure is not None:
            status = {"States.Timeout": "TIMED_OUT", "States.Aborted": "ABORTED"}.get(
                failure[0], "FAILED"
            )
        entry["Status"] = status
        entry["StopDate"] = iso(stop)
        return entry

    def _map_run_started(self, f: Frame, state: dict, processor: dict) -> Decision:
        """The Map Run of a DISTRIBUTED Map state: named as AWS names them,
        `mapRun:<state machine>/<Label or state name>:<uuid>`."""
        config = processor.get("ProcessorConfig") or {}
        label = str(state.get("Label") or f.state)
        machine = self.execution.get("StateMachineName", "")
        run_id = str(uuid.uuid4())  # recorded in the event: a replay reads it from there
        details = {
            "name": f.state,
            "mapRunArn": f"arn:aws:states:local:000000000000:mapRun:{machine}/{label}:{run_id}",
            "executionType": config.get("ExecutionType", "STANDARD"),
            "label": label,
            "total": len(f.items),
            "maxConcurrency": int(f.limits.get("MaxConcurrency") or 0),
            # as configured (default 0), not the failures a percentage of the items allows
            "toleratedFailureCount": int(
                f.limits.get("Count", _static(state, "ToleratedFailureCount") or 0)
            ),
            "toleratedFailurePercentage": float(f.limits.get("Pct", 0)),
        }
        return ("MapRunStarted", f.scope, details)

    def _child_arn(self, f: Frame, index: int) -> str:
        """A child execution's ARN: `execution:<state machine>/<label>:<run id>-<index>`."""
        run = f.map_run or {}
        machine = self.execution.get("StateMachineName", "")
        run_id = str(run.get("arn", "")).rsplit(":", 1)[-1]
        return (
            f"arn:aws:states:local:000000000000:execution:{machine}/{run.get('label')}:"
            f"{run_id}-{index}"
        )

    def live_children(self) -> dict[str, tuple[str, dict[int, str]]]:
        """Map Run ARN -> (the Map's scope, index -> child ARN) of children still running."""
        out = {}
        for scope in self._map_runs:
            f = self.frames[scope]
            if f.map_run is not None and f.live and f.status == "running":
                out[f.map_run["arn"]] = (scope, dict(f.live))
        return out

    def _advance_parallel(self, f: Frame, state: dict, ctx: dict, now: float) -> list[Decision]:
        if f.failures:
            _, error, cause = sorted(f.failures)[0]
            out: list[Decision] = []
            if f.running:
                out.append(("IterationsAborted", f.scope, {"name": f.state}))
            out.append(
                ("ParallelStateFailed", f.scope, {"name": f.state, "error": error, "cause": cause})
            )
            return out + self._handle_error(f, state, error, cause, now)
        total = len(f.items)
        if f.started < total:
            return [
                (
                    "ParallelBranchStarted",
                    f.scope,
                    {"name": f.state, "index": f.started, "input": f.effective},
                )
            ]
        if f.running == 0:
            results = [f.results.get(i) for i in range(total)]
            return [
                ("ParallelStateSucceeded", f.scope, {"name": f.state}),
                self._finish(f, state, results, ctx),
            ]
        return []

    # -- what the driver needs ------------------------------------------------------------------

    def pending_tasks(self) -> list[tuple[str, dict[str, Any]]]:
        """(scope, TaskScheduled details) of every task waiting for an outcome."""
        out = []
        for scope in self._pending:
            f = self.frames[scope]
            if f.phase == "task" and f.status == "running" and f.task is not None:
                out.append((scope, f.task))
        return out

    def take_new_tasks(self) -> list[tuple[str, dict[str, Any]]]:
        """Tasks scheduled since the last call (after a replay: every pending task), so a
        driver with thousands of tasks in flight looks only at what changed."""
        fresh, self._fresh = self._fresh, {}
        out = []
        for scope in fresh:
            f = self.frames[scope]
            if scope in self._pending and f.status == "running" and f.task is not None:
                out.append((scope, f.task))
        return out

    def next_timer(self) -> float | None:
        """The earliest moment a Wait state ends or the execution times out. (A delayed retry is
        the dispatcher's to hold back: its TaskScheduled carries `not_before`.)"""
        times = []
        for scope in self._waiting:
            f = self.frames[scope]
            if f.status == "running" and f.phase == "retry_wait":
                times.append(f.retry_at)
                continue
            if f.status != "running" or f.phase != "entered" or f.state is None:
                continue
            state = f.machine["States"][f.state]
            try:
                ctx = self._context(f)
                times.append(
                    self._wait_until(f, state, dataflow.state_input(state, f.input, ctx), ctx)
                )
            except StatesError:
                times.append(0.0)
        for scope in self._beating:
            due = _task_deadline(self.frames[scope])
            if due is not None:
                times.append(due[0])
        timeout = self.raw.get("TimeoutSeconds")
        if timeout:
            times.append(self.start_time + float(timeout))
        return min(times) if times else None


def _record_only(interp: Interpreter, e: Event) -> None:
    """Events kept for the history's reader (graph, describe) that change no state."""


_HANDLERS: dict[str, Callable[[Interpreter, Event], None]] = {
    **{f"{p}StateEntered": Interpreter._on_state_entered for p in STATE_EVENT_PREFIX.values()},
    **{f"{p}StateExited": Interpreter._on_state_exited for p in STATE_EVENT_PREFIX.values()},
    **{
        name[len("_on_") :]: method
        for name, method in vars(Interpreter).items()
        if name.startswith("_on_") and name[len("_on_") :][:1].isupper()
    },
    **{
        name: _record_only
        for name in (
            "TaskStarted",
            "MapStateSucceeded",
            "MapStateFailed",
            "ParallelStateSucceeded",
            "ParallelStateFailed",
        )
    },
}


def _task_deadline(f: Frame) -> tuple[float, str, str] | None:
    """When a scheduled task times out unless its outcome comes first, with the error and
    cause: HeartbeatSeconds after the last heartbeat (for an activity, after a worker took it),
    and for an activity TimeoutSeconds after it was scheduled. (Other tasks' TimeoutSeconds is
    their invocation's timeout.)"""
    if f.phase != "task" or f.task is None:
        return None
    due: list[tuple[float, str, str]] = []
    task = f.task
    activity = bool(task.get("activity"))
    if task.get("heartbeat") and (not activity or task.get("started")):
        due.append(
            (
                float(task.get("beat") or 0) + float(task["heartbeat"]),
                HEARTBEAT_TIMEOUT,
                f"no heartbeat for {task['heartbeat']} s",
            )
        )
    if activity and task.get("timeout"):
        due.append(
            (
                float(task.get("scheduled_at") or 0) + float(task["timeout"]),
                TIMEOUT,
                f"the activity task ran over TimeoutSeconds ({task['timeout']} s)",
            )
        )
    return min(due) if due else None


def _path_number(
    state: dict, field: str, effective: Any, ctx: dict, *, integer: bool, most: float | None = None
) -> float:
    """The number a `...Path` field selects; anything else fails the execution (States.Runtime,
    as on AWS), naming the field and the value."""
    value = paths.evaluate_path(state[field], effective, ctx)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    if ok and integer:
        ok = float(value).is_integer()
    if ok and most is not None:
        ok = value <= most
    if not ok:
        kind = "a non-negative integer" if integer else f"a number from 0 to {most:g}"
        shown = json.dumps(value)
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        raise StatesError(RUNTIME, f"{field} {state[field]!r} selected {shown}, not {kind}")
    return value


def _item_origin(
    details: dict[str, Any], keys: list[str] | None, source: str | list[str]
) -> dict[str, Any]:
    """MapStateStarted's record of where the items came from (a replay reads it there)."""
    if keys is not None:
        details["keys"] = keys
    if isinstance(source, list) and len(set(source)) == 1:
        source = source[0]
    if source != STATE_DATA and (isinstance(source, str) or len(source) == len(details["items"])):
        details["source"] = source  # a batched list of per-item sources no longer lines up
    return details


def _item_context(f: Frame, index: int, item: Any) -> dict[str, Any]:
    """`$$.Map.Item` of iteration `index` of Map frame `f`: Index, Key (items of a JSON
    object), Value and Source."""
    return _map_item(index, item, f.keys, f.source)


def _map_item(
    index: int, item: Any, keys: list[str] | None, source: str | list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"Index": index}
    if keys is not None and index < len(keys):
        out["Key"] = keys[index]
    out["Value"] = item
    out["Source"] = source[index] if isinstance(source, list) else source
    return out


def _max_concurrency(state: dict, effective: Any, ctx: dict) -> int:
    if "MaxConcurrencyPath" in state:
        field = "MaxConcurrencyPath"
        return int(_path_number(state, field, effective, ctx, integer=True))
    return int(state.get("MaxConcurrency", 0))


def _tolerated(state: dict, effective: Any, ctx: dict, total: int) -> int:
    count, pct = _tolerated_config(state, effective, ctx)
    return _tolerance(count, pct, total)


def _tolerated_config(state: dict, effective: Any, ctx: dict) -> tuple[Any, Any]:
    """A JSONPath Map's configured ToleratedFailureCount and ...Percentage (None if unset),
    their ...Path forms resolved."""
    count = state.get("ToleratedFailureCount")
    if "ToleratedFailureCountPath" in state:
        field = "ToleratedFailureCountPath"
        count = _path_number(state, field, effective, ctx, integer=True)
    pct = state.get("ToleratedFailurePercentage")
    if "ToleratedFailurePercentagePath" in state:
        field = "ToleratedFailurePercentagePath"
        pct = _path_number(state, field, effective, ctx, integer=False, most=100)
    return count, pct


def _tolerance(count: Any, pct: Any, total: int) -> int:
    """How many failed iterations a Map tolerates: the larger of its count and percentage."""
    limits = []
    if count is not None:
        limits.append(int(count))
    if pct is not None:
        limits.append(int(float(pct) / 100.0 * total))
    return max(limits) if limits else 0


def _static(state: dict, field: str) -> Any:
    value = state.get(field)
    return None if jsonata_lang.is_expression(value) else value


def _timestamp(f: Frame, stamp: Any, error: str) -> float:
    """A Wait state's end time from an RFC 3339 timestamp, which must have a ``T`` and a zone;
    anything else fails the state (States.Runtime for TimestampPath, as on AWS)."""
    seconds = choice.parse_timestamp(stamp)
    if seconds is None:
        shown = json.dumps(stamp)[:200]
        raise StatesError(
            error,
            f"Wait state {f.state!r}: {shown} is not an RFC 3339 timestamp "
            "like 2016-03-14T01:59:00Z",
        )
    return float(seconds)


def _jsonata_number(
    state: dict,
    field: str,
    b: dict,
    *,
    integer: bool,
    least: float = 0,
    most: float | None = None,
) -> float:
    """A number field of a JSONata state, which may be a ``{% %}`` expression; a value out of
    range fails the state with States.QueryEvaluationError."""
    value = jsonata_lang.resolve(state[field], b, field)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= least
    if ok and integer:
        ok = float(value).is_integer()
    if ok and most is not None:
        ok = value <= most
    if not ok:
        raise StatesError(
            QUERY_EVALUATION_ERROR,
            f"The field {field!r} of state {state.get('Type')} must be "
            + ("an integer" if integer else "a number")
            + f" of at least {least:g}, got {json.dumps(value)[:200]}",
        )
    return value
