"""Task resources: which ASL `Resource` strings headrace runs, and how results are shaped.

* `arn:aws:states:::lambda:invoke` with `FunctionName` and `Payload`: calls the function with
  `Payload`; the result is `{"ExecutedVersion", "Payload", "SdkHttpMetadata",
  "SdkResponseMetadata", "StatusCode": 200}` as the SDK integration returns it.
* `arn:aws:lambda:<region>:<account>:function:NAME` and `headrace:function:NAME`: call NAME
  with the state's effective input; the result is what it returns.
* `arn:aws:states:::dynamodb:putItem | getItem | updateItem | deleteItem` (and the other
  DynamoDB actions headrace.tables knows): the request in DynamoDB's JSON, run on headrace's
  tables; the result is DynamoDB's response.
* `arn:aws:states:::sns:publish`: `TopicArn` (its last part names the topic), `Message`,
  `Subject`; publishes to the app's topic; the result is `{"MessageId": …}`.
* `arn:aws:states:::batch:submitJob.sync`: runs the job definition as a headrace job and
  waits; the result is the job as `DescribeJobs` shows it. `batch:submitJob` (no `.sync`)
  queues the job and returns `{"JobId", "JobName"}` at once.

A failing function's error name is its exception's class name and the cause is the JSON AWS
Lambda reports (`errorMessage`, `errorType`, `stackTrace`), so `Catch` rules written for Lambda
(`"ErrorEquals": ["ValueError"]`) work unchanged. An error with a dotted name (`States.TaskFailed`
of a failed Batch job, `DynamoDB.ConditionalCheckFailedException`, `SNS.NotFoundException`,
`Batch.ClientException`) is a service's or Step Functions' own: its cause is the service's
message as is (a failed job's description), not wrapped in a Lambda error and a traceback.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from headrace.workflows import services
from headrace.workflows.activities import activity_name
from headrace.workflows.errors import StatesError

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
DYNAMODB_PREFIX = "arn:aws:states:::dynamodb:"
SNS_PUBLISH = "arn:aws:states:::sns:publish"
BATCH_SUBMIT = "arn:aws:states:::batch:submitJob"


@dataclass(frozen=True)
class Target:
    kind: str  # "function" (a user's function) or "service" (a built-in integration)
    name: str  # the function's name (services: a reserved name, see services.py)
    shape: str  # "lambda_invoke" wraps the result as the SDK integration does; "raw" does not
    action: str = ""  # the service action: DynamoDB's "putItem", Batch's "submitJob.sync"


def resolve(resource: str, parameters: Any = None) -> Target | None:
    """The target of a Task's Resource, or None when headrace does not know the resource."""
    if resource == f"{LAMBDA_INVOKE}.waitForTaskToken":
        # the function hands the token ($$.Task.Token) on; the task ends when someone calls
        # SendTaskSuccess/SendTaskFailure with it (headrace send-task-success ...)
        name = parameters.get("FunctionName") if isinstance(parameters, dict) else None
        return Target("function", function_name(name) if isinstance(name, str) else "", "callback")
    if resource == LAMBDA_INVOKE:
        name = parameters.get("FunctionName") if isinstance(parameters, dict) else None
        # a FunctionName.$ may select anything: only a string names a function
        name = function_name(name) if isinstance(name, str) else ""
        return Target("function", name, "lambda_invoke")
    if resource.startswith("arn:aws:lambda:") and ":function:" in resource:
        return Target("function", function_name(resource), "raw")
    if resource.startswith("headrace:function:"):
        return Target("function", resource.removeprefix("headrace:function:"), "raw")
    if resource.startswith(DYNAMODB_PREFIX):
        return Target("service", services.DYNAMODB, "raw", resource.removeprefix(DYNAMODB_PREFIX))
    if resource == SNS_PUBLISH:
        return Target("service", services.SNS, "raw", "publish")
    if resource in (BATCH_SUBMIT, f"{BATCH_SUBMIT}.sync"):
        return Target(
            "service", services.BATCH, "raw", resource.removeprefix("arn:aws:states:::batch:")
        )
    return None


def function_name(name_or_arn: str) -> str:
    """`NAME`, `NAME:alias` or a function ARN → NAME."""
    if ":function:" in name_or_arn:
        name_or_arn = name_or_arn.split(":function:", 1)[1]
    return name_or_arn.split(":", 1)[0]


def task_resources(states: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """Every (state name, Task state) of a machine, nested machines included."""
    for name, state in states.items():
        if state.get("Type") == "Task":
            yield name, state
        for branch in state.get("Branches", []):
            yield from task_resources(branch.get("States", {}))
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from task_resources(processor.get("States", {}))


def unknown_resources(
    states: dict[str, Any],
    known_functions: set[str] | None,
    *,
    callbacks: bool = True,
    known_topics: set[str] | None = None,
) -> list[str]:
    """Problems with Task resources: unknown URIs, functions that are not registered, and
    (given `known_topics`) SNS topics the app does not configure."""
    problems = []
    for name, state in task_resources(states):
        resource = state.get("Resource", "")
        parameters = state.get("Parameters") or state.get("Arguments")
        if activity_name(resource) is not None:
            if not callbacks:  # nothing outside a coordinator's ledger can poll for it
                problems.append(
                    f"state {name!r}: activity {resource!r} needs a coordinator (workers poll "
                    "its ledger): start one with `headrace dev` and `headrace start-execution`"
                )
            continue
        target = resolve(resource, parameters)
        if target is None or (target.shape == "callback" and not callbacks):
            problems.append(f"state {name!r}: unknown resource {resource!r}")
            continue
        topic = None
        if isinstance(parameters, dict):
            topic = parameters.get("TopicName") or parameters.get("TopicArn")
        topic = topic.rsplit(":", 1)[-1] if isinstance(topic, str) else None
        if (
            known_topics is not None
            and target.name == services.SNS
            and topic is not None  # a TopicArn.$ path is resolved at run time
            and topic not in known_topics
        ):
            problems.append(
                f"state {name!r}: publishes to topic {topic!r}, which is "
                f"not configured (known: {', '.join(sorted(known_topics)) or 'none'}; add it "
                "with app.topic)"
            )
        elif (
            known_functions is not None
            and target.kind == "function"
            and target.name
            and target.name not in known_functions
            and "$" not in target.name  # a FunctionName.$ path is resolved at run time
        ):
            problems.append(
                f"state {name!r}: function {target.name!r} is not registered "
                f"(known: {', '.join(sorted(known_functions)) or 'none'})"
            )
    return problems


def call_payload(target: Target, parameters: Any, env: dict[str, Any] | None = None) -> Any:
    """What the function receives. Services also get `env`: the ledger URL, topics, jobs."""
    if target.kind == "service":
        return {"action": target.action, "params": parameters, **(env or {})}
    if target.shape in ("lambda_invoke", "callback"):
        return parameters.get("Payload", {}) if isinstance(parameters, dict) else {}
    return parameters


def shape_result(target: Target, value: Any) -> Any:
    if target.shape == "lambda_invoke":
        return {
            "ExecutedVersion": "$LATEST",
            "Payload": value,
            "SdkHttpMetadata": {"HttpStatusCode": 200},
            "SdkResponseMetadata": {},
            "StatusCode": 200,
        }
    return value


def error_from_exception(exc: BaseException) -> StatesError:
    """A function's exception as Step Functions reports a Lambda error."""
    if isinstance(exc, StatesError):
        return exc
    name = getattr(exc, "error_name", None)
    if isinstance(name, str) and name:  # DynamoDB's and other services' own error names
        cause = getattr(exc, "cause", None)
        return StatesError(name, cause if isinstance(cause, str) else str(exc))
    cause = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }
    return StatesError(type(exc).__name__, json.dumps(cause))


def error_from_outcome(error_line: str | None, tb: str | None) -> StatesError:
    """A worker's "Type: message" error line as a Step Functions error."""
    line = error_line or "States.TaskFailed: the task failed"
    name, _, message = line.partition(": ")
    if "." in name:  # a service's error (Python class names have no dot): its message is the cause
        return StatesError(name, message)
    cause = {"errorMessage": message, "errorType": name, "stackTrace": (tb or "").splitlines()}
    return StatesError(name or "States.TaskFailed", json.dumps(cause))


def call_local(
    target: Target,
    parameters: Any,
    functions: dict[str, Callable[..., Any]],
    env: dict[str, Any] | None = None,
) -> Any:
    """Run a target in this process (for `execute()` and tests)."""
    if target.kind == "service":
        from headrace.executors.calls import resolve_target

        handler = resolve_target(services.HANDLERS[target.name])
        try:
            return handler(call_payload(target, parameters, env), None)
        except Exception as exc:
            raise error_from_exception(exc) from None
    fn = functions.get(target.name)
    if fn is None:
        raise StatesError(
            "States.TaskFailed", f"function {target.name!r} is not among the given resources"
        )
    try:
        value = fn(call_payload(target, parameters))
    except Exception as exc:
        raise error_from_exception(exc) from None
    return shape_result(target, value)
