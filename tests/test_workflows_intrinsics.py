"""Intrinsic functions, using the inputs and outputs from AWS's "Intrinsic functions" page."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.workflows.errors import StatesError
from headrace.workflows.intrinsics import evaluate_intrinsic, is_intrinsic, parse_intrinsic
from headrace.workflows.paths import PathError

ARRAY = {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9]}

DOCUMENTED = [
    # (input, expression, documented output)
    ({"Id": 123456}, "States.Array($.Id)", [123456]),
    (
        {**ARRAY, "chunkSize": 4},
        "States.ArrayPartition($.inputArray,4)",
        [[1, 2, 3, 4], [5, 6, 7, 8], [9]],
    ),
    ({**ARRAY, "lookingFor": 5}, "States.ArrayContains($.inputArray, $.lookingFor)", True),
    ({}, "States.ArrayRange(1, 9, 2)", [1, 3, 5, 7, 9]),
    ({**ARRAY, "index": 5}, "States.ArrayGetItem($.inputArray, $.index)", 6),
    (ARRAY, "States.ArrayLength($.inputArray)", 9),
    ({"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]}, "States.ArrayUnique($.inputArray)", [1, 2, 3, 4]),
    ({"input": "Data to encode"}, "States.Base64Encode($.input)", "RGF0YSB0byBlbmNvZGU="),
    ({"base64": "RGF0YSB0byBlbmNvZGU="}, "States.Base64Decode($.base64)", "Data to encode"),
    (
        {"Data": "input data", "Algorithm": "SHA-1"},
        "States.Hash($.Data, $.Algorithm)",
        "aaff4a450a104cd177d28d18d74485e8cae074b7",
    ),
    (
        {"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}},
        "States.JsonMerge($.json1, $.json2, false)",
        {"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3},
    ),
    (
        {"escapedJsonString": '{"foo": "bar"}'},
        "States.StringToJson($.escapedJsonString)",
        {"foo": "bar"},
    ),
    ({"unescapedJson": {"foo": "bar"}}, "States.JsonToString($.unescapedJson)", '{"foo":"bar"}'),
    ({"value1": 111, "step": -1}, "States.MathAdd($.value1, $.step)", 110),
    (
        {"inputString": "1,2,3,4,5", "splitter": ","},
        "States.StringSplit($.inputString, $.splitter)",
        ["1", "2", "3", "4", "5"],
    ),
    (
        {"inputString": "This.is+a,test=string", "splitter": ".+,="},
        "States.StringSplit($.inputString, $.splitter)",
        ["This", "is", "a", "test", "string"],
    ),
    (
        {"name": "Arnav"},
        "States.Format('Hello, my name is {}.', $.name)",
        "Hello, my name is Arnav.",
    ),
    (
        {"template": "Hello, my name is {}.", "name": "Arnav"},
        "States.Format($.template, $.name)",
        "Hello, my name is Arnav.",
    ),
    (
        {"ImageRecipe": {"Arn": "arn:aws:imagebuilder:us-east-1:123:image-recipe/my.recipe/1.0.0"}},
        # AWS's nine-call example has '{}.{}.{}' with two arguments, which can only fail; the
        # two-placeholder form is what it means.
        "States.Format('{}.{}', States.ArrayGetItem(States.StringSplit(States.ArrayGetItem("
        "States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), States.ArrayGetItem("
        "States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), "
        "'.'), 1))",
        "1.0",
    ),
]


@pytest.mark.parametrize(("data", "expr", "expected"), DOCUMENTED)
def test_documented_examples(data: Any, expr: str, expected: Any) -> None:
    assert is_intrinsic(expr)
    parse_intrinsic(expr)
    assert evaluate_intrinsic(expr, data) == expected


def test_nested_example_uses_first_two_version_parts() -> None:
    data = {"ImageRecipe": {"Arn": "arn:x/y/2.5.7"}}
    expr = (
        "States.Format('{}.{}', States.ArrayGetItem(States.StringSplit(States.ArrayGetItem("
        "States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), 'x')"
    )
    assert evaluate_intrinsic(expr, data) == "2.x"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (r"States.Format('It\'s {}', 'ok')", "It's ok"),
        (r"States.Format('\{\} {}', 1)", "{} 1"),
        (r"States.Format('back\\slash {}', true)", "back\\slash true"),
        ("States.Format('{} {} {}', null, 1.5, -3)", "null 1.5 -3"),
        ("States.Format('no placeholders')", "no placeholders"),
        ("States.Format('{}', $$.Execution.Id)", "exec-1"),
        ("States.Array()", []),
        ("States.Array('a', 1, true, null, $.obj)", ["a", 1, True, None, {"k": "v"}]),
        ("States.Hash('input data', 'MD5')", "812f45842bc6d66ee14572ce20db8e86"),
        ("States.ArrayRange(5, 1, -2)", [5, 3, 1]),
        ("States.ArrayRange(1, 0, 1)", []),
        ("States.ArrayContains(States.Array(1, 2), 3)", False),
        ("States.ArrayUnique(States.Array(1, 1.0, true, 'a', 'a'))", [1, True, "a"]),
        ("States.MathAdd(2.0, 3)", 5),
        ("States.StringSplit('a,,b', ',')", ["a", "b"]),
        ("States.JsonToString(States.Array(1, 'a', null))", '[1,"a",null]'),
        ("  States.ArrayLength( States.Array( 1 , 2 ) )  ", 2),
    ],
)
def test_more_cases(expr: str, expected: Any) -> None:
    data = {"obj": {"k": "v"}}
    assert evaluate_intrinsic(expr, data, {"Execution": {"Id": "exec-1"}}) == expected


def test_uuid_and_random_are_injectable() -> None:
    assert evaluate_intrinsic("States.UUID()", {}, uuid_fn=lambda: "fixed") == "fixed"
    value = evaluate_intrinsic("States.UUID()", {})
    assert uuid.UUID(value).version == 4
    calls: list = []

    def rand(start: int, end: int, seed: int | None) -> int:
        calls.append((start, end, seed))
        return start

    assert (
        evaluate_intrinsic(
            "States.MathRandom($.start, $.end)", {"start": 1, "end": 999}, random_fn=rand
        )
        == 1
    )
    assert evaluate_intrinsic("States.MathRandom(1, 999, 7)", {}, random_fn=rand) == 1
    assert calls == [(1, 999, None), (1, 999, 7)]


def test_math_random_default_in_range_and_seeded_is_repeatable() -> None:
    for _ in range(50):
        assert 1 <= evaluate_intrinsic("States.MathRandom(1, 3)", {}) < 3
    first = evaluate_intrinsic("States.MathRandom(0, 1000000, 42)", {})
    assert evaluate_intrinsic("States.MathRandom(0, 1000000, 42)", {}) == first


@pytest.mark.parametrize(
    "expr",
    [
        "States.JsonMerge($.a, $.b, true)",  # AWS supports only shallow merging
        "States.JsonMerge($.a, 'x', false)",
        "States.ArrayPartition(States.Array(1), 0)",
        "States.ArrayPartition('x', 1)",
        "States.ArrayGetItem(States.Array(1), 1)",
        "States.ArrayGetItem(States.Array(1), 'a')",
        "States.ArrayRange(1, 2000, 1)",  # more than 1000 items
        "States.ArrayRange(1, 2, 0)",
        "States.ArrayRange(1, 2.5, 1)",
        "States.Hash('x', 'SHA-999')",
        "States.Hash(1, 'MD5')",
        "States.Base64Decode('not base64!')",
        "States.StringToJson('{oops')",
        "States.Format('{} {}', 1)",
        "States.Format('{}', 1, 2)",
        "States.MathAdd(1, true)",
        "States.MathRandom(5, 5)",
        "States.StringSplit(1, ',')",
        "States.ArrayLength('abc')",
    ],
)
def test_intrinsic_failures(expr: str) -> None:
    with pytest.raises(StatesError) as info:
        evaluate_intrinsic(expr, {"a": {"x": 1}, "b": {"y": 2}})
    assert info.value.error == "States.IntrinsicFailure"
    assert info.value.cause


def test_size_limits() -> None:
    big = "a" * 10_001
    for fn in ("Base64Encode", "Hash"):
        extra = ", 'MD5'" if fn == "Hash" else ""
        with pytest.raises(StatesError):
            evaluate_intrinsic(f"States.{fn}($.s{extra})", {"s": big})
    assert evaluate_intrinsic("States.Base64Encode($.s)", {"s": "a" * 10_000})


def test_missing_path_argument_is_a_path_error() -> None:
    with pytest.raises(PathError) as info:
        evaluate_intrinsic("States.Array($.missing)", {})
    assert "$.missing" in info.value.cause


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("States.Nope(1)", "unknown intrinsic function States.Nope"),
        ("States.Array(1", "expected ',' or ')'"),
        ("States.Format('abc)", "unterminated"),
        (r"States.Format('\n')", "escaped"),
        ("States.UUID(1)", "takes 0 arguments"),
        ("States.ArrayRange(1, 2)", "takes 3 arguments"),
        ("States.MathRandom(1)", "takes 2-3 arguments"),
        ("States.Format()", "at least 1"),
        ("States.Array(foo)", "expected a string"),
        ("States.Array($.a[)", "bad path"),
        ("States.Array(1) extra", "unexpected text"),
        ("Other.Fn()", "expected an intrinsic function name"),
        ("States.Array(" * 11 + ")" * 11, "nested"),
    ],
)
def test_parse_errors_have_positions(expr: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="position") as info:
        parse_intrinsic(expr)
    assert fragment in str(info.value)
    with pytest.raises(StatesError):
        evaluate_intrinsic(expr, {"a": 1})


def test_ten_nested_calls_are_allowed() -> None:
    expr = "States.Array(" * 10 + ")" * 10
    assert evaluate_intrinsic(expr, {}) == [[[[[[[[[[]]]]]]]]]]


def test_is_intrinsic() -> None:
    assert is_intrinsic("States.Format('x')")
    assert not is_intrinsic("$.States")
    assert not is_intrinsic("States.Format")
    assert not is_intrinsic(3)


# ------------------------------------------------------------------------- property tests

json_leaf = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8)
json_doc = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(json_leaf, max_size=30), st.integers(1, 12))
def test_array_partition_concatenates_back(items: list, size: int) -> None:
    parts = evaluate_intrinsic("States.ArrayPartition($.a, $.n)", {"a": items, "n": size})
    assert [x for part in parts for x in part] == items
    assert all(len(p) == size for p in parts[:-1])
    assert all(1 <= len(p) <= size for p in parts)


@settings(max_examples=100, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-7, 7).filter(bool))
def test_array_range_matches_python_range(start: int, end: int, step: int) -> None:
    out = evaluate_intrinsic("States.ArrayRange($.s, $.e, $.t)", {"s": start, "e": end, "t": step})
    stop = end + (1 if step > 0 else -1)
    assert out == list(range(start, stop, step))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-5, 5) | st.sampled_from(["a", "b"]), max_size=20))
def test_array_unique_keeps_first_occurrences(items: list) -> None:
    out = evaluate_intrinsic("States.ArrayUnique($.a)", {"a": items})
    assert out == list(dict.fromkeys(items))
    assert evaluate_intrinsic("States.ArrayLength(States.ArrayUnique($.a))", {"a": items}) == len(
        set(items)
    )


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_base64_round_trip(text: str) -> None:
    encoded = evaluate_intrinsic("States.Base64Encode($.t)", {"t": text})
    assert encoded == base64.b64encode(text.encode()).decode()
    assert evaluate_intrinsic("States.Base64Decode(States.Base64Encode($.t))", {"t": text}) == text


@settings(max_examples=100, deadline=None)
@given(json_doc)
def test_json_to_string_then_back_is_identity(doc: Any) -> None:
    text = evaluate_intrinsic("States.JsonToString($.d)", {"d": doc})
    assert json.loads(text) == doc
    assert evaluate_intrinsic("States.StringToJson(States.JsonToString($.d))", {"d": doc}) == doc


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="States.Format()'$,{}\\ 1a[]", max_size=40))
def test_parse_intrinsic_raises_only_value_error(text: str) -> None:
    try:
        call = parse_intrinsic(text)
    except ValueError:
        return
    with contextlib.suppress(StatesError):
        evaluate_intrinsic(call, {"a": 1})
