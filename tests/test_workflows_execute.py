"""The interpreter, state by state, through `execute()` (in process, no coordinator)."""

import json
import time

import pytest

from headrace.workflows import execute
from headrace.workflows.asl import DefinitionError


def chain(*states, **extra):
    names = [s[0] for s in states]
    out = {}
    for i, (name, state) in enumerate(states):
        state = dict(state)
        if state["Type"] not in ("Choice", "Succeed", "Fail") and "Next" not in state:
            if i + 1 < len(names):
                state["Next"] = names[i + 1]
            else:
                state["End"] = True
        out[name] = state
    return {"StartAt": names[0], "States": out, **extra}


def test_pass_chain_with_paths():
    d = chain(
        ("A", {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.a"}),
        (
            "B",
            {
                "Type": "Pass",
                "Parameters": {"sum.$": "States.MathAdd($.a.x, $.n)"},
                "ResultPath": "$.b",
            },
        ),
        ("C", {"Type": "Pass", "OutputPath": "$.b"}),
    )
    r = execute(d, {"n": 41})
    assert r.status == "SUCCEEDED" and r.output == {"sum": 42}
    types = [e["type"] for e in r.history]
    assert types == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "PassStateEntered",
        "PassStateExited",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]


def test_choice_default_and_no_match():
    d = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Big"},
                    {
                        "And": [
                            {"Variable": "$.s", "IsPresent": True},
                            {"Variable": "$.s", "StringMatches": "a*"},
                        ],
                        "Next": "A",
                    },
                ],
                "Default": "Other",
            },
            "Big": {"Type": "Pass", "Result": "big", "End": True},
            "A": {"Type": "Pass", "Result": "a", "End": True},
            "Other": {"Type": "Succeed"},
        },
    }
    assert execute(d, {"n": 11}).output == "big"
    assert execute(d, {"n": 1, "s": "abc"}).output == "a"
    assert execute(d, {"n": 1}).output == {"n": 1}
    del d["States"]["C"]["Default"], d["States"]["Other"]  # unreachable now: a definition error
    r = execute(d, {"n": 1})
    assert r.status == "FAILED" and r.error == "States.NoChoiceMatched"


def test_fail_state_and_paths():
    d = {"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "$.c"}}}
    r = execute(d, {"e": "Custom.Error", "c": "because"})
    assert (r.status, r.error, r.cause) == ("FAILED", "Custom.Error", "because")


def test_wait_seconds():
    d = chain(("W", {"Type": "Wait", "Seconds": 1}), ("P", {"Type": "Pass"}))
    started = time.time()
    r = execute(d, {"k": 1})
    assert r.status == "SUCCEEDED" and r.output == {"k": 1}
    assert time.time() - started >= 0.95


def test_task_functions_and_lambda_invoke_shape():
    d = chain(
        ("Plain", {"Type": "Task", "Resource": "headrace:function:inc", "ResultPath": "$.plain"}),
        (
            "Sdk",
            {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": "arn:aws:lambda:eu-west-1:1:function:inc",
                    "Payload": {"v.$": "$.v"},
                },
                "ResultSelector": {"v.$": "$.Payload.v", "code.$": "$.StatusCode"},
                "ResultPath": "$.sdk",
            },
        ),
    )
    r = execute(d, {"v": 1}, resources={"inc": lambda e: {"v": e["v"] + 1}})
    assert r.status == "SUCCEEDED"
    assert r.output == {"v": 1, "plain": {"v": 2}, "sdk": {"v": 2, "code": 200}}


def test_retry_then_catch_with_error_output():
    calls = []

    def flaky(event):
        calls.append(time.time())
        raise ConnectionError("down")

    d = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "headrace:function:flaky",
                "Retry": [
                    {
                        "ErrorEquals": ["ConnectionError"],
                        "IntervalSeconds": 1,
                        "MaxAttempts": 2,
                        "BackoffRate": 1.0,
                    }
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    r = execute(d, {"id": 1}, resources={"flaky": flaky})
    assert r.status == "SUCCEEDED" and len(calls) == 3
    assert calls[1] - calls[0] >= 0.95 and calls[2] - calls[1] >= 0.95
    assert r.output["id"] == 1 and r.output["err"]["Error"] == "ConnectionError"
    assert json.loads(r.output["err"]["Cause"])["errorMessage"] == "down"


def test_uncaught_task_error_fails_execution():
    d = chain(("T", {"Type": "Task", "Resource": "headrace:function:boom"}))
    r = execute(d, {}, resources={"boom": lambda e: 1 / 0})
    assert r.status == "FAILED" and r.error == "ZeroDivisionError"
    assert json.loads(r.cause)["errorType"] == "ZeroDivisionError"


def test_task_timeout():
    d = chain(("T", {"Type": "Task", "Resource": "headrace:function:slow", "TimeoutSeconds": 1}))
    r = execute(d, {}, resources={"slow": lambda e: time.sleep(3)})
    assert r.status == "FAILED" and r.error == "States.Timeout"
    assert "TaskTimedOut" in [e["type"] for e in r.history]


def test_map_with_concurrency_selector_and_context():
    running, peak = [0], [0]

    def work(event):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        running[0] -= 1
        return event["i"] * 10 + event["v"]

    d = chain(
        (
            "M",
            {
                "Type": "Map",
                "ItemsPath": "$.xs",
                "MaxConcurrency": 2,
                "ItemSelector": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value"},
                "ItemProcessor": chain(
                    ("W", {"Type": "Task", "Resource": "headrace:function:work"})
                ),
                "ResultPath": "$.out",
            },
        ),
    )
    r = execute(d, {"xs": [1, 2, 3, 4, 5]}, resources={"work": work})
    assert r.status == "SUCCEEDED" and r.output["out"] == [1, 12, 23, 34, 45]
    assert peak[0] <= 2
    types = [e["type"] for e in r.history]
    assert types.count("MapIterationStarted") == 5 and "MapStateSucceeded" in types


def test_map_failure_and_tolerated_failures():
    def maybe(event):
        if event % 2:
            raise ValueError(f"odd {event}")
        return event

    inner = chain(("T", {"Type": "Task", "Resource": "headrace:function:maybe"}))
    d = chain(("M", {"Type": "Map", "ItemProcessor": inner}))
    r = execute(d, [0, 1, 2], resources={"maybe": maybe})
    assert r.status == "FAILED" and r.error == "ValueError"
    d["States"]["M"]["ToleratedFailureCount"] = 1
    assert execute(d, [0, 1, 2], resources={"maybe": maybe}).output == [0, None, 2]
    r = execute(d, [1, 3, 4], resources={"maybe": maybe})
    assert r.status == "FAILED" and r.error == "States.ExceedToleratedFailureThreshold"


def test_parallel_branches():
    branch = lambda v: chain(("P", {"Type": "Pass", "Result": v}))  # noqa: E731
    d = chain(("Par", {"Type": "Parallel", "Branches": [branch(1), branch("two")]}))
    r = execute(d, {})
    assert r.status == "SUCCEEDED" and r.output == [1, "two"]


def test_result_path_null_keeps_input():
    d = chain(("T", {"Type": "Task", "Resource": "headrace:function:f", "ResultPath": None}))
    r = execute(d, {"keep": True}, resources={"f": lambda e: {"dropped": 1}})
    assert r.output == {"keep": True}


def test_execution_timeout():
    d = chain(("W", {"Type": "Wait", "Seconds": 5}), TimeoutSeconds=1)
    r = execute(d, {})
    assert r.status == "TIMED_OUT" and r.error == "States.Timeout"


def test_unknown_resources_are_definition_errors():
    d = chain(
        ("A", {"Type": "Task", "Resource": "arn:aws:states:::nope:thing"}),
        ("B", {"Type": "Task", "Resource": "headrace:function:missing"}),
    )
    with pytest.raises(DefinitionError) as info:
        execute(d, {}, resources={})
    text = str(info.value)
    assert "unknown resource 'arn:aws:states:::nope:thing'" in text and "'missing'" in text


def test_fail_error_from_an_intrinsic():
    d = {
        "StartAt": "F",
        "States": {
            "F": {"Type": "Fail", "Error": "Bad", "CausePath": "States.Format('item {}', $.id)"}
        },
    }
    r = execute(d, {"id": 7})
    assert (r.status, r.error, r.cause) == ("FAILED", "Bad", "item 7")


def test_a_task_in_a_loop_runs_on_every_visit():
    d = {
        "StartAt": "Check",
        "States": {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericLessThan": 3, "Next": "Inc"}],
                "Default": "Done",
            },
            "Inc": {"Type": "Task", "Resource": "headrace:function:inc", "Next": "Check"},
            "Done": {"Type": "Succeed"},
        },
    }
    r = execute(d, {"n": 0}, resources={"inc": lambda e: {"n": e["n"] + 1}})
    assert r.status == "SUCCEEDED" and r.output == {"n": 3}
    tokens = [e["details"]["token"] for e in r.history if e["type"] == "TaskScheduled"]
    assert len(tokens) == 3 and len(set(tokens)) == 3


def test_map_item_reader_batcher_and_result_writer(tmp_path):
    from headrace.storage import ObjectStore

    store = ObjectStore(str(tmp_path / "buckets"))
    store.bucket("inputs").put("cells.csv", b"cell,value\na,1\nb,2\nc,3\n")
    store.bucket("inputs").put("list/x.json", b"[1, 2, 3, 4, 5]")
    d = chain(
        (
            "FromCsv",
            {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
                    "Parameters": {"Bucket": "inputs", "Key.$": "$.csv"},
                },
                "ItemProcessor": chain(("P", {"Type": "Pass"})),
                "ResultPath": "$.rows",
            },
        ),
        (
            "Batched",
            {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSON", "MaxItems": 4},
                    "Parameters": {"Bucket": "inputs", "Key": "list/x.json"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 3, "BatchInput": {"tag.$": "$.tag"}},
                "ItemProcessor": chain(
                    ("Sum", {"Type": "Task", "Resource": "headrace:function:sum"})
                ),
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "results", "Prefix": "sums"},
                },
                "ResultPath": "$.written",
            },
        ),
        (
            "Listed",
            {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:listObjectsV2",
                    "Parameters": {"Bucket": "inputs", "Prefix": "list/"},
                },
                "ItemSelector": {"key.$": "$$.Map.Item.Value.Key"},
                "ItemProcessor": chain(("Q", {"Type": "Pass"})),
                "ResultPath": "$.listed",
            },
        ),
    )

    def total(batch):
        return {"sum": sum(batch["Items"]), "tag": batch["BatchInput"]["tag"]}

    r = execute(
        d,
        {"csv": "cells.csv", "tag": "t"},
        resources={"sum": total},
        storage=str(tmp_path / "buckets"),
        name="run1",
    )
    assert r.status == "SUCCEEDED", (r.error, r.cause)
    assert r.output["rows"] == [
        {"cell": "a", "value": "1"},
        {"cell": "b", "value": "2"},
        {"cell": "c", "value": "3"},
    ]
    details = r.output["written"]["ResultWriterDetails"]
    assert details == {"Bucket": "results", "Key": "sums/run1/manifest.json"}
    written = json.loads(store.bucket("results").get("sums/run1/SUCCEEDED_0.json"))
    assert [json.loads(x["Output"]) for x in written] == [
        {"sum": 6, "tag": "t"},
        {"sum": 4, "tag": "t"},
    ]
    assert r.output["listed"] == [{"key": "list/x.json"}]


def test_item_reader_failure_is_catchable(tmp_path):
    d = chain(
        (
            "Read",
            {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "Parameters": {"Bucket": "inputs", "Key": "missing.json"},
                },
                "ItemProcessor": chain(("P", {"Type": "Pass"})),
                "Catch": [{"ErrorEquals": ["States.ItemReaderFailed"], "Next": "Caught"}],
            },
        ),
        ("Caught", {"Type": "Pass", "Result": "caught"}),
    )
    d["States"]["Read"].pop("Next", None)
    d["States"]["Read"]["End"] = True
    r = execute(d, {}, storage=str(tmp_path / "b"))
    assert r.status == "SUCCEEDED" and r.output == "caught"


def test_retry_on_map_and_parallel_states_starts_them_over():
    calls = {"n": 0}

    def once_bad(event):
        calls["n"] += 1
        if calls["n"] == 2:  # the second item of the first try fails
            raise ValueError("transient")
        return event

    inner = chain(("T", {"Type": "Task", "Resource": "headrace:function:f"}))
    retry = [{"ErrorEquals": ["ValueError"], "IntervalSeconds": 1, "MaxAttempts": 1}]
    d = chain(("M", {"Type": "Map", "MaxConcurrency": 1, "ItemProcessor": inner, "Retry": retry}))
    r = execute(d, [1, 2, 3], resources={"f": once_bad})
    assert r.status == "SUCCEEDED" and r.output == [1, 2, 3]
    types = [e["type"] for e in r.history]
    assert types.count("StateRetryScheduled") == 1 and types.count("MapStateEntered") == 2

    calls["n"] = 1  # the next call is the failing second one
    branch = chain(("B", {"Type": "Task", "Resource": "headrace:function:f"}))
    d = chain(("P", {"Type": "Parallel", "Branches": [branch], "Retry": retry}))
    r = execute(d, {"v": 1}, resources={"f": once_bad})
    assert r.status == "SUCCEEDED" and r.output == [{"v": 1}]
    assert [e["type"] for e in r.history].count("ParallelStateEntered") == 2
