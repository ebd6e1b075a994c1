"""Mermaid and DOT drawings of state machines, and the execution status painted on them."""

import re
import shutil
import subprocess

import pytest

from headrace.workflows import execute
from headrace.workflows.builder import (
    Catch,
    Choice,
    Fail,
    Map,
    Parallel,
    Pass,
    Rule,
    StateMachine,
    Succeed,
    Task,
    Wait,
)
from headrace.workflows.graph import describe_rule, state_statuses, to_dot, to_mermaid


def pipeline() -> StateMachine:
    notify = Task('Notify "failure"', "headrace:function:notify", result_path=None)
    job = Task(
        "Composite cell",
        "headrace:function:job",
        catch=[Catch(["ValueError"], next=notify, result_path="$.error")],
    )
    fan = Map(
        "Cells",
        job,
        items_path="$.cells",
        item_selector={"cell.$": "$$.Map.Item.Value"},
        max_concurrency=2,
        tolerated_failure_count=5,
    )
    route = (
        Choice("Route")
        .when(Rule("$.n").numeric_greater_than(10) & Rule("$.tag").string_equals("a|b"), fan)
        .otherwise(Succeed("Small"))
    )
    oops = Fail("Oops", error="InitFailed")
    init = Task("Init", "headrace:function:init", result_path=None, catch=[Catch(next=oops)])
    (
        fan
        >> Parallel("Both", [Pass("L"), Pass("R") >> Wait("Nap", seconds=0)])
        >> Task("Done", "headrace:function:done", result_path=None)
    )
    return StateMachine(init >> route, comment='cells "v2"')


def resources(fail_init: bool = False):
    def job(event):
        cell = event["cell"]
        if cell == 3:
            raise ValueError("bad cell")  # caught inside the iteration
        if cell == 4:
            raise KeyError("missing")  # fails the iteration, tolerated
        return cell

    def init(_):
        if fail_init:
            raise RuntimeError("no log")
        return None

    return {"init": init, "job": job, "notify": lambda e: None, "done": lambda e: None}


def machine_with_oops() -> dict:
    return pipeline().to_dict()


# ------------------------------------------------------------------------- syntax checkers

DOT_NODE = re.compile(
    r'^\s*"(?:[^"\\]|\\.)*" \[(?:[a-z]+=(?:"(?:[^"\\]|\\.)*"|[\w.]+)(?:, )?)+\];$'
)
DOT_EDGE = re.compile(
    r'^\s*"(?:[^"\\]|\\.)*" -> "(?:[^"\\]|\\.)*"'
    r'(?: \[(?:[a-z]+=(?:"(?:[^"\\]|\\.)*"|[\w.]+)(?:, )?)+\])?;$'
)
DOT_ATTR = re.compile(r'^\s*(?:graph|node|edge) \[.*\];$|^\s*[a-z]+=(?:"(?:[^"\\]|\\.)*"|\w+);$')
DOT_OPEN = re.compile(r'^(?:digraph "(?:[^"\\]|\\.)*"|\s*subgraph cluster_\w+) \{$')


def check_dot(text: str) -> None:
    depth = 0
    for line in text.splitlines():
        if DOT_OPEN.match(line):
            depth += 1
        elif line.strip() == "}":
            depth -= 1
            assert depth >= 0, line
        else:
            assert DOT_NODE.match(line) or DOT_EDGE.match(line) or DOT_ATTR.match(line), line
    assert depth == 0
    # edges only between declared nodes
    declared = set(re.findall(r'^\s*("(?:[^"\\]|\\.)*") \[', text, re.M))
    for src, dst in re.findall(r'^\s*("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*")', text, re.M):
        assert src in declared and dst in declared, (src, dst)


MERMAID_NODE = re.compile(
    r'^\s+s\d+(?:\["[^"]*"\]|\{"[^"]*"\}|\[/"[^"]*"/\]|\(\["[^"]*"\]\)|\[\["[^"]*"\]\]|\(\("[^"]*"\)\))$'
)
MERMAID_EDGE = re.compile(r'^\s+s\d+ (?:-->|-\.->)(?:\|"[^"|]*"\|)? s\d+$')
MERMAID_OTHER = re.compile(
    r'^\s+(?:subgraph c\d+ \["[^"]*"\]|end|classDef \w+ [\w#:,\- ]+|class [s\d,]+ \w+)$'
)


def check_mermaid(text: str) -> None:
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    depth = 0
    for line in lines[1:]:
        assert MERMAID_NODE.match(line) or MERMAID_EDGE.match(line) or MERMAID_OTHER.match(line), (
            line
        )
        if line.strip().startswith("subgraph"):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
    assert depth == 0
    nodes = set(re.findall(r"^\s+(s\d+)[\[{(]", text, re.M))
    for src, dst in re.findall(r"^\s+(s\d+) \S+ (s\d+)$", text, re.M):
        assert {src, dst} <= nodes


def mermaid_node(text: str, name: str) -> tuple[str, str]:
    """(id, full label) of the node whose label starts with ``name``."""
    m = re.search(rf'^\s+(s\d+)\W+{re.escape(name)}<br/>([^"]*)"', text, re.M)
    assert m, name
    return m.group(1), m.group(2)


def mermaid_class(text: str, node_id: str) -> str:
    for ids, cls in re.findall(r"^\s+class ([s\d,]+) (\w+)$", text, re.M):
        if node_id in ids.split(","):
            return cls
    raise AssertionError(f"{node_id} has no class")


# ----------------------------------------------------------------------------------- tests


def test_static_graph_has_every_state_and_edge_kind():
    data = machine_with_oops()
    mermaid = to_mermaid(data)
    check_mermaid(mermaid)
    assert "classDef" not in mermaid  # no history, no colours
    for name in ("Init", "Route", "Cells", "Both", "Done", "Small", "Oops", "Composite cell"):
        mermaid_node(mermaid, name)
    assert "Notify #quot;failure#quot;<br/>Task" in mermaid
    # a Choice rule, shortened and escaped ('|' would end the label, '>' is an entity)
    assert '|"($.n #gt; 10 and $.tag == #quot;a#124;b#quot;)"|' in mermaid
    assert '-->|"default"|' in mermaid
    assert '-.->|"States.ALL"|' in mermaid and '-.->|"ValueError"|' in mermaid
    assert '-.->|"each item"|' in mermaid and '-.->|"branch 2"|' in mermaid
    assert mermaid.count("subgraph") == 3

    dot = to_dot(data)
    check_dot(dot)
    assert dot.startswith('digraph "cells \\"v2\\"" {')
    assert '"Cells[*]/Notify \\"failure\\"" [label="Notify \\"failure\\"\\nTask"' in dot
    assert '"Init" -> "Oops" [label="States.ALL", style=dashed];' in dot
    assert '"Cells" -> "Cells[*]/Composite cell" [label="each item", style=dotted];' in dot
    assert '"Both{1}/Nap" -> "Both{1}/(end)";' in dot
    assert '"Done" -> "(end)";' in dot and '"Oops" -> "(end)";' in dot
    assert dot.count("subgraph cluster_") == 3


def test_inputs_accepted():
    sm = StateMachine(Pass("Only"))
    as_dict = to_mermaid(sm.to_dict())
    assert to_mermaid(sm) == as_dict == to_mermaid(sm.to_json())
    assert to_dot(sm.parse()) == to_dot(sm)
    with pytest.raises(TypeError):
        to_dot(42)


def test_describe_rule():
    assert describe_rule({"Variable": "$.n", "NumericLessThanEqualsPath": "$.m"}) == "$.n <= $.m"
    assert describe_rule({"Variable": "$.s", "StringMatches": "a*"}) == '$.s matches "a*"'
    assert describe_rule({"Variable": "$.s", "IsPresent": False}) == "$.s is not present"
    assert describe_rule({"Not": {"Variable": "$.b", "BooleanEquals": True}}) == "not $.b == true"
    rule = {"Or": [{"Variable": "$.t", "TimestampGreaterThan": "2024-01-01T00:00:00Z"}]}
    assert describe_rule(rule) == '$.t > "2024-01-01T00:00:00Z"'


def test_long_rule_labels_are_shortened():
    rule = Rule("$.a.very.long.path.into.the.input").string_equals("and a long value too")
    sm = StateMachine(Choice("C", [rule.then(Succeed("S"))]))
    label = re.search(r'-->\|"([^"]*)"\|', to_mermaid(sm)).group(1).replace("#quot;", '"')
    assert label == '$.a.very.long.path.into.the.input == "a…'
    assert len(label) == 40


def test_succeeded_execution_colours_and_map_counts():
    data = machine_with_oops()
    r = execute(data, {"n": 11, "tag": "a|b", "cells": [1, 2, 3, 4, 5]}, resources=resources())
    assert r.status == "SUCCEEDED", (r.error, r.cause)
    statuses = state_statuses(data, r.history)
    assert {k: v.status for k, v in statuses.items()} == {
        "Init": "succeeded",
        "Route": "succeeded",
        "Cells": "succeeded",
        "Both": "succeeded",
        "Done": "succeeded",
        "Small": "not run",
        "Oops": "not run",
        # inside the Map, per item: cell 3's error was caught, cell 4's failed its iteration
        "Cells[*]/Composite cell": "failed",
        'Cells[*]/Notify "failure"': "succeeded",
        "Both{0}/L": "succeeded",
        "Both{1}/R": "succeeded",
        "Both{1}/Nap": "succeeded",
    }
    cells = statuses["Cells"]
    assert (cells.total, cells.succeeded, cells.failed) == (5, 4, 1)
    assert cells.note == "4 succeeded · 1 failed"
    assert statuses["Both"].note == "2 succeeded"
    job = statuses["Cells[*]/Composite cell"]
    assert job.items == {"succeeded": 3, "caught": 1, "failed": 1, "aborted": 0, "running": 0}
    assert job.note == "3 succeeded · 1 caught (ValueError) · 1 failed (KeyError)"
    assert statuses['Cells[*]/Notify "failure"'].note == "1 succeeded"

    mermaid = to_mermaid(data, r.history)
    check_mermaid(mermaid)
    cells_id, cells_label = mermaid_node(mermaid, "Cells")
    assert cells_label == "Map<br/>4 succeeded · 1 failed"
    assert mermaid_class(mermaid, cells_id) == "succeeded"
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Small")[0]) == "notrun"
    job_id, job_label = mermaid_node(mermaid, "Composite cell")
    assert job_label == "Task<br/>3 succeeded · 1 caught (ValueError) · 1 failed (KeyError)"
    assert mermaid_class(mermaid, job_id) == "failed"
    for inner in ("Notify #quot;failure#quot;", "L", "R", "Nap"):  # nested states coloured too
        assert mermaid_class(mermaid, mermaid_node(mermaid, inner)[0]) == "succeeded"
    dot = to_dot(data, r.history)
    check_dot(dot)
    assert re.search(
        r'"Cells" \[label="Cells\\nMap\\n4 succeeded · 1 failed".*fillcolor="#d4edda"', dot
    )
    assert re.search(r'"Both\{1\}/Nap" \[.*fillcolor="#d4edda"', dot)
    assert re.search(r'"Oops" \[.*style="rounded,filled,dashed"', dot)


def test_caught_and_failed_states():
    data = machine_with_oops()
    r = execute(data, {"n": 11, "tag": "a|b", "cells": []}, resources=resources(fail_init=True))
    assert (r.status, r.error) == ("FAILED", "InitFailed")
    statuses = state_statuses(data, r.history)
    assert statuses["Init"].status == "caught" and statuses["Init"].caught
    assert statuses["Init"].note == "caught RuntimeError"
    assert statuses["Oops"].status == "failed" and statuses["Oops"].note == "InitFailed"
    assert statuses["Route"].status == "not run"
    assert statuses["Cells[*]/Composite cell"].status == "not run"
    mermaid = to_mermaid(data, r.history)
    check_mermaid(mermaid)
    init_id, label = mermaid_node(mermaid, "Init")
    assert label == "Task<br/>caught RuntimeError"
    assert mermaid_class(mermaid, init_id) == "caught"
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Oops")[0]) == "failed"
    assert "classDef caught fill:#fff3cd" in mermaid
    check_dot(to_dot(data, r.history))


def test_a_caught_error_in_a_succeeded_execution_is_not_red():
    def load(_):
        raise ConnectionError("ledger busy")

    sm = StateMachine(Task("Load", "headrace:function:load", catch=[Catch(next=Pass("Fallback"))]))
    r = execute(sm.to_dict(), {}, resources={"load": load})
    assert r.status == "SUCCEEDED"
    load_status = state_statuses(sm, r.history)["Load"]
    assert (load_status.status, load_status.note) == ("caught", "caught ConnectionError")
    mermaid = to_mermaid(sm, r.history)
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Load")[0]) == "caught"
    assert " failed" not in "\n".join(
        line for line in mermaid.splitlines() if line.strip().startswith("class ")
    )
    dot = to_dot(sm, r.history)
    check_dot(dot)
    assert re.search(r'"Load" \[.*fillcolor="#fff3cd", color="#b26a00"', dot)


def test_nested_maps_and_odd_state_names_are_located():
    # state names holding the characters scopes are made of: "[", "]", "{", "/"
    leaf = Task("Leaf [x]/y", "headrace:function:leaf")
    inner = Map("In{0}/[1]", leaf, items_path="$.xs")
    outer = Map("Out[2]", inner, items_path="$.rows", max_concurrency=1)
    sm = StateMachine(outer)

    def leaf_fn(x):
        if x < 0:
            raise ValueError("negative")
        return x

    rows = [{"xs": [1, 2]}, {"xs": [3]}, {"xs": [4, -1, 5]}]
    r = execute(sm.to_dict(), {"rows": rows}, resources={"leaf": leaf_fn})
    assert r.status == "FAILED" and r.error == "ValueError"
    statuses = state_statuses(sm, r.history)
    assert statuses["Out[2]"].status == "failed"
    assert statuses["Out[2]"].note.startswith("2 succeeded · 1 failed")
    assert statuses["Out[2][*]/In{0}/[1]"].items["succeeded"] == 2
    assert statuses["Out[2][*]/In{0}/[1]"].items["failed"] == 1
    leaf_status = statuses["Out[2][*]/In{0}/[1][*]/Leaf [x]/y"]
    assert leaf_status.items["succeeded"] >= 4 and leaf_status.items["failed"] == 1
    assert leaf_status.status == "failed" and "(ValueError)" in leaf_status.note
    check_dot(to_dot(sm, r.history))
    mermaid = to_mermaid(sm, r.history)
    check_mermaid(mermaid)
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Leaf [x]/y")[0]) == "failed"


def test_a_running_map_counts_what_is_running_and_waiting():
    sm = StateMachine(Map("Fan", Task("Work", "headrace:function:work"), max_concurrency=2))
    r = execute(sm.to_dict(), [1, 2, 3, 4, 5], resources={"work": lambda n: n})
    assert r.status == "SUCCEEDED"
    # cut the history after the first iteration succeeded: others are running or waiting
    cut = next(i for i, e in enumerate(r.history) if e["type"] == "MapIterationSucceeded")
    statuses = state_statuses(sm, r.history[: cut + 1])
    fan = statuses["Fan"]
    assert fan.status == "running"
    running = sum(1 for v in fan.iterations.values() if v == "running")
    assert fan.note == f"1 succeeded · {running} running · {5 - 1 - running} waiting"
    work = statuses["Fan[*]/Work"]
    assert work.status == "running" and work.items["succeeded"] == 1
    mermaid = to_mermaid(sm, r.history[: cut + 1])
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Work")[0]) == "running"


def test_an_aborted_map_shows_no_item_still_running():
    sm = StateMachine(Map("Fan", Task("Work", "headrace:function:work"), max_concurrency=2))
    r = execute(sm.to_dict(), [1, 2, 3, 4, 5], resources={"work": lambda n: n})
    cut = next(i for i, e in enumerate(r.history) if e["type"] == "MapIterationSucceeded")
    history = r.history[: cut + 1]
    running = sum(
        1 for v in state_statuses(sm, history)["Fan"].iterations.values() if v == "running"
    )
    assert running  # the items the stop catches under way
    # the execution was stopped (StopExecution) with those items under way
    history = [*history, {"type": "ExecutionAborted", "details": {}}]
    fan = state_statuses(sm, history)["Fan"]
    assert fan.status == "failed" and "running" not in fan.iterations.values()
    assert fan.note == f"1 succeeded · {running} aborted · {5 - 1 - running} not started, aborted"
    work = state_statuses(sm, history)["Fan[*]/Work"]
    assert work.status != "running" and not work.items["running"]


def test_uncaught_map_failure():
    job = Task("Work", "headrace:function:work")
    sm = StateMachine(Map("Fan", job, max_concurrency=1) >> Pass("After"))
    r = execute(sm.to_dict(), [1, 0, 2], resources={"work": lambda n: 1 / n})
    assert (r.status, r.error) == ("FAILED", "ZeroDivisionError")
    fan = state_statuses(sm, r.history)["Fan"]
    assert fan.status == "failed" and not fan.caught
    assert fan.note == "1 succeeded · 1 failed · 1 not started, ZeroDivisionError"
    work = state_statuses(sm, r.history)["Fan[*]/Work"]
    assert work.note == "1 succeeded · 1 failed (ZeroDivisionError)"
    check_dot(to_dot(sm, r.history))


INC = {"n.$": "States.MathAdd($.n, 1)"}


def test_running_and_looping_states_from_a_partial_history():
    wait = Wait("Sleep", seconds=0)
    check = (
        Choice("Again?")
        # a Pass, not a Task: a Task revisited in a loop reuses its first attempt's token in
        # interpreter._schedule, and execute() then never starts it
        .when(Rule("$.n").numeric_less_than(3), Pass("Inc", parameters=INC) >> wait)
        .otherwise(Succeed("Done"))
    )
    wait >> check
    sm = StateMachine(check)
    r = execute(sm.to_dict(), {"n": 0}, timeout=30)
    assert r.status == "SUCCEEDED"
    statuses = state_statuses(sm, r.history)
    assert statuses["Again?"].visits == 4 and statuses["Inc"].note == "3 visits"
    # cut the history just after Inc was entered for the second time
    entered = [
        i
        for i, e in enumerate(r.history)
        if e["type"] == "PassStateEntered" and e["details"]["name"] == "Inc"
    ]
    partial = r.history[: entered[1] + 1]
    statuses = state_statuses(sm, partial)
    assert statuses["Inc"].status == "running" and statuses["Done"].status == "not run"
    mermaid = to_mermaid(sm, partial)
    check_mermaid(mermaid)
    assert mermaid_class(mermaid, mermaid_node(mermaid, "Inc")[0]) == "running"


def test_timed_out_execution_marks_running_state_failed():
    sm = StateMachine(Wait("Long", seconds=60), timeout_seconds=1)
    r = execute(sm.to_dict(), {})
    assert r.status == "TIMED_OUT"
    st = state_statuses(sm, r.history)["Long"]
    assert (st.status, st.error) == ("failed", "timed out")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_dot_renders_with_graphviz():
    data = machine_with_oops()
    r = execute(data, {"n": 11, "tag": "a|b", "cells": [1, 2, 3, 4]}, resources=resources())
    for text in (to_dot(data), to_dot(data, r.history)):
        out = subprocess.run(
            ["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        assert "<svg" in out.stdout


def test_describe_rule_with_variables_and_jsonata():
    assert describe_rule({"Condition": "{% $states.input.n > 3 %}", "Next": "A"}) == (
        "$states.input.n > 3"
    )
    rule = {"Variable": "$count", "NumericLessThan": 8, "Assign": {"x": 1}, "Next": "A"}
    assert describe_rule(rule) == "$count < 8"
