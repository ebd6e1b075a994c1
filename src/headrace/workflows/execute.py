"""`execute()`: run a state machine to completion in this process, for scripts and tests.

Tasks run in a thread pool, with the same interpreter and the same history events as the
durable driver, so what a test shows is what `headrace up` does.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.workflows.asl import DefinitionError, Problem, parse
from headrace.workflows.errors import StatesError
from headrace.workflows.history import Event
from headrace.workflows.integrations import call_local, resolve, unknown_resources
from headrace.workflows.interpreter import Interpreter
from headrace.workflows.items import StorageMapIO

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
    name = name or str(uuid.uuid4())
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

    def emit(kind: str, scope: str, details: dict[str, Any]) -> None:
        interp.apply(Event(len(interp.history) + 1, kind, time.time(), scope, details))

    emit(
        "ExecutionStarted",
        "",
        {"input": {} if input is None else input, "seed": uuid.uuid4().int % 2**31},
    )
    running: dict[cf.Future, tuple[str, dict[str, Any], float]] = {}
    started: set[str] = set()
    deadline = time.time() + timeout if timeout else None
    with cf.ThreadPoolExecutor(max_workers=max_workers) as pool:
        while True:
            now = time.time()
            while decisions := interp.decide(now):
                for decision in decisions:
                    emit(*decision)
            if interp.status != "RUNNING":
                break
            if deadline and now >= deadline:
                emit(
                    "ExecutionAborted",
                    "",
                    {"error": "States.Timeout", "cause": "execute() timeout"},
                )
                break
            for scope, task in interp.pending_tasks():
                token = task["token"]
                if token in started or float(task.get("not_before", 0)) > now:
                    continue
                started.add(token)
                emit("TaskStarted", scope, {"name": task["name"], "token": token})
                target = resolve(task["resource"], task["parameters"])
                future = pool.submit(call_local, target, task["parameters"], functions, env)
                limit = float(task["timeout"]) if task.get("timeout") else None
                running[future] = (scope, task, now + limit if limit else float("inf"))
            wake = [t for t in (interp.next_timer(), deadline) if t]
            wake += [
                float(t.get("not_before", 0))
                for _, t in interp.pending_tasks()
                if t["token"] not in started
            ]
            wake += [end for _, _, end in running.values() if end != float("inf")]
            wait_for = max(0.0, min(wake) - time.time()) if wake else None
            if not running and wait_for is None:
                raise RuntimeError("execution is stuck: no task running and nothing to wait for")
            done, _ = cf.wait(list(running), timeout=wait_for, return_when=cf.FIRST_COMPLETED)
            now = time.time()
            for future in list(running):
                scope, task, end = running[future]
                if future in done:
                    del running[future]
                    try:
                        emit(
                            "TaskSucceeded",
                            scope,
                            {"name": task["name"], "output": future.result()},
                        )
                    except StatesError as exc:
                        emit(
                            "TaskFailed",
                            scope,
                            {"name": task["name"], "error": exc.error, "cause": exc.cause},
                        )
                elif now >= end:
                    del running[future]  # the thread cannot be stopped; its result is ignored
                    emit(
                        "TaskTimedOut",
                        scope,
                        {
                            "name": task["name"],
                            "error": "States.Timeout",
                            "cause": f"Task timed out after {task['timeout']} seconds",
                        },
                    )
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
