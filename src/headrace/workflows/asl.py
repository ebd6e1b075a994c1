"""Load, validate and parse Amazon States Language definitions (JSONPath and JSONata states).

:func:`validate` reports every problem at once and never raises; :func:`parse` raises one
:class:`DefinitionError` listing them all. Each :class:`Problem` names a JSON path into the
definition (``$.States.Fetch.Next``) so an editor or a log line points at the spot.

Validation recurses into Parallel ``Branches`` and Map ``ItemProcessor``/``Iterator``: each is
its own scope, with its own ``StartAt`` and state names, and ``Next`` may not leave it.

Where AWS is silent, or where headrace deliberately narrows what it accepts:

* ``Assign`` (workflow variables) is checked as AWS does: valid names (``states`` is reserved),
  and no inner scope (Parallel branch, Map iteration) assigns a name its enclosing scopes assign.
* ``QueryLanguage: "JSONata"`` on the machine or a state: JSONata states take ``Arguments``,
  ``Output``, ``Assign``, ``Items``, ``Condition`` and ``{% ... %}`` expressions, whose syntax is
  checked here; JSONPath-only fields (``InputPath``, ``Parameters``, ``ResultSelector``,
  ``ResultPath``, ``OutputPath``, ``...Path``) are rejected in them, and a JSONata machine's
  states cannot switch back to JSONPath.
* ``Parameters``, ``ItemSelector``, ``ResultSelector`` and ``Credentials`` must be JSON objects.
* ``ResultPath``, ``ItemsPath`` and every ``...Path`` field that names a single value
  (``SecondsPath``, ``TimeoutSecondsPath``...) must be reference paths; ``InputPath`` and
  ``OutputPath`` may use full JSONPath (filters, wildcards), as AWS accepts there.
* An ``ErrorEquals`` entry starting with ``States.`` must be a predefined error name; that catches
  typos such as ``States.All`` that would otherwise never match.
* Distributed-Map-only fields (ItemReader, ItemBatcher, ResultWriter, ToleratedFailure*, Label)
  are checked for shape but accepted in INLINE mode too (`headrace validate` reports an
  ItemReader on an INLINE Map, as AWS refuses it: see diagnostics).
* State names are at most 80 characters, as AWS's quota says.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.errors import HeadraceError
from headrace.jsontext import JsonInputError, check_depth, parse_json
from headrace.workflows import jsonata_lang, variables
from headrace.workflows.choice import (
    BOOLEAN_OPS,
    COMPARISON_OPS,
    NUMERIC_OPS,
    STRING_OPS,
    TIMESTAMP_OPS,
    TYPE_TESTS,
    is_timestamp,
)
from headrace.workflows.errors import ALL, KNOWN_ERRORS
from headrace.workflows.intrinsics import is_intrinsic, parse_intrinsic
from headrace.workflows.items import (
    CSV_DELIMITERS,
    INPUT_TYPES,
    MANIFEST_TYPES,
    OUTPUT_TYPES,
    READER_TRANSFORMATIONS,
    WRITER_TRANSFORMATIONS,
)
from headrace.workflows.paths import is_reference_path, is_valid_path, parse_path

MAX_STATE_NAME = 80
MAX_SECONDS = 99_999_999

_COMMON = {"Type", "Comment", "QueryLanguage", "Assign"}
_IO = {"InputPath", "OutputPath"}
_FLOW = {"Next", "End"}
_ALLOWED: dict[str, set[str]] = {
    "Pass": _COMMON | _IO | _FLOW | {"ResultPath", "Parameters", "Result"},
    "Task": _COMMON
    | _IO
    | _FLOW
    | {
        "ResultPath",
        "Parameters",
        "ResultSelector",
        "Resource",
        "Retry",
        "Catch",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
        "Credentials",
    },
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Wait": _COMMON | _IO | _FLOW | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
    "Succeed": _COMMON - {"Assign"} | _IO,
    "Fail": _COMMON - {"Assign"} | {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _COMMON
    | _IO
    | _FLOW
    | {
        "ResultPath",
        "Parameters",
        "ResultSelector",
        "Branches",
        "Retry",
        "Catch",
    },
    "Map": _COMMON
    | _IO
    | _FLOW
    | {
        "ResultPath",
        "Parameters",
        "ResultSelector",
        "ItemsPath",
        "ItemSelector",
        "ItemProcessor",
        "Iterator",
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "Label",
        "Retry",
        "Catch",
    },
}
#: ReaderConfig.MaxItems's largest value, and a batch's largest input (bytes), as AWS's quotas
MAX_READER_ITEMS = 100_000_000
MAX_BATCH_BYTES = 262_144
_READER_CONFIG_FIELDS = {
    "InputType",
    "CSVHeaderLocation",
    "CSVHeaders",
    "CSVDelimiter",
    "MaxItems",
    "MaxItemsPath",
    "ManifestType",
    "Transformation",
    "ItemsPointer",
}
_JSONATA_ONLY = {"Arguments", "Output", "Items"}
_JSONPATH_ONLY = {
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "Result",
    "ItemsPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "SecondsPath",
    "TimestampPath",
    "ErrorPath",
    "CausePath",
    "MaxConcurrencyPath",
    "ToleratedFailurePercentagePath",
    "ToleratedFailureCountPath",
    "Iterator",
}
_FLOW_JSONATA = _COMMON | {"Output"}
_ALLOWED_JSONATA: dict[str, set[str]] = {
    "Pass": _FLOW_JSONATA | _FLOW,
    "Task": _FLOW_JSONATA
    | _FLOW
    | {
        "Resource",
        "Arguments",
        "Retry",
        "Catch",
        "TimeoutSeconds",
        "HeartbeatSeconds",
        "Credentials",
    },
    "Choice": _FLOW_JSONATA | {"Choices", "Default"},
    "Wait": _FLOW_JSONATA | _FLOW | {"Seconds", "Timestamp"},
    "Succeed": _FLOW_JSONATA - {"Assign"},
    "Fail": _COMMON - {"Assign"} | {"Error", "Cause"},
    "Parallel": _FLOW_JSONATA | _FLOW | {"Arguments", "Branches", "Retry", "Catch"},
    "Map": _FLOW_JSONATA
    | _FLOW
    | {
        "Items",
        "ItemSelector",
        "ItemProcessor",
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "MaxConcurrency",
        "ToleratedFailurePercentage",
        "ToleratedFailureCount",
        "Label",
        "Retry",
        "Catch",
    },
}
_TOP_LEVEL = {"StartAt", "States", "Comment", "TimeoutSeconds", "Version", "QueryLanguage"}
_SUB_MACHINE = {"StartAt", "States", "Comment", "ProcessorConfig"}
_RETRIER = {
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
    "Comment",
}
_CATCHER = {"ErrorEquals", "Next", "ResultPath", "Comment", "Assign"}
_CATCHER_JSONATA = {"ErrorEquals", "Next", "Output", "Comment", "Assign"}


#: ValidateStateMachineDefinition's code for a problem no more specific code names.
SCHEMA_VALIDATION_FAILED = "SCHEMA_VALIDATION_FAILED"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (a JSON path), which state, and what; `code`
    is the diagnostic code AWS's ValidateStateMachineDefinition gives it (see diagnostics)."""

    path: str
    state: str | None
    message: str
    code: str = SCHEMA_VALIDATION_FAILED

    def __str__(self) -> str:
        where = f" (state {self.state!r})" if self.state else ""
        return f"{self.path}{where}: {self.message}"


#: Problems spelled out in a DefinitionError's message; the rest are counted.
MAX_LISTED_PROBLEMS = 20

#: Longest problem line in the message (a problem may quote a long value).
MAX_PROBLEM_CHARS = 300


def _clip(line: str) -> str:
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 1] + "…"


class DefinitionError(HeadraceError):
    """A state machine definition is not valid; ``problems`` lists every problem found."""

    def __init__(
        self,
        problems: list[Problem],
        subject: str = "state machine definition",
        fix: str = "correct the fields named above",
    ) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        # The message goes to terminals, logs and ledger rows: a generated definition with
        # 150,000 broken states must not make a 12 MB message. `problems` keeps them all.
        lines = [_clip(str(p)) for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"… and {count - MAX_LISTED_PROBLEMS} more")
        reason = f"{count} problem{'s' if count != 1 else ''}:\n" + "\n".join(lines)
        super().__init__(subject, reason, fix)

    def __reduce__(self):
        return (self.__class__, (self.problems, self.subject, self.fix))


@dataclass
class StateMachine:
    """A validated definition: its top-level fields, and the raw JSON for the interpreter."""

    start_at: str
    states: dict[str, dict]
    timeout_seconds: float | None
    comment: str | None
    raw: dict

    def state(self, name: str) -> dict:
        try:
            return self.states[name]
        except KeyError:
            raise KeyError(f"no state named {name!r} in this state machine") from None


# ---------------------------------------------------------------------------------- loading


def load_definition(definition: str | dict | os.PathLike) -> dict:
    """The definition as a dict, from JSON text, a dict, or a file path."""
    if isinstance(definition, dict):
        try:
            check_depth(definition)
        except JsonInputError as exc:
            raise DefinitionError(
                [Problem("$", None, f"the definition {exc}", "TOO_DEEPLY_NESTED")]
            ) from None
        return definition
    if isinstance(definition, bytes):
        definition = definition.decode("utf-8", errors="replace")
    if isinstance(definition, os.PathLike) or _looks_like_file(definition):
        try:
            text = Path(definition).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DefinitionError(  # no fields to correct: the file itself is the problem
                [Problem("$", None, f"cannot read {definition}: {exc}", "MISSING_DESCRIPTION")],
                fix="check the file's path (relative to the current folder) and that it is a "
                "readable UTF-8 JSON file",
            ) from None
    elif isinstance(definition, str):
        text = definition
    else:
        raise DefinitionError(
            [
                Problem(
                    "$",
                    None,
                    f"a definition is JSON text, a dict or a file path, "
                    f"not {type(definition).__name__}",
                )
            ]
        )
    if not text.strip():
        raise DefinitionError(
            [Problem("$", None, "the definition is empty", "MISSING_DESCRIPTION")]
        )
    try:
        data = parse_json(text)
    except JsonInputError as exc:
        syntax = exc.syntax
        message = (
            f"the definition {exc}"
            if syntax is None
            else f"invalid JSON at line {syntax.lineno} column {syntax.colno}: {syntax.msg}"
        )
        code = "TOO_DEEPLY_NESTED" if syntax is None else "INVALID_JSON_DESCRIPTION"
        raise DefinitionError([Problem("$", None, message, code)]) from None
    if not isinstance(data, dict):
        raise DefinitionError(
            [
                Problem(
                    "$",
                    None,
                    f"a definition is a JSON object, not {_json_type(data)}",
                    "INVALID_JSON_DESCRIPTION",
                )
            ]
        )
    return data


def _looks_like_file(text: Any) -> bool:
    """A string that names a file rather than holding JSON text."""
    if not isinstance(text, str) or "\n" in text or len(text) > 4096:
        return False
    stripped = text.strip()
    if not stripped or stripped[0] in "{[":
        return False
    try:
        if Path(text).is_file():
            return True
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        return False
    # a missing file deserves "cannot read", not "invalid JSON at line 1 column 1"
    return text.endswith((".json", ".asl")) or os.sep in text


# ------------------------------------------------------------------------------- validation


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _key(base: str, name: Any) -> str:
    if isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"{base}.{name}"
    return f"{base}[{json.dumps(name) if isinstance(name, str) else name}]"


#: A field's JSON path under `base`, as problems name it (`$.States.A`, `$.States["a b"]`).
field_path = _key


def _is_jsonata_text(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("{%") and value.endswith("%}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Validator:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.top_language = "JSONPath"
        self.outer: list[set[str]] = []  # variables the enclosing scopes assign
        # the $states fields the JSONata field being checked can read (result, errorOutput)
        self.states_fields: frozenset[str] = frozenset()

    def add(
        self, path: str, state: str | None, message: str, code: str = SCHEMA_VALIDATION_FAILED
    ) -> None:
        self.problems.append(Problem(path, state, message, code))

    # -- top level and scopes

    def machine(self, data: dict) -> None:
        for key in data:
            if key not in _TOP_LEVEL:
                self.add(_key("$", key), None, f"unknown top-level field {key!r}")
        if "TimeoutSeconds" in data:
            self.positive_int(data["TimeoutSeconds"], "$.TimeoutSeconds", None)
        if "Version" in data and not isinstance(data["Version"], str):
            self.add("$.Version", None, "Version must be a string")
        if "Comment" in data and not isinstance(data["Comment"], str):
            self.add("$.Comment", None, "Comment must be a string")
        self.query_language(data, "$", None)
        if data.get("QueryLanguage") == "JSONata":
            self.top_language = "JSONata"
        self.scope(data, "$")

    def query_language(self, obj: dict, base: str, state: str | None) -> None:
        if "QueryLanguage" not in obj:
            return
        value = obj["QueryLanguage"]
        if value == "JSONPath" and state is not None and self.top_language == "JSONata":
            self.add(
                base + ".QueryLanguage",
                state,
                "a state of a JSONata state machine cannot use JSONPath; set the machine's "
                "QueryLanguage to JSONPath and JSONata on the states that use it",
            )
        elif value not in ("JSONPath", "JSONata"):
            self.add(base + ".QueryLanguage", state, "QueryLanguage must be JSONPath or JSONata")

    def scope(self, data: dict, base: str) -> None:
        start = data.get("StartAt")
        states = data.get("States")
        if "StartAt" not in data:
            self.add(base, None, "StartAt is required")
        elif not isinstance(start, str):
            self.add(base + ".StartAt", None, "StartAt must be a string naming a state")
        if "States" not in data:
            self.add(base, None, "States is required")
            return
        if not isinstance(states, dict):
            self.add(base + ".States", None, f"States must be an object, not {_json_type(states)}")
            return
        if not states:
            self.add(base + ".States", None, "States must contain at least one state")
        names = set(states)
        own = self.scope_variables(states, base)
        self.outer.append(own)
        try:
            self.scope_states(data, base, start, states, names)
        finally:
            self.outer.pop()

    def scope_variables(self, states: dict, base: str) -> set[str]:
        """The variables this scope assigns; an inner scope may not assign an outer one's."""
        outer = set().union(*self.outer) if self.outer else set()
        own: set[str] = set()
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            specs = [("Assign", state.get("Assign"))]
            for key in ("Choices", "Catch"):
                if isinstance(state.get(key), list):
                    specs += [
                        (f"{key}[{i}].Assign", e.get("Assign"))
                        for i, e in enumerate(state[key])
                        if isinstance(e, dict)
                    ]
            for where, spec in specs:
                for var in variables.assigned_names(spec):
                    if var in outer:
                        self.add(
                            f"{_key(base + '.States', name)}.{where}",
                            name,
                            f"variable ${var} is assigned in an enclosing scope; a Parallel "
                            "branch or Map iteration can read it but not assign it",
                        )
                    own.add(var)
        return own

    def scope_states(self, data: dict, base: str, start: Any, states: dict, names: set) -> None:
        if isinstance(start, str) and states and start not in names:
            self.add(
                base + ".StartAt",
                None,
                f"StartAt names {start!r}, which is not a state",
                "MISSING_TRANSITION_TARGET",
            )
        for name, state in states.items():
            spath = _key(base + ".States", name)
            if len(name) > MAX_STATE_NAME:
                self.add(
                    spath,
                    name,
                    f"a state name is at most {MAX_STATE_NAME} characters",
                    "INVALID_STATE_NAME",
                )
            if not isinstance(state, dict):
                self.add(spath, name, f"a state must be an object, not {_json_type(state)}")
                continue
            self.state(name, state, spath, names)
        if isinstance(start, str) and start in names:
            reachable = self.reachable(start, states)
            for name in states:
                if name not in reachable:
                    self.add(
                        _key(base + ".States", name),
                        name,
                        f"state {name!r} is unreachable from StartAt {start!r}",
                        "MISSING_TRANSITION_TARGET",
                    )

    @staticmethod
    def reachable(start: str, states: dict) -> set[str]:
        seen = {start}
        todo = [start]
        while todo:
            state = states.get(todo.pop())
            if not isinstance(state, dict):
                continue
            for target in _targets(state):
                if target in states and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    # -- states

    def state(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        kind = state.get("Type")
        if "Type" not in state:
            self.add(spath, name, "Type is required")
            return
        if not isinstance(kind, str) or kind not in _ALLOWED:
            self.add(
                spath + ".Type",
                name,
                f"unknown Type {kind!r}; expected one of " + ", ".join(_ALLOWED),
            )
            return
        if "Comment" in state and not isinstance(state["Comment"], str):
            self.add(spath + ".Comment", name, "Comment must be a string")
        self.query_language(state, spath, name)
        if state.get("QueryLanguage", self.top_language) == "JSONata":
            self.jsonata_state(name, state, spath, names, kind)
            return
        for key in state:
            if key in _JSONATA_ONLY:
                self.add(
                    _key(spath, key),
                    name,
                    f"{key} belongs to the JSONata query language; set "
                    '"QueryLanguage": "JSONata" on the state or the machine',
                )
            elif key not in _ALLOWED[kind]:
                self.add(_key(spath, key), name, f"field {key!r} is not allowed in a {kind} state")
        if "Assign" in state and "Assign" in _ALLOWED[kind]:
            self.assign(name, state["Assign"], spath + ".Assign", jsonata=False)
        if kind not in ("Choice", "Succeed", "Fail"):
            self.transition(name, state, spath, names)
        self.io_paths(name, state, spath)
        for field in ("Parameters", "ResultSelector", "ItemSelector", "Credentials"):
            if field in state and field in _ALLOWED[kind]:
                self.template(name, state[field], _key(spath, field), field)
        if "Retry" in state and "Retry" in _ALLOWED[kind]:
            self.retry(name, state["Retry"], spath + ".Retry")
        if "Catch" in state and "Catch" in _ALLOWED[kind]:
            self.catch(name, state["Catch"], spath + ".Catch", names)
        getattr(self, "state_" + kind)(name, state, spath, names)

    def transition(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        has_next, has_end = "Next" in state, "End" in state
        if has_next and has_end:
            self.add(spath, name, "a state has either Next or End, not both")
        elif not has_next and not has_end:
            self.add(spath, name, "Next or End is required")
        if has_end and state["End"] is not True:
            self.add(spath + ".End", name, "End must be true")
        if has_next:
            self.target(name, state["Next"], spath + ".Next", names)

    def target(self, name: str | None, value: Any, path: str, names: set[str]) -> None:
        if not isinstance(value, str):
            self.add(
                path, name, f"a transition target must be a state name, not {_json_type(value)}"
            )
        elif value not in names:
            self.add(
                path, name, f"{value!r} is not a state in this scope", "MISSING_TRANSITION_TARGET"
            )

    def io_paths(self, name: str, state: dict, spath: str) -> None:
        for field in ("InputPath", "OutputPath"):
            if field in state:
                value = state[field]
                if value is not None and not is_valid_path(value):
                    self.add(_key(spath, field), name, f"{field} must be a JSONPath or null")
        if "ResultPath" in state and "ResultPath" in _ALLOWED[state["Type"]]:
            self.result_path(name, state["ResultPath"], spath + ".ResultPath")

    def result_path(self, name: str | None, value: Any, path: str) -> None:
        if value is not None and (
            not is_reference_path(value)
            or value.startswith("$$")
            or parse_path(value).variable is not None
        ):
            self.add(
                path,
                name,
                "ResultPath must be a reference path into the input (like $.result) or null",
            )

    def reference_path(self, name: str, state: dict, field: str, spath: str) -> None:
        if field in state and not is_reference_path(state[field]):
            self.add(_key(spath, field), name, f"{field} must be a reference path like $.value")

    def template(self, name: str, value: Any, path: str, field: str, top: bool = True) -> None:
        if top and not isinstance(value, dict):
            self.add(path, name, f"{field} must be an object, not {_json_type(value)}")
            return
        if isinstance(value, dict):
            for key, sub in value.items():
                kpath = _key(path, key)
                if isinstance(key, str) and key.endswith(".$"):
                    self.dynamic(name, sub, kpath)
                else:
                    self.template(name, sub, kpath, field, top=False)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                self.template(name, sub, f"{path}[{i}]", field, top=False)

    def dynamic(self, name: str | None, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.add(
                path,
                name,
                "a field ending in .$ takes a path or an intrinsic function "
                f"string, not {_json_type(value)}",
            )
        elif is_intrinsic(value):
            try:
                parse_intrinsic(value)
            except ValueError as exc:
                self.add(path, name, str(exc))
        elif not is_valid_path(value):
            self.add(path, name, f"{value!r} is neither a JSONPath nor an intrinsic function")

    # -- variables and JSONata

    def assign(self, name: str, value: Any, path: str, *, jsonata: bool) -> None:
        if not isinstance(value, dict):
            self.add(path, name, f"Assign must be an object, not {_json_type(value)}")
            return
        for key in value:
            var = key[:-2] if isinstance(key, str) and key.endswith(".$") and not jsonata else key
            problem = variables.name_problem(var)
            if problem:
                self.add(_key(path, key), name, problem)
        if jsonata:
            self.expressions(name, value, path)
        else:
            self.template(name, value, path, "Assign")

    def expressions(self, name: str | None, value: Any, path: str) -> None:
        """Check the syntax of every ``{% %}`` string in a JSONata field's value."""
        if isinstance(value, str):
            problem = (
                jsonata_lang.syntax_problem(value)
                if jsonata_lang.is_expression(value)
                else jsonata_lang.delimiter_problem(value)
            )
            if problem:
                self.add(path, name, problem)
            elif jsonata_lang.is_expression(value):
                for field in ("result", "errorOutput"):
                    if f"$states.{field}" in value and field not in self.states_fields:
                        self.add(
                            path,
                            name,
                            f"$states.{field} is not available here: "
                            + (
                                "only in the Output and Assign of a Task, Map or Parallel state"
                                if field == "result"
                                else "only in a Catch's Output and Assign"
                            ),
                        )
        elif isinstance(value, dict):
            for key, sub in value.items():
                self.expressions(name, sub, _key(path, key))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                self.expressions(name, sub, f"{path}[{i}]")

    def number_or_expression(
        self, name: str, state: dict, field: str, spath: str, minimum: int
    ) -> None:
        value = state.get(field)
        if field in state and not jsonata_lang.is_expression(value):
            if field == "ToleratedFailurePercentage":
                if not _is_number(value) or not 0 <= value <= 100:
                    self.add(_key(spath, field), name, f"{field} must be a number from 0 to 100")
            else:
                self.positive_int(value, _key(spath, field), name, minimum)

    def jsonata_state(self, name: str, state: dict, spath: str, names: set[str], kind: str) -> None:
        allowed = _ALLOWED_JSONATA[kind]
        for key in state:
            if key in _JSONPATH_ONLY:
                self.add(
                    _key(spath, key),
                    name,
                    f"{key} belongs to the JSONPath query language; in a JSONata state use "
                    "Arguments and Output (and Items for a Map)",
                )
            elif key not in allowed:
                self.add(_key(spath, key), name, f"field {key!r} is not allowed in a {kind} state")
        if kind not in ("Choice", "Succeed", "Fail"):
            self.transition(name, state, spath, names)
        with_result = frozenset({"result"}) if kind in ("Task", "Map", "Parallel") else frozenset()
        for field in ("Arguments", "Output", "Items", "ItemSelector", "Error", "Cause"):
            if field in state and field in allowed:
                self.states_fields = with_result if field == "Output" else frozenset()
                self.expressions(name, state[field], _key(spath, field))
        self.states_fields = with_result
        if "Assign" in state and "Assign" in allowed:
            self.assign(name, state["Assign"], spath + ".Assign", jsonata=True)
        self.states_fields = frozenset()
        if "Retry" in state and "Retry" in allowed:
            self.retry(name, state["Retry"], spath + ".Retry")
        if "Catch" in state and "Catch" in allowed:
            self.catch(name, state["Catch"], spath + ".Catch", names, jsonata=True)
        for field in ("Error", "Cause"):
            value = state.get(field)
            if field in state and not isinstance(value, str):
                self.add(f"{spath}.{field}", name, f"{field} must be a string")
        if kind == "Task":
            resource = state.get("Resource")
            if not isinstance(resource, str) or not resource:
                self.add(spath, name, "a Task state needs a Resource string")
            for field in ("TimeoutSeconds", "HeartbeatSeconds"):
                self.number_or_expression(name, state, field, spath, 1)
                self.expressions(name, state.get(field), _key(spath, field))
        if kind == "Wait":
            present = [f for f in ("Seconds", "Timestamp") if f in state]
            if len(present) != 1:
                self.add(spath, name, "a Wait state needs exactly one of Seconds, Timestamp")
            self.number_or_expression(name, state, "Seconds", spath, 0)
            stamp = state.get("Timestamp")
            if (
                "Timestamp" in state
                and not jsonata_lang.is_expression(stamp)
                and not is_timestamp(stamp)
            ):
                self.add(
                    spath + ".Timestamp",
                    name,
                    "Timestamp must be an RFC 3339 time like 2016-03-14T01:59:00Z",
                )
            for field in ("Seconds", "Timestamp"):
                self.expressions(name, state.get(field), _key(spath, field))
        if kind == "Choice":
            choices = state.get("Choices")
            if not isinstance(choices, list) or not choices:
                self.add(spath + ".Choices", name, "Choices must be a non-empty array")
            else:
                for i, rule in enumerate(choices):
                    rpath = f"{spath}.Choices[{i}]"
                    if not isinstance(rule, dict):
                        self.add(rpath, name, "a Choice rule must be an object")
                        continue
                    for key in rule:
                        if key not in ("Condition", "Next", "Assign", "Comment"):
                            self.add(
                                _key(rpath, key),
                                name,
                                f"{key!r} is not allowed in a JSONata Choice rule; use Condition",
                            )
                    if "Condition" not in rule:
                        self.add(rpath, name, "a JSONata Choice rule needs Condition")
                    else:
                        self.expressions(name, rule["Condition"], rpath + ".Condition")
                    if "Next" not in rule:
                        self.add(rpath, name, "a Choice rule needs Next")
                    else:
                        self.target(name, rule["Next"], rpath + ".Next", names)
                    if "Assign" in rule:
                        self.assign(name, rule["Assign"], rpath + ".Assign", jsonata=True)
            if "Default" in state:
                self.target(name, state["Default"], spath + ".Default", names)
        if kind == "Parallel":
            self.state_Parallel(name, state, spath, names)
        if kind == "Map":
            if "ItemProcessor" not in state:
                self.add(spath, name, "a Map state needs ItemProcessor")
            else:
                self.sub_machine(
                    name, state["ItemProcessor"], spath + ".ItemProcessor", "ItemProcessor"
                )
                processor = state["ItemProcessor"]
                if isinstance(processor, dict) and "ProcessorConfig" in processor:
                    self.processor_config(
                        name, processor["ProcessorConfig"], spath + ".ItemProcessor.ProcessorConfig"
                    )
            items = state.get("Items")
            if (
                "Items" in state
                and not jsonata_lang.is_expression(items)
                and not isinstance(items, list | dict)
            ):
                self.add(
                    spath + ".Items",
                    name,
                    "Items must be a JSON array or object, or a JSONata expression giving one",
                )
            self.number_or_expression(name, state, "MaxConcurrency", spath, 0)
            self.number_or_expression(name, state, "ToleratedFailureCount", spath, 0)
            self.number_or_expression(name, state, "ToleratedFailurePercentage", spath, 0)
            for field in ("ItemReader", "ItemBatcher", "ResultWriter"):
                if field in state:
                    self.expressions(name, state[field], _key(spath, field))
            if isinstance(state.get("ItemReader"), dict):
                self.reader_config(name, state["ItemReader"], spath + ".ItemReader")
            self.batcher_limits(name, state.get("ItemBatcher"), spath + ".ItemBatcher")
            self.result_writer(name, state, spath)
            for field in ("MaxConcurrency", "ToleratedFailureCount", "ToleratedFailurePercentage"):
                self.expressions(name, state.get(field), _key(spath, field))

    # -- Retry / Catch

    def error_equals(self, name: str, entry: dict, path: str, last: bool) -> None:
        names = entry.get("ErrorEquals")
        if "ErrorEquals" not in entry:
            self.add(path, name, "ErrorEquals is required")
            return
        if not isinstance(names, list) or not names:
            self.add(path + ".ErrorEquals", name, "ErrorEquals must be a non-empty array")
            return
        for i, error in enumerate(names):
            epath = f"{path}.ErrorEquals[{i}]"
            if not isinstance(error, str) or not error:
                self.add(epath, name, "an error name must be a non-empty string")
            elif error.startswith("States.") and error not in KNOWN_ERRORS:
                self.add(epath, name, f"{error!r} is not a predefined States error name")
        if ALL in names:
            if len(names) != 1:
                self.add(path + ".ErrorEquals", name, "States.ALL must appear alone in ErrorEquals")
            if not last:
                self.add(
                    path + ".ErrorEquals", name, "States.ALL must be in the last retrier or catcher"
                )

    def entries(self, name: str, value: Any, path: str, label: str) -> list[tuple[int, dict]]:
        if not isinstance(value, list):
            self.add(path, name, f"{label} must be an array, not {_json_type(value)}")
            return []
        out = []
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                self.add(f"{path}[{i}]", name, f"a {label} entry must be an object")
            else:
                out.append((i, entry))
        return out

    def retry(self, name: str, value: Any, path: str) -> None:
        count = len(value) if isinstance(value, list) else 0
        for i, retrier in self.entries(name, value, path, "Retry"):
            rpath = f"{path}[{i}]"
            for key in retrier:
                if key not in _RETRIER:
                    self.add(_key(rpath, key), name, f"field {key!r} is not allowed in a retrier")
            self.error_equals(name, retrier, rpath, i == count - 1)
            if "IntervalSeconds" in retrier:
                v = retrier["IntervalSeconds"]
                if not _is_int(v) or not 1 <= v <= MAX_SECONDS:
                    self.add(
                        rpath + ".IntervalSeconds",
                        name,
                        "IntervalSeconds must be an integer of at least 1",
                    )
            if "MaxAttempts" in retrier:
                v = retrier["MaxAttempts"]
                if not _is_int(v) or not 0 <= v <= MAX_SECONDS:
                    self.add(
                        rpath + ".MaxAttempts", name, "MaxAttempts must be a non-negative integer"
                    )
            if "BackoffRate" in retrier:
                v = retrier["BackoffRate"]
                if not _is_number(v) or v < 1.0:
                    self.add(
                        rpath + ".BackoffRate", name, "BackoffRate must be a number of at least 1.0"
                    )
            if "MaxDelaySeconds" in retrier:
                v = retrier["MaxDelaySeconds"]
                if not _is_int(v) or not 0 < v < 31_622_401:
                    self.add(
                        rpath + ".MaxDelaySeconds",
                        name,
                        "MaxDelaySeconds must be a positive integer below 31622401",
                    )
            if "JitterStrategy" in retrier and retrier["JitterStrategy"] not in ("FULL", "NONE"):
                self.add(rpath + ".JitterStrategy", name, "JitterStrategy must be FULL or NONE")

    def catch(
        self, name: str, value: Any, path: str, names: set[str], jsonata: bool = False
    ) -> None:
        count = len(value) if isinstance(value, list) else 0
        for i, catcher in self.entries(name, value, path, "Catch"):
            cpath = f"{path}[{i}]"
            for key in catcher:
                if key not in (_CATCHER_JSONATA if jsonata else _CATCHER):
                    self.add(_key(cpath, key), name, f"field {key!r} is not allowed in a catcher")
            self.states_fields = frozenset({"errorOutput"})
            if "Assign" in catcher:
                self.assign(name, catcher["Assign"], cpath + ".Assign", jsonata=jsonata)
            if "Output" in catcher and jsonata:
                self.expressions(name, catcher["Output"], cpath + ".Output")
            self.states_fields = frozenset()
            self.error_equals(name, catcher, cpath, i == count - 1)
            if "Next" not in catcher:
                self.add(cpath, name, "a catcher needs Next")
            else:
                self.target(name, catcher["Next"], cpath + ".Next", names)
            if "ResultPath" in catcher:
                self.result_path(name, catcher["ResultPath"], cpath + ".ResultPath")

    # -- per type

    def positive_int(self, value: Any, path: str, name: str | None, minimum: int = 1) -> bool:
        if not _is_int(value) or not minimum <= value <= MAX_SECONDS:
            what = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
            self.add(path, name, f"must be {what}")
            return False
        return True

    def one_of(self, name: str, state: dict, spath: str, fields: tuple[str, ...]) -> None:
        present = [f for f in fields if f in state]
        if len(present) > 1:
            self.add(spath, name, " and ".join(present) + " cannot be used together")

    def state_Pass(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        pass

    def state_Succeed(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        pass

    def state_Task(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        resource = state.get("Resource")
        if "Resource" not in state:
            self.add(spath, name, "a Task state needs Resource")
        elif not isinstance(resource, str) or not resource:
            self.add(
                spath + ".Resource", name, "Resource must be a non-empty string", "INVALID_RESOURCE"
            )
        for field in ("TimeoutSeconds", "HeartbeatSeconds"):
            self.one_of(name, state, spath, (field, field + "Path"))
            if field in state:
                self.positive_int(state[field], f"{spath}.{field}", name)
            self.reference_path(name, state, field + "Path", spath)
        timeout, heartbeat = state.get("TimeoutSeconds"), state.get("HeartbeatSeconds")
        if _is_int(timeout) and _is_int(heartbeat) and heartbeat >= timeout:
            self.add(
                spath + ".HeartbeatSeconds",
                name,
                "HeartbeatSeconds must be smaller than TimeoutSeconds",
            )

    def state_Wait(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        fields = ("Seconds", "Timestamp", "SecondsPath", "TimestampPath")
        present = [f for f in fields if f in state]
        if len(present) != 1:
            self.add(spath, name, "a Wait state needs exactly one of " + ", ".join(fields))
        if "Seconds" in state:
            self.positive_int(state["Seconds"], spath + ".Seconds", name, minimum=0)
        if "Timestamp" in state and not is_timestamp(state["Timestamp"]):
            self.add(
                spath + ".Timestamp",
                name,
                "Timestamp must be an RFC 3339 time like 2016-03-14T01:59:00Z",
            )
        for field in ("SecondsPath", "TimestampPath"):
            self.reference_path(name, state, field, spath)

    def state_Fail(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        for field in ("Error", "Cause"):
            self.one_of(name, state, spath, (field, field + "Path"))
            if field in state and not isinstance(state[field], str):
                self.add(f"{spath}.{field}", name, f"{field} must be a string")
            pfield = field + "Path"
            if pfield in state:
                value = state[pfield]
                if isinstance(value, str) and is_intrinsic(value):
                    self.dynamic(name, value, f"{spath}.{pfield}")
                elif not is_reference_path(value):
                    self.add(
                        f"{spath}.{pfield}",
                        name,
                        f"{pfield} must be a reference path or an intrinsic function",
                    )

    def state_Choice(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        choices = state.get("Choices")
        if "Choices" not in state:
            self.add(spath, name, "a Choice state needs Choices")
        elif not isinstance(choices, list) or not choices:
            self.add(spath + ".Choices", name, "Choices must be a non-empty array")
        else:
            for i, rule in enumerate(choices):
                self.rule(name, rule, f"{spath}.Choices[{i}]", names, top=True)
        if "Default" in state:
            self.target(name, state["Default"], spath + ".Default", names)

    def rule(self, name: str, rule: Any, path: str, names: set[str], top: bool) -> None:
        if not isinstance(rule, dict):
            self.add(path, name, f"a Choice rule must be an object, not {_json_type(rule)}")
            return
        if top:
            if "Next" not in rule:
                self.add(path, name, "a Choice rule needs Next")
            else:
                self.target(name, rule["Next"], path + ".Next", names)
        elif "Next" in rule:
            self.add(path + ".Next", name, "only top-level Choice rules have Next")
        if "Condition" in rule:
            self.add(
                path + ".Condition",
                name,
                'Condition belongs to the JSONata query language; set "QueryLanguage": '
                '"JSONata" on the state or the machine',
            )
        combinators = [k for k in ("And", "Or", "Not") if k in rule]
        operators = [k for k in rule if k in COMPARISON_OPS]
        allowed = {"Next", "Comment", "Variable", "And", "Or", "Not", "Condition", "Assign"}
        for key in rule:
            if key not in allowed and key not in COMPARISON_OPS:
                self.add(_key(path, key), name, f"unknown Choice rule field {key!r}")
            elif key == "Assign":
                if top:
                    self.assign(name, rule["Assign"], path + ".Assign", jsonata=False)
                else:
                    self.add(path + ".Assign", name, "only top-level Choice rules have Assign")
        if combinators:
            if len(combinators) > 1 or operators or "Variable" in rule:
                self.add(
                    path,
                    name,
                    "a Choice rule has one of And, Or, Not, or a Variable "
                    "with one comparison operator",
                )
            kind = combinators[0]
            sub = rule[kind]
            if kind == "Not":
                self.rule(name, sub, path + ".Not", names, top=False)
            elif not isinstance(sub, list) or not sub:
                self.add(f"{path}.{kind}", name, f"{kind} must be a non-empty array of rules")
            else:
                for i, item in enumerate(sub):
                    self.rule(name, item, f"{path}.{kind}[{i}]", names, top=False)
            return
        if "Condition" in rule:
            return
        if "Variable" not in rule:
            self.add(path, name, "a Choice rule needs Variable, or And, Or, Not")
        elif not is_valid_path(rule["Variable"]):
            self.add(path + ".Variable", name, "Variable must be a JSONPath like $.value")
        if len(operators) != 1:
            self.add(
                path,
                name,
                "a Choice rule needs exactly one comparison operator, found "
                + (", ".join(operators) or "none"),
            )
        for op in operators:
            self.operand(name, op, rule[op], _key(path, op))

    def operand(self, name: str, op: str, value: Any, path: str) -> None:
        if op.endswith("Path"):
            if not is_valid_path(value):
                self.add(path, name, f"{op} takes a JSONPath like $.other")
            return
        if op in STRING_OPS or op == "StringMatches":
            ok, want = isinstance(value, str), "a string"
        elif op in NUMERIC_OPS:
            ok, want = _is_number(value), "a number"
        elif op in BOOLEAN_OPS or op in TYPE_TESTS:
            ok, want = isinstance(value, bool), "a boolean"
        elif op in TIMESTAMP_OPS:
            ok, want = is_timestamp(value), "an RFC 3339 timestamp like 2016-03-14T01:59:00Z"
        else:  # pragma: no cover - every operator is listed above
            ok, want = True, ""
        if not ok:
            self.add(path, name, f"{op} takes {want}")

    def sub_machine(self, name: str, value: Any, path: str, label: str) -> None:
        if not isinstance(value, dict):
            self.add(path, name, f"{label} must be an object with StartAt and States")
            return
        for key in value:
            if key not in _SUB_MACHINE:
                self.add(_key(path, key), name, f"unknown field {key!r} in {label}")
        self.scope(value, path)

    def state_Parallel(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        branches = state.get("Branches")
        if "Branches" not in state:
            self.add(spath, name, "a Parallel state needs Branches")
        elif not isinstance(branches, list) or not branches:
            self.add(spath + ".Branches", name, "Branches must be a non-empty array")
        else:
            for i, branch in enumerate(branches):
                self.sub_machine(name, branch, f"{spath}.Branches[{i}]", "a branch")
                if isinstance(branch, dict) and "ProcessorConfig" in branch:
                    self.add(
                        f"{spath}.Branches[{i}].ProcessorConfig",
                        name,
                        "ProcessorConfig belongs to Map's ItemProcessor",
                    )

    def state_Map(self, name: str, state: dict, spath: str, names: set[str]) -> None:
        if "ItemProcessor" in state and "Iterator" in state:
            self.add(spath, name, "use ItemProcessor or the legacy Iterator, not both")
        elif "ItemProcessor" not in state and "Iterator" not in state:
            self.add(spath, name, "a Map state needs ItemProcessor (or the legacy Iterator)")
        for field in ("ItemProcessor", "Iterator"):
            if field in state:
                self.sub_machine(name, state[field], f"{spath}.{field}", field)
        processor = state.get("ItemProcessor")
        if isinstance(processor, dict) and "ProcessorConfig" in processor:
            self.processor_config(
                name, processor["ProcessorConfig"], spath + ".ItemProcessor.ProcessorConfig"
            )
        self.one_of(name, state, spath, ("ItemSelector", "Parameters"))
        self.reference_path(name, state, "ItemsPath", spath)
        for field in ("MaxConcurrency", "ToleratedFailurePercentage", "ToleratedFailureCount"):
            self.one_of(name, state, spath, (field, field + "Path"))
            self.reference_path(name, state, field + "Path", spath)
        if "MaxConcurrency" in state:
            self.positive_int(state["MaxConcurrency"], spath + ".MaxConcurrency", name, 0)
        if "ToleratedFailureCount" in state:
            self.positive_int(
                state["ToleratedFailureCount"], spath + ".ToleratedFailureCount", name, 0
            )
        if "ToleratedFailurePercentage" in state:
            v = state["ToleratedFailurePercentage"]
            if not _is_number(v) or not 0 <= v <= 100:
                self.add(
                    spath + ".ToleratedFailurePercentage",
                    name,
                    "ToleratedFailurePercentage must be a number from 0 to 100",
                )
        if "Label" in state and (not isinstance(state["Label"], str) or len(state["Label"]) > 40):
            self.add(spath + ".Label", name, "Label must be a string of at most 40 characters")
        self.item_reader(name, state, spath)
        for field in ("ItemBatcher", "ResultWriter"):
            if field in state and not isinstance(state[field], dict):
                self.add(f"{spath}.{field}", name, f"{field} must be an object")
        if "ItemReader" in state and "ItemsPath" in state:
            self.add(
                spath + ".ItemsPath",
                name,
                "ItemsPath cannot be used with ItemReader (the reader gives the items); use "
                "ReaderConfig.ItemsPointer to pick an array inside a JSON file",
            )
        batcher = state.get("ItemBatcher")
        self.batcher_limits(name, batcher, spath + ".ItemBatcher")
        if isinstance(batcher, dict):
            for key, value in batcher.items():
                bpath = _key(spath + ".ItemBatcher", key)
                if key in ("MaxItemsPerBatch", "MaxInputBytesPerBatch"):
                    self.positive_int(value, bpath, name)
                elif key in ("MaxItemsPerBatchPath", "MaxInputBytesPerBatchPath"):
                    if not is_reference_path(value):
                        self.add(bpath, name, f"{key} must be a reference path")
                elif key == "BatchInput":
                    if not isinstance(value, dict):
                        self.add(bpath, name, "BatchInput must be an object")
                else:
                    self.add(bpath, name, f"unknown ItemBatcher field {key!r}")
        self.result_writer(name, state, spath)

    def batcher_limits(self, name: str, batcher: Any, bpath: str) -> None:
        """An ItemBatcher needs a limit, and a batch is at most 256 KiB (AWS's input quota)."""
        if not isinstance(batcher, dict):
            return
        if not any(
            field in batcher
            for field in (
                "MaxItemsPerBatch",
                "MaxItemsPerBatchPath",
                "MaxInputBytesPerBatch",
                "MaxInputBytesPerBatchPath",
            )
        ):
            self.add(
                bpath,
                name,
                "ItemBatcher needs MaxItemsPerBatch (or MaxItemsPerBatchPath), "
                "MaxInputBytesPerBatch (or MaxInputBytesPerBatchPath), or both",
            )
        size = batcher.get("MaxInputBytesPerBatch")
        if _is_int(size) and size > MAX_BATCH_BYTES:
            self.add(
                bpath + ".MaxInputBytesPerBatch",
                name,
                f"MaxInputBytesPerBatch must be at most {MAX_BATCH_BYTES:,} (256 KiB, the "
                "largest input a child execution takes)",
            )

    def item_reader(self, name: str, state: dict, spath: str) -> None:
        if "ItemReader" not in state:
            return
        reader = state["ItemReader"]
        rpath = spath + ".ItemReader"
        if not isinstance(reader, dict):
            self.add(rpath, name, "ItemReader must be an object")
            return
        for key in reader:
            if key not in ("Resource", "ReaderConfig", "Parameters", "Arguments"):
                self.add(_key(rpath, key), name, f"unknown ItemReader field {key!r}")
        if not isinstance(reader.get("Resource"), str) or not reader.get("Resource"):
            self.add(rpath, name, "ItemReader needs a Resource string")
        if "Parameters" in reader:
            self.template(name, reader["Parameters"], rpath + ".Parameters", "Parameters")
        if "ReaderConfig" in reader and not isinstance(reader["ReaderConfig"], dict):
            self.add(rpath + ".ReaderConfig", name, "ReaderConfig must be an object")
        resource = reader.get("Resource")
        get_object = isinstance(resource, str) and resource.endswith(":getObject")
        self.location(name, reader, rpath, ("Bucket", "Key") if get_object else ("Bucket",))
        self.reader_config(name, reader, rpath)

    def reader_config(self, name: str, reader: dict, rpath: str) -> None:
        """ReaderConfig's fields and values as AWS documents them (input-output-itemreader)."""
        config = reader.get("ReaderConfig")
        if not isinstance(config, dict):
            return
        cpath = rpath + ".ReaderConfig"
        for key in config:
            if key not in _READER_CONFIG_FIELDS:
                self.add(_key(cpath, key), name, f"unknown ReaderConfig field {key!r}")
        for key, allowed in (
            ("InputType", INPUT_TYPES),
            ("ManifestType", MANIFEST_TYPES),
            ("Transformation", READER_TRANSFORMATIONS),
            ("CSVDelimiter", tuple(CSV_DELIMITERS)),
            ("CSVHeaderLocation", ("FIRST_ROW", "GIVEN")),
        ):
            if key in config and config[key] not in allowed:
                self.add(_key(cpath, key), name, f"{key} must be one of {', '.join(allowed)}")
        if config.get("ManifestType") == "S3_INVENTORY" and "InputType" in config:
            self.add(
                _key(cpath, "InputType"),
                name,
                "InputType cannot be given with ManifestType S3_INVENTORY (its files are CSV)",
            )
        if config.get("Transformation") == "LOAD_AND_FLATTEN" and "InputType" not in config:
            self.add(cpath, name, "Transformation LOAD_AND_FLATTEN needs an InputType")
        if config.get("CSVHeaderLocation") == "GIVEN":
            headers = config.get("CSVHeaders")
            if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
                self.add(
                    cpath, name, "CSVHeaderLocation GIVEN needs CSVHeaders, an array of strings"
                )
        if "CSVHeaders" in config and config.get("CSVHeaderLocation") != "GIVEN":
            self.add(
                _key(cpath, "CSVHeaders"),
                name,
                'CSVHeaders is used only with "CSVHeaderLocation": "GIVEN"; add it, or drop '
                "CSVHeaders to read the header from the first row",
            )
        if config.get("ManifestType") == "ATHENA_DATA" and "InputType" not in config:
            self.add(
                cpath,
                name,
                "ManifestType ATHENA_DATA needs an InputType: CSV, JSONL or PARQUET (the format "
                "of the UNLOAD's data files)",
            )
        if "MaxItems" in config and "MaxItemsPath" in config:
            self.add(cpath, name, "MaxItems and MaxItemsPath cannot be used together")
        limit = config.get("MaxItems")
        if (
            "MaxItems" in config
            and not _is_jsonata_text(limit)
            and (not _is_int(limit) or not 0 <= limit <= MAX_READER_ITEMS)
        ):
            self.add(
                _key(cpath, "MaxItems"),
                name,
                f"MaxItems must be an integer from 0 to {MAX_READER_ITEMS:,}",
            )
        if "MaxItemsPath" in config and not is_reference_path(config["MaxItemsPath"]):
            self.add(_key(cpath, "MaxItemsPath"), name, "MaxItemsPath must be a reference path")
        if "ItemsPointer" in config:
            pointer = config["ItemsPointer"]
            if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
                self.add(
                    _key(cpath, "ItemsPointer"),
                    name,
                    "ItemsPointer must be a JSON Pointer such as '/inventory/products'",
                )
            elif config.get("InputType", "JSON") != "JSON":
                self.add(_key(cpath, "ItemsPointer"), name, "ItemsPointer needs InputType JSON")

    def result_writer(self, name: str, state: dict, spath: str) -> None:
        """ResultWriter: a Resource with Parameters (or Arguments), a WriterConfig, or all of
        them (input-output-resultwriter); WriterConfig's values as AWS names them."""
        writer = state.get("ResultWriter")
        if not isinstance(writer, dict):
            return  # absent, or reported as not an object
        wpath = spath + ".ResultWriter"
        for key in writer:
            if key not in ("Resource", "Parameters", "Arguments", "WriterConfig"):
                self.add(_key(wpath, key), name, f"unknown ResultWriter field {key!r}")
        if "Resource" in writer and not isinstance(writer["Resource"], str):
            self.add(wpath + ".Resource", name, "Resource must be a string")
        has_target = "Parameters" in writer or "Arguments" in writer
        if "Resource" in writer and not has_target:
            self.add(wpath, name, "a ResultWriter Resource needs Parameters (or Arguments)")
        elif has_target and "Resource" not in writer:
            self.add(wpath, name, "ResultWriter Parameters need a Resource")
        elif "Resource" not in writer and "WriterConfig" not in writer:
            self.add(
                wpath,
                name,
                "ResultWriter needs a Resource with Parameters, a WriterConfig, or both",
            )
        config = writer.get("WriterConfig")
        if "WriterConfig" in writer and not isinstance(config, dict):
            self.add(wpath + ".WriterConfig", name, "WriterConfig must be an object")
        elif isinstance(config, dict):
            cpath = wpath + ".WriterConfig"
            for key in config:
                if key not in ("Transformation", "OutputType"):
                    self.add(_key(cpath, key), name, f"unknown WriterConfig field {key!r}")
            for key, allowed in (
                ("Transformation", WRITER_TRANSFORMATIONS),
                ("OutputType", OUTPUT_TYPES),
            ):
                if key in config and config[key] not in allowed:
                    self.add(_key(cpath, key), name, f"{key} must be one of {', '.join(allowed)}")
        self.location(name, writer, wpath, ("Bucket",))

    def location(self, name: str, spec: dict, path: str, fields: tuple[str, ...]) -> None:
        """ItemReader/ResultWriter Parameters must say which bucket (and object) to use."""
        params = spec.get("Parameters", spec.get("Arguments"))
        if not isinstance(params, dict):
            return  # no Parameters at all, or not an object: reported elsewhere / at run time
        for field in fields:
            if field not in params and f"{field}.$" not in params:
                self.add(path + ".Parameters", name, f"Parameters need {field!r} (or {field}.$)")

    def processor_config(self, name: str, config: Any, path: str) -> None:
        if not isinstance(config, dict):
            self.add(path, name, "ProcessorConfig must be an object")
            return
        if "Mode" in config and config["Mode"] not in ("INLINE", "DISTRIBUTED"):
            self.add(path + ".Mode", name, "Mode must be INLINE or DISTRIBUTED")
        if "ExecutionType" in config and config["ExecutionType"] not in ("STANDARD", "EXPRESS"):
            self.add(path + ".ExecutionType", name, "ExecutionType must be STANDARD or EXPRESS")
        for key in config:
            if key not in ("Mode", "ExecutionType"):
                self.add(_key(path, key), name, f"unknown ProcessorConfig field {key!r}")


def _targets(state: dict) -> Iterator[str]:
    """Every state name ``state`` can transition to within its scope."""
    if isinstance(state.get("Next"), str):
        yield state["Next"]
    if isinstance(state.get("Default"), str):
        yield state["Default"]
    for key in ("Choices", "Catch"):
        entries = state.get(key)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict) and isinstance(entry.get("Next"), str):
                    yield entry["Next"]


def all_states(data: Any, base: str) -> Iterator[tuple[str, str]]:
    """(name, JSON path) of every state of a machine, nested machines included."""
    states = data.get("States") if isinstance(data, dict) else None
    if not isinstance(states, dict):
        return
    for name, state in states.items():
        spath = _key(base + ".States", name)
        yield name, spath
        if not isinstance(state, dict):
            continue
        branches = state.get("Branches")
        if isinstance(branches, list):
            for i, branch in enumerate(branches):
                yield from all_states(branch, f"{spath}.Branches[{i}]")
        for key in ("ItemProcessor", "Iterator"):
            if isinstance(state.get(key), dict):
                yield from all_states(state[key], f"{spath}.{key}")


def validate(definition: Any) -> list[Problem]:
    """Every problem in ``definition`` (JSON text, dict or file path); never raises."""
    try:
        data = load_definition(definition)
    except DefinitionError as exc:
        return exc.problems
    validator = _Validator()
    try:
        validator.machine(data)
    except RecursionError:
        validator.add("$", None, "the definition is nested too deeply", "TOO_DEEPLY_NESTED")
    except Exception as exc:  # a validator bug must not crash callers; report it instead
        validator.add("$", None, f"internal validation error ({type(exc).__name__}: {exc})")
    return validator.problems


def parse(definition: Any) -> StateMachine:
    """A :class:`StateMachine`, or :class:`DefinitionError` listing every problem."""
    data = load_definition(definition)
    problems = validate(data)
    if problems:
        raise DefinitionError(problems)
    timeout = data.get("TimeoutSeconds")
    return StateMachine(
        start_at=data["StartAt"],
        states=data["States"],
        timeout_seconds=float(timeout) if timeout is not None else None,
        comment=data.get("Comment"),
        raw=data,
    )
