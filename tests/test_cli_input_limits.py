"""User JSON that used to end in tracebacks: huge integers, deep nesting, giant definitions.

Each case runs the real `headrace` command and asserts a clear error with exit code 2."""

from __future__ import annotations

import json
import sys

import pytest

from headrace.jsontext import MAX_DEPTH, JsonInputError, check_depth, parse_json
from headrace.workflows.asl import MAX_LISTED_PROBLEMS, DefinitionError, Problem, parse
from tests.e2e_helpers import headrace


def _usage_error(result) -> str:
    """The error text of a failed command, after checking it failed cleanly."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    # typer draws the message in a box; join its lines back into one sentence
    return " ".join(
        line.strip("│╭╮╰╯─ ").strip() for line in result.stderr.splitlines() if line.strip()
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("9" * 5000, "has an integer of 5000 digits; the limit is 4300 digits"),
        ("[" * 5000 + "]" * 5000, "nests arrays and objects 5000 levels deep; the limit is 128"),
        ('{"a": ' * 5000 + "1" + "}" * 5000, "nests arrays and objects 5000 levels deep"),
        ("[" * 600 + "]" * 600, "nests arrays and objects 600 levels deep; the limit is 128"),
        ('{"x": NaN}', "has NaN, which is not JSON"),
        ("1e999", "has the number 1e999, too large for a 64-bit float"),
        ('{"a": ', "is not valid JSON (line 1 column 7: Expecting value)"),
    ],
    ids=["5000-digits", "5000-deep-array", "5000-deep-object", "600-deep", "nan", "inf", "bad"],
)
def test_invoke_payload_errors_are_clear(tmp_path, payload, reason):
    (tmp_path / "headrace.toml").write_text("")  # a project with no app
    result = headrace("invoke", "count_words", "--payload", payload, project=tmp_path)
    error = _usage_error(result)
    assert f"Invalid value: --payload {reason}" in error


def test_a_payload_at_the_depth_limit_is_accepted(tmp_path):
    # Nothing registered: the command gets past the payload and fails on the function name.
    payload = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    (tmp_path / "headrace.toml").write_text("")
    result = headrace("invoke", "nope", "--async", "--payload", payload, project=tmp_path)
    assert "--payload" not in result.stderr and "Traceback" not in result.stderr


def _asl_project(tmp_path, definition: dict) -> None:
    (tmp_path / "machine.asl.json").write_text(json.dumps(definition))
    (tmp_path / "pipeline.py").write_text(
        "from pathlib import Path\n\nfrom headrace import App\n\napp = App()\n"
        "app.state_machine('m', Path(__file__).parent / 'machine.asl.json')\n"
    )
    (tmp_path / "headrace.toml").write_text('app = "pipeline:app"\n')


def test_a_deeply_nested_definition_says_so_with_the_limit(tmp_path):
    result_value: dict = {}
    inner = result_value
    for _ in range(3000):
        inner["a"] = {}
        inner = inner["a"]
    sys.setrecursionlimit(20_000)  # only so json.dumps can write the test file
    _asl_project(
        tmp_path,
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": result_value, "End": True}}},
    )
    result = headrace("graph", "m", project=tmp_path, env={"HEADRACE_HOME": str(tmp_path / "h")})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "recursion" not in result.stderr
    assert "nests arrays and objects 3004 levels deep; the limit is 128" in " ".join(
        result.stderr.split()
    )


def test_a_definition_with_150000_problems_lists_the_first_ones(tmp_path):
    states = {f"S{i}": {"Type": "Pass"} for i in range(150_000)}
    _asl_project(tmp_path, {"StartAt": "S0", "States": states})
    result = headrace("graph", "m", project=tmp_path, env={"HEADRACE_HOME": str(tmp_path / "h")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr) < 5_000  # was 12.4 MB
    assert "$.States.S0 (state 'S0'): Next or End is required" in result.stderr
    count = int(result.stderr.split(" problems:", 1)[0].rsplit(" ", 1)[1])
    assert count >= 150_000  # each state lacks Next and is unreachable
    assert f"… and {count - MAX_LISTED_PROBLEMS} more" in result.stderr
    assert len(result.stderr.splitlines()) <= MAX_LISTED_PROBLEMS + 3


def test_definition_error_keeps_every_problem_but_lists_a_few():
    problems = [Problem(f"$.States.S{i}", f"S{i}", "x" * 1000) for i in range(100)]
    exc = DefinitionError(problems)
    assert exc.problems == problems
    lines = str(exc).splitlines()
    assert lines[0].endswith("100 problems:")
    assert len(lines) == 1 + MAX_LISTED_PROBLEMS + 1
    assert lines[-1].startswith(f"… and {100 - MAX_LISTED_PROBLEMS} more")
    assert all(len(line) <= 300 for line in lines[1:-1])
    few = DefinitionError(problems[:3])
    assert "more" not in str(few) and len(str(few).splitlines()) == 4


def test_a_nested_dict_definition_is_refused_without_recursion():
    value: dict = {}
    inner = value
    for _ in range(100_000):
        inner["a"] = {}
        inner = inner["a"]
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": value, "End": True}}}
    with pytest.raises(DefinitionError, match="more than 128 levels deep; the limit is 128"):
        parse(definition)


def test_parse_json_limits():
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert parse_json('{"n": -' + "9" * 4300 + "}")["n"] < 0
    with pytest.raises(JsonInputError, match="129 levels deep"):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JsonInputError, match="-Infinity"):
        parse_json("[-Infinity]")
    with pytest.raises(JsonInputError, match="line 1 column 2") as info:
        parse_json("[")
    assert info.value.syntax is not None
    # brackets inside strings do not count
    assert parse_json(json.dumps(["[" * 1000])) == ["[" * 1000]
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(JsonInputError):
        check_depth(cyclic)


def test_features_get_with_a_huge_integer_key_is_a_usage_error(tmp_path):
    result = headrace("features", "get", "g", "9" * 5000, project=tmp_path)
    assert "has an integer of 5000 digits; the limit is 4300 digits" in _usage_error(result)
