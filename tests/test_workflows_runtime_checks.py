"""The checks Step Functions makes while an execution runs, and the errors they give."""

import pytest

from headrace.workflows import execute


def _wait(field, value):
    return {
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", field: "$.v", "End": True}},
    }, {"v": value}


@pytest.mark.parametrize("value", [-1, 1.5, "3", None])
def test_seconds_path_must_be_a_non_negative_integer(value):
    r = execute(*_wait("SecondsPath", value))
    assert (r.status, r.error) == ("FAILED", "States.Runtime"), r
    assert "SecondsPath" in r.cause


def test_seconds_path_zero_and_integral_float_wait():
    assert execute(*_wait("SecondsPath", 0)).status == "SUCCEEDED"
    assert execute(*_wait("SecondsPath", 0.0)).status == "SUCCEEDED"


@pytest.mark.parametrize(
    "value", ["2016-03-14 01:59:00Z", "2016-03-14T01:59:00", "2016-03-14", "soon", 12]
)
def test_timestamp_path_must_be_rfc3339_with_t_and_a_zone(value):
    r = execute(*_wait("TimestampPath", value))
    assert (r.status, r.error) == ("FAILED", "States.Runtime"), r


def test_timestamp_path_in_the_past_ends_at_once():
    for stamp in ("2016-03-14T01:59:00Z", "2016-03-14T01:59:00.123+02:00"):
        assert execute(*_wait("TimestampPath", stamp)).status == "SUCCEEDED"


def _map(field, value_path="$.limit", catch=True):
    state = {
        "Type": "Map",
        "ItemsPath": "$.items",
        field: value_path,
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        "End": True,
    }
    if catch:  # States.Runtime is terminal: no catcher handles it
        state["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
        state["End"] = True
    return {"StartAt": "M", "States": {"M": state, "Caught": {"Type": "Succeed"}}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MaxConcurrencyPath", "2"),
        ("MaxConcurrencyPath", -1),
        ("MaxConcurrencyPath", None),
        ("ToleratedFailureCountPath", "1"),
        ("ToleratedFailureCountPath", 1.5),
        ("ToleratedFailurePercentagePath", "10"),
        ("ToleratedFailurePercentagePath", 150),
    ],
)
def test_map_limit_paths_must_select_numbers(field, value):
    r = execute(_map(field), {"items": [1, 2], "limit": value})
    assert (r.status, r.error) == ("FAILED", "States.Runtime"), r
    assert field in r.cause


def test_map_limit_paths_that_select_numbers_run():
    for field, value in (
        ("MaxConcurrencyPath", 1),
        ("ToleratedFailureCountPath", 0),
        ("ToleratedFailurePercentagePath", 12.5),
    ):
        r = execute(_map(field), {"items": [1, 2], "limit": value})
        assert r.status == "SUCCEEDED" and r.output == [1, 2], r


def test_execution_input_over_256_kib():
    d = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    r = execute(d, {"s": "x" * (256 * 1024)})
    assert (r.status, r.error) == ("FAILED", "States.DataLimitExceeded"), r
    assert execute(d, {"s": "x" * (250 * 1024)}).status == "SUCCEEDED"


def test_state_output_over_256_kib_is_not_catchable():
    d = {
        "StartAt": "Big",
        "States": {
            "Big": {
                "Type": "Task",
                "Resource": "headrace:function:big",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    r = execute(d, {}, resources={"big": lambda e: {"s": "y" * (257 * 1024)}})
    assert (r.status, r.error) == ("FAILED", "States.DataLimitExceeded"), r
    # a Pass state that doubles its input over the limit
    d = {
        "StartAt": "Double",
        "States": {
            "Double": {
                "Type": "Pass",
                "Parameters": {"a.$": "$.s", "b.$": "$.s"},
                "End": True,
            }
        },
    }
    r = execute(d, {"s": "z" * (200 * 1024)})
    assert (r.status, r.error) == ("FAILED", "States.DataLimitExceeded"), r


@pytest.mark.parametrize(
    "trim",
    [
        {"OutputPath": "$.n"},
        {"ResultSelector": {"n.$": "$.n"}},
        {"ResultPath": None},
    ],
)
def test_a_task_result_over_256_kib_fails_even_when_trimmed(trim):
    d = {
        "StartAt": "Big",
        "States": {"Big": {"Type": "Task", "Resource": "headrace:function:big", "End": True}},
    }
    d["States"]["Big"].update(trim)
    r = execute(d, {}, resources={"big": lambda e: {"n": 1, "s": "y" * (257 * 1024)}})
    assert (r.status, r.error) == ("FAILED", "States.DataLimitExceeded"), r
    assert "'Big' returned a result with a size of" in r.cause
    # the history does not keep the oversized result
    assert not [e for e in r.history if e["type"] == "TaskSucceeded"]
    assert all(len(str(e)) < 10_000 for e in r.history)
    small = execute(d, {}, resources={"big": lambda e: {"n": 1, "s": "y" * 1024}})
    assert small.status == "SUCCEEDED", small


def test_a_map_whose_gathered_results_are_over_256_kib_fails_even_when_trimmed():
    d = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "Item",
                    "States": {
                        "Item": {"Type": "Task", "Resource": "headrace:function:part",
                                 "End": True}
                    },
                },
                "ResultSelector": {"n.$": "States.ArrayLength($)"},
                "End": True,
            }
        },
    }  # fmt: skip
    r = execute(d, list(range(3)), resources={"part": lambda e: "p" * (100 * 1024)})
    assert (r.status, r.error) == ("FAILED", "States.DataLimitExceeded"), r
    ok = execute(d, list(range(3)), resources={"part": lambda e: "p" * 1024})
    assert ok.status == "SUCCEEDED" and ok.output == {"n": 3}, ok


def _pass(parameters):
    return {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": parameters, "End": True}},
    }


def test_intrinsic_arguments_as_aws_treats_them():
    r = execute(
        _pass(
            {
                "up.$": "States.MathAdd($.a, 1)",
                "down.$": "States.MathAdd($.b, 0)",
                "text.$": "States.Format('{} and {}', $.obj, $.arr)",
                "empty.$": "States.StringToJson($.blank)",
            }
        ),
        {"a": 1.5, "b": -2.5, "obj": {"Arg1": 1, "Arg2": []}, "arr": [1, "x"], "blank": "  "},
    )
    assert r.status == "SUCCEEDED", r
    # Java's Math.round: half up, so 1.5 -> 2 and -2.5 -> -2
    assert r.output == {"up": 3, "down": -2, "text": "{Arg1=1, Arg2=[]} and [1, x]", "empty": None}


def test_a_missing_path_inside_an_intrinsic_is_a_runtime_error():
    r = execute(_pass({"x.$": "States.Format('{}', $.missing)"}), {})
    assert (r.status, r.error) == ("FAILED", "States.Runtime"), r


def test_bracket_paths_with_escaped_quotes_and_special_characters():
    r = execute(
        _pass({"q.$": "$['it\\'s']", "dot.$": '$["a.b"]', "space.$": "$['x y'][0]"}),
        {"it's": 1, "a.b": 2, "x y": [3]},
    )
    assert r.status == "SUCCEEDED" and r.output == {"q": 1, "dot": 2, "space": 3}, r
