"""The Python builder renders the same ASL one would write by hand, and it runs."""

import json
from datetime import UTC, datetime

import pytest

from headrace.workflows import asl, execute
from headrace.workflows.builder import (
    BuildError,
    Catch,
    Chain,
    Choice,
    Fail,
    Map,
    Parallel,
    Pass,
    Retry,
    Rule,
    StateMachine,
    Succeed,
    Task,
    Wait,
)


def built(sm: StateMachine) -> dict:
    """The rendered document, after checking it is valid ASL and survives JSON."""
    data = sm.to_dict()
    assert asl.validate(data) == []
    assert sm.validate() == []
    assert json.loads(sm.to_json(indent=2)) == data
    return data


def test_composite_pipeline_matches_hand_written_asl():
    notify_failure = Task(
        "NotifyFailure",
        resource="headrace:function:notify",
        parameters={"cell.$": "$.cell", "error.$": "$.error"},
        result_path=None,
    )
    job = Task(
        "Composite",
        resource="arn:aws:states:::batch:submitJob.sync",
        parameters={"JobName": "composite", "Parameters": {"cell.$": "$.cell"}},
        result_selector={"status.$": "$.Status"},
        result_path="$.job",
        timeout_seconds=600,
        heartbeat_seconds=60,
        retry=[
            Retry(["States.TaskFailed"], interval=2, max_attempts=3, backoff=2.0, jitter="FULL")
        ],
        catch=[Catch(["States.ALL"], next=notify_failure, result_path="$.error")],
    )
    fan = Map(
        "Cells",
        job,
        items_path="$.cells",
        max_concurrency=4,
        item_selector={"cell.$": "$$.Map.Item.Value", "run.$": "$.run"},
        tolerated_failure_percentage=10,
        result_path="$.results",
    )
    init = Task("InitTaskLog", resource="headrace:function:init_log", result_path=None)
    done = Task("NotifyDone", resource="headrace:function:notify_done", output_path="$.results")
    sm = StateMachine(init >> fan >> done, comment="composite cells", timeout_seconds=3600)

    assert built(sm) == {
        "Comment": "composite cells",
        "StartAt": "InitTaskLog",
        "TimeoutSeconds": 3600,
        "States": {
            "InitTaskLog": {
                "Type": "Task",
                "Resource": "headrace:function:init_log",
                "ResultPath": None,
                "Next": "Cells",
            },
            "Cells": {
                "Type": "Map",
                "ItemsPath": "$.cells",
                "MaxConcurrency": 4,
                "ItemSelector": {"cell.$": "$$.Map.Item.Value", "run.$": "$.run"},
                "ToleratedFailurePercentage": 10,
                "ResultPath": "$.results",
                "ItemProcessor": {
                    "StartAt": "Composite",
                    "States": {
                        "Composite": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::batch:submitJob.sync",
                            "Parameters": {
                                "JobName": "composite",
                                "Parameters": {"cell.$": "$.cell"},
                            },
                            "ResultSelector": {"status.$": "$.Status"},
                            "ResultPath": "$.job",
                            "TimeoutSeconds": 600,
                            "HeartbeatSeconds": 60,
                            "Retry": [
                                {
                                    "ErrorEquals": ["States.TaskFailed"],
                                    "IntervalSeconds": 2,
                                    "MaxAttempts": 3,
                                    "BackoffRate": 2.0,
                                    "JitterStrategy": "FULL",
                                }
                            ],
                            "Catch": [
                                {
                                    "ErrorEquals": ["States.ALL"],
                                    "Next": "NotifyFailure",
                                    "ResultPath": "$.error",
                                }
                            ],
                            "End": True,
                        },
                        "NotifyFailure": {
                            "Type": "Task",
                            "Resource": "headrace:function:notify",
                            "Parameters": {"cell.$": "$.cell", "error.$": "$.error"},
                            "ResultPath": None,
                            "End": True,
                        },
                    },
                },
                "Next": "NotifyDone",
            },
            "NotifyDone": {
                "Type": "Task",
                "Resource": "headrace:function:notify_done",
                "OutputPath": "$.results",
                "End": True,
            },
        },
    }


def test_choice_wait_pass_fail_and_parallel_match_hand_written_asl():
    too_big = Fail("TooBig", error="Size.Exceeded", cause="n is above 100")
    ok = Succeed("Done", output_path="$.sum")
    both = Parallel(
        "Both",
        [
            Pass("Left", result={"side": "left"}),
            Pass("Right", parameters={"n.$": "$.n"}) >> Wait("Pause", seconds=0),
        ],
        result_selector={"left.$": "$[0]", "right.$": "$[1]"},
        result_path="$.both",
    )
    pause = Wait("Later", timestamp=datetime(2016, 3, 14, 1, 59, tzinfo=UTC), comment="why not")
    route = (
        Choice("Route", input_path="$", comment="by size")
        .when(Rule("$.n").numeric_greater_than(100), too_big)
        .when(
            Rule.and_(Rule("$.n").numeric_greater_than_equals(10), Rule("$.fast").is_present()),
            both,
            comment="medium",
        )
        .when(~Rule("$.kind").string_matches("skip*") | Rule("$.n").is_null(), pause)
        .otherwise(ok)
    )
    both >> ok
    pause >> Wait("Then", seconds_path="$.delay") >> Wait("Until", timestamp_path="$.at") >> ok
    sm = StateMachine(Pass("Start", input_path=None, result_path="$.start") >> route)

    assert built(sm) == {
        "StartAt": "Start",
        "States": {
            "Start": {"Type": "Pass", "InputPath": None, "ResultPath": "$.start", "Next": "Route"},
            "Route": {
                "Type": "Choice",
                "Comment": "by size",
                "InputPath": "$",
                "Choices": [
                    {"Variable": "$.n", "NumericGreaterThan": 100, "Next": "TooBig"},
                    {
                        "And": [
                            {"Variable": "$.n", "NumericGreaterThanEquals": 10},
                            {"Variable": "$.fast", "IsPresent": True},
                        ],
                        "Next": "Both",
                        "Comment": "medium",
                    },
                    {
                        "Or": [
                            {"Not": {"Variable": "$.kind", "StringMatches": "skip*"}},
                            {"Variable": "$.n", "IsNull": True},
                        ],
                        "Next": "Later",
                    },
                ],
                "Default": "Done",
            },
            "TooBig": {"Type": "Fail", "Error": "Size.Exceeded", "Cause": "n is above 100"},
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "Left",
                        "States": {
                            "Left": {"Type": "Pass", "Result": {"side": "left"}, "End": True}
                        },
                    },
                    {
                        "StartAt": "Right",
                        "States": {
                            "Right": {
                                "Type": "Pass",
                                "Parameters": {"n.$": "$.n"},
                                "Next": "Pause",
                            },
                            "Pause": {"Type": "Wait", "Seconds": 0, "End": True},
                        },
                    },
                ],
                "ResultSelector": {"left.$": "$[0]", "right.$": "$[1]"},
                "ResultPath": "$.both",
                "Next": "Done",
            },
            "Later": {
                "Type": "Wait",
                "Comment": "why not",
                "Timestamp": "2016-03-14T01:59:00Z",
                "Next": "Then",
            },
            "Then": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Until"},
            "Until": {"Type": "Wait", "TimestampPath": "$.at", "Next": "Done"},
            "Done": {"Type": "Succeed", "OutputPath": "$.sum"},
        },
    }


def test_every_remaining_field_renders():
    task = Task(
        "T",
        "headrace:function:f",
        timeout_seconds_path="$.timeout",
        heartbeat_seconds_path="$.beat",
        credentials={"RoleArn": "arn:aws:iam::1:role/r"},
        input_path="$.in",
        output_path=None,
        comment="c",
        retry=[Retry("Custom.Error", max_delay=30), Retry()],
        catch=[Catch("Custom.Error", next="Failed", result_path=None), Catch(next="Failed")],
    )
    fan = Map(
        "Fan",
        Succeed("Item"),
        max_concurrency_path="$.mc",
        tolerated_failure_count=2,
        tolerated_failure_percentage_path="$.pct",
        processor_config={"Mode": "INLINE"},
        label="fan",
    )
    fan2 = Map("Fan2", Pass("Item2"), tolerated_failure_count_path="$.n")
    failed = Fail("Failed", error_path="$.Error", cause_path="States.Format('x {}', $.Cause)")
    sm = StateMachine(task >> fan >> fan2, version="1.0")
    task.catch.insert(1, Catch(["Other"], next=failed))  # objects can change until rendered
    states = built(sm)["States"]
    assert states["T"] == {
        "Type": "Task",
        "Comment": "c",
        "Resource": "headrace:function:f",
        "InputPath": "$.in",
        "OutputPath": None,
        "TimeoutSecondsPath": "$.timeout",
        "HeartbeatSecondsPath": "$.beat",
        "Credentials": {"RoleArn": "arn:aws:iam::1:role/r"},
        "Retry": [
            {"ErrorEquals": ["Custom.Error"], "MaxDelaySeconds": 30},
            {"ErrorEquals": ["States.ALL"]},
        ],
        "Catch": [
            {"ErrorEquals": ["Custom.Error"], "Next": "Failed", "ResultPath": None},
            {"ErrorEquals": ["Other"], "Next": "Failed"},
            {"ErrorEquals": ["States.ALL"], "Next": "Failed"},
        ],
        "Next": "Fan",
    }
    assert states["Fan"] == {
        "Type": "Map",
        "ItemProcessor": {
            "StartAt": "Item",
            "States": {"Item": {"Type": "Succeed"}},
            "ProcessorConfig": {"Mode": "INLINE"},
        },
        "MaxConcurrencyPath": "$.mc",
        "ToleratedFailureCount": 2,
        "ToleratedFailurePercentagePath": "$.pct",
        "Label": "fan",
        "Next": "Fan2",
    }
    assert states["Fan2"]["ToleratedFailureCountPath"] == "$.n"
    assert states["Failed"] == {
        "Type": "Fail",
        "ErrorPath": "$.Error",
        "CausePath": "States.Format('x {}', $.Cause)",
    }
    assert sm.to_dict()["Version"] == "1.0"


def test_every_rule_operator_is_valid_asl():
    r = Rule("$.v")
    ts = "2024-01-01T00:00:00Z"
    conditions = [
        r.string_equals("a"),
        r.string_less_than("a"),
        r.string_greater_than("a"),
        r.string_less_than_equals("a"),
        r.string_greater_than_equals("a"),
        r.string_matches("a*"),
        r.string_equals_path("$.w"),
        r.string_less_than_path("$.w"),
        r.string_greater_than_path("$.w"),
        r.string_less_than_equals_path("$.w"),
        r.string_greater_than_equals_path("$.w"),
        r.numeric_equals(1),
        r.numeric_less_than(1),
        r.numeric_greater_than(1.5),
        r.numeric_less_than_equals(1),
        r.numeric_greater_than_equals(1),
        r.numeric_equals_path("$.w"),
        r.numeric_less_than_path("$.w"),
        r.numeric_greater_than_path("$.w"),
        r.numeric_less_than_equals_path("$.w"),
        r.numeric_greater_than_equals_path("$.w"),
        r.timestamp_equals(ts),
        r.timestamp_less_than(ts),
        r.timestamp_greater_than(datetime(2024, 1, 1, tzinfo=UTC)),
        r.timestamp_less_than_equals(ts),
        r.timestamp_greater_than_equals(ts),
        r.timestamp_equals_path("$.w"),
        r.timestamp_less_than_path("$.w"),
        r.timestamp_greater_than_path("$.w"),
        r.timestamp_less_than_equals_path("$.w"),
        r.timestamp_greater_than_equals_path("$.w"),
        r.boolean_equals(True),
        r.boolean_equals_path("$.w"),
        r.is_null(),
        r.is_present(False),
        r.is_numeric(),
        r.is_string(),
        r.is_boolean(),
        r.is_timestamp(),
        r.compare("StringEquals", "x"),
    ]
    end = Succeed("End")
    choice = Choice("C", [c.then(end) for c in conditions])
    data = built(StateMachine(choice))
    ops = [
        next(k for k in rule if k not in ("Variable", "Next"))
        for rule in data["States"]["C"]["Choices"]
    ]
    assert len(set(ops)) == len(conditions) - 1
    assert data["States"]["C"]["Choices"][23]["TimestampGreaterThan"] == ts
    # & of an And extends it rather than nesting, as one would write it by hand
    three = r.is_present() & r.is_string() & r.string_equals("x")
    assert three.to_dict() == {
        "And": [
            {"Variable": "$.v", "IsPresent": True},
            {"Variable": "$.v", "IsString": True},
            {"Variable": "$.v", "StringEquals": "x"},
        ]
    }


def test_chains_compose_and_loops_use_names():
    a, b, c, d = (Pass(n) for n in "ABCD")
    tail = c >> d
    chain = Chain.of(a, b) >> tail
    assert chain.first is a and chain.last is d
    poll = Task("Poll", "headrace:function:poll", result_path="$.status")
    ready = Choice("Ready?").when(Rule("$.status").string_equals("done"), Succeed("Ok"))
    wait = Wait("Sleep", seconds=1)
    ready.otherwise(wait)
    wait.next("Poll")  # back edge by name: the object is fine too, a name reads better here
    sm = StateMachine(chain >> poll >> ready)
    states = built(sm)["States"]
    assert list(states) == ["A", "B", "C", "D", "Poll", "Ready?", "Ok", "Sleep"]
    assert states["Sleep"]["Next"] == "Poll" and states["D"]["Next"] == "Poll"


def test_chaining_errors():
    choice = Choice("C").when(Rule("$.x").is_present(), Succeed("S"))
    with pytest.raises(TypeError, match="no Next"):
        choice >> Pass("P")
    with pytest.raises(TypeError, match="no Next"):
        Pass("Q") >> choice >> Pass("R")
    with pytest.raises(TypeError, match="no Next"):
        Fail("F", error="E") >> Pass("P")
    a = Pass("A")
    a >> Pass("B")
    with pytest.raises(ValueError, match="already goes to 'B'"):
        a >> Pass("C")
    with pytest.raises(ValueError, match="exactly one"):
        Wait("W", seconds=1, seconds_path="$.s")
    with pytest.raises(ValueError, match="exactly one"):
        Wait("W")
    with pytest.raises(ValueError, match="only one of error, error_path"):
        Fail("F", error="E", error_path="$.e")
    with pytest.raises(ValueError, match="only one of"):
        Map("M", Pass("I"), max_concurrency=1, max_concurrency_path="$.m")
    with pytest.raises(ValueError, match="time zone"):
        Wait("W", timestamp=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="longer than 80"):
        Pass("x" * 81)
    with pytest.raises(TypeError, match="then"):
        Choice("C", [Rule("$.x").is_present()])  # type: ignore[list-item]


def test_dangling_reference_is_an_error():
    sm = StateMachine(Pass("A") >> "Nowhere")
    with pytest.raises(BuildError, match="refers to 'Nowhere'"):
        sm.to_dict()
    problems = sm.validate()
    assert len(problems) == 1 and problems[0].state == "A"
    catch = Task("T", "headrace:function:f", catch=[Catch(next="Handler")])
    with pytest.raises(BuildError, match="'Handler', which is not a state in the top level"):
        StateMachine(catch).to_dict()


def test_references_cannot_cross_a_map_boundary():
    handler = Pass("Handler")
    inner = Task("Inner", "headrace:function:f", catch=[Catch(next=handler)])
    sm = StateMachine(Map("M", inner) >> handler)
    with pytest.raises(BuildError, match="reached from both the top level and Map 'M'"):
        sm.to_dict()
    # a name reference to the outer state is dangling inside the Map
    inner2 = Task("Inner", "headrace:function:f", catch=[Catch(next="After")])
    with pytest.raises(BuildError, match="not a state in Map 'M'"):
        StateMachine(Map("M", inner2) >> Pass("After")).to_dict()


def test_duplicate_names():
    # identical content under one name in one scope is one state
    sm = StateMachine(
        Choice("C", [Rule("$.x").is_present().then(Succeed("Done"))]).otherwise(Succeed("Done"))
    )
    assert set(built(sm)["States"]) == {"C", "Done"}
    # different content under one name is an error, which shows both
    sm = StateMachine(Pass("A", result=1) >> Pass("A", result=2))
    with pytest.raises(BuildError, match="two different states are named 'A'") as info:
        sm.to_dict()
    assert '"Result": 1' in str(info.value) and '"Result": 2' in str(info.value)
    # AWS wants names unique across branches too
    sm = StateMachine(Parallel("P", [Succeed("Done"), Succeed("Done")]))
    with pytest.raises(BuildError, match=r"in branch 0 of Parallel 'P' and branch 1"):
        sm.to_dict()


def test_choice_without_rules_and_empty_parallel():
    with pytest.raises(BuildError, match="needs at least one rule"):
        StateMachine(Choice("C", default=Succeed("S"))).to_dict()
    with pytest.raises(BuildError, match="at least one branch"):
        StateMachine(Parallel("P")).to_dict()


def test_asl_problems_surface_through_validate():
    sm = StateMachine(Task("T", "headrace:function:f", timeout_seconds=5, heartbeat_seconds=10))
    problems = sm.validate()
    assert [p.path for p in problems] == ["$.States.T.HeartbeatSeconds"]
    with pytest.raises(asl.DefinitionError):
        sm.parse()


def test_rendered_dicts_are_copies():
    params = {"a": {"b": 1}}
    task = Task("T", "headrace:function:f", parameters=params)
    sm = StateMachine(task)
    sm.to_dict()["States"]["T"]["Parameters"]["a"]["b"] = 2
    assert sm.to_dict()["States"]["T"]["Parameters"] == {"a": {"b": 1}}


# ------------------------------------------------------------------------------------ running


def test_built_map_with_retry_and_catch_runs():
    attempts: dict[int, int] = {}

    def square(event):
        n = event["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 3 and attempts[n] == 1:
            raise TimeoutError("flaky")  # retried once, then succeeds
        if n == 4:
            raise ValueError("four is not allowed")  # caught per item
        return n * n

    handled = Pass("Handled", parameters={"failed.$": "$.n", "error.$": "$.error.Error"})
    work = Task(
        "Square",
        "headrace:function:square",
        retry=[Retry(["TimeoutError"], interval=1, max_attempts=2, backoff=1.0, jitter="NONE")],
        catch=[Catch(["ValueError"], next=handled, result_path="$.error")],
    )
    fan = Map(
        "Each",
        work,
        items_path="$.numbers",
        max_concurrency=2,
        item_selector={"n.$": "$$.Map.Item.Value"},
        result_path="$.squares",
    )
    total = Task("Total", "headrace:function:total", input_path="$.squares")
    sm = StateMachine(Pass("Init", result=[1, 2, 3, 4], result_path="$.numbers") >> fan >> total)

    def add(results):
        return sum(r for r in results if isinstance(r, int))

    r = execute(
        sm.to_dict(), {}, resources={"square": square, "total": add}, max_workers=2, timeout=30
    )
    assert r.status == "SUCCEEDED", (r.error, r.cause)
    assert r.output == 1 + 4 + 9
    assert attempts == {1: 1, 2: 1, 3: 2, 4: 1}
    exits = [
        e for e in r.history if e["type"] == "PassStateExited" and e["details"]["name"] == "Handled"
    ]
    assert exits[0]["details"]["output"] == {"failed": 4, "error": "ValueError"}


def test_built_choice_and_parallel_run():
    def classify() -> StateMachine:
        small = Pass("Small", result="small", result_path="$.size")
        big = Parallel(
            "Big",
            [
                Task("Double", "headrace:function:double"),
                Pass("Negate", parameters={"v.$": "States.MathAdd(0, $.n)"}, output_path="$.v"),
            ],
            result_path="$.parts",
        )
        boom = Fail("Boom", error="Negative", cause="n < 0")
        route = (
            Choice("Route")
            .when(Rule("$.n").numeric_less_than(0), boom)
            .when(Rule("$.n").numeric_greater_than(10), big)
            .otherwise(small)
        )
        return StateMachine(route)

    resources = {"double": lambda e: e["n"] * 2}
    r = execute(classify().to_dict(), {"n": 3}, resources=resources)
    assert r.status == "SUCCEEDED" and r.output == {"n": 3, "size": "small"}
    r = execute(classify().to_dict(), {"n": 11}, resources=resources)
    assert r.status == "SUCCEEDED" and r.output == {"n": 11, "parts": [22, 11]}
    r = execute(classify().to_dict(), {"n": -1}, resources=resources)
    assert (r.status, r.error, r.cause) == ("FAILED", "Negative", "n < 0")
