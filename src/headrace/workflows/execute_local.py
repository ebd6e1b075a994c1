"""`execute()`: run a state machine to completion in this process, for scripts and tests.

Tasks run in threads, with the same interpreter and the same history events as the
durable driver, so what a test shows is what `headrace up` does.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.workflows.asl import DefinitionError, Problem, parse
from headrace.workflows.errors import StatesError
from headrace.workflows.history import Event
from headrace.workflows.integrations import call_local, resolve, unknown_resources
from headrace.workflows.interpreter import Interpreter, task_outcome
from headrace.workflows.items import StorageMapIO
from headrace.workflows.names import check_execution_input, check_execution_name

STATUS = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass
class ExecutionResult:
    status: str  # SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    execution_id: str = ""
    name: str = ""


def execute(
    definition: str | dict | os.PathLike[str],
    input: Any = None,
    *,
    resources: dict[str, Callable[[Any], Any]] | None = None,
    name: str | None = None,
    max_workers: int = 8,
    timeout: float | None = None,
    ledger: str | None = None,
    topics: dict[str, list[dict[str, Any]]] | None = None,
    storage: str | None = None,
) -> ExecutionResult:
    """Run `definition` on `input` until it ends.

    `resources` maps function names to callables: `"arn:aws:states:::lambda:invoke"` with
    `FunctionName: "score"`, `"arn:aws:lambda:…:function:score"` and `"headrace:function:score"`
    all call `resources["score"](payload)`. DynamoDB and SNS tasks use the ledger at the
    SQLAlchemy URL `ledger` (default: a temporary SQLite file) and the given `topics`
    (name → subscription dicts, see headrace.notify); Map ItemReader/ResultWriter use the object
    store at `storage` (an fsspec URL or folder).
    """
    name = str(uuid.uuid4()) if name is None else check_execution_name(name)
    check_execution_input(input)
    machine = parse(definition)
    functions = dict(resources or {})
    # callbacks (.waitForTaskToken) need SendTaskSuccess from elsewhere: the coordinator's
    problems = unknown_resources(machine.states, set(functions), callbacks=False)
    if problems:
        raise DefinitionError([Problem("$.States", None, p) for p in problems])
    scratch = None
    if ledger is None:
        scratch = tempfile.TemporaryDirectory(prefix="headrace-execute-")
        ledger = f"sqlite:///{scratch.name}/ledger.db"
    env = {"ledger": ledger, "topics": topics or {}}
    execution_id = f"arn:aws:states:local:000000000000:execution:inline:{name}"
    interp = Interpreter(
        machine,
        {
            "Id": execution_id,
            "Name": name,
            "StateMachineId": "inline",
            "StateMachineName": "inline",
        },
        StorageMapIO(storage),
    )
    try:
        _run(interp, input, functions, env, max_workers, timeout)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return ExecutionResult(
        status=interp.status,
        output=interp.output,
        error=interp.error,
        cause=interp.cause,
        history=[e.as_dict() for e in interp.history],
        execution_id=execution_id,
        name=name,
    )


@dataclass(slots=True)
class _Call:
    scope: str
    task: dict[str, Any]
    ends_at: float  # when the state's TimeoutSeconds runs out (inf: never)


def _run(
    interp: Interpreter,
    input: Any,
    functions: dict[str, Callable[[Any], Any]],
    env: dict[str, Any],
    max_workers: int,
    timeout: float | None,
) -> None:
    """Drive `interp` to its end, or until `timeout` seconds have passed.

    Tasks run in daemon threads: a task that overruns its TimeoutSeconds (or the execution's
    `timeout`) cannot be stopped, but nothing waits for it — its result is dropped and it
    cannot keep the calling process alive."""

    def emit(kind: str, scope: str, details: dict[str, Any]) -> None:
        interp.apply(Event(interp.length + 1, kind, time.time(), scope, details))

    def abort_if_late(now: float) -> bool:
        if deadline is None or now < deadline:
            return False
        cause = f"execute() timeout of {timeout} s"
        emit("ExecutionAborted", "", {"error": "States.Timeout", "cause": cause})
        return True

    deadline = time.time() + timeout if timeout else None
    emit(
        "ExecutionStarted",
        "",
        {"input": {} if input is None else input, "seed": uuid.uuid4().int % 2**31},
    )
    outcomes: queue.SimpleQueue[tuple[str, bool, Any]] = queue.SimpleQueue()
    running: dict[str, _Call] = {}
    started: set[str] = set()
    while True:
        now = time.time()
        while decisions := interp.decide(now):
            for decision in decisions:
                emit(*decision)
            # a state machine may loop forever (legal ASL): the clock is checked at every step
            if abort_if_late(time.time()):
                return
        if interp.status != "RUNNING" or abort_if_late(now):
            return
        for scope, task in interp.pending_tasks():
            token = task["token"]
            if token in started or len(running) >= max_workers:
                continue
            if float(task.get("not_before", 0)) > now:
                continue
            started.add(token)
            emit("TaskStarted", scope, {"name": task["name"], "token": token})
            limit = float(task["timeout"]) if task.get("timeout") else None
            running[token] = _Call(scope, task, now + limit if limit else float("inf"))
            threading.Thread(
                target=_run_task,
                args=(outcomes, token, task, functions, env),
                name=f"headrace-execute-{task['name']}",
                daemon=True,
            ).start()
        wake = [t for t in (interp.next_timer(), deadline) if t]
        # delayed retries; a task held back only by max_workers waits for a running one to end
        wake += [
            not_before
            for _, t in interp.pending_tasks()
            if t["token"] not in started and (not_before := float(t.get("not_before", 0))) > now
        ]
        wake += [c.ends_at for c in running.values() if c.ends_at != float("inf")]
        wait_for = max(0.0, min(wake) - time.time()) if wake else None
        if not running and wait_for is None:
            raise RuntimeError("execution is stuck: no task running and nothing to wait for")
        finished = []
        try:
            finished.append(outcomes.get(timeout=wait_for))
            while True:
                finished.append(outcomes.get_nowait())
        except queue.Empty:
            pass
        for token, ok, value in finished:
            call = running.pop(token, None)
            if call is None:
                continue  # it timed out already; its late result is dropped
            name = call.task["name"]
            if ok:
                kind, details = task_outcome(name, value)
                emit(kind, call.scope, details)
            else:
                details = {"name": name, "error": value.error, "cause": value.cause}
                emit("TaskFailed", call.scope, details)
        now = time.time()
        for token, call in list(running.items()):
            if now >= call.ends_at:
                del running[token]  # the thread cannot be stopped; its result is dropped
                emit(
                    "TaskTimedOut",
                    call.scope,
                    {
                        "name": call.task["name"],
                        "error": "States.Timeout",
                        "cause": f"Task timed out after {call.task['timeout']} seconds",
                    },
                )


def _run_task(
    outcomes: queue.SimpleQueue[tuple[str, bool, Any]],
    token: str,
    task: dict[str, Any],
    functions: dict[str, Callable[[Any], Any]],
    env: dict[str, Any],
) -> None:
    try:
        target = resolve(task["resource"], task["parameters"])
        outcomes.put((token, True, call_local(target, task["parameters"], functions, env)))
    except StatesError as exc:
        outcomes.put((token, False, exc))
    except BaseException as exc:  # call_local turns task errors into StatesError; anything else
        outcomes.put((token, False, StatesError("States.Runtime", f"{type(exc).__name__}: {exc}")))
