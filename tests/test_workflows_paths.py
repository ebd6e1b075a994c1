"""JSONPath evaluation and ResultPath semantics."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.workflows.paths import (
    PathError,
    PathSyntaxError,
    evaluate_path,
    is_reference_path,
    parse_path,
    path_exists,
    set_result_path,
)

# The example from AWS "Paths": a reference path addressing each field.
DOC = {
    "foo": 123,
    "bar": ["a", "b", "c"],
    "car": {"cdr": True},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.foo", 123),
        ("$.bar", ["a", "b", "c"]),
        ("$.car.cdr", True),
        ("$", DOC),
        ("$['foo']", 123),
        ('$["car"]["cdr"]', True),
        ("$.bar[0]", "a"),
        ("$.bar[-1]", "c"),
    ],
)
def test_reference_paths(path: str, expected: Any) -> None:
    assert evaluate_path(path, DOC) == expected
    assert is_reference_path(path)


# Jayway-style examples like those AWS shows for InputPath/Map/ItemsPath with full JsonPath
STORE = {
    "store": {
        "book": [
            {"category": "reference", "author": "Nigel Rees", "price": 8.95},
            {"category": "fiction", "author": "Evelyn Waugh", "price": 12.99},
            {"category": "fiction", "author": "Herman Melville", "isbn": "0-553", "price": 8.99},
            {"category": "fiction", "author": "J. R. R. Tolkien", "isbn": "0-395", "price": 22.99},
        ],
        "bicycle": {"color": "red", "price": 19.95},
    }
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "$.store.book[*].author",
            ["Nigel Rees", "Evelyn Waugh", "Herman Melville", "J. R. R. Tolkien"],
        ),
        ("$..author", ["Nigel Rees", "Evelyn Waugh", "Herman Melville", "J. R. R. Tolkien"]),
        ("$.store.*", [STORE["store"]["book"], STORE["store"]["bicycle"]]),
        ("$..price", [8.95, 12.99, 8.99, 22.99, 19.95]),
        ("$.store.book[0,1].author", ["Nigel Rees", "Evelyn Waugh"]),
        ("$.store.book[:2].price", [8.95, 12.99]),
        ("$.store.book[2:].price", [8.99, 22.99]),
        ("$.store.book[-1:].author", ["J. R. R. Tolkien"]),
        ("$.store.book[::2].price", [8.95, 8.99]),
        ("$.store.book[?(@.isbn)].isbn", ["0-553", "0-395"]),
        ("$.store.book[?(@.price < 10)].price", [8.95, 8.99]),
        ("$.store.book[?(@.price <= 8.99)].price", [8.95, 8.99]),
        ("$.store.book[?(@.price > 20)].author", ["J. R. R. Tolkien"]),
        ("$.store.book[?(@.price >= 22.99)].author", ["J. R. R. Tolkien"]),
        ("$.store.book[?(@.category == 'reference')].author", ["Nigel Rees"]),
        ("$.store.book[?(@.category != 'fiction')].author", ["Nigel Rees"]),
        ('$.store.book[?(@.category == "fiction" && @.price < 10)].author', ["Herman Melville"]),
        ("$.store.book[?(@.price < 9 || @.price > 20)].price", [8.95, 8.99, 22.99]),
        ("$.store['bicycle','nope']", [{"color": "red", "price": 19.95}]),
        ("$.store.book[?(@.missing == 1)]", []),
        ("$.store.book[?(@.price == '8.95')]", []),  # types never compare equal
    ],
)
def test_full_paths_return_lists(path: str, expected: Any) -> None:
    assert evaluate_path(path, STORE) == expected
    assert not is_reference_path(path)


def test_context_object_paths() -> None:
    ctx = {
        "Execution": {"Id": "arn:exec", "Input": {"a": 1}},
        "State": {"Name": "S"},
        "Map": {"Item": {"Index": 2, "Value": "v"}},
    }
    assert evaluate_path("$$.Execution.Id", {"x": 1}, ctx) == "arn:exec"
    assert evaluate_path("$$.Map.Item.Index", None, ctx) == 2
    assert evaluate_path("$$", {}, ctx) == ctx
    with pytest.raises(PathError):
        evaluate_path("$$.Nope", {"Nope": 1}, ctx)


def test_missing_reference_path_raises_runtime_naming_the_path() -> None:
    with pytest.raises(PathError) as info:
        evaluate_path("$.car.nothing", DOC)
    assert info.value.error == "States.Runtime"
    assert "$.car.nothing" in info.value.cause
    assert "$['car']['nothing']" in info.value.cause
    with pytest.raises(PathError):
        evaluate_path("$.bar[7]", DOC)
    with pytest.raises(PathError):
        evaluate_path("$.foo.bar", DOC)  # step through a number


@pytest.mark.parametrize(
    "bad", ["", "foo", "$.", "$[", "$[1", "$['a'", "$.a[?(x)]", "$[1:2:0]", "$.a b", "$..", 5]
)
def test_bad_syntax(bad: Any) -> None:
    with pytest.raises(PathSyntaxError) as info:
        parse_path(bad)
    assert isinstance(info.value, ValueError)
    assert not is_reference_path(bad)
    with pytest.raises(PathError):
        evaluate_path(bad, {})


def test_path_exists() -> None:
    assert path_exists("$.foo", DOC)
    assert not path_exists("$.nope", DOC)
    assert path_exists("$.bar[*]", DOC)
    assert not path_exists("$.bar[?(@.x)]", DOC)


# ResultPath examples from AWS "ResultPath": the input, and the result of a Lambda
RP_INPUT = {
    "comment": "This is a test of the input and output of a Task state.",
    "details": "Default example",
    "who": "AWS Step Functions",
}
RP_RESULT = "Hello, AWS Step Functions!"


def test_result_path_dollar_replaces_input() -> None:
    assert set_result_path(RP_INPUT, "$", RP_RESULT) == RP_RESULT


def test_result_path_null_discards_result() -> None:
    assert set_result_path(RP_INPUT, None, RP_RESULT) == RP_INPUT


def test_result_path_adds_field() -> None:
    assert set_result_path(RP_INPUT, "$.taskresult", RP_RESULT) == {
        **RP_INPUT,
        "taskresult": RP_RESULT,
    }


def test_result_path_overwrites_existing_field() -> None:
    # AWS: "ResultPath": "$.details" replaces the existing "details" node
    out = set_result_path(RP_INPUT, "$.details", RP_RESULT)
    assert out == {**RP_INPUT, "details": RP_RESULT}


def test_result_path_creates_intermediates_and_never_mutates() -> None:
    data = {"a": {"keep": 1}}
    snapshot = copy.deepcopy(data)
    out = set_result_path(data, "$.a.b.c", {"r": [1]})
    assert out == {"a": {"keep": 1, "b": {"c": {"r": [1]}}}}
    assert data == snapshot
    out["a"]["keep"] = 2
    assert data == snapshot


def test_result_path_into_existing_array_element() -> None:
    assert set_result_path({"a": [1, 2]}, "$.a[1]", 9) == {"a": [1, 9]}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ("a string", "$.x"),
        ({"a": 5}, "$.a.b"),
        ({"a": [1]}, "$.a[3]"),
        ([1], "$.x"),
        ({"a": None}, "$.a.b"),
    ],
)
def test_result_path_match_failure(data: Any, path: str) -> None:
    with pytest.raises(PathError) as info:
        set_result_path(data, path, 1)
    assert info.value.error == "States.ResultPathMatchFailure"


@pytest.mark.parametrize("path", ["$.a[*]", "$$.x", "$..a", "nope"])
def test_result_path_must_be_reference_path(path: str) -> None:
    with pytest.raises(PathError):
        set_result_path({}, path, 1)


# ------------------------------------------------------------------------- property tests

keys = st.text(alphabet="abcxyz_019", min_size=1, max_size=4)
json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
json_doc = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=20,
)
steps = st.lists(st.one_of(keys, st.integers(0, 4)), max_size=5)


def _render(path_steps: list) -> str:
    out = "$"
    for i, step in enumerate(path_steps):
        if isinstance(step, int):
            out += f"[{step}]"
        elif i % 2:
            out += f"['{step}']"
        else:
            out += f".{step}"
    return out


_MISSING = object()


def _walk(doc: Any, path_steps: list) -> Any:
    for step in path_steps:
        if isinstance(step, int):
            if not isinstance(doc, list) or step >= len(doc):
                return _MISSING
        elif not isinstance(doc, dict) or step not in doc:
            return _MISSING
        doc = doc[step]
    return doc


@settings(max_examples=200, deadline=None)
@given(json_doc, steps)
def test_evaluate_path_matches_reference_walker(doc: Any, path_steps: list) -> None:
    path = _render(path_steps)
    expected = _walk(doc, path_steps)
    if expected is _MISSING:
        with pytest.raises(PathError):
            evaluate_path(path, doc)
    else:
        assert evaluate_path(path, doc) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(keys, json_doc, max_size=4), st.lists(keys, min_size=1, max_size=4), json_doc
)
def test_set_then_get_returns_result(doc: dict, path_keys: list, result: Any) -> None:
    path = _render(path_keys)
    try:
        out = set_result_path(doc, path, result)
    except PathError as exc:
        assert exc.error == "States.ResultPathMatchFailure"
        return
    assert evaluate_path(path, out) == result


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="$.[]*?@()'a0:-,=<> ", max_size=20))
def test_evaluate_path_raises_only_path_error(text: str) -> None:
    with contextlib.suppress(PathError):
        evaluate_path(text, {"a": [1, {"a": 2}], "0": None})
