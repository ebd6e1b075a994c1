"""ValidateStateMachineDefinition's diagnostics (codes and locations as AWS gives them), and
`headrace validate FILE`."""

import json
import os
import subprocess
import sys

import pytest

from headrace.workflows.asl import DefinitionError, parse
from headrace.workflows.diagnostics import location, validate_definition


def _codes(response):
    return [(d["severity"], d["code"], d.get("location")) for d in response["diagnostics"]]


def test_locations_are_written_as_aws_writes_them():
    assert location("$") == ""
    assert location("$.States.A.Next") == "/States/A/Next"
    assert location('$.States["a b"].Branches[0].States.C') == "/States/a b/Branches/0/States/C"
    assert location('$.States["x\\"y"].Catch[1].Next') == '/States/x"y/Catch/1/Next'


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (  # Next names no state
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}},
            [
                ("ERROR", "MISSING_TRANSITION_TARGET", "/States/A/Next"),
                ("ERROR", "MISSING_END_STATE", "/States"),
            ],
        ),
        (  # a state nobody reaches
            {
                "StartAt": "A",
                "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}},
            },
            [("ERROR", "MISSING_TRANSITION_TARGET", "/States/B")],
        ),
        (  # a loop with no way out
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "A"}}},
            [("ERROR", "MISSING_END_STATE", "/States")],
        ),
        (  # the same name in a Parallel branch and at the top
            {
                "StartAt": "P",
                "States": {
                    "P": {
                        "Type": "Parallel",
                        "Branches": [{"StartAt": "P", "States": {"P": {"Type": "Succeed"}}}],
                        "End": True,
                    }
                },
            },
            [("ERROR", "DUPLICATE_STATE_NAME", "/States/P/Branches/0/States/P")],
        ),
        (  # not an ARN
            {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": True}}},
            [("ERROR", "INVALID_RESOURCE", "/States/T/Resource")],
        ),
        (  # a field the state type does not have
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Seconds": 1, "End": True}}},
            [("ERROR", "SCHEMA_VALIDATION_FAILED", "/States/A/Seconds")],
        ),
        (
            {"StartAt": "A" * 81, "States": {"A" * 81: {"Type": "Succeed"}}},
            [("ERROR", "INVALID_STATE_NAME", "/States/" + "A" * 81)],
        ),
        (  # a WriterConfig value AWS does not have
            {
                "StartAt": "M",
                "States": {
                    "M": {
                        "Type": "Map",
                        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Succeed"}}},
                        "ResultWriter": {"WriterConfig": {"Transformation": "ZIP"}},
                        "End": True,
                    }
                },
            },
            [
                (
                    "ERROR",
                    "SCHEMA_VALIDATION_FAILED",
                    "/States/M/ResultWriter/WriterConfig/Transformation",
                )
            ],
        ),
    ],
)
def test_common_mistakes_get_aws_codes(definition, expected):
    response = validate_definition(definition)
    assert response["result"] == "FAIL"
    assert _codes(response) == expected
    assert response["truncated"] is False


def test_text_problems_and_duplicate_keys():
    assert _codes(validate_definition('{"StartAt": ')) == [
        ("ERROR", "INVALID_JSON_DESCRIPTION", None)
    ]
    assert _codes(validate_definition("  ")) == [("ERROR", "MISSING_DESCRIPTION", None)]
    text = (
        '{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}, "A": {"Type": "Succeed"}}}'
    )
    assert _codes(validate_definition(text)) == [("ERROR", "DUPLICATE_STATE_NAME", "/States/A")]


def test_warnings_only_when_asked_and_they_do_not_fail():
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {"who": "$.name", "nested": {"n": "States.Format('{}', $.x)"}},
                "Next": "R",
            },
            "R": {"Type": "Pass", "Result": {"x.$": "$.y"}, "Next": "F"},
            "F": {"Type": "Fail", "Error": "$.error"},
        },
    }
    assert validate_definition(definition) == {
        "result": "OK",
        "diagnostics": [],
        "truncated": False,
    }
    response = validate_definition(definition, severity="WARNING")
    assert response["result"] == "OK"
    assert _codes(response) == [
        ("WARNING", "NO_DOLLAR", "/States/P/Parameters/who"),
        ("WARNING", "NO_DOLLAR", "/States/P/Parameters/nested/n"),
        ("WARNING", "PASS_RESULT_IS_STATIC", "/States/R/Result"),
        ("WARNING", "NO_PATH", "/States/F/Error"),
    ]
    parse(definition)  # warnings never stop a definition from running


def test_max_results_truncates():
    states = {f"S{i}": {"Type": "Pass", "Next": "Nowhere"} for i in range(5)}
    states["S0"]["End"] = True
    response = validate_definition({"StartAt": "S0", "States": states}, max_results=2)
    assert len(response["diagnostics"]) == 2 and response["truncated"] is True


def test_the_problem_messages_stay_as_they_were():
    with pytest.raises(DefinitionError) as info:
        parse({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}})
    assert "$.States.A.Next (state 'A'): 'B' is not a state in this scope" in str(info.value)
    assert info.value.problems[0].code == "MISSING_TRANSITION_TARGET"


def test_headrace_validate_prints_and_exits(tmp_path):
    bad = tmp_path / "bad.asl.json"
    bad.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}))
    good = tmp_path / "good.asl.json"
    good.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}))

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "headrace.cli", "validate", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            # a long temp path would otherwise be wrapped inside rich's error box
            env={**os.environ, "COLUMNS": "1000"},
        )

    out = run(str(bad))
    assert out.returncode == 1
    assert "ERROR MISSING_TRANSITION_TARGET at /States/A/Next:" in out.stdout
    assert out.stdout.strip().endswith("FAIL")
    out = run(str(bad), "--json")
    response = json.loads(out.stdout)
    assert out.returncode == 1 and response["result"] == "FAIL"
    assert set(response["diagnostics"][0]) == {"severity", "code", "message", "location"}
    out = run(str(tmp_path / "missing.json"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = run(str(good), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"result": "OK", "diagnostics": [], "truncated": False}


def _distributed(state_fields, processor_config=None, child=None):
    processor = child or {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    if processor_config is not None:
        processor = {**processor, "ProcessorConfig": processor_config}
    state = {"Type": "Map", "ItemProcessor": processor, "End": True, **state_fields}
    return {"StartAt": "M", "States": {"M": state}}


_READER = {"Resource": "arn:aws:states:::s3:getObject", "Parameters": {"Bucket": "b", "Key": "k"}}
_DIST = {"Mode": "DISTRIBUTED"}


def _errors(definition):
    response = validate_definition(definition)
    return {(d["code"], d.get("location")) for d in response["diagnostics"]}


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        # CSVHeaders is read only with CSVHeaderLocation GIVEN
        (
            {"ReaderConfig": {"InputType": "CSV", "CSVHeaders": ["a"]}},
            "/States/M/ItemReader/ReaderConfig/CSVHeaders",
        ),
        ({"ReaderConfig": {"ManifestType": "ATHENA_DATA"}}, "/States/M/ItemReader/ReaderConfig"),
        (
            {"ReaderConfig": {"InputType": "JSON", "MaxItems": -1}},
            "/States/M/ItemReader/ReaderConfig/MaxItems",
        ),
        (
            {"ReaderConfig": {"InputType": "JSON", "MaxItems": 2.5}},
            "/States/M/ItemReader/ReaderConfig/MaxItems",
        ),
        (
            {"ReaderConfig": {"InputType": "JSON", "MaxItemsPath": "n"}},
            "/States/M/ItemReader/ReaderConfig/MaxItemsPath",
        ),
    ],
)
def test_reader_config_mistakes(fields, where):
    d = _distributed({"ItemReader": {**_READER, **fields}}, _DIST)
    assert _errors(d) == {("SCHEMA_VALIDATION_FAILED", where)}
    assert validate_definition(d)["result"] == "FAIL"


def test_distributed_map_shape_mistakes():
    ok = _distributed({"ItemReader": dict(_READER)}, _DIST)
    assert _errors(ok) == set()
    # an ItemReader needs a Distributed Map
    assert _errors(_distributed({"ItemReader": dict(_READER)})) == {
        ("SCHEMA_VALIDATION_FAILED", "/States/M/ItemReader")
    }
    inline = _distributed({"ItemReader": dict(_READER)}, {"Mode": "INLINE"})
    assert _errors(inline) == {("SCHEMA_VALIDATION_FAILED", "/States/M/ItemReader")}
    both = _distributed({"ItemReader": dict(_READER), "ItemsPath": "$.x"}, _DIST)
    assert _errors(both) == {("SCHEMA_VALIDATION_FAILED", "/States/M/ItemsPath")}
    # an ItemBatcher needs a limit; a batch is at most 256 KiB
    no_limit = _distributed({"ItemBatcher": {"BatchInput": {}}}, _DIST)
    assert _errors(no_limit) == {("SCHEMA_VALIDATION_FAILED", "/States/M/ItemBatcher")}
    big = _distributed({"ItemBatcher": {"MaxInputBytesPerBatch": 262_145}}, _DIST)
    where = "/States/M/ItemBatcher/MaxInputBytesPerBatch"
    assert _errors(big) == {("SCHEMA_VALIDATION_FAILED", where)}
    fits = _distributed({"ItemBatcher": {"MaxInputBytesPerBatch": 262_144}}, _DIST)
    assert _errors(fits) == set()
    jsonata = _distributed({"ItemBatcher": {"BatchInput": {}}}, _DIST)
    jsonata["QueryLanguage"] = "JSONata"
    assert _errors(jsonata) == {("SCHEMA_VALIDATION_FAILED", "/States/M/ItemBatcher")}


@pytest.mark.parametrize("suffix", [".sync", ".sync:2", ".waitForTaskToken"])
def test_waiting_tasks_in_express_children(suffix):
    task = {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution" + suffix}
    child = {"StartAt": "T", "States": {"T": {**task, "End": True}}}
    express = _distributed({}, {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}, child)
    where = "/States/M/ItemProcessor/States/T/Resource"
    assert _errors(express) == {("SCHEMA_VALIDATION_FAILED", where)}
    standard = _distributed({}, {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, child)
    assert _errors(standard) == set()
