"""Build Amazon States Language state machines in Python instead of writing JSON.

States are objects; transitions refer to objects, and the names that ASL needs are collected
when the machine is rendered::

    from headrace.workflows.builder import Catch, Map, Retry, Rule, StateMachine, Task, Choice

    notify = Task("NotifyFailure", "headrace:function:notify", result_path=None)
    job = Task(
        "Composite",
        "headrace:function:composite",
        retry=[Retry(["States.TaskFailed"], interval=2, max_attempts=3, backoff=2.0)],
        catch=[Catch(["States.ALL"], next=notify, result_path="$.error")],
    )
    fan = Map("Cells", job, items_path="$.cells", max_concurrency=4)
    sm = StateMachine(Task("Init", "headrace:function:init") >> fan, timeout_seconds=3600)
    sm.to_json(indent=2)

``a >> b`` (or ``a.next(b)``) sets ``a``'s Next and returns a :class:`Chain`; any state left
without Next gets ``End: true`` unless its type ends the machine itself (Choice, Succeed, Fail).
A transition may also name a state by string (``Catch(next="Retry")``) to close a loop; that
name must exist in the same scope, or rendering fails with a dangling-reference error.

Optional fields left out are left out of the JSON, so a built machine compares equal to the
hand-written document. ``InputPath``, ``OutputPath`` and ``ResultPath`` accept ``None``, which
is rendered as JSON ``null`` (ASL's "discard"), distinct from not passing the argument at all.

State names must be unique across the whole machine, Map processors and Parallel branches
included: AWS rejects a definition that repeats a name in two scopes, even though headrace's
own validator accepts it. Two distinct objects with the same name and the same content in one
scope are treated as one state; with different content they are an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, TypeAlias

from headrace.workflows import asl
from headrace.workflows.asl import DefinitionError, Problem


class _Unset(Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Argument not given", as opposed to ``None``, which several ASL fields accept as JSON null.
UNSET: Final = _Unset.UNSET

#: A path field that may be JSON null: a JSONPath string, ``None`` (null) or UNSET (absent).
NullablePath: TypeAlias = str | _Unset | None


class BuildError(DefinitionError):
    """The Python-built machine cannot be rendered: a dangling reference, a name used twice,
    a Choice without rules... ``problems`` lists each."""

    def __init__(self, problems: list[Problem], subject: str = "built state machine") -> None:
        super().__init__(problems, subject)


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def _put_nullable(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not UNSET:
        out[key] = value


def _one_of(state: str, **fields: Any) -> None:
    given = [k for k, v in fields.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"state {state!r}: pass only one of {', '.join(given)}")


def _timestamp(value: str | datetime) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} needs a time zone (ASL times are absolute)")
        text = value.astimezone(UTC).isoformat()
        return text.replace("+00:00", "Z")
    return value


# ------------------------------------------------------------------------------ retry / catch


def _errors(error_equals: Sequence[str] | str) -> list[str]:
    # a bare string would otherwise be split into characters
    return [error_equals] if isinstance(error_equals, str) else list(error_equals)


class Retry:
    """A retrier: which errors, and how often and how fast to retry them."""

    def __init__(
        self,
        error_equals: Sequence[str] | str = ("States.ALL",),
        *,
        interval: int | None = None,
        max_attempts: int | None = None,
        backoff: float | None = None,
        max_delay: int | None = None,
        jitter: str | None = None,
        comment: str | None = None,
    ) -> None:
        self.error_equals = _errors(error_equals)
        self.interval = interval
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_delay = max_delay
        self.jitter = jitter
        self.comment = comment

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ErrorEquals": list(self.error_equals)}
        _put(out, "IntervalSeconds", self.interval)
        _put(out, "MaxAttempts", self.max_attempts)
        _put(out, "BackoffRate", self.backoff)
        _put(out, "MaxDelaySeconds", self.max_delay)
        _put(out, "JitterStrategy", self.jitter)
        _put(out, "Comment", self.comment)
        return out

    def __repr__(self) -> str:
        return f"Retry({self.to_dict()!r})"


class Catch:
    """A catcher: on these errors go to ``next``, with the error placed at ``result_path``."""

    def __init__(
        self,
        error_equals: Sequence[str] | str = ("States.ALL",),
        *,
        next: Transition,
        result_path: NullablePath = UNSET,
        comment: str | None = None,
    ) -> None:
        self.error_equals = _errors(error_equals)
        self.target = _target(next)
        self.result_path = result_path
        self.comment = comment

    def __repr__(self) -> str:
        return f"Catch({self.error_equals!r}, next={_target_name(self.target)!r})"


# ------------------------------------------------------------------------------------ states


class State:
    """Fields and chaining shared by every state type."""

    type: str = ""
    #: Choice, Succeed and Fail end a path themselves: they never get Next or End
    terminal: bool = False

    def __init__(
        self,
        name: str,
        *,
        comment: str | None = None,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a state name is a non-empty string, not {name!r}")
        if len(name) > asl.MAX_STATE_NAME:
            raise ValueError(f"state name {name!r} is longer than {asl.MAX_STATE_NAME} characters")
        self.name = name
        self.comment = comment
        self.input_path = input_path
        self.output_path = output_path
        self._next: Target | None = None

    # -- chaining

    @property
    def next_state(self) -> Target | None:
        return self._next

    def next(self, other: Chainable | str) -> Chain:
        """Set this state's Next to ``other`` (its first state, for a chain)."""
        if self.terminal:
            raise TypeError(
                f"{self.type} state {self.name!r} has no Next"
                + ("; use .when() and .otherwise()" if self.type == "Choice" else "")
            )
        target: Target = other if isinstance(other, str) else _first(other)
        if self._next is not None and self._next is not target:
            raise ValueError(
                f"state {self.name!r} already goes to {_target_name(self._next)!r}; "
                f"it cannot also go to {_target_name(target)!r}"
            )
        self._next = target
        if isinstance(other, str):
            return Chain(self, self)
        return Chain(self, _last(other))

    def __rshift__(self, other: Chainable | str) -> Chain:
        return self.next(other)

    # -- rendering

    def _targets(self) -> list[Target]:
        """Every state this one can transition to, in the order they should be listed."""
        return [self._next] if self._next is not None else []

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        return {}

    def _render(self, render: _Renderer) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": self.type}
        _put(out, "Comment", self.comment)
        if self.type != "Fail":
            _put_nullable(out, "InputPath", self.input_path)
            _put_nullable(out, "OutputPath", self.output_path)
        out.update(self._fields(render))
        if not self.terminal:
            if self._next is not None:
                out["Next"] = _target_name(self._next)
            else:
                out["End"] = True
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _WithResult(State):
    """Pass, Task, Map and Parallel: states whose result is placed with ResultPath."""

    def __init__(
        self,
        name: str,
        *,
        comment: str | None = None,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        result_path: NullablePath = UNSET,
        parameters: Mapping[str, Any] | None = None,
        result_selector: Mapping[str, Any] | None = None,
        retry: Sequence[Retry] = (),
        catch: Sequence[Catch] = (),
    ) -> None:
        super().__init__(name, comment=comment, input_path=input_path, output_path=output_path)
        self.result_path = result_path
        self.parameters = parameters
        self.result_selector = result_selector
        self.retry = list(retry)
        self.catch = list(catch)

    def _targets(self) -> list[Target]:
        return super()._targets() + [c.target for c in self.catch]

    def _common(self, out: dict[str, Any]) -> None:
        _put(out, "Parameters", _json(self.parameters))
        _put(out, "ResultSelector", _json(self.result_selector))
        _put_nullable(out, "ResultPath", self.result_path)
        if self.retry:
            out["Retry"] = [r.to_dict() for r in self.retry]
        if self.catch:
            catchers = []
            for c in self.catch:
                entry: dict[str, Any] = {"ErrorEquals": list(c.error_equals)}
                entry["Next"] = _target_name(c.target)
                _put_nullable(entry, "ResultPath", c.result_path)
                _put(entry, "Comment", c.comment)
                catchers.append(entry)
            out["Catch"] = catchers


def _json(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # a copy, so that mutating the rendered dict never changes the builder's state
    return None if value is None else json.loads(json.dumps(value))


class Pass(_WithResult):
    """Passes its input on, optionally with a fixed ``result`` or ``parameters`` applied."""

    type = "Pass"

    def __init__(
        self,
        name: str,
        *,
        result: Any = UNSET,
        parameters: Mapping[str, Any] | None = None,
        result_path: NullablePath = UNSET,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        comment: str | None = None,
    ) -> None:
        super().__init__(
            name,
            comment=comment,
            input_path=input_path,
            output_path=output_path,
            result_path=result_path,
            parameters=parameters,
        )
        self.result = result

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.result is not UNSET:
            out["Result"] = json.loads(json.dumps(self.result))
        self._common(out)
        return out


class Task(_WithResult):
    """Calls ``resource`` (``headrace:function:NAME``, a Lambda ARN, a service integration)."""

    type = "Task"

    def __init__(
        self,
        name: str,
        resource: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        result_selector: Mapping[str, Any] | None = None,
        result_path: NullablePath = UNSET,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        timeout_seconds: int | None = None,
        timeout_seconds_path: str | None = None,
        heartbeat_seconds: int | None = None,
        heartbeat_seconds_path: str | None = None,
        credentials: Mapping[str, Any] | None = None,
        retry: Sequence[Retry] = (),
        catch: Sequence[Catch] = (),
        comment: str | None = None,
    ) -> None:
        super().__init__(
            name,
            comment=comment,
            input_path=input_path,
            output_path=output_path,
            result_path=result_path,
            parameters=parameters,
            result_selector=result_selector,
            retry=retry,
            catch=catch,
        )
        _one_of(name, timeout_seconds=timeout_seconds, timeout_seconds_path=timeout_seconds_path)
        _one_of(
            name, heartbeat_seconds=heartbeat_seconds, heartbeat_seconds_path=heartbeat_seconds_path
        )
        self.resource = resource
        self.timeout_seconds = timeout_seconds
        self.timeout_seconds_path = timeout_seconds_path
        self.heartbeat_seconds = heartbeat_seconds
        self.heartbeat_seconds_path = heartbeat_seconds_path
        self.credentials = credentials

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        out: dict[str, Any] = {"Resource": self.resource}
        _put(out, "TimeoutSeconds", self.timeout_seconds)
        _put(out, "TimeoutSecondsPath", self.timeout_seconds_path)
        _put(out, "HeartbeatSeconds", self.heartbeat_seconds)
        _put(out, "HeartbeatSecondsPath", self.heartbeat_seconds_path)
        _put(out, "Credentials", _json(self.credentials))
        self._common(out)
        return out


class Wait(State):
    """Waits ``seconds``, until ``timestamp``, or for a value read from the input."""

    type = "Wait"

    def __init__(
        self,
        name: str,
        *,
        seconds: int | None = None,
        timestamp: str | datetime | None = None,
        seconds_path: str | None = None,
        timestamp_path: str | None = None,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        comment: str | None = None,
    ) -> None:
        super().__init__(name, comment=comment, input_path=input_path, output_path=output_path)
        given = [seconds, timestamp, seconds_path, timestamp_path]
        if sum(v is not None for v in given) != 1:
            raise ValueError(
                f"Wait state {name!r} needs exactly one of seconds, timestamp, "
                "seconds_path, timestamp_path"
            )
        self.seconds = seconds
        self.timestamp = None if timestamp is None else _timestamp(timestamp)
        self.seconds_path = seconds_path
        self.timestamp_path = timestamp_path

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "Seconds", self.seconds)
        _put(out, "Timestamp", self.timestamp)
        _put(out, "SecondsPath", self.seconds_path)
        _put(out, "TimestampPath", self.timestamp_path)
        return out


class Succeed(State):
    """Ends the machine (or the branch or iteration) successfully."""

    type = "Succeed"
    terminal = True


class Fail(State):
    """Ends the machine (or the branch or iteration) with an error."""

    type = "Fail"
    terminal = True

    def __init__(
        self,
        name: str,
        *,
        error: str | None = None,
        cause: str | None = None,
        error_path: str | None = None,
        cause_path: str | None = None,
        comment: str | None = None,
    ) -> None:
        super().__init__(name, comment=comment)
        _one_of(name, error=error, error_path=error_path)
        _one_of(name, cause=cause, cause_path=cause_path)
        self.error = error
        self.cause = cause
        self.error_path = error_path
        self.cause_path = cause_path

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "Error", self.error)
        _put(out, "ErrorPath", self.error_path)
        _put(out, "Cause", self.cause)
        _put(out, "CausePath", self.cause_path)
        return out


class Parallel(_WithResult):
    """Runs every branch on the same input; the result is the list of their outputs."""

    type = "Parallel"

    def __init__(
        self,
        name: str,
        branches: Sequence[Chainable] = (),
        *,
        parameters: Mapping[str, Any] | None = None,
        result_selector: Mapping[str, Any] | None = None,
        result_path: NullablePath = UNSET,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        retry: Sequence[Retry] = (),
        catch: Sequence[Catch] = (),
        comment: str | None = None,
    ) -> None:
        super().__init__(
            name,
            comment=comment,
            input_path=input_path,
            output_path=output_path,
            result_path=result_path,
            parameters=parameters,
            result_selector=result_selector,
            retry=retry,
            catch=catch,
        )
        self.branches: list[Chainable] = list(branches)

    def branch(self, *branches: Chainable) -> Parallel:
        """Add branches; returns this state, so calls can be chained."""
        self.branches.extend(branches)
        return self

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        if not self.branches:
            render.problem(self, "a Parallel state needs at least one branch")
        out: dict[str, Any] = {
            "Branches": [
                render.scope(b, f"branch {i} of Parallel {self.name!r}")
                for i, b in enumerate(self.branches)
            ]
        }
        self._common(out)
        return out


class Map(_WithResult):
    """Runs ``processor`` (a state or a chain) once per item of the array at ``items_path``."""

    type = "Map"

    def __init__(
        self,
        name: str,
        processor: Chainable,
        *,
        items_path: str | None = None,
        item_selector: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        max_concurrency_path: str | None = None,
        tolerated_failure_count: int | None = None,
        tolerated_failure_count_path: str | None = None,
        tolerated_failure_percentage: float | None = None,
        tolerated_failure_percentage_path: str | None = None,
        processor_config: Mapping[str, Any] | None = None,
        label: str | None = None,
        result_selector: Mapping[str, Any] | None = None,
        result_path: NullablePath = UNSET,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        retry: Sequence[Retry] = (),
        catch: Sequence[Catch] = (),
        comment: str | None = None,
    ) -> None:
        super().__init__(
            name,
            comment=comment,
            input_path=input_path,
            output_path=output_path,
            result_path=result_path,
            result_selector=result_selector,
            retry=retry,
            catch=catch,
        )
        _one_of(name, max_concurrency=max_concurrency, max_concurrency_path=max_concurrency_path)
        _one_of(
            name,
            tolerated_failure_count=tolerated_failure_count,
            tolerated_failure_count_path=tolerated_failure_count_path,
        )
        _one_of(
            name,
            tolerated_failure_percentage=tolerated_failure_percentage,
            tolerated_failure_percentage_path=tolerated_failure_percentage_path,
        )
        self.processor = processor
        self.items_path = items_path
        self.item_selector = item_selector
        self.max_concurrency = max_concurrency
        self.max_concurrency_path = max_concurrency_path
        self.tolerated_failure_count = tolerated_failure_count
        self.tolerated_failure_count_path = tolerated_failure_count_path
        self.tolerated_failure_percentage = tolerated_failure_percentage
        self.tolerated_failure_percentage_path = tolerated_failure_percentage_path
        self.processor_config = processor_config
        self.label = label

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        processor = render.scope(self.processor, f"Map {self.name!r}")
        if self.processor_config is not None:
            processor["ProcessorConfig"] = _json(self.processor_config)
        out: dict[str, Any] = {"ItemProcessor": processor}
        _put(out, "ItemsPath", self.items_path)
        _put(out, "ItemSelector", _json(self.item_selector))
        _put(out, "MaxConcurrency", self.max_concurrency)
        _put(out, "MaxConcurrencyPath", self.max_concurrency_path)
        _put(out, "ToleratedFailureCount", self.tolerated_failure_count)
        _put(out, "ToleratedFailureCountPath", self.tolerated_failure_count_path)
        _put(out, "ToleratedFailurePercentage", self.tolerated_failure_percentage)
        _put(out, "ToleratedFailurePercentagePath", self.tolerated_failure_percentage_path)
        _put(out, "Label", self.label)
        self._common(out)
        return out


# ------------------------------------------------------------------------------------ choice


class Condition:
    """A Choice rule's test, without its Next. Combine with ``&``, ``|``, ``~`` or
    :meth:`Rule.and_`, :meth:`Rule.or_`, :meth:`Rule.not_`."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = dict(body)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.body))

    def then(self, next: Transition, *, comment: str | None = None) -> ChoiceRule:
        """This condition as a top-level rule that goes to ``next`` when it holds."""
        return ChoiceRule(self, next, comment)

    def __and__(self, other: Condition) -> Condition:
        return Rule.and_(self, other)

    def __or__(self, other: Condition) -> Condition:
        return Rule.or_(self, other)

    def __invert__(self) -> Condition:
        return Rule.not_(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.body == self.body

    __hash__ = None  # type: ignore[assignment]  # mutable body

    def __repr__(self) -> str:
        return f"Condition({self.body!r})"


class ChoiceRule:
    """A top-level Choice rule: a condition and the state to go to."""

    def __init__(self, condition: Condition, next: Transition, comment: str | None = None) -> None:
        self.condition = condition
        self.target = _target(next)
        self.comment = comment

    def __repr__(self) -> str:
        return f"ChoiceRule({self.condition.body!r} -> {_target_name(self.target)!r})"


Timestamp: TypeAlias = str | datetime


class Rule:
    """Comparisons of the value at ``variable``: ``Rule("$.n").numeric_greater_than(10)``.

    Each ``*_path`` method compares with the value at another path instead of a constant.
    """

    def __init__(self, variable: str) -> None:
        self.variable = variable

    def compare(self, operator: str, operand: Any) -> Condition:
        """Any ASL comparison operator by name, e.g. ``compare("StringMatches", "a*")``."""
        return Condition({"Variable": self.variable, operator: operand})

    @staticmethod
    def and_(*conditions: Condition) -> Condition:
        return Condition({"And": [c.to_dict() for c in _flatten("And", conditions)]})

    @staticmethod
    def or_(*conditions: Condition) -> Condition:
        return Condition({"Or": [c.to_dict() for c in _flatten("Or", conditions)]})

    @staticmethod
    def not_(condition: Condition) -> Condition:
        return Condition({"Not": condition.to_dict()})

    # strings
    def string_equals(self, value: str) -> Condition:
        return self.compare("StringEquals", value)

    def string_less_than(self, value: str) -> Condition:
        return self.compare("StringLessThan", value)

    def string_greater_than(self, value: str) -> Condition:
        return self.compare("StringGreaterThan", value)

    def string_less_than_equals(self, value: str) -> Condition:
        return self.compare("StringLessThanEquals", value)

    def string_greater_than_equals(self, value: str) -> Condition:
        return self.compare("StringGreaterThanEquals", value)

    def string_matches(self, pattern: str) -> Condition:
        return self.compare("StringMatches", pattern)

    def string_equals_path(self, path: str) -> Condition:
        return self.compare("StringEqualsPath", path)

    def string_less_than_path(self, path: str) -> Condition:
        return self.compare("StringLessThanPath", path)

    def string_greater_than_path(self, path: str) -> Condition:
        return self.compare("StringGreaterThanPath", path)

    def string_less_than_equals_path(self, path: str) -> Condition:
        return self.compare("StringLessThanEqualsPath", path)

    def string_greater_than_equals_path(self, path: str) -> Condition:
        return self.compare("StringGreaterThanEqualsPath", path)

    # numbers
    def numeric_equals(self, value: float) -> Condition:
        return self.compare("NumericEquals", value)

    def numeric_less_than(self, value: float) -> Condition:
        return self.compare("NumericLessThan", value)

    def numeric_greater_than(self, value: float) -> Condition:
        return self.compare("NumericGreaterThan", value)

    def numeric_less_than_equals(self, value: float) -> Condition:
        return self.compare("NumericLessThanEquals", value)

    def numeric_greater_than_equals(self, value: float) -> Condition:
        return self.compare("NumericGreaterThanEquals", value)

    def numeric_equals_path(self, path: str) -> Condition:
        return self.compare("NumericEqualsPath", path)

    def numeric_less_than_path(self, path: str) -> Condition:
        return self.compare("NumericLessThanPath", path)

    def numeric_greater_than_path(self, path: str) -> Condition:
        return self.compare("NumericGreaterThanPath", path)

    def numeric_less_than_equals_path(self, path: str) -> Condition:
        return self.compare("NumericLessThanEqualsPath", path)

    def numeric_greater_than_equals_path(self, path: str) -> Condition:
        return self.compare("NumericGreaterThanEqualsPath", path)

    # timestamps (a datetime must be timezone-aware)
    def timestamp_equals(self, value: Timestamp) -> Condition:
        return self.compare("TimestampEquals", _timestamp(value))

    def timestamp_less_than(self, value: Timestamp) -> Condition:
        return self.compare("TimestampLessThan", _timestamp(value))

    def timestamp_greater_than(self, value: Timestamp) -> Condition:
        return self.compare("TimestampGreaterThan", _timestamp(value))

    def timestamp_less_than_equals(self, value: Timestamp) -> Condition:
        return self.compare("TimestampLessThanEquals", _timestamp(value))

    def timestamp_greater_than_equals(self, value: Timestamp) -> Condition:
        return self.compare("TimestampGreaterThanEquals", _timestamp(value))

    def timestamp_equals_path(self, path: str) -> Condition:
        return self.compare("TimestampEqualsPath", path)

    def timestamp_less_than_path(self, path: str) -> Condition:
        return self.compare("TimestampLessThanPath", path)

    def timestamp_greater_than_path(self, path: str) -> Condition:
        return self.compare("TimestampGreaterThanPath", path)

    def timestamp_less_than_equals_path(self, path: str) -> Condition:
        return self.compare("TimestampLessThanEqualsPath", path)

    def timestamp_greater_than_equals_path(self, path: str) -> Condition:
        return self.compare("TimestampGreaterThanEqualsPath", path)

    # booleans and type tests
    def boolean_equals(self, value: bool) -> Condition:
        return self.compare("BooleanEquals", value)

    def boolean_equals_path(self, path: str) -> Condition:
        return self.compare("BooleanEqualsPath", path)

    def is_null(self, value: bool = True) -> Condition:
        return self.compare("IsNull", value)

    def is_present(self, value: bool = True) -> Condition:
        return self.compare("IsPresent", value)

    def is_numeric(self, value: bool = True) -> Condition:
        return self.compare("IsNumeric", value)

    def is_string(self, value: bool = True) -> Condition:
        return self.compare("IsString", value)

    def is_boolean(self, value: bool = True) -> Condition:
        return self.compare("IsBoolean", value)

    def is_timestamp(self, value: bool = True) -> Condition:
        return self.compare("IsTimestamp", value)


def _flatten(kind: str, conditions: Sequence[Condition]) -> list[Condition]:
    # (a & b) & c reads as one And of three, as a person would write it by hand
    out: list[Condition] = []
    for c in conditions:
        if not isinstance(c, Condition):
            raise TypeError(f"{kind} takes Conditions, not {type(c).__name__}")
        if set(c.body) == {kind}:
            out.extend(Condition(sub) for sub in c.body[kind])
        else:
            out.append(c)
    return out


class Choice(State):
    """Goes to the first rule whose condition holds, else to ``default``."""

    type = "Choice"
    terminal = True

    def __init__(
        self,
        name: str,
        choices: Sequence[ChoiceRule] = (),
        *,
        default: Transition | None = None,
        input_path: NullablePath = UNSET,
        output_path: NullablePath = UNSET,
        comment: str | None = None,
    ) -> None:
        super().__init__(name, comment=comment, input_path=input_path, output_path=output_path)
        self.choices: list[ChoiceRule] = []
        for rule in choices:
            if not isinstance(rule, ChoiceRule):
                raise TypeError(
                    f"Choice {name!r}: a rule is Condition.then(state), not {type(rule).__name__}"
                )
            self.choices.append(rule)
        self.default = None if default is None else _target(default)

    def when(self, condition: Condition, next: Transition, *, comment: str | None = None) -> Choice:
        """Add a rule; returns this state, so calls can be chained."""
        self.choices.append(ChoiceRule(condition, next, comment))
        return self

    def otherwise(self, next: Transition) -> Choice:
        """Set Default, where the machine goes when no rule holds."""
        self.default = _target(next)
        return self

    def _targets(self) -> list[Target]:
        out = [r.target for r in self.choices]
        return out + ([self.default] if self.default is not None else [])

    def _fields(self, render: _Renderer) -> dict[str, Any]:
        if not self.choices:
            render.problem(self, "a Choice state needs at least one rule (.when())")
        rules = []
        for rule in self.choices:
            entry = rule.condition.to_dict()
            entry["Next"] = _target_name(rule.target)
            _put(entry, "Comment", rule.comment)
            rules.append(entry)
        out: dict[str, Any] = {"Choices": rules}
        if self.default is not None:
            out["Default"] = _target_name(self.default)
        return out


# ------------------------------------------------------------------------------------ chains


class Chain:
    """A run of states linked by Next, from ``first`` to ``last``; ``>>`` extends it."""

    def __init__(self, first: State, last: State) -> None:
        self.first = first
        self.last = last

    @classmethod
    def of(cls, *parts: Chainable) -> Chain:
        """``Chain.of(a, b, c)`` is ``a >> b >> c``."""
        if not parts:
            raise ValueError("a chain needs at least one state")
        chain = Chain(_first(parts[0]), _last(parts[0]))
        for part in parts[1:]:
            chain = chain.next(part)
        return chain

    def next(self, other: Chainable | str) -> Chain:
        self.last.next(other)
        if isinstance(other, str):
            return Chain(self.first, self.last)
        return Chain(self.first, _last(other))

    def __rshift__(self, other: Chainable | str) -> Chain:
        return self.next(other)

    def __repr__(self) -> str:
        return f"Chain({self.first!r} ... {self.last!r})"


Chainable: TypeAlias = State | Chain
#: A transition target: a state, or the name of a state in the same scope.
Target: TypeAlias = State | str
#: What a transition argument accepts: a target, or a chain (entered at its first state).
Transition: TypeAlias = State | Chain | str


def _first(part: Chainable) -> State:
    if isinstance(part, Chain):
        return part.first
    if isinstance(part, State):
        return part
    raise TypeError(f"expected a state or a chain, not {type(part).__name__}")


def _last(part: Chainable) -> State:
    return part.last if isinstance(part, Chain) else _first(part)


def _target(target: Transition) -> Target:
    """A transition target; a chain is entered at its first state."""
    if isinstance(target, Chain):
        return target.first
    if isinstance(target, State | str):
        return target
    raise TypeError(f"a transition target is a state, a chain or a name, not {target!r}")


def _target_name(target: Target) -> str:
    return target if isinstance(target, str) else target.name


# ---------------------------------------------------------------------------------- rendering


class _Renderer:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        # name -> (state, scope label, rendered JSON), across every scope: AWS wants
        # names unique in the whole machine
        self.names: dict[str, tuple[State, str, dict[str, Any]]] = {}
        self.owner: dict[int, str] = {}  # id(state) -> the scope it was first placed in

    def problem(self, state: State | None, message: str) -> None:
        self.problems.append(Problem("$", state.name if state else None, message))

    def scope(self, start: Chainable, label: str) -> dict[str, Any]:
        try:
            first = _first(start)
        except TypeError as exc:
            self.problem(None, f"{label}: {exc}")
            return {"StartAt": "", "States": {}}
        order: list[State] = []
        seen: set[int] = set()
        dangling: list[tuple[State, str]] = []
        # iterative depth-first walk: a long chain must not hit the recursion limit, and
        # listing Next before branches keeps the JSON in reading order
        stack: list[State] = [first]
        while stack:
            state = stack.pop()
            if id(state) in seen:
                continue
            seen.add(id(state))
            order.append(state)
            for target in reversed(state._targets()):
                if isinstance(target, str):
                    dangling.append((state, target))
                elif isinstance(target, State):
                    stack.append(target)
                else:
                    self.problem(state, f"a transition target is a state, not {target!r}")
        # claim this scope's states before rendering nested scopes, so that a state shared
        # with a Map processor is reported as belonging here, where it was placed first
        mine: list[State] = []
        for state in order:
            owner = self.owner.setdefault(id(state), label)
            if owner == label:
                mine.append(state)
            else:
                self.problem(
                    state,
                    f"state {state.name!r} is reached from both {owner} and {label}; "
                    "transitions cannot cross a Map or Parallel boundary, so use two states",
                )
        states: dict[str, Any] = {}
        for state in mine:
            rendered = state._render(self)
            known = self.names.get(state.name)
            if known is None:
                self.names[state.name] = (state, label, rendered)
                states[state.name] = rendered
            elif known[0] is not state and (known[1] != label or known[2] != rendered):
                where = "" if known[1] == label else f" (in {known[1]} and {label})"
                self.problem(
                    state,
                    f"two different states are named {state.name!r}{where}: "
                    f"{json.dumps(known[2], sort_keys=True)} and "
                    f"{json.dumps(rendered, sort_keys=True)}",
                )
        for state, name in dangling:
            if name not in states:
                self.problem(
                    state,
                    f"state {state.name!r} refers to {name!r}, which is not a state in {label}",
                )
        return {"StartAt": first.name, "States": states}


class StateMachine:
    """A whole machine: its start (a state or a chain) and the top-level fields."""

    def __init__(
        self,
        definition: Chainable,
        *,
        comment: str | None = None,
        timeout_seconds: int | None = None,
        version: str | None = None,
    ) -> None:
        self.definition = definition
        self.comment = comment
        self.timeout_seconds = timeout_seconds
        self.version = version

    def to_dict(self) -> dict[str, Any]:
        """The ASL document; :class:`BuildError` when references or names do not add up."""
        render = _Renderer()
        body = render.scope(self.definition, "the top level")
        if render.problems:
            raise BuildError(render.problems)
        out: dict[str, Any] = {}
        _put(out, "Comment", self.comment)
        out.update(body)
        _put(out, "TimeoutSeconds", self.timeout_seconds)
        _put(out, "Version", self.version)
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def validate(self) -> list[Problem]:
        """Every problem, from the builder and from :func:`asl.validate`; never raises."""
        try:
            data = self.to_dict()
        except BuildError as exc:
            return exc.problems
        return asl.validate(data)

    def parse(self) -> asl.StateMachine:
        """The validated machine, as :func:`asl.parse` returns it."""
        return asl.parse(self.to_dict())

    def __repr__(self) -> str:
        return f"StateMachine({self.definition!r})"


__all__ = [
    "UNSET",
    "BuildError",
    "Catch",
    "Chain",
    "Choice",
    "ChoiceRule",
    "Condition",
    "Fail",
    "Map",
    "Parallel",
    "Pass",
    "Retry",
    "Rule",
    "State",
    "StateMachine",
    "Succeed",
    "Task",
    "Wait",
]
