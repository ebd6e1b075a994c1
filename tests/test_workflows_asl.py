"""Definition loading, validation (every problem at once) and a seeded fuzz test."""

from __future__ import annotations

import copy
import json
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import HeadraceError
from headrace.workflows.asl import (
    DefinitionError,
    Problem,
    StateMachine,
    load_definition,
    parse,
    validate,
)

HELLO = {
    "Comment": "A Hello World example of the Amazon States Language using Pass states",
    "StartAt": "Hello",
    "States": {
        "Hello": {"Type": "Pass", "Result": "Hello", "Next": "World"},
        "World": {"Type": "Pass", "Result": "World", "End": True},
    },
}

# A definition touching every state type and most fields.
FULL = {
    "Comment": "everything",
    "StartAt": "Prepare",
    "TimeoutSeconds": 3600,
    "Version": "1.0",
    "States": {
        "Prepare": {
            "Type": "Pass",
            "InputPath": "$",
            "Parameters": {"items.$": "$.items", "id.$": "States.UUID()", "static": [1, {"a": 2}]},
            "ResultPath": "$.prepared",
            "OutputPath": "$.prepared",
            "Next": "Fetch",
        },
        "Fetch": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "fetch", "Payload.$": "$"},
            "ResultSelector": {"body.$": "$.Payload"},
            "ResultPath": "$.fetched",
            "TimeoutSeconds": 60,
            "HeartbeatSeconds": 10,
            "Retry": [
                {
                    "ErrorEquals": ["States.Timeout"],
                    "IntervalSeconds": 3,
                    "MaxAttempts": 2,
                    "BackoffRate": 1.5,
                    "MaxDelaySeconds": 30,
                    "JitterStrategy": "FULL",
                },
                {"ErrorEquals": ["States.ALL"]},
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}],
            "Next": "Route",
        },
        "Route": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.fetched.body.count", "NumericGreaterThan": 10, "Next": "Fan"},
                {
                    "And": [
                        {"Variable": "$.fetched", "IsPresent": True},
                        {
                            "Not": {
                                "Variable": "$.fetched.body.when",
                                "TimestampLessThan": "2020-01-01T00:00:00Z",
                            }
                        },
                    ],
                    "Next": "Pause",
                },
                {"Variable": "$.name", "StringMatches": "log-*.txt", "Next": "Both"},
            ],
            "Default": "Done",
        },
        "Pause": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Done"},
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemSelector": {"value.$": "$$.Map.Item.Value"},
            "MaxConcurrency": 4,
            "ToleratedFailurePercentage": 10,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "One",
                "States": {"One": {"Type": "Task", "Resource": "work", "End": True}},
            },
            "ResultPath": "$.mapped",
            "Next": "Done",
        },
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}},
                {"StartAt": "B", "States": {"B": {"Type": "Wait", "Seconds": 0, "End": True}}},
            ],
            "ResultSelector": {"first.$": "$[0]"},
            "Next": "Done",
        },
        "Failed": {
            "Type": "Fail",
            "ErrorPath": "$.error.Error",
            "CausePath": "States.Format('failed: {}', $.error.Cause)",
        },
        "Done": {"Type": "Succeed"},
    },
}

LEGACY_MAP = {
    "StartAt": "M",
    "States": {
        "M": {
            "Type": "Map",
            "Parameters": {"x.$": "$$.Map.Item.Value"},
            "Iterator": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": True}}},
            "End": True,
        }
    },
}

VALID = [HELLO, FULL, LEGACY_MAP]


@pytest.mark.parametrize("definition", VALID)
def test_valid_definitions_have_no_problems(definition: dict) -> None:
    assert validate(definition) == []
    machine = parse(definition)
    assert isinstance(machine, StateMachine)
    assert machine.start_at == definition["StartAt"]
    assert machine.state(machine.start_at) is definition["States"][machine.start_at]


def test_parse_fields_and_unknown_state() -> None:
    machine = parse(json.dumps(FULL))
    assert machine.timeout_seconds == 3600.0
    assert machine.comment == "everything"
    assert machine.raw["StartAt"] == "Prepare"
    with pytest.raises(KeyError):
        machine.state("Nope")


def test_load_from_text_file_and_pathlike(tmp_path: Path) -> None:
    f = tmp_path / "m.asl.json"
    f.write_text(json.dumps(HELLO))
    assert load_definition(f) == HELLO
    assert load_definition(str(f)) == HELLO
    assert load_definition(json.dumps(HELLO)) == HELLO
    assert parse(f).start_at == "Hello"


def test_bad_json_reports_line_and_column() -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition('{\n  "StartAt": "A",\n  "States": {,}\n}')
    problem = info.value.problems[0]
    assert problem.path == "$"
    assert "line 3 column 14" in problem.message
    assert "line 3 column 14" in str(info.value)
    assert validate("{not json")[0].message.startswith("invalid JSON at line 1")


@pytest.mark.parametrize("bad", [[], 5, None, "[1, 2]", "/no/such/file.json", b"{", "a\x00b", ""])
def test_non_object_definitions(bad: Any) -> None:
    problems = validate(bad)
    assert problems and problems[0].path == "$"
    with pytest.raises(DefinitionError):
        parse(bad)


def test_missing_file_is_reported_as_unreadable() -> None:
    problems = validate("/no/such/machine.asl.json")
    assert problems[0].message.startswith("cannot read /no/such/machine.asl.json")


def test_definition_error_lists_every_problem() -> None:
    bad = {"StartAt": "Nope", "States": {"A": {"Type": "Pass"}, "B": {"Type": "Bogus"}}}
    with pytest.raises(DefinitionError) as info:
        parse(bad)
    err = info.value
    assert isinstance(err, HeadraceError)
    messages = [str(p) for p in err.problems]
    assert len(messages) >= 3
    for line in messages:
        assert line in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems


def _machine(states: dict, start: str | None = None, **top: Any) -> dict:
    return {"StartAt": start or next(iter(states)), "States": states, **top}


def _problems(definition: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate(definition)]


def _has(definition: Any, path: str, fragment: str) -> None:
    found = _problems(definition)
    assert any(p == path and fragment in m for p, m in found), found


def test_top_level_shape() -> None:
    _has({"States": {"A": {"Type": "Succeed"}}}, "$", "StartAt is required")
    _has({"StartAt": "A"}, "$", "States is required")
    _has({"StartAt": "A", "States": []}, "$.States", "must be an object")
    _has({"StartAt": 3, "States": {"A": {"Type": "Succeed"}}}, "$.StartAt", "must be a string")
    _has(_machine({"A": {"Type": "Succeed"}}, start="B"), "$.StartAt", "'B'")
    _has(_machine({"A": {"Type": "Succeed"}}, Extra=1), "$.Extra", "unknown top-level field")
    _has(_machine({"A": {"Type": "Succeed"}}, TimeoutSeconds=0), "$.TimeoutSeconds", "positive")
    _has(_machine({"A": {"Type": "Succeed"}}, QueryLanguage="XPath"), "$.QueryLanguage", "JSONata")
    _has({"StartAt": "A", "States": {}}, "$.States", "at least one state")


def test_state_type_and_fields() -> None:
    _has(_machine({"A": {"End": True}}), "$.States.A", "Type is required")
    _has(_machine({"A": {"Type": "Lambda", "End": True}}), "$.States.A.Type", "unknown Type")
    _has(
        _machine({"A": {"Type": "Pass", "End": True, "Resource": "x"}}),
        "$.States.A.Resource",
        "not allowed in a Pass state",
    )
    _has(_machine({"A": {"Type": "Succeed", "Next": "A"}}), "$.States.A.Next", "not allowed")
    _has(
        _machine({"A": {"Type": "Pass", "End": True, "Assign": {"states": 1}}}),
        "$.States.A.Assign.states",
        "reserved",
    )
    _has(_machine({"A": "Pass"}), "$.States.A", "must be an object")
    _has(_machine({"x" * 81: {"Type": "Succeed"}}), "$.States." + "x" * 81, "80 characters")
    _has(_machine({"my state": {"Type": "Pass"}}), '$.States["my state"]', "Next or End")


def test_next_and_end() -> None:
    _has(_machine({"A": {"Type": "Pass"}}), "$.States.A", "Next or End is required")
    _has(_machine({"A": {"Type": "Pass", "Next": "A", "End": True}}), "$.States.A", "not both")
    _has(_machine({"A": {"Type": "Pass", "End": False}}), "$.States.A.End", "must be true")
    _has(_machine({"A": {"Type": "Pass", "Next": "Z"}}), "$.States.A.Next", "'Z' is not a state")
    _has(_machine({"A": {"Type": "Pass", "Next": 3}}), "$.States.A.Next", "state name")


def test_unreachable_states() -> None:
    d = _machine({"A": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}})
    _has(d, "$.States.Orphan", "unreachable")
    # reachable via Catch and Choice Default counts
    d = _machine(
        {
            "A": {
                "Type": "Task",
                "Resource": "r",
                "Next": "C",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Err"}],
            },
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.x", "IsNull": True, "Next": "D"}],
                "Default": "E",
            },
            "D": {"Type": "Succeed"},
            "E": {"Type": "Succeed"},
            "Err": {"Type": "Fail"},
        }
    )
    assert validate(d) == []


def test_choice_rules() -> None:
    def choice(*rules: Any, **extra: Any) -> dict:
        return _machine(
            {"C": {"Type": "Choice", "Choices": list(rules), **extra}, "T": {"Type": "Succeed"}}
        )

    _has(_machine({"C": {"Type": "Choice"}}), "$.States.C", "needs Choices")
    _has(_machine({"C": {"Type": "Choice", "Choices": []}}), "$.States.C.Choices", "non-empty")
    _has(choice({"Variable": "$.x", "StringEquals": "a"}), "$.States.C.Choices[0]", "needs Next")
    _has(choice({"Variable": "$.x", "Next": "T"}), "$.States.C.Choices[0]", "found none")
    _has(
        choice({"Variable": "$.x", "StringEquals": "a", "NumericEquals": 1, "Next": "T"}),
        "$.States.C.Choices[0]",
        "exactly one comparison operator",
    )
    _has(choice({"StringEquals": "a", "Next": "T"}), "$.States.C.Choices[0]", "needs Variable")
    _has(
        choice({"Variable": "x", "IsNull": True, "Next": "T"}),
        "$.States.C.Choices[0].Variable",
        "JSONPath",
    )
    _has(
        choice({"Variable": "$.x", "NumericEquals": "1", "Next": "T"}),
        "$.States.C.Choices[0].NumericEquals",
        "a number",
    )
    _has(
        choice({"Variable": "$.x", "BooleanEquals": 1, "Next": "T"}),
        "$.States.C.Choices[0].BooleanEquals",
        "a boolean",
    )
    _has(
        choice({"Variable": "$.x", "IsPresent": "yes", "Next": "T"}),
        "$.States.C.Choices[0].IsPresent",
        "a boolean",
    )
    _has(
        choice({"Variable": "$.x", "StringEquals": 1, "Next": "T"}),
        "$.States.C.Choices[0].StringEquals",
        "a string",
    )
    _has(
        choice({"Variable": "$.x", "TimestampEquals": "2016-08-18", "Next": "T"}),
        "$.States.C.Choices[0].TimestampEquals",
        "RFC 3339",
    )
    _has(
        choice({"Variable": "$.x", "StringEqualsPath": "nope", "Next": "T"}),
        "$.States.C.Choices[0].StringEqualsPath",
        "JSONPath",
    )
    _has(
        choice({"Variable": "$.x", "StringEquals": "a", "Next": "Z"}),
        "$.States.C.Choices[0].Next",
        "'Z' is not a state",
    )
    _has(choice({"And": [], "Next": "T"}), "$.States.C.Choices[0].And", "non-empty")
    _has(
        choice({"Or": [{"Variable": "$.x", "IsNull": True, "Next": "T"}], "Next": "T"}),
        "$.States.C.Choices[0].Or[0].Next",
        "only top-level",
    )
    _has(
        choice({"Not": {"Variable": "$.x"}, "Next": "T"}), "$.States.C.Choices[0].Not", "found none"
    )
    _has(
        choice({"And": [{"Variable": "$.x", "IsNull": True}], "Or": [], "Next": "T"}),
        "$.States.C.Choices[0]",
        "one of And, Or, Not",
    )
    _has(
        choice({"Variable": "$.x", "IsNull": True, "Next": "T", "Bogus": 1}),
        "$.States.C.Choices[0].Bogus",
        "unknown Choice rule field",
    )
    _has(
        choice({"Variable": "$.x", "IsNull": True, "Next": "T"}, Default="Z"),
        "$.States.C.Default",
        "'Z' is not a state",
    )
    _has(choice("junk"), "$.States.C.Choices[0]", "must be an object")


def test_wait_fields() -> None:
    def wait(**fields: Any) -> dict:
        return _machine({"W": {"Type": "Wait", "End": True, **fields}})

    _has(wait(), "$.States.W", "exactly one of")
    _has(wait(Seconds=1, SecondsPath="$.s"), "$.States.W", "exactly one of")
    _has(wait(Seconds=-1), "$.States.W.Seconds", "at least 0")
    _has(wait(Seconds=1.5), "$.States.W.Seconds", "integer")
    _has(wait(Timestamp="tomorrow"), "$.States.W.Timestamp", "RFC 3339")
    _has(wait(SecondsPath="$.a[*]"), "$.States.W.SecondsPath", "reference path")
    assert validate(wait(Timestamp="2016-03-14T01:59:00Z")) == []
    assert validate(wait(TimestampPath="$$.Execution.StartTime")) == []


def test_fail_fields() -> None:
    def fail(**fields: Any) -> dict:
        return _machine({"F": {"Type": "Fail", **fields}})

    assert validate(fail(Error="E", Cause="C")) == []
    _has(fail(Error=1), "$.States.F.Error", "must be a string")
    _has(fail(Error="E", ErrorPath="$.e"), "$.States.F", "cannot be used together")
    _has(fail(CausePath="$.a[*]"), "$.States.F.CausePath", "reference path or an intrinsic")
    _has(fail(CausePath="States.Nope()"), "$.States.F.CausePath", "unknown intrinsic")
    _has(fail(End=True), "$.States.F.End", "not allowed in a Fail state")


def test_task_fields() -> None:
    def task(**fields: Any) -> dict:
        return _machine({"T": {"Type": "Task", "End": True, **fields}})

    _has(task(), "$.States.T", "needs Resource")
    _has(task(Resource=""), "$.States.T.Resource", "non-empty string")
    _has(task(Resource=["x"]), "$.States.T.Resource", "non-empty string")
    _has(task(Resource="r", TimeoutSeconds=0), "$.States.T.TimeoutSeconds", "positive")
    _has(task(Resource="r", HeartbeatSeconds="5"), "$.States.T.HeartbeatSeconds", "positive")
    _has(
        task(Resource="r", TimeoutSeconds=5, HeartbeatSeconds=5),
        "$.States.T.HeartbeatSeconds",
        "smaller than TimeoutSeconds",
    )
    _has(
        task(Resource="r", TimeoutSeconds=5, TimeoutSecondsPath="$.t"),
        "$.States.T",
        "cannot be used together",
    )
    _has(
        task(Resource="r", TimeoutSecondsPath="$..t"),
        "$.States.T.TimeoutSecondsPath",
        "reference path",
    )


def test_paths_and_templates() -> None:
    def task(**fields: Any) -> dict:
        return _machine({"T": {"Type": "Task", "Resource": "r", "End": True, **fields}})

    assert validate(task(InputPath=None, OutputPath=None, ResultPath=None)) == []
    assert validate(task(InputPath="$.items[?(@.ok == true)]")) == []
    _has(task(InputPath="items"), "$.States.T.InputPath", "JSONPath or null")
    _has(task(OutputPath=5), "$.States.T.OutputPath", "JSONPath or null")
    _has(task(ResultPath="$.a[*]"), "$.States.T.ResultPath", "reference path")
    _has(task(ResultPath="$$.a"), "$.States.T.ResultPath", "reference path")
    _has(task(Parameters=[1]), "$.States.T.Parameters", "must be an object")
    _has(task(Parameters={"a": {"b.$": 5}}), '$.States.T.Parameters.a["b.$"]', "not a number")
    _has(
        task(Parameters={"a.$": "nope"}),
        '$.States.T.Parameters["a.$"]',
        "neither a JSONPath nor an intrinsic",
    )
    _has(
        task(Parameters={"l": [{"a.$": "States.Format('{}'"}]}),
        '$.States.T.Parameters.l[0]["a.$"]',
        "position",
    )
    _has(
        task(ResultSelector={"a.$": "States.Bogus(1)"}),
        '$.States.T.ResultSelector["a.$"]',
        "unknown intrinsic function States.Bogus",
    )
    _has(
        task(Parameters={"a.$": "States.ArrayRange(1, 2)"}),
        '$.States.T.Parameters["a.$"]',
        "takes 3 arguments",
    )


def test_retry_and_catch() -> None:
    def task(**fields: Any) -> dict:
        return _machine(
            {
                "T": {"Type": "Task", "Resource": "r", "End": True, **fields},
                "R": {"Type": "Succeed"},
            }
        )

    _has(task(Retry={}), "$.States.T.Retry", "must be an array")
    _has(task(Retry=[1]), "$.States.T.Retry[0]", "must be an object")
    _has(task(Retry=[{}]), "$.States.T.Retry[0]", "ErrorEquals is required")
    _has(task(Retry=[{"ErrorEquals": []}]), "$.States.T.Retry[0].ErrorEquals", "non-empty")
    _has(task(Retry=[{"ErrorEquals": [""]}]), "$.States.T.Retry[0].ErrorEquals[0]", "non-empty")
    _has(
        task(Retry=[{"ErrorEquals": ["States.All"]}]),
        "$.States.T.Retry[0].ErrorEquals[0]",
        "not a predefined",
    )
    _has(
        task(Retry=[{"ErrorEquals": ["States.ALL", "X"]}]),
        "$.States.T.Retry[0].ErrorEquals",
        "alone",
    )
    _has(
        task(Retry=[{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]),
        "$.States.T.Retry[0].ErrorEquals",
        "last",
    )
    for field, value, fragment in [
        ("IntervalSeconds", 0, "at least 1"),
        ("MaxAttempts", -1, "non-negative"),
        ("BackoffRate", 0.5, "at least 1.0"),
        ("MaxDelaySeconds", 0, "positive"),
        ("JitterStrategy", "HALF", "FULL or NONE"),
        ("Bogus", 1, "not allowed in a retrier"),
    ]:
        _has(
            task(Retry=[{"ErrorEquals": ["X"], field: value}]),
            f"$.States.T.Retry[0].{field}",
            fragment,
        )
    ok = task(Retry=[{"ErrorEquals": ["X"], "MaxAttempts": 0}])
    assert [p.path for p in validate(ok)] == ["$.States.R"]  # only R is unreachable
    _has(task(Catch=[{"ErrorEquals": ["X"]}]), "$.States.T.Catch[0]", "needs Next")
    _has(
        task(Catch=[{"ErrorEquals": ["X"], "Next": "Z"}]),
        "$.States.T.Catch[0].Next",
        "'Z' is not a state",
    )
    _has(
        task(Catch=[{"ErrorEquals": ["X"], "Next": "R", "ResultPath": "$[*]"}]),
        "$.States.T.Catch[0].ResultPath",
        "reference path",
    )
    _has(
        task(Catch=[{"ErrorEquals": ["X"], "Next": "R", "Foo": 1}]),
        "$.States.T.Catch[0].Foo",
        "not allowed in a catcher",
    )
    _has(
        _machine({"P": {"Type": "Pass", "End": True, "Retry": []}}),
        "$.States.P.Retry",
        "not allowed in a Pass state",
    )


def test_parallel_branches_are_their_own_scope() -> None:
    d = _machine(
        {
            "P": {
                "Type": "Parallel",
                "Next": "Done",
                "Branches": [
                    {"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "Done"}}},
                    {"StartAt": "Missing", "States": {"Y": {"Type": "Succeed"}}},
                    "junk",
                ],
            },
            "Done": {"Type": "Succeed"},
        }
    )
    _has(d, "$.States.P.Branches[0].States.X.Next", "'Done' is not a state")
    _has(d, "$.States.P.Branches[1].StartAt", "'Missing'")
    _has(d, "$.States.P.Branches[2]", "must be an object")
    _has(
        _machine({"P": {"Type": "Parallel", "End": True, "Branches": []}}),
        "$.States.P.Branches",
        "non-empty",
    )
    _has(_machine({"P": {"Type": "Parallel", "End": True}}), "$.States.P", "needs Branches")


def test_map_fields() -> None:
    proc = {"StartAt": "I", "States": {"I": {"Type": "Succeed"}}}

    def map_state(**fields: Any) -> dict:
        return _machine({"M": {"Type": "Map", "End": True, **fields}})

    assert validate(map_state(ItemProcessor=proc)) == []
    _has(map_state(), "$.States.M", "needs ItemProcessor")
    _has(map_state(ItemProcessor=proc, Iterator=proc), "$.States.M", "not both")
    _has(
        map_state(ItemProcessor={"StartAt": "I", "States": {}}),
        "$.States.M.ItemProcessor.States",
        "at least one",
    )
    _has(
        map_state(ItemProcessor={**proc, "ProcessorConfig": {"Mode": "FAST"}}),
        "$.States.M.ItemProcessor.ProcessorConfig.Mode",
        "INLINE or DISTRIBUTED",
    )
    _has(
        map_state(ItemProcessor=proc, ItemsPath="$.a[*]"), "$.States.M.ItemsPath", "reference path"
    )
    _has(
        map_state(ItemProcessor=proc, MaxConcurrency=-1), "$.States.M.MaxConcurrency", "at least 0"
    )
    _has(
        map_state(ItemProcessor=proc, ToleratedFailurePercentage=101),
        "$.States.M.ToleratedFailurePercentage",
        "0 to 100",
    )
    _has(
        map_state(ItemProcessor=proc, ToleratedFailureCount=-2),
        "$.States.M.ToleratedFailureCount",
        "at least 0",
    )
    _has(
        map_state(ItemProcessor=proc, ItemSelector={}, Parameters={}),
        "$.States.M",
        "cannot be used together",
    )
    _has(
        map_state(ItemProcessor=proc, ItemReader={"ReaderConfig": {}}),
        "$.States.M.ItemReader",
        "Resource",
    )
    _has(
        map_state(ItemProcessor=proc, ItemBatcher={"MaxItemsPerBatch": 0}),
        "$.States.M.ItemBatcher.MaxItemsPerBatch",
        "positive",
    )
    _has(
        map_state(ItemProcessor=proc, ResultWriter=[]),
        "$.States.M.ResultWriter",
        "must be an object",
    )
    _has(
        map_state(Iterator={"StartAt": "I", "States": {"I": {"Type": "Pass"}}}),
        "$.States.M.Iterator.States.I",
        "Next or End",
    )


def test_every_problem_reported_at_once() -> None:
    bad = copy.deepcopy(FULL)
    bad["States"]["Fetch"]["Next"] = "Nowhere"
    bad["States"]["Pause"]["Seconds"] = 5
    bad["States"]["Fan"]["MaxConcurrency"] = -1
    bad["States"]["Failed"]["Bogus"] = True
    paths = {p.path for p in validate(bad)}
    assert {
        "$.States.Fetch.Next",
        "$.States.Pause",
        "$.States.Fan.MaxConcurrency",
        "$.States.Failed.Bogus",
    } <= paths


# ----------------------------------------------------------------------------------- fuzzing

_GARBAGE: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "x",
    "$",
    "$.[",
    [],
    [1],
    {},
    {"a": 1},
    "States.Format(",
    "Nope",
    10**12,
]


def _garbage(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_GARBAGE))  # fresh copies: shared ones could form cycles


def _nodes(doc: Any, parent: Any = None, key: Any = None) -> list[tuple[Any, Any, Any]]:
    out = [(parent, key, doc)]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_nodes(v, doc, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_nodes(v, doc, i))
    return out


def _mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 4)):
        nodes = [n for n in _nodes(doc) if n[0] is not None]
        if not nodes:
            break
        parent, key, value = rng.choice(nodes)
        action = rng.choice(["delete", "retype", "rename", "garbage", "insert"])
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "retype":
            parent[key] = _garbage(rng)
        elif action == "rename" and isinstance(value, str):
            parent[key] = value + rng.choice(["X", "", " "]) if rng.random() < 0.7 else "Missing"
        elif action == "insert" and isinstance(value, dict):
            value[
                rng.choice(
                    ["Bogus", "Next", "End", "Type", "Retry", "Catch", "Choices", "Parameters"]
                )
            ] = _garbage(rng)
        else:
            parent[key] = _garbage(rng)
    return doc


def test_fuzz_validate_never_raises() -> None:
    rng = random.Random(20240601)
    seen_invalid = 0
    for i in range(100):
        base = VALID[i % len(VALID)]
        if i % 10 == 9:
            text = json.dumps(base)
            candidate: Any = text[: rng.randint(0, len(text) - 1)]  # truncated JSON
        elif i % 10 == 8:
            candidate = json.dumps(_mutate(base, rng))
        else:
            candidate = _mutate(base, rng)
        problems = validate(candidate)
        assert isinstance(problems, list)
        assert all(isinstance(p, Problem) for p in problems)
        assert not any("internal validation error" in p.message for p in problems), problems
        seen_invalid += bool(problems)
        try:
            machine = parse(candidate)
        except DefinitionError as exc:
            assert exc.problems
        else:
            assert not problems
            assert machine.start_at in machine.states
    assert seen_invalid >= 50


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.sampled_from(["$", "$.a", "Pass", "Task", "Choice", "Map", "Parallel", "A", "B"]),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "StartAt",
                    "States",
                    "Type",
                    "Next",
                    "End",
                    "A",
                    "B",
                    "Choices",
                    "Variable",
                    "Branches",
                    "ItemProcessor",
                    "Retry",
                    "Catch",
                    "ErrorEquals",
                    "Parameters",
                    "x.$",
                ]
            ),
            kids,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(_json)
def test_validate_any_json_never_raises(doc: Any) -> None:
    problems = validate(doc)
    assert not any("internal validation error" in p.message for p in problems), problems


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=30))
def test_validate_any_text_never_raises(text: Any) -> None:
    assert isinstance(validate(text), list)
