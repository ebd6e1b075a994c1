"""Input and output processing, with the worked examples from AWS's documentation."""

from __future__ import annotations

import copy

import pytest

from headrace.workflows.dataflow import (
    catch_output,
    fail_error_cause,
    item_input,
    map_items,
    pass_result,
    resolve_template,
    state_input,
    state_output,
)
from headrace.workflows.errors import StatesError
from headrace.workflows.paths import PathError

CTX = {"Execution": {"Id": "arn:exec:1", "Name": "run-1"}, "State": {"Name": "S"}}


def test_input_path_example() -> None:
    # AWS "InputPath": selects dataset2
    raw = {
        "comment": "Example for InputPath",
        "dataset1": {"val1": 1, "val2": 2, "val3": 3},
        "dataset2": {"val1": "a", "val2": "b", "val3": "c"},
    }
    state = {"Type": "Pass", "InputPath": "$.dataset2", "End": True}
    assert state_input(state, raw, CTX) == {"val1": "a", "val2": "b", "val3": "c"}


def test_parameters_example() -> None:
    # AWS "Parameters": static values plus .$ paths into the input
    raw = {
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23",
        },
    }
    state = {
        "Type": "Task",
        "Resource": "r",
        "End": True,
        "Parameters": {
            "comment": "Selecting what I care about.",
            "MyDetails": {
                "size.$": "$.product.details.size",
                "exists.$": "$.product.availability",
                "StaticValue": "foo",
            },
        },
    }
    assert state_input(state, raw, CTX) == {
        "comment": "Selecting what I care about.",
        "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
    }


def test_parameters_context_object_example() -> None:
    # AWS "Context object": "Parameters": {"MyData.$": "$.data", "ExecutionId.$": "$$.Execution.Id"}
    state = {
        "Type": "Pass",
        "Parameters": {"comment": "x", "MyData.$": "$", "ExecutionId.$": "$$.Execution.Id"},
    }
    assert state_input(state, {"a": 1}, CTX) == {
        "comment": "x",
        "MyData": {"a": 1},
        "ExecutionId": "arn:exec:1",
    }


def test_result_selector_example() -> None:
    # AWS "ResultSelector": keep ClusterId and resourceType of an EMR createCluster result
    raw = {"comment": "input"}
    result = {
        "resourceType": "elasticmapreduce",
        "resource": "createCluster.sync",
        "output": {
            "SdkHttpMetadata": {"HttpHeaders": {"Content-Length": "1112"}, "HttpStatusCode": 200},
            "SdkResponseMetadata": {"RequestId": "1234-5678-9012"},
            "ClusterId": "AKIAIOSFODNN7EXAMPLE",
        },
    }
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput",
        "End": True,
    }
    assert state_output(state, raw, result, CTX) == {
        "comment": "input",
        "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"},
    }


def test_input_result_output_path_worked_example() -> None:
    # AWS "Example: InputPath, ResultPath and OutputPath together"
    raw = {
        "comment": "An input comment.",
        "data": {"val1": 23, "val2": 17},
        "extra": "foo",
        "lambda": {"who": "AWS Step Functions"},
    }
    state = {
        "Type": "Task",
        "Resource": "arn:aws:lambda:us-east-1:123456789012:function:HelloFunction",
        "InputPath": "$.lambda",
        "ResultPath": "$.data.lambdaresult",
        "OutputPath": "$.data",
        "End": True,
    }
    effective = state_input(state, raw, CTX)
    assert effective == {"who": "AWS Step Functions"}
    result = f"Hello, {effective['who']}!"
    assert state_output(state, raw, result, CTX) == {
        "val1": 23,
        "val2": 17,
        "lambdaresult": "Hello, AWS Step Functions!",
    }


def test_result_path_variants_from_docs() -> None:
    raw = {
        "comment": "This is a test of the input and output of a Task state.",
        "details": "Default example",
        "who": "AWS Step Functions",
    }
    result = "Hello, AWS Step Functions!"
    base = {"Type": "Task", "Resource": "r", "End": True}
    assert state_output(base, raw, result, CTX) == result  # default ResultPath "$"
    assert state_output({**base, "ResultPath": None}, raw, result, CTX) == raw
    assert state_output({**base, "ResultPath": "$.taskresult"}, raw, result, CTX) == {
        **raw,
        "taskresult": result,
    }


def test_null_input_and_output_path_give_empty_object() -> None:
    state = {"Type": "Task", "Resource": "r", "InputPath": None, "OutputPath": None, "End": True}
    assert state_input(state, {"a": 1}, CTX) == {}
    assert state_output(state, {"a": 1}, {"r": 2}, CTX) == {}


def test_choice_wait_succeed_output_is_effective_input() -> None:
    for kind in ("Choice", "Wait", "Succeed"):
        state = {"Type": kind, "InputPath": "$.a", "OutputPath": "$.b", "ResultPath": "$.x"}
        raw = {"a": {"b": {"c": 1}}}
        effective = state_input(state, raw, CTX)
        assert state_output(state, raw, effective, CTX) == {"c": 1}


def test_pass_result_and_result_path() -> None:
    # AWS "Pass": Result placed at ResultPath "$.result" in the input
    state = {
        "Type": "Pass",
        "Result": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
        "ResultPath": "$.coords",
        "End": True,
    }
    raw = {"georefOf": "Home"}
    result = pass_result(state, state_input(state, raw, CTX))
    assert state_output(state, raw, result, CTX) == {
        "georefOf": "Home",
        "coords": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
    }
    # without Result, a Pass state passes its effective input
    plain = {"Type": "Pass", "Parameters": {"v.$": "$.georefOf"}, "End": True}
    assert pass_result(plain, state_input(plain, raw, CTX)) == {"v": "Home"}


def test_map_parameters_are_per_item_not_state_input() -> None:
    state = {"Type": "Map", "Parameters": {"x.$": "$$.Map.Item.Value"}, "ItemsPath": "$.items"}
    raw = {"items": [1, 2]}
    effective = state_input(state, raw, CTX)
    assert effective == raw
    items = map_items(state, effective, CTX)
    assert [item_input(state, effective, it, i, CTX) for i, it in enumerate(items)] == [
        {"x": 1},
        {"x": 2},
    ]


def test_map_item_selector_example() -> None:
    # AWS "ItemSelector": combine each item with a value from the Map state's input
    state = {
        "Type": "Map",
        "ItemsPath": "$.detail.shipped",
        "ItemSelector": {
            "parcel.$": "$$.Map.Item.Value",
            "courier.$": "$.detail.delivery-partner",
            "index.$": "$$.Map.Item.Index",
        },
    }
    raw = {
        "detail": {
            "delivery-partner": "UQS",
            "shipped": [{"prod": "R31", "dest-code": 9511}, {"prod": "S39", "dest-code": 9511}],
        }
    }
    effective = state_input(state, raw, CTX)
    items = map_items(state, effective, CTX)
    assert item_input(state, effective, items[1], 1, CTX) == {
        "parcel": {"prod": "S39", "dest-code": 9511},
        "courier": "UQS",
        "index": 1,
    }
    assert item_input({"Type": "Map"}, effective, items[0], 0, CTX) == items[0]


def test_map_items_must_be_array() -> None:
    with pytest.raises(StatesError) as info:
        map_items({"ItemsPath": "$.a"}, {"a": {"b": 1}})
    assert info.value.error == "States.Runtime"
    with pytest.raises(PathError):
        map_items({"ItemsPath": "$.nope"}, {"a": []})


def test_template_with_intrinsics_arrays_and_nesting() -> None:
    template = {
        "list": [{"id.$": "$.id"}, "literal", 3, {"nested": {"n.$": "States.MathAdd($.id, 1)"}}],
        "greeting.$": "States.Format('Hi {}', $.name)",
        "plain$": "$.not-a-path",
    }
    assert resolve_template(template, {"id": 7, "name": "Ana"}) == {
        "list": [{"id": 7}, "literal", 3, {"nested": {"n": 8}}],
        "greeting": "Hi Ana",
        "plain$": "$.not-a-path",
    }


def test_template_missing_path_is_parameter_path_failure() -> None:
    with pytest.raises(StatesError) as info:
        resolve_template({"bar.$": "$.foo"}, {"x": 1})
    assert info.value.error == "States.ParameterPathFailure"
    assert info.value.cause == (
        "The JSONPath '$.foo' specified for the field 'bar.$' could not be found in the input "
        "'{\"x\":1}'"
    )


def test_template_non_string_dynamic_value_is_runtime() -> None:
    with pytest.raises(StatesError) as info:
        resolve_template({"bar.$": 5}, {})
    assert info.value.error == "States.Runtime"


def test_input_path_missing_is_runtime() -> None:
    with pytest.raises(PathError) as info:
        state_input({"Type": "Pass", "InputPath": "$.missing"}, {}, CTX)
    assert info.value.error == "States.Runtime"


def test_outputs_do_not_share_data_with_inputs() -> None:
    raw = {"a": {"b": [1]}}
    snapshot = copy.deepcopy(raw)
    state = {"Type": "Task", "Resource": "r", "ResultPath": "$.r", "End": True}
    out = state_output(state, raw, {"z": [2]}, CTX)
    out["a"]["b"].append(5)
    assert raw == snapshot
    inp = state_input({"Type": "Pass", "Parameters": {"v.$": "$.a"}}, raw, CTX)
    inp["v"]["b"].append(9)
    assert raw == snapshot


def test_catch_output_places_error_at_result_path() -> None:
    # AWS "Catch": "ResultPath": "$.error-info" keeps the input and adds the error
    err = StatesError("States.TaskFailed", "boom")
    assert catch_output({"ResultPath": "$.error-info"}, {"foo": 1}, err) == {
        "foo": 1,
        "error-info": {"Error": "States.TaskFailed", "Cause": "boom"},
    }
    assert catch_output({}, {"foo": 1}, err) == {"Error": "States.TaskFailed", "Cause": "boom"}


def test_fail_error_cause_static_and_paths() -> None:
    assert fail_error_cause({"Error": "E", "Cause": "C"}, {}) == ("E", "C")
    assert fail_error_cause({}, {}) == (None, None)
    state = {"ErrorPath": "$.err", "CausePath": "States.Format('bad {}', $.n)"}
    assert fail_error_cause(state, {"err": "Oops", "n": 3}) == ("Oops", "bad 3")
    with pytest.raises(StatesError):
        fail_error_cause({"ErrorPath": "$.n"}, {"n": 3})
