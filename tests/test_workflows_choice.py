"""Choice rules, operator by operator, with AWS's "Choice workflow state" examples."""

from __future__ import annotations

from typing import Any

import pytest

from headrace.workflows.choice import (
    COMPARISON_OPS,
    choose,
    evaluate_rule,
    is_timestamp,
    parse_timestamp,
    string_matches,
)
from headrace.workflows.errors import StatesError

# The Choice example from AWS's documentation
CHOICE_STATE = {
    "Type": "Choice",
    "Choices": [
        {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
        {"Variable": "$.value", "NumericEquals": 0, "Next": "ValueIsZero"},
        {
            "And": [
                {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                {"Variable": "$.value", "NumericLessThan": 30},
            ],
            "Next": "ValueInTwenties",
        },
        {"Variable": "$.value", "NumericLessThan": 0, "Next": "LessThanZero"},
    ],
    "Default": "DefaultState",
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "Public", "value": 0}, "Public"),
        ({"type": "Private", "value": 0}, "ValueIsZero"),
        ({"type": "Private", "value": 25}, "ValueInTwenties"),
        ({"type": "Private", "value": 30}, "DefaultState"),
        ({"type": "Private", "value": -5}, "LessThanZero"),
    ],
)
def test_documented_choice_example(data: dict, expected: str) -> None:
    assert choose(CHOICE_STATE, data) == expected


def test_no_choice_matched() -> None:
    state = {k: v for k, v in CHOICE_STATE.items() if k != "Default"}
    with pytest.raises(StatesError) as info:
        choose(state, {"type": "Private", "value": 30})
    assert info.value.error == "States.NoChoiceMatched"


def test_or_and_nested() -> None:
    rule = {
        "Or": [
            {"Variable": "$.a", "BooleanEquals": True},
            {
                "And": [
                    {"Variable": "$.b", "IsPresent": True},
                    {"Not": {"Variable": "$.b", "IsNull": True}},
                ]
            },
        ]
    }
    assert evaluate_rule(rule, {"a": True})
    assert evaluate_rule(rule, {"a": False, "b": 1})
    assert not evaluate_rule(rule, {"a": False, "b": None})
    assert not evaluate_rule(rule, {"a": False})


DATA = {
    "s": "banana",
    "n": 10,
    "f": 2.5,
    "b": True,
    "null": None,
    "t": "2016-08-18T17:33:00Z",
    "t_frac": "2016-08-18T17:33:00.5Z",
    "t_offset": "2016-08-18T18:33:00+01:00",
    "other_s": "banana",
    "other_n": 10.0,
    "other_b": True,
    "other_t": "2016-08-18T17:33:00Z",
    "obj": {"x": 1},
}


OPERATOR_CASES = [
    ("StringEquals", "$.s", "banana", True),
    ("StringEquals", "$.s", "Banana", False),
    ("StringEquals", "$.n", "10", False),  # type mismatch is false
    ("StringLessThan", "$.s", "cherry", True),
    ("StringLessThan", "$.s", "apple", False),
    ("StringGreaterThan", "$.s", "apple", True),
    ("StringLessThanEquals", "$.s", "banana", True),
    ("StringGreaterThanEquals", "$.s", "banana", True),
    ("StringGreaterThanEquals", "$.s", "c", False),
    ("NumericEquals", "$.n", 10, True),
    ("NumericEquals", "$.n", 10.0, True),
    ("NumericEquals", "$.s", 10, False),
    ("NumericEquals", "$.b", 1, False),  # booleans are not numbers
    ("NumericLessThan", "$.f", 3, True),
    ("NumericGreaterThan", "$.f", 3, False),
    ("NumericLessThanEquals", "$.n", 10, True),
    ("NumericGreaterThanEquals", "$.n", 11, False),
    ("BooleanEquals", "$.b", True, True),
    ("BooleanEquals", "$.b", False, False),
    ("BooleanEquals", "$.n", True, False),
    ("TimestampEquals", "$.t", "2016-08-18T17:33:00Z", True),
    ("TimestampEquals", "$.t_offset", "2016-08-18T17:33:00Z", True),  # same instant
    ("TimestampEquals", "$.s", "2016-08-18T17:33:00Z", False),
    ("TimestampLessThan", "$.t", "2016-08-18T17:33:00.5Z", True),
    ("TimestampGreaterThan", "$.t_frac", "2016-08-18T17:33:00Z", True),
    ("TimestampLessThanEquals", "$.t", "2016-08-18T17:33:00Z", True),
    ("TimestampGreaterThanEquals", "$.t", "2017-01-01T00:00:00Z", False),
    ("StringEqualsPath", "$.s", "$.other_s", True),
    ("StringLessThanPath", "$.s", "$.other_s", False),
    ("StringGreaterThanPath", "$.s", "$.other_s", False),
    ("StringLessThanEqualsPath", "$.s", "$.other_s", True),
    ("StringGreaterThanEqualsPath", "$.s", "$.other_s", True),
    ("NumericEqualsPath", "$.n", "$.other_n", True),
    ("NumericLessThanPath", "$.f", "$.n", True),
    ("NumericGreaterThanPath", "$.f", "$.n", False),
    ("NumericLessThanEqualsPath", "$.n", "$.other_n", True),
    ("NumericGreaterThanEqualsPath", "$.f", "$.n", False),
    ("BooleanEqualsPath", "$.b", "$.other_b", True),
    ("TimestampEqualsPath", "$.t", "$.other_t", True),
    ("TimestampLessThanPath", "$.t", "$.t_frac", True),
    ("TimestampGreaterThanPath", "$.t", "$.t_frac", False),
    ("TimestampLessThanEqualsPath", "$.t", "$.t_offset", True),
    ("TimestampGreaterThanEqualsPath", "$.t_frac", "$.t", True),
    ("IsNull", "$.null", True, True),
    ("IsNull", "$.n", True, False),
    ("IsNull", "$.n", False, True),
    ("IsPresent", "$.n", True, True),
    ("IsPresent", "$.missing", True, False),
    ("IsPresent", "$.missing", False, True),
    ("IsPresent", "$.obj.x", True, True),
    ("IsNumeric", "$.f", True, True),
    ("IsNumeric", "$.b", True, False),
    ("IsNumeric", "$.s", False, True),
    ("IsString", "$.s", True, True),
    ("IsString", "$.null", True, False),
    ("IsBoolean", "$.b", True, True),
    ("IsBoolean", "$.n", True, False),
    ("IsTimestamp", "$.t", True, True),
    ("IsTimestamp", "$.s", True, False),
    ("IsTimestamp", "$.s", False, True),
    ("StringMatches", "$.s", "ban*", True),
    ("StringMatches", "$.s", "*nana", True),
    ("StringMatches", "$.s", "b*n*a", True),
    ("StringMatches", "$.s", "apple*", False),
    ("StringMatches", "$.n", "*", False),
]


@pytest.mark.parametrize(("op", "var", "operand", "expected"), OPERATOR_CASES)
def test_operator(op: str, var: str, operand: Any, expected: bool) -> None:
    assert evaluate_rule({"Variable": var, op: operand, "Next": "X"}, DATA) is expected


def test_every_operator_is_covered() -> None:
    covered = {case[0] for case in OPERATOR_CASES}
    assert covered == set(COMPARISON_OPS)


def test_string_matches_examples_from_docs() -> None:
    # AWS: "log-*.txt" matches "log-2023.txt"; escape a literal star as \\* in JSON
    assert string_matches("log-2023.txt", "log-*.txt")
    assert string_matches("test.log", "*.log")
    assert not string_matches("test.log.bak", "*.log")
    assert string_matches("a*b", r"a\*b")
    assert not string_matches("axb", r"a\*b")
    assert string_matches("a\\b", r"a\\b")
    assert string_matches("", "*")
    assert string_matches("x.y+z?", "x.y+z?")  # regex characters are literal


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2016-08-18T17:33:00Z", True),
        ("2016-08-18T17:33:00.123456789Z", True),
        ("2016-08-18T17:33:00-07:00", True),
        ("2016-08-18t17:33:00Z", False),  # lowercase t is rejected
        ("2016-08-18T17:33:00z", False),
        ("2016-08-18 17:33:00Z", False),
        ("2016-08-18T17:33:00", False),  # offset required
        ("2016-02-30T00:00:00Z", False),
        ("2016-08-18", False),
        (20160818, False),
    ],
)
def test_timestamp_profile(text: Any, ok: bool) -> None:
    assert is_timestamp(text) is ok


def test_timestamp_fraction_precision() -> None:
    a = parse_timestamp("2016-08-18T17:33:00.000000001Z")
    b = parse_timestamp("2016-08-18T17:33:00Z")
    assert a is not None and b is not None and a > b


def test_missing_variable_is_runtime_error() -> None:
    with pytest.raises(StatesError) as info:
        evaluate_rule({"Variable": "$.missing", "StringEquals": "x"}, {})
    assert info.value.error == "States.Runtime"
    assert "$.missing" in info.value.cause
    with pytest.raises(StatesError):
        evaluate_rule({"Variable": "$.missing", "IsNull": True}, {})
    with pytest.raises(StatesError):
        evaluate_rule({"Variable": "$.s", "StringEqualsPath": "$.missing"}, {"s": "x"})


def test_context_variable() -> None:
    rule = {"Variable": "$$.Execution.Name", "StringMatches": "nightly-*"}
    assert evaluate_rule(rule, {}, {"Execution": {"Name": "nightly-42"}})


def test_malformed_rule_is_runtime_error() -> None:
    with pytest.raises(StatesError):
        evaluate_rule({"Variable": "$.a", "StringEquals": "x", "NumericEquals": 1}, {"a": "x"})
    with pytest.raises(StatesError):
        evaluate_rule({"StringEquals": "x"}, {})
