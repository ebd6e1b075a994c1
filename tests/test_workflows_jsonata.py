"""JSONata states (QueryLanguage: JSONata), end to end with execute()."""

import hashlib
import uuid

from headrace.workflows import execute
from headrace.workflows.asl import validate


def _problems(definition):
    return [(p.path, p.message) for p in validate(definition)]


def test_arguments_output_and_assign_on_a_task():
    # the shape of AWS's "Transforming data with JSONata" Lambda example
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "Score",
        "States": {
            "Score": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Arguments": {
                    "FunctionName": "score",
                    "Payload": {
                        "product": "{% $states.input.product %}",
                        "qty": "{% $states.input.qty * 2 %}",
                        "literal": "plain text",
                    },
                },
                "Assign": {"total": "{% $states.result.Payload.price * $states.input.qty %}"},
                "Output": "{% $states.result.Payload %}",
                "Next": "Report",
            },
            "Report": {
                "Type": "Pass",
                "Output": {
                    "total": "{% $total %}",
                    "price": "{% $states.input.price %}",
                    "execution": "{% $states.context.Execution.Name %}",
                },
                "End": True,
            },
        },
    }
    seen = []

    def score(event):
        seen.append(event)
        return {"price": 2.5, "product": event["product"]}

    r = execute(d, {"product": "p1", "qty": 4}, resources={"score": score}, name="run-1")
    assert r.status == "SUCCEEDED", r
    assert seen == [{"product": "p1", "qty": 8, "literal": "plain text"}]
    assert r.output == {"total": 10, "price": 2.5, "execution": "run-1"}


def test_choice_conditions_wait_and_fail():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "Route",
        "States": {
            "Route": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Condition": "{% $states.input.type = 'local' %}",
                        "Assign": {"route": "local"},
                        "Next": "Pause",
                    },
                    {"Condition": "{% $states.input.n > 10 %}", "Next": "TooBig"},
                ],
                "Default": "Pause",
                "Assign": {"route": "default"},
            },
            "Pause": {
                "Type": "Wait",
                "Seconds": "{% $states.input.wait %}",
                "Output": {"route": "{% $route %}"},
                "Next": "Done",
            },
            "TooBig": {
                "Type": "Fail",
                "Error": "TooBig",
                "Cause": "{% 'n is ' & $string($states.input.n) %}",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    assert execute(d, {"type": "local", "wait": 0}).output == {"route": "local"}
    assert execute(d, {"type": "x", "n": 1, "wait": 0}).output == {"route": "default"}
    r = execute(d, {"type": "x", "n": 11, "wait": 0})
    assert (r.status, r.error, r.cause) == ("FAILED", "TooBig", "n is 11")
    # a Condition that is not a boolean is a query evaluation error
    d["States"]["Route"]["Choices"][1]["Condition"] = "{% $states.input.n %}"
    r = execute(d, {"type": "x", "n": 3, "wait": 0})
    assert r.error == "States.QueryEvaluationError" and "not a boolean" in r.cause


def test_map_items_item_selector_and_parallel_arguments():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"factor": 3}, "Next": "Fan"},
            "Fan": {
                "Type": "Map",
                "Items": "{% $states.input.values %}",
                "MaxConcurrency": "{% 2 %}",
                "ItemSelector": {
                    "value": "{% $states.context.Map.Item.Value %}",
                    "index": "{% $states.context.Map.Item.Index %}",
                },
                "ItemProcessor": {
                    "StartAt": "Times",
                    "States": {
                        "Times": {
                            "Type": "Pass",
                            "Output": "{% $states.input.value * $factor + $states.input.index %}",
                            "End": True,
                        }
                    },
                },
                "Assign": {"sum": "{% $sum($states.result) %}"},
                "Next": "Both",
            },
            "Both": {
                "Type": "Parallel",
                "Arguments": {"s": "{% $sum %}"},
                "Branches": [
                    {
                        "StartAt": "Half",
                        "States": {
                            "Half": {
                                "Type": "Pass",
                                "Output": "{% $states.input.s / 2 %}",
                                "End": True,
                            }
                        },
                    },
                    {
                        "StartAt": "Echo",
                        "States": {"Echo": {"Type": "Pass", "End": True}},
                    },
                ],
                "Output": {"parts": "{% $states.result %}", "sum": "{% $sum %}"},
                "End": True,
            },
        },
    }
    r = execute(d, {"values": [1, 2, 3]})
    assert r.status == "SUCCEEDED", r
    # 1*3+0, 2*3+1, 3*3+2 = 3, 7, 11
    assert r.output == {"parts": [10.5, {"s": 21}], "sum": 21}


def test_retry_and_catch_with_error_output():
    calls = []

    def flaky(event):
        calls.append(event)
        if len(calls) < 2:
            raise ConnectionError("try again")
        raise ValueError("bad item")

    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "headrace:function:flaky",
                "Retry": [{"ErrorEquals": ["ConnectionError"], "IntervalSeconds": 1}],
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "Assign": {"failedWith": "{% $states.errorOutput.Error %}"},
                        "Output": {
                            "error": "{% $states.errorOutput.Error %}",
                            "input": "{% $states.input %}",
                        },
                        "Next": "After",
                    }
                ],
                "End": True,
            },
            "After": {
                "Type": "Pass",
                "Output": "{% $merge([$states.input, {'var': $failedWith}]) %}",
                "End": True,
            },
        },
    }
    r = execute(d, {"id": 1}, resources={"flaky": flaky})
    assert r.status == "SUCCEEDED", r
    assert r.output == {"error": "ValueError", "input": {"id": 1}, "var": "ValueError"}
    assert len(calls) == 2


def test_query_evaluation_errors_are_catchable():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "Bad",
        "States": {
            "Bad": {
                "Type": "Pass",
                "Output": {"x": "{% $states.input.missing %}"},
                "End": True,
            }
        },
    }
    r = execute(d, {})
    assert r.error == "States.QueryEvaluationError"
    assert "returned nothing (undefined)" in r.cause and "Output/x" in r.cause
    d["States"]["Bad"]["Output"] = "{% $number('abc') + 1 %}"
    r = execute(d, {})
    assert r.error == "States.QueryEvaluationError" and "threw an error" in r.cause
    # in a Task state the error goes through Catch
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "headrace:function:f",
                "Arguments": "{% $states.input.nothing %}",
                "Catch": [{"ErrorEquals": ["States.QueryEvaluationError"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    r = execute(d, {}, resources={"f": lambda e: e})
    assert r.status == "SUCCEEDED" and r.output["Error"] == "States.QueryEvaluationError", r


def test_aws_functions():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "F",
        "States": {
            "F": {
                "Type": "Pass",
                "Output": {
                    "partition": "{% $partition([1,2,3,4,5], 2) %}",
                    "range": "{% $range(0, 10, 5) %}",
                    "hash": "{% $hash('abc', 'SHA-256') %}",
                    "md5": "{% $hash('abc', 'MD5') %}",
                    "random": "{% $random() %}",
                    "seeded": "{% $random(7) = $random(7) %}",
                    "uuid": "{% $uuid() %}",
                    "parse": "{% $parse('{\"a\": [1, true]}') %}",
                },
                "End": True,
            }
        },
    }
    r = execute(d, {})
    assert r.status == "SUCCEEDED", r
    out = r.output
    assert out["partition"] == [[1, 2], [3, 4], [5]]
    assert out["range"] == [0, 5, 10]
    assert out["hash"] == hashlib.sha256(b"abc").hexdigest()
    assert out["md5"] == hashlib.md5(b"abc").hexdigest()
    assert 0 <= out["random"] < 1 and out["seeded"] is True
    assert uuid.UUID(out["uuid"]).version == 4
    assert out["parse"] == {"a": [1, True]}


def test_mixed_machine_shares_variables_between_languages():
    d = {
        "StartAt": "PathState",
        "States": {
            "PathState": {
                "Type": "Pass",
                "Assign": {"fromPath.$": "$.a"},
                "Next": "AtaState",
            },
            "AtaState": {
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Assign": {"fromAta": "{% $fromPath + 1 %}"},
                "Output": {"b": "{% $fromPath * 10 %}"},
                "Next": "Back",
            },
            "Back": {
                "Type": "Pass",
                "Parameters": {"a.$": "$fromPath", "ata.$": "$fromAta", "b.$": "$.b"},
                "End": True,
            },
        },
    }
    r = execute(d, {"a": 4})
    assert r.output == {"a": 4, "ata": 5, "b": 40}


def test_validation():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Pass",
                "InputPath": "$.x",
                "Output": "{% 1 + %}",
                "Next": "B",
            },
            "B": {"Type": "Pass", "QueryLanguage": "JSONPath", "Next": "C"},
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.x", "IsPresent": True, "Next": "D"}],
                "Default": "D",
            },
            "D": {"Type": "Succeed"},
        },
    }
    found = " | ".join(f"{p}: {m}" for p, m in _problems(d))
    assert "$.States.A.InputPath: InputPath belongs to the JSONPath query language" in found
    assert "$.States.A.Output: invalid JSONata expression" in found
    assert "$.States.B.QueryLanguage: a state of a JSONata state machine cannot use JSONPath" in (
        found
    )
    assert "$.States.C.Choices[0]: a JSONata Choice rule needs Condition" in found
    # JSONata fields in a JSONPath state point at the QueryLanguage to set
    jsonpath = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Output": 1, "End": True}}}
    assert any("QueryLanguage" in m for _, m in _problems(jsonpath))


def test_validation_of_delimiters_and_states_fields():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Output": {"a": " {% 1 %}", "b": "{% 2", "c": "{% $states.result %}"},
                "Next": "T",
            },
            "T": {
                "Type": "Task",
                "Resource": "headrace:function:f",
                "Arguments": "{% $states.result %}",
                "Output": "{% $states.result %}",
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "Output": "{% $states.errorOutput %}",
                        "Next": "E",
                    }
                ],
                "Next": "E",
            },
            "E": {"Type": "Pass", "Output": "{% $states.errorOutput %}", "End": True},
        },
    }
    found = {(p, m.split(":")[0]) for p, m in _problems(d)}
    paths = {p for p, _ in found}
    assert "$.States.P.Output.a" in paths and "$.States.P.Output.b" in paths
    assert "$.States.P.Output.c" in paths  # no result in a Pass state
    assert "$.States.T.Arguments" in paths  # nor before the task ran
    assert "$.States.E.Output" in paths  # errorOutput only in a Catch
    assert "$.States.T.Output" not in paths
    assert "$.States.T.Catch[0].Output" not in paths


def test_eval_is_not_supported():
    d = {
        "QueryLanguage": "JSONata",
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Output": "{% $eval('1 + 1') %}", "End": True}},
    }
    r = execute(d, {})
    assert r.error == "States.QueryEvaluationError" and "$eval is not supported" in r.cause


def test_pad_is_bounded_so_one_step_cannot_allocate_gigabytes():
    def output(expression):
        d = {
            "QueryLanguage": "JSONata",
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Output": "{% " + expression + " %}", "End": True}},
        }
        return execute(d, {})

    r = output("$pad('', 2500000000, 'a')")
    assert (r.status, r.error) == ("FAILED", "States.QueryEvaluationError"), r
    assert "width of 2500000000 is over the maximum of 262144 characters" in r.cause
    assert output("$pad('', -262145)").status == "FAILED"
    assert output("$pad('ab', 5)").output == "ab   "
    assert output("$pad('ab', -5, '#')").output == "###ab"
    assert output("$pad('ab', 7, 'xy')").output == "abxyxyx"
    assert output("$pad('abcdef', 3)").output == "abcdef"
    assert output("$length($pad('', 262144, 'a'))").output == 262144
    assert output("$count([1..100000000])").error == "States.QueryEvaluationError"
