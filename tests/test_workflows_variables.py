"""Workflow variables (Assign) in JSONPath and JSONata states, run end to end with execute()."""

import json
import random
import threading
import time
from pathlib import Path

import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.server.coordinator import Coordinator
from headrace.workflows import api, execute
from headrace.workflows.asl import DefinitionError, validate
from tests.e2e_helpers import Up

APP_DIR = Path(__file__).parent / "apps" / "flows"


def _problems(definition):
    return [(p.path, p.message) for p in validate(definition)]


def test_assign_on_pass_and_reference_everywhere():
    # AWS's example: store values, then read them in later states' paths and intrinsics
    d = {
        "StartAt": "Store",
        "States": {
            "Store": {
                "Type": "Pass",
                "Assign": {
                    "productName": "product1",
                    "count": 42,
                    "available": True,
                    "inputs.$": "$",
                },
                "Next": "Use",
            },
            "Use": {
                "Type": "Pass",
                "Parameters": {
                    "name.$": "$productName",
                    "doubled.$": "States.MathAdd($count, $count)",
                    "text.$": "States.Format('{} x {}', $productName, $count)",
                    "first.$": "$inputs.items[0]",
                    "ctx.$": "$$.State.Name",
                },
                "Next": "Check",
            },
            "Check": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$available", "BooleanEquals": True, "Next": "Done"},
                ],
                "Default": "Nope",
            },
            "Nope": {"Type": "Fail", "Error": "Wrong"},
            "Done": {"Type": "Succeed"},
        },
    }
    r = execute(d, {"items": ["a", "b"]})
    assert r.status == "SUCCEEDED", r
    assert r.output == {
        "name": "product1",
        "doubled": 84,
        "text": "product1 x 42",
        "first": "a",
        "ctx": "Use",
    }
    # the context object ($$) never shows the variables
    exited = [e for e in r.history if e["type"] == "PassStateExited"]
    # in AWS's event shape: each assigned value as JSON text
    details = exited[0]["details"]
    assert details["assignedVariables"]["inputs"] == '{"items":["a","b"]}'
    assert details["assignedVariablesDetails"] == {"truncated": False}
    assert "assignedVariables" not in exited[-1]["details"]  # a state that assigns nothing


def test_all_values_are_evaluated_before_any_is_assigned():
    d = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"x": 1, "y": 2}, "Next": "Swap"},
            "Swap": {
                "Type": "Pass",
                "Assign": {"x.$": "$y", "y.$": "$x", "old.$": "$x"},
                # the state's own output processing still sees the values it entered with
                "Parameters": {"x.$": "$x"},
                "Next": "Read",
            },
            "Read": {
                "Type": "Pass",
                "Parameters": {"x.$": "$x", "y.$": "$y", "old.$": "$old", "before.$": "$.x"},
                "End": True,
            },
        },
    }
    r = execute(d, {})
    assert r.output == {"x": 2, "y": 1, "old": 1, "before": 1}


def test_task_assign_sees_the_selected_result_and_catch_assigns_the_error():
    d = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "headrace:function:score",
                "ResultSelector": {"s.$": "$.score"},
                "ResultPath": "$.r",
                "Assign": {"score.$": "$.s", "raw.$": "$$.State.Name"},
                "Next": "Boom",
            },
            "Boom": {
                "Type": "Task",
                "Resource": "headrace:function:boom",
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "Assign": {"err.$": "$.Error", "scoreSeen.$": "$score"},
                        "ResultPath": "$.error",
                        "Next": "Out",
                    }
                ],
                "Next": "Out",
            },
            "Out": {
                "Type": "Pass",
                "Parameters": {
                    "score.$": "$score",
                    "err.$": "$err",
                    "seen.$": "$scoreSeen",
                    "r.$": "$.r",
                    "raw.$": "$raw",
                },
                "End": True,
            },
        },
    }

    def boom(_):
        raise KeyError("nope")

    r = execute(d, {"n": 1}, resources={"score": lambda e: {"score": 7}, "boom": boom})
    assert r.status == "SUCCEEDED", r
    assert r.output == {"score": 7, "err": "KeyError", "seen": 7, "r": {"s": 7}, "raw": "Call"}


def test_choice_rule_assign_and_default_assign():
    def machine():
        return {
            "StartAt": "C",
            "States": {
                "C": {
                    "Type": "Choice",
                    "Choices": [
                        {
                            "Variable": "$.n",
                            "NumericGreaterThan": 10,
                            "Assign": {"size": "big", "n.$": "$.n"},
                            "Next": "Out",
                        }
                    ],
                    "Default": "Out",
                    "Assign": {"size": "small"},
                },
                "Out": {"Type": "Pass", "Parameters": {"size.$": "$size"}, "End": True},
            },
        }

    assert execute(machine(), {"n": 11}).output == {"size": "big"}
    assert execute(machine(), {"n": 1}).output == {"size": "small"}


def test_map_and_parallel_scopes_read_outer_variables_and_keep_their_own():
    d = {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"factor": 10}, "Next": "Fan"},
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 2,
                "ItemSelector": {"v.$": "$$.Map.Item.Value", "f.$": "$factor"},
                "ItemProcessor": {
                    "StartAt": "Keep",
                    "States": {
                        "Keep": {
                            "Type": "Pass",
                            "Assign": {"mine.$": "States.MathAdd($.v, $factor)"},
                            "Next": "Give",
                        },
                        "Give": {
                            "Type": "Pass",
                            "Parameters": {"out.$": "$mine", "f.$": "$.f"},
                            "End": True,
                        },
                    },
                },
                "ResultPath": "$.mapped",
                "Assign": {"mapped.$": "$[*].out"},
                "Next": "Both",
            },
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "B0",
                        "States": {
                            "B0": {"Type": "Pass", "Parameters": {"f.$": "$factor"}, "End": True}
                        },
                    },
                    {
                        "StartAt": "B1",
                        "States": {
                            "B1": {
                                "Type": "Pass",
                                "Assign": {"inner": 1},
                                "Parameters": {"m.$": "$mapped"},
                                "End": True,
                            }
                        },
                    },
                ],
                "ResultPath": "$.branches",
                "Next": "Leak",
            },
            # a branch's own variable does not exist outside it: reading it fails the execution
            "Leak": {"Type": "Pass", "Parameters": {"x.$": "$inner"}, "End": True},
        },
    }
    r = execute(d, {"items": [1, 2, 3]})
    assert r.status == "FAILED" and r.error == "States.Runtime", r
    assert "$inner" in r.cause
    exited = {
        e["details"]["name"]: e["details"] for e in r.history if e["type"].endswith("StateExited")
    }
    assert exited["Fan"]["assignedVariables"] == {"mapped": "[11,12,13]"}
    assert exited["Fan"]["output"]["mapped"] == [{"out": v, "f": 10} for v in (11, 12, 13)]
    assert exited["Both"]["output"]["branches"] == [{"f": 10}, {"m": [11, 12, 13]}]


def test_distributed_map_iterations_do_not_see_outer_variables():
    d = {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"secret": 1}, "Next": "Fan"},
            "Fan": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Read",
                    "States": {
                        "Read": {"Type": "Pass", "Parameters": {"s.$": "$secret"}, "End": True}
                    },
                },
                "End": True,
            },
        },
    }
    r = execute(d, [1])
    assert r.status == "FAILED" and r.error == "States.Runtime" and "$secret" in r.cause


def test_validation_of_variable_misuse():
    inner_reassign = {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"x": 1}, "Next": "Fan"},
            "Fan": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "Set",
                    "States": {"Set": {"Type": "Pass", "Assign": {"x": 2}, "End": True}},
                },
                "End": True,
            },
        },
    }
    found = _problems(inner_reassign)
    assert any(
        p == "$.States.Fan.ItemProcessor.States.Set.Assign" and "enclosing scope" in m
        for p, m in found
    ), found
    bad = {
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Pass",
                "Assign": {"states": 1, "9lives": 1, "ok.$": 3, "x" * 81: 1},
                "ResultPath": "$x",
                "End": True,
            },
            "B": {"Type": "Succeed", "Assign": {"a": 1}},
        },
    }
    messages = " | ".join(f"{p}: {m}" for p, m in _problems(bad))
    assert "reserved" in messages
    assert "'9lives' is not a valid variable name" in messages
    assert '$.States.A.Assign["ok.$"]' in messages
    assert "longer than 80" in messages
    assert "$.States.A.ResultPath" in messages
    assert "$.States.B.Assign" in messages
    with pytest.raises(DefinitionError):
        execute(bad, {})


def test_variable_size_limits():
    big = "x" * (256 * 1024)
    d = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Assign": {"big.$": "$.s"}, "End": True}},
    }
    r = execute(d, {"s": big[:200_000]})
    assert r.status == "SUCCEEDED"
    d["States"]["A"]["Assign"] = {"a.$": "$.s", "b.$": "$.s"}  # 2 x 200 KB in one Assign
    r = execute(d, {"s": big[:200_000]})
    assert r.status == "FAILED" and r.error == "States.DataLimitExceeded", r
    assert "limit of one Assign" in r.cause


@pytest.mark.slow
def test_variables_survive_coordinator_kills(tmp_path):
    """The values a resumed execution reads are the values recorded in its history."""
    rng = random.Random(16)
    home = tmp_path / "home"
    marks = tmp_path / "marks"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    settings = load_settings(APP_DIR, home=str(home))
    app = load_app(settings)
    ledger = Ledger(settings.ledger_url)
    up = Up(APP_DIR, env, tmp_path / "up.log").start()
    try:
        arn = api.start_execution(ledger, app, "tally", {"sleep": 0.4, "marks": str(marks)})
        for _ in range(3):
            time.sleep(rng.uniform(0.5, 1.5))
            up.kill9()
            up.start()
        row = api.wait_for(ledger, arn, timeout=240)
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    assert row["status"] == "SUCCEEDED", (row, up.output())
    assert row["output"] == {"count": 8, "total": sum(i * i for i in range(8))}
    items = sorted({int(p.name.split(".")[0]) for p in marks.iterdir()})
    assert items == list(range(8))
    ledger.close()


def test_variables_through_the_coordinator(tmp_path):
    settings = load_settings(APP_DIR, home=str(tmp_path / "home"), poll_interval=0.2, workers=2)
    app = load_app(settings)
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    try:
        assert coordinator.ready.wait(30)
        ledger = Ledger(settings.ledger_url)
        arn = api.start_execution(
            ledger, app, "tally", {"sleep": 0, "marks": str(tmp_path / "marks")}
        )
        row = api.wait_for(ledger, arn, timeout=60)
        assert row["status"] == "SUCCEEDED", row
        assert row["output"] == {"count": 8, "total": 140}
        ledger.close()
    finally:
        coordinator.stop()
        thread.join(30)


def test_variables_in_wait_map_choice_and_fail_paths():
    d = {
        "StartAt": "Init",
        "States": {
            "Init": {
                "Type": "Pass",
                "Assign": {
                    "delay": 0,
                    "items.$": "$.values",
                    "limit": 1,
                    "threshold": 2,
                    "why": "too many",
                },
                "Next": "Pause",
            },
            "Pause": {"Type": "Wait", "SecondsPath": "$delay", "Next": "Fan"},
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$items",
                "MaxConcurrencyPath": "$limit",
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "Assign": {"count.$": "States.ArrayLength($)"},
                "Next": "Check",
            },
            "Check": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$count", "NumericGreaterThanPath": "$threshold", "Next": "Stop"}
                ],
                "Default": "Ok",
            },
            "Ok": {"Type": "Succeed"},
            "Stop": {"Type": "Fail", "Error": "TooMany", "CausePath": "$why"},
        },
    }
    assert execute(d, {"values": [1, 2]}).status == "SUCCEEDED"
    r = execute(d, {"values": [1, 2, 3]})
    assert (r.status, r.error, r.cause) == ("FAILED", "TooMany", "too many"), r


def test_the_context_object_does_not_show_variables():
    d = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"hidden": 1}, "Next": "B"},
            "B": {"Type": "Pass", "Parameters": {"c.$": "$$"}, "End": True},
        },
    }
    r = execute(d, {})
    assert r.status == "SUCCEEDED", r
    assert type(r.output["c"]) is dict
    assert set(r.output["c"]) == {"Execution", "StateMachine", "State"}
    assert "hidden" not in str(r.output)


def test_a_replayed_prefix_of_the_history_resumes_with_the_same_variables():
    """Fold the first k events of a finished execution into a fresh interpreter (what a
    coordinator does after a restart) and let it run on: same variables, same output."""
    from headrace.workflows.history import Event
    from headrace.workflows.interpreter import Interpreter

    d = {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {"n": 0, "log": []}, "Next": "Loop"},
            "Loop": {
                "Type": "Choice",
                "Choices": [{"Variable": "$n", "NumericLessThan": 5, "Next": "Step"}],
                "Default": "Done",
            },
            "Step": {
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Assign": {"n": "{% $n + 1 %}", "log": "{% $append($log, $uuid()) %}"},
                "Next": "Loop",
            },
            "Done": {
                "Type": "Pass",
                "Parameters": {"n.$": "$n", "log.$": "$log"},
                "End": True,
            },
        },
    }
    full = execute(d, {})
    assert full.status == "SUCCEEDED" and full.output["n"] == 5
    assert len(set(full.output["log"])) == 5  # five different random ids
    events = [
        Event(e["id"], e["type"], e["timestamp"], e["scope"], e["details"]) for e in full.history
    ]
    for k in range(2, len(events) - 1):
        interp = Interpreter(d, {"Id": "x", "Name": "x"})
        for event in events[:k]:
            interp.apply(event)
        recorded = [
            {name: json.loads(v) for name, v in e.details["assignedVariables"].items()}
            for e in events[:k]
            if e.details.get("assignedVariables")
        ]
        expected = {**recorded[0], **recorded[-1]} if recorded else {}
        assert interp.visible_variables(interp.frames[""]) == expected
        while decisions := interp.decide(events[-1].timestamp):
            for kind, scope, details in decisions:
                interp.apply(Event(interp.length + 1, kind, 0.0, scope, details))
        assert interp.status == "SUCCEEDED" and interp.output["n"] == 5
        # the ids drawn before the cut come from the history; later ones are drawn anew
        before = recorded[-1]["log"] if recorded else []
        assert interp.output["log"][: len(before)] == before
