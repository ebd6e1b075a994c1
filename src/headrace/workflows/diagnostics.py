"""A definition's problems as AWS's ValidateStateMachineDefinition reports them.

`validate_definition` returns `{"result": "OK" | "FAIL", "diagnostics": [...], "truncated"}`,
each diagnostic `{"severity", "code", "message", "location"}` with AWS's codes
(SCHEMA_VALIDATION_FAILED, MISSING_TRANSITION_TARGET, MISSING_END_STATE, DUPLICATE_STATE_NAME,
INVALID_STATE_NAME, INVALID_RESOURCE, INVALID_JSON_DESCRIPTION, MISSING_DESCRIPTION,
TOO_DEEPLY_NESTED; warnings NO_DOLLAR, NO_PATH, PASS_RESULT_IS_STATIC) and locations as AWS
writes them (`/States/<StateName>/<FieldName>`). Most errors are asl.validate's problems, which
the coordinator refuses too; three are AWS's alone — INVALID_RESOURCE (the coordinator names
unknown resources itself), MISSING_END_STATE and DUPLICATE_STATE_NAME across scopes (headrace
runs such machines) — and the warnings never stop a definition from running.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from headrace.workflows import asl

#: As ValidateStateMachineDefinition: by default only errors, at most 100 of them.
DEFAULT_SEVERITY = "ERROR"
DEFAULT_MAX_RESULTS = 100
SEVERITIES = ("ERROR", "WARNING")

_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[(\"(?:[^\"\\]|\\.)*\")\]")
_LOOKS_LIKE_PATH = re.compile(r"^\$\$?(\.|\[|$)")
_INTRINSIC = re.compile(r"^States\.[A-Za-z]+\(")
_TEMPLATES = ("Parameters", "ItemSelector", "ResultSelector")
# the integration patterns that wait, which Express workflows do not support
_WAITING_PATTERNS = (".sync", ".sync:2", ".waitForTaskToken")
# JSONPath state fields whose value is a literal; a path in one is most likely a missing "Path"
_LITERAL_FIELDS = (
    "Seconds",
    "Timestamp",
    "TimeoutSeconds",
    "HeartbeatSeconds",
    "MaxConcurrency",
    "ToleratedFailureCount",
    "ToleratedFailurePercentage",
    "Error",
    "Cause",
)


def location(path: str) -> str:
    """A problem's JSON path (`$.States.A.Next`, `$.States["a b"].Branches[0]`) as AWS writes
    a diagnostic's location (`/States/A/Next`, `/States/a b/Branches/0`)."""
    if path in ("", "$"):
        return ""
    parts = []
    for match in _PATH_PART.finditer(path, 1):
        name, index, quoted = match.groups()
        parts.append(
            name if name is not None else index if index is not None else json.loads(quoted)
        )
    return "/" + "/".join(parts)


def validate_definition(
    definition: Any,
    *,
    severity: str = DEFAULT_SEVERITY,
    max_results: int = DEFAULT_MAX_RESULTS,
) -> dict[str, Any]:
    """ValidateStateMachineDefinition's response for `definition` (JSON text, dict or file
    path): `severity` ERROR returns errors only, WARNING errors and warnings; at most
    `max_results` diagnostics (`truncated` says when more were found)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be ERROR or WARNING, not {severity!r}")
    found: list[dict[str, Any]] = [
        _diagnostic("ERROR", p.code, p.message, p.path) for p in asl.validate(definition)
    ]
    try:
        data = asl.load_definition(definition)
    except asl.DefinitionError:
        data = None
    if data is not None:
        found += [_diagnostic("ERROR", *d) for d in _duplicate_keys(definition, data)]
        found += [_diagnostic("ERROR", *d) for d in _duplicate_names(data)]
        found += [_diagnostic("ERROR", *d) for d in _no_end(data, "$")]
        found += [_diagnostic("ERROR", *d) for d in _resources(data)]
        found += [_diagnostic("ERROR", *d) for d in _distributed_only(data)]
        if severity == "WARNING":
            found += [_diagnostic("WARNING", *d) for d in _warnings(data)]
    result = "FAIL" if any(d["severity"] == "ERROR" for d in found) else "OK"
    limit = max(1, max_results)
    return {"result": result, "diagnostics": found[:limit], "truncated": len(found) > limit}


def _diagnostic(severity: str, code: str, message: str, path: str) -> dict[str, Any]:
    out = {"severity": severity, "code": code, "message": message}
    where = location(path)
    if where:
        out["location"] = where
    return out


def _states(data: Any, base: str) -> Iterator[tuple[str, dict, str]]:
    """(name, state, JSON path) of every state, nested machines included."""
    for name, path in asl.all_states(data, base):
        yield name, _at(data, path), path


def _at(data: Any, path: str) -> Any:
    for match in _PATH_PART.finditer(path, 1):
        name, index, quoted = match.groups()
        key = name if name is not None else int(index) if index is not None else json.loads(quoted)
        data = data[key]
    return data


def _duplicate_keys(definition: Any, data: dict) -> list[tuple[str, str, str]]:
    """A state written twice in one States object: JSON parsing keeps the last, AWS refuses."""
    if isinstance(definition, dict):
        return []
    try:
        text = (
            definition
            if isinstance(definition, str) and definition.lstrip().startswith("{")
            else open(definition, encoding="utf-8").read()  # noqa: SIM115 - read once
        )
    except (OSError, TypeError, ValueError):
        return []
    duplicates: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        seen: set[str] = set()
        for key, value in pairs:
            if key in seen and isinstance(value, dict) and "Type" in value:
                duplicates.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    where = {name: path for name, path in asl.all_states(data, "$")}
    return [
        (
            "DUPLICATE_STATE_NAME",
            f"state name {name!r} appears more than once in the same States object",
            where.get(name, "$.States"),
        )
        for name in duplicates
    ]


def _duplicate_names(data: dict) -> list[tuple[str, str, str]]:
    """State names are unique in the whole machine on AWS, branches and Map processors
    included (headrace runs a machine that reuses one; AWS refuses it)."""
    seen: dict[str, str] = {}
    out = []
    for name, path in asl.all_states(data, "$"):
        if name in seen:
            out.append(
                (
                    "DUPLICATE_STATE_NAME",
                    f"state name {name!r} is used more than once (also at "
                    f"{location(seen[name])}); state names are unique in the whole state "
                    "machine, branches and Map processors included",
                    path,
                )
            )
        else:
            seen[name] = path
    return out


def _distributed_only(data: dict) -> list[tuple[str, str, str]]:
    """What AWS refuses and headrace runs: an ItemReader on an INLINE Map (headrace reads the
    items and iterates inline), and a `.sync` or `.waitForTaskToken` Task in an EXPRESS child
    workflow (Express workflows support Request Response only)."""
    out = []
    express: dict[str, str] = {}  # an EXPRESS Map's ItemProcessor path: the Map's name
    states = list(_states(data, "$"))
    for name, state, path in states:
        if not isinstance(state, dict) or state.get("Type") != "Map":
            continue
        processor = state.get("ItemProcessor")
        config = processor.get("ProcessorConfig") if isinstance(processor, dict) else None
        config = config if isinstance(config, dict) else {}
        if "ItemReader" in state and config.get("Mode") != "DISTRIBUTED":
            out.append(
                (
                    "SCHEMA_VALIDATION_FAILED",
                    f"Map state {name!r} has an ItemReader but is not a Distributed Map: add "
                    '"ProcessorConfig": {"Mode": "DISTRIBUTED"} to its ItemProcessor',
                    path + ".ItemReader",
                )
            )
        if config.get("ExecutionType") == "EXPRESS":
            express[path + ".ItemProcessor."] = name
    for task, state, path in states:
        resource = state.get("Resource") if isinstance(state, dict) else None
        if not isinstance(resource, str) or not resource.endswith(_WAITING_PATTERNS):
            continue
        for prefix, name in express.items():
            if path.startswith(prefix):
                pattern = resource.rsplit(".", 1)[1]
                out.append(
                    (
                        "SCHEMA_VALIDATION_FAILED",
                        f"Task state {task!r} uses .{pattern} inside the EXPRESS child "
                        f"workflows of Map state {name!r}; Express workflows support Request "
                        f"Response only: use ExecutionType STANDARD or drop .{pattern}",
                        path + ".Resource",
                    )
                )
                break
    return out


def _no_end(machine: Any, base: str) -> list[tuple[str, str, str]]:
    """A machine (or branch, or Map processor) no state of which ends it: AWS refuses it;
    headrace runs it until the history quota stops it."""
    states = machine.get("States") if isinstance(machine, dict) else None
    if not isinstance(states, dict) or not states:
        return []
    out = []
    if not any(
        isinstance(state, dict)
        and (state.get("Type") in ("Succeed", "Fail") or state.get("End") is True)
        for state in states.values()
    ):
        out.append(
            (
                "MISSING_END_STATE",
                'no state ends the workflow: give one state "End": true, or add a Succeed or '
                "Fail state",
                base + ".States",
            )
        )
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        spath = asl.field_path(base + ".States", name)
        branches = state.get("Branches")
        for i, branch in enumerate(branches if isinstance(branches, list) else []):
            out += _no_end(branch, f"{spath}.Branches[{i}]")
        for key in ("ItemProcessor", "Iterator"):
            if isinstance(state.get(key), dict):
                out += _no_end(state[key], f"{spath}.{key}")
    return out


def _resources(data: dict) -> list[tuple[str, str, str]]:
    out = []
    for name, state, path in _states(data, "$"):
        resource = state.get("Resource") if isinstance(state, dict) else None
        if (
            isinstance(state, dict)
            and state.get("Type") == "Task"
            and isinstance(resource, str)
            and resource
            and not resource.startswith(("arn:", "headrace:"))
        ):
            out.append(
                (
                    "INVALID_RESOURCE",
                    f"state {name!r}: Resource {resource!r} is not a valid resource ARN",
                    path + ".Resource",
                )
            )
    return out


def _warnings(data: dict) -> list[tuple[str, str, str]]:
    out = []
    top = data.get("QueryLanguage", "JSONPath")
    for name, state, path in _states(data, "$"):
        if not isinstance(state, dict) or state.get("QueryLanguage", top) != "JSONPath":
            continue
        for field in _TEMPLATES:
            if field in state:
                out += _no_dollar(name, state[field], asl.field_path(path, field))
        if (
            state.get("Type") == "Pass"
            and "Result" in state
            and any(k.endswith(".$") for k in _keys(state["Result"]))
        ):
            out.append(
                (
                    "PASS_RESULT_IS_STATIC",
                    f"state {name!r}: a Pass state's Result is taken as written; a key "
                    "ending in .$ is not evaluated (use Parameters)",
                    path + ".Result",
                )
            )
        for field in _LITERAL_FIELDS:
            value = state.get(field)
            if isinstance(value, str) and _LOOKS_LIKE_PATH.match(value):
                out.append(
                    (
                        "NO_PATH",
                        f"state {name!r}: {field} looks like a path but is taken as written; "
                        f"use {field}Path",
                        asl.field_path(path, field),
                    )
                )
    return out


def _no_dollar(name: str, value: Any, path: str) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            where = asl.field_path(path, key)
            if (
                isinstance(key, str)
                and not key.endswith(".$")
                and isinstance(inner, str)
                and (_LOOKS_LIKE_PATH.match(inner) or _INTRINSIC.match(inner))
            ):
                out.append(
                    (
                        "NO_DOLLAR",
                        f"state {name!r}: {key!r} looks like a JSONPath or intrinsic function "
                        f"but is taken as written; name the field {key + '.$'!r}",
                        where,
                    )
                )
            else:
                out += _no_dollar(name, inner, where)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += _no_dollar(name, inner, f"{path}[{i}]")
    return out


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)
