"""Draw a state machine as a Mermaid flowchart or a Graphviz DOT graph, optionally with the
progress of one execution painted on it.

States are nodes labelled with their type; edges are ``Next``, Choice rules (labelled with a
shortened form of the rule), ``Default``, ``Catch`` (dashed, labelled with ``ErrorEquals``) and
``End`` (to an end node). Each Map processor and Parallel branch is a subgraph (cluster), drawn
next to its state with a dotted edge into it.

With ``history`` (the event dicts of :class:`ExecutionResult.history`, or ``Event`` objects),
every state is coloured by :func:`state_statuses`, the states inside Map processors and
Parallel branches too: succeeded, caught (it failed and a ``Catch`` handled the error), failed
(the error was not caught), running, or not run. Map and Parallel states show how their
iterations or branches fared ("12 succeeded · 2 failed · 6 waiting"); a state inside a Map
shows the same counts over the items that reached it ("11 succeeded · 1 caught (ValueError)").

Node identifiers are generated (Mermaid) or scope paths like ``Cells[*]/Composite`` (DOT), so
any state name, spaces and quotes included, is safe: names only ever appear inside quoted,
escaped labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from headrace.workflows.asl import load_definition

Status = Literal["succeeded", "caught", "failed", "running", "not run"]

#: How long a Choice rule or Catch label may grow before it is cut with an ellipsis.
MAX_LABEL = 40

_TERMINAL_EXECUTION = {
    "ExecutionSucceeded",
    "ExecutionFailed",
    "ExecutionTimedOut",
    "ExecutionAborted",
}
# the order counts are listed in; "aborted": stopped when its Map or Parallel failed
_COUNTED = ("succeeded", "caught", "failed", "aborted", "running")


@dataclass
class StateStatus:
    """How a state fared in one execution.

    A state inside a Map processor runs once per item: its `items` count the items by how the
    state fared for each (`"succeeded"`, `"caught"`, `"failed"`, `"aborted"`, `"running"`), and
    `status` is the worst of them. Map and Parallel states count their iterations or branches
    (`total`, `started`, `succeeded`, `failed`).
    """

    status: Status = "not run"
    visits: int = 0
    error: str | None = None  # the uncaught error, or the error a Catch handled
    caught: bool = False
    total: int | None = None  # Map items / Parallel branches of the latest visit
    iterations: dict[int, str] = field(default_factory=dict)  # index -> running/succeeded/...
    items: dict[str, int] | None = None  # states inside a Map: items by outcome
    item_errors: dict[str, list[str]] = field(default_factory=dict)  # outcome -> error names

    @property
    def started(self) -> int:
        return len(self.iterations)

    @property
    def succeeded(self) -> int:
        return sum(1 for v in self.iterations.values() if v == "succeeded")

    @property
    def failed(self) -> int:
        return sum(1 for v in self.iterations.values() if v == "failed")

    @property
    def note(self) -> str:
        """A short annotation for the diagram: counts, error, visits."""
        if self.items is not None:
            return _counts(self.items, self.item_errors)
        parts = []
        if self.total is not None:
            counts = {k: 0 for k in _COUNTED}
            for outcome in self.iterations.values():
                counts[outcome] = counts.get(outcome, 0) + 1
            waiting = self.total - self.started
            text = _counts(counts, {}) if self.started else ""
            if waiting > 0:
                rest = "waiting" if self.status == "running" else "not started"
                text = f"{text} · {waiting} {rest}" if text else f"{waiting} {rest}"
            parts.append(text or "no items")
        if self.error:
            parts.append(("caught " if self.caught else "") + self.error)
        if self.visits > 1:
            parts.append(f"{self.visits} visits")
        return ", ".join(parts)


def _counts(counts: Mapping[str, int], errors: Mapping[str, list[str]]) -> str:
    parts = []
    for outcome in _COUNTED:
        n = counts.get(outcome, 0)
        if n:
            names = errors.get(outcome) or []
            shown = f" ({', '.join(names[:2])}{', …' if len(names) > 2 else ''})" if names else ""
            parts.append(f"{n} {outcome}{shown}")
    return " · ".join(parts)


def _as_dict(event: Any) -> Mapping[str, Any]:
    return event.as_dict() if hasattr(event, "as_dict") else event


def _children(machine: Any) -> Iterable[tuple[str, str, dict[str, Any], bool]]:
    """(state name, scope marker, sub-machine, is a Map) for each Map and Parallel state."""
    states = machine.get("States") if isinstance(machine, dict) else None
    for name, state in (states or {}).items():
        if not isinstance(state, dict):
            continue
        if state.get("Type") == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if isinstance(processor, dict):
                yield name, "[", processor, True
        elif state.get("Type") == "Parallel" and isinstance(state.get("Branches"), list):
            for i, branch in enumerate(state["Branches"]):
                if isinstance(branch, dict):
                    yield name, f"{{{i}}}", branch, False


def _all_states(machine: Any, prefix: str = "", in_map: bool = False):  # type: ignore[no-untyped-def]
    """(path, in a Map) of every state, nested ones as ``Cells[*]/Composite``."""
    states = machine.get("States") if isinstance(machine, dict) else None
    for name in states or {}:
        yield prefix + name, in_map
    for name, marker, sub, is_map in _children(machine):
        inner = f"{prefix}{name}[*]/" if is_map else f"{prefix}{name}{marker}/"
        yield from _all_states(sub, inner, in_map or is_map)


def _locate(data: dict[str, Any], scope: str) -> tuple[str, dict[str, Any]] | None:
    """The path prefix (``Cells[*]/``) and the sub-machine of a history scope (``Cells[3]``).

    Scopes join ``State[index]`` (Map iterations) and ``State{index}`` (Parallel branches) with
    "/"; state names may hold those characters too, so the scope is matched against the
    definition rather than split."""
    prefix, machine, rest = "", data, scope
    while rest:
        for name, marker, sub, is_map in _children(machine):
            if not rest.startswith(name):
                continue
            tail = rest[len(name) :]
            if is_map:
                close = tail.find("]")
                if not tail.startswith("[") or not tail[1:close].isdigit():
                    continue
                after = tail[close + 1 :]
            elif tail.startswith(marker):
                after = tail[len(marker) :]
            else:
                continue
            if after and not after.startswith("/"):
                continue
            prefix += f"{name}[*]/" if is_map else f"{name}{marker}/"
            machine, rest = sub, after[1:]
            break
        else:
            return None
    return prefix, machine


def state_statuses(definition: Any, history: Iterable[Any]) -> dict[str, StateStatus]:
    """The status of every state of ``definition`` after the events in ``history``: top-level
    states by name, nested ones by path (``Cells[*]/Composite``, ``Both{1}/Nap``)."""
    fold = StatusFold(definition)
    fold.feed(history)
    return fold.statuses()


class StatusFold:
    """:func:`state_statuses` kept up to date as events arrive: `feed` the new events, then
    `statuses()` costs the number of state runs, not the length of the history."""

    def __init__(self, definition: Any) -> None:
        self.data = _load(definition)
        self.instances: dict[tuple[str, str], StateStatus] = {}  # (scope, state) -> one run
        self.located: dict[str, tuple[str, dict[str, Any]] | None] = {}
        # scope -> its running state: Map and Parallel events name none
        self.current: dict[str, str] = {}
        self.ended: str | None = None

    def feed(self, history: Iterable[Any]) -> None:
        instances, located, current, data = self.instances, self.located, self.current, self.data
        for event in map(_as_dict, history):
            kind, details = event.get("type", ""), event.get("details") or {}
            if kind in _TERMINAL_EXECUTION:
                self.ended = kind
            elif kind == "ExecutionRedriven":
                self.ended = None
            scope = event.get("scope", "") or ""
            if scope not in located:
                located[scope] = _locate(data, scope)
            where = located[scope]
            if where is None:
                continue
            states = where[1].get("States") or {}
            name = details.get("name", current.get(scope))
            if not isinstance(name, str) or name not in states:
                continue
            if kind.endswith("StateEntered"):
                current[scope] = name
                st = instances.setdefault((scope, name), StateStatus())
                st.visits += 1
                st.status, st.error, st.caught = "running", None, False
                st.total, st.iterations = None, {}
                continue
            st = instances.get((scope, name))
            if st is None:
                continue
            if kind.endswith("StateExited"):
                state = states.get(name) or {}
                nxt = details.get("next")
                # a catcher's Next differs from the state's own Next; a failure event before the
                # exit covers the case where both name the same state
                jumped = state.get("Type") in ("Task", "Map", "Parallel") and nxt not in (
                    None,
                    state.get("Next"),
                )
                st.caught = st.caught or (st.error is not None) or jumped
                st.status = "caught" if st.caught else "succeeded"
            elif kind == "StateFailed":
                st.status, st.caught = "failed", False
                st.error = details.get("error") or st.error
            elif kind in (
                "TaskFailed",
                "TaskTimedOut",
                "ActivityFailed",
                "ActivityTimedOut",
                "ActivityScheduleFailed",
                "MapStateFailed",
                "ParallelStateFailed",
            ):
                st.error = details.get("error")
            elif kind in ("TaskSucceeded", "ActivitySucceeded"):
                st.error = None  # a retry worked
            elif kind == "MapStateStarted":
                # the items, or (an outline read from the ledger) how many there are
                items = details.get("items")
                st.total = items if isinstance(items, int) else len(items or [])
                st.iterations = {}
            elif kind == "ParallelStateStarted":
                st.total, st.iterations = int(details.get("branches") or 0), {}
            elif kind in ("MapIterationStarted", "ParallelBranchStarted"):
                st.iterations[int(details.get("index", -1))] = "running"
            elif kind in ("MapIterationSucceeded", "ParallelBranchSucceeded"):
                st.iterations[int(details.get("index", -1))] = "succeeded"
            elif kind in ("MapIterationFailed", "ParallelBranchFailed"):
                st.iterations[int(details.get("index", -1))] = "failed"
            elif kind == "IterationsAborted":
                st.iterations = {
                    i: "aborted" if v == "running" else v for i, v in st.iterations.items()
                }
                base = f"{scope}/{name}" if scope else name
                for (inner_scope, _), inner in instances.items():
                    marker = inner_scope[len(base) : len(base) + 1]
                    below = inner_scope.startswith(base) and marker in ("[", "{")
                    if below and inner.status == "running":
                        inner.status, inner.error = "failed", "aborted"

    def statuses(self) -> dict[str, StateStatus]:
        instances = self.instances
        if self.ended in ("ExecutionTimedOut", "ExecutionAborted"):
            # the execution stopped under these states: they will never finish (shown on
            # copies, so a redrive fed later finds the runs as they were)
            instances = {k: replace(v) for k, v in instances.items()}
            for st in instances.values():
                if st.status == "running":
                    st.status = "failed"
                    st.error = st.error or (
                        "timed out" if self.ended == "ExecutionTimedOut" else "aborted"
                    )
                if "running" in st.iterations.values():
                    # nor will the Map items or Parallel branches that were running
                    st.iterations = {
                        i: "aborted" if v == "running" else v for i, v in st.iterations.items()
                    }
        return _by_path(self.data, instances, self.located)


def _by_path(
    data: dict[str, Any],
    instances: dict[tuple[str, str], StateStatus],
    located: dict[str, tuple[str, dict[str, Any]] | None],
) -> dict[str, StateStatus]:
    runs: dict[str, list[StateStatus]] = {}
    for (scope, name), st in instances.items():
        where = located.get(scope)
        if where is not None:
            runs.setdefault(where[0] + name, []).append(st)
    out: dict[str, StateStatus] = {}
    for path, in_map in _all_states(data):
        found = runs.get(path, [])
        if not in_map:  # one run at most: the top level, or a Parallel branch outside any Map
            out[path] = found[-1] if found else StateStatus()
            continue
        items = {k: 0 for k in _COUNTED}
        errors: dict[str, list[str]] = {}
        for st in found:
            outcome = "aborted" if st.error == "aborted" and st.status == "failed" else st.status
            items[outcome] = items.get(outcome, 0) + 1
            if st.error and st.error != "aborted" and st.error not in errors.get(outcome, []):
                errors.setdefault(outcome, []).append(st.error)
        status: Status = "not run"
        for outcome, shown in (
            ("running", "running"),
            ("failed", "failed"),
            ("aborted", "failed"),
            ("caught", "caught"),
            ("succeeded", "succeeded"),
        ):
            if items[outcome]:
                status = shown  # type: ignore[assignment]
                break
        out[path] = StateStatus(status=status, items=items, item_errors=errors)
    return out


# ------------------------------------------------------------------------------- the model


@dataclass
class _Node:
    id: str  # Mermaid identifier: s0, s1...
    key: str  # DOT identifier: the scope path, readable in `dot` errors
    name: str
    kind: str  # an ASL Type, or "start" / "end"
    note: str = ""
    status: Status | None = None


@dataclass
class _Edge:
    src: str
    dst: str
    label: str = ""
    style: str = "solid"  # solid (Next, Choice), dashed (Catch), dotted (into a sub-machine)


@dataclass
class _Cluster:
    id: str
    label: str
    nodes: list[_Node] = field(default_factory=list)
    clusters: list[_Cluster] = field(default_factory=list)


@dataclass
class _Graph:
    root: _Cluster
    edges: list[_Edge] = field(default_factory=list)
    nodes: dict[str, _Node] = field(default_factory=dict)


def _load(definition: Any) -> dict[str, Any]:
    if hasattr(definition, "to_dict"):  # a builder StateMachine
        return definition.to_dict()
    if hasattr(definition, "raw") and isinstance(definition.raw, dict):  # a parsed machine
        return definition.raw
    if isinstance(definition, str | dict | bytes | os.PathLike):
        return load_definition(definition)
    raise TypeError(f"cannot draw a {type(definition).__name__}")


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


_OPS = {
    "Equals": "==",
    "LessThan": "<",
    "GreaterThan": ">",
    "LessThanEquals": "<=",
    "GreaterThanEquals": ">=",
}


def describe_rule(rule: Mapping[str, Any]) -> str:
    """A Choice rule as a short expression: ``$.n > 10 and $.ok == true``."""
    if not isinstance(rule, Mapping):
        return "?"
    for combinator in ("And", "Or"):
        if isinstance(rule.get(combinator), list):
            inner = f" {combinator.lower()} ".join(describe_rule(r) for r in rule[combinator])
            return f"({inner})" if len(rule[combinator]) > 1 else inner
    if "Not" in rule:
        return f"not {describe_rule(rule['Not'])}"
    if isinstance(rule.get("Condition"), str):  # JSONata: the expression itself
        return rule["Condition"].removeprefix("{%").removesuffix("%}").strip()
    variable = rule.get("Variable", "?")
    for key, value in rule.items():
        if key in ("Variable", "Next", "Comment", "Assign"):
            continue
        operand = value if key.endswith("Path") else json.dumps(value)
        base = key.removesuffix("Path") if key.endswith("Path") else key
        if base == "StringMatches":
            return f"{variable} matches {operand}"
        if base.startswith("Is"):  # IsPresent: false reads as "is not present"
            what = base[2:].lower()
            return f"{variable} is {'' if value else 'not '}{what}"
        for prefix in ("String", "Numeric", "Timestamp", "Boolean"):
            if base.startswith(prefix) and base[len(prefix) :] in _OPS:
                return f"{variable} {_OPS[base[len(prefix) :]]} {operand}"
        return f"{variable} {key} {operand}"
    return str(variable)


def _build(data: dict[str, Any], statuses: dict[str, StateStatus] | None) -> _Graph:
    graph = _Graph(_Cluster("root", ""))
    used_keys: set[str] = set()
    counter = {"node": 0, "cluster": 0}

    def node(cluster: _Cluster, key: str, name: str, kind: str) -> _Node:
        unique, n = key, 2
        while unique in used_keys:  # only a perverse state name could collide with a path
            unique, n = f"{key}#{n}", n + 1
        used_keys.add(unique)
        created = _Node(f"s{counter['node']}", unique, name, kind)
        counter["node"] += 1
        cluster.nodes.append(created)
        graph.nodes[created.id] = created
        return created

    def machine(m: Any, prefix: str, cluster: _Cluster, top: bool) -> _Node | None:
        """Add a (sub-)machine's states to ``cluster``; returns its StartAt node."""
        if not isinstance(m, dict) or not isinstance(m.get("States"), dict):
            return None
        states: dict[str, Any] = m["States"]
        ids: dict[str, _Node] = {}
        for name, state in states.items():
            kind = state.get("Type", "?") if isinstance(state, dict) else "?"
            ids[name] = node(cluster, prefix + name, name, kind)
            if statuses is not None:
                st = statuses.get(prefix + name, StateStatus())
                ids[name].status, ids[name].note = st.status, st.note
        end: list[_Node] = []

        def end_node() -> _Node:
            if not end:
                end.append(node(cluster, prefix + "(end)", "End", "end"))
            return end[0]

        def edge(src: _Node, target: Any, label: str = "", style: str = "solid") -> None:
            if isinstance(target, str) and target in ids:
                graph.edges.append(_Edge(src.id, ids[target].id, label, style))

        start = ids.get(m.get("StartAt")) if isinstance(m.get("StartAt"), str) else None
        if top and start is not None:
            begin = node(cluster, "(start)", "Start", "start")
            graph.edges.append(_Edge(begin.id, start.id))
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            src = ids[name]
            kind = state.get("Type")
            if kind == "Map":
                processor = state.get("ItemProcessor") or state.get("Iterator")
                counter["cluster"] += 1
                sub = _Cluster(f"c{counter['cluster']}", f"{name}: each item")
                cluster.clusters.append(sub)
                inner = machine(processor, f"{prefix}{name}[*]/", sub, top=False)
                if inner is not None:
                    graph.edges.append(_Edge(src.id, inner.id, "each item", "dotted"))
            elif kind == "Parallel" and isinstance(state.get("Branches"), list):
                for i, branch in enumerate(state["Branches"]):
                    counter["cluster"] += 1
                    sub = _Cluster(f"c{counter['cluster']}", f"{name}: branch {i + 1}")
                    cluster.clusters.append(sub)
                    inner = machine(branch, f"{prefix}{name}{{{i}}}/", sub, top=False)
                    if inner is not None:
                        graph.edges.append(_Edge(src.id, inner.id, f"branch {i + 1}", "dotted"))
            edge(src, state.get("Next"))
            for rule in state.get("Choices") or []:
                if isinstance(rule, dict):
                    edge(src, rule.get("Next"), _shorten(describe_rule(rule)))
            edge(src, state.get("Default"), "default")
            for catcher in state.get("Catch") or []:
                if isinstance(catcher, dict):
                    errors = catcher.get("ErrorEquals") or []
                    label = _shorten(", ".join(str(e) for e in errors))
                    edge(src, catcher.get("Next"), label, "dashed")
            if state.get("End") is True or kind in ("Succeed", "Fail"):
                graph.edges.append(_Edge(src.id, end_node().id))
        return start

    machine(data, "", graph.root, top=True)
    return graph


# --------------------------------------------------------------------------------- Mermaid

_MERMAID_SHAPES = {
    "Task": ('["', '"]'),
    "Pass": ('["', '"]'),
    "Choice": ('{"', '"}'),
    "Wait": ('[/"', '"/]'),
    "Succeed": ('(["', '"])'),
    "Fail": ('(["', '"])'),
    "Map": ('[["', '"]]'),
    "Parallel": ('[["', '"]]'),
    "start": ('(("', '"))'),
    "end": ('(("', '"))'),
}
_MERMAID_EDGES = {"solid": "-->", "dashed": "-.->", "dotted": "-.->"}

# fill, stroke: readable on light and dark themes alike
_COLOURS: dict[str, tuple[str, str]] = {
    "succeeded": ("#d4edda", "#2e7d32"),
    "caught": ("#fff3cd", "#b26a00"),  # amber: an error happened and was handled
    "failed": ("#f8d7da", "#c62828"),
    "running": ("#cce5ff", "#1565c0"),
    "not run": ("#eeeeee", "#9e9e9e"),
}
_CLASS = {
    "succeeded": "succeeded",
    "caught": "caught",
    "failed": "failed",
    "running": "running",
    "not run": "notrun",
}


def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes; '#' first, since the others introduce it
    for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text.replace("|", "#124;").replace("\n", " ")


def _label_lines(n: _Node) -> list[str]:
    if n.kind in ("start", "end"):
        return [n.name]
    return [n.name, n.kind] + ([n.note] if n.note else [])


def to_mermaid(definition: Any, history: Iterable[Any] | None = None) -> str:
    """A Mermaid ``flowchart TD`` of ``definition`` (JSON text, a dict, a file, a builder
    StateMachine), coloured by ``history`` when given."""
    data = _load(definition)
    statuses = state_statuses(data, history) if history is not None else None
    graph = _build(data, statuses)
    lines = ["flowchart TD"]

    def emit(cluster: _Cluster, depth: int) -> None:
        pad = "    " * depth
        for n in cluster.nodes:
            left, right = _MERMAID_SHAPES.get(n.kind, ('["', '"]'))
            text = "<br/>".join(_mermaid_text(line) for line in _label_lines(n))
            lines.append(f"{pad}{n.id}{left}{text}{right}")
        for sub in cluster.clusters:
            lines.append(f'{pad}subgraph {sub.id} ["{_mermaid_text(sub.label)}"]')
            emit(sub, depth + 1)
            lines.append(f"{pad}end")

    emit(graph.root, 1)
    # edges after every node: Mermaid puts a node in the subgraph where it is first mentioned
    for e in graph.edges:
        arrow = _MERMAID_EDGES[e.style]
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        lines.append(f"    {e.src} {arrow}{label} {e.dst}")
    if statuses is not None:
        for status, cls in _CLASS.items():
            fill, stroke = _COLOURS[status]
            dash = ",stroke-dasharray: 4 3" if status == "not run" else ""
            lines.append(f"    classDef {cls} fill:{fill},stroke:{stroke}{dash}")
        by_status: dict[str, list[str]] = {}
        for n in graph.nodes.values():
            if n.status is not None:
                by_status.setdefault(_CLASS[n.status], []).append(n.id)
        for cls, ids in by_status.items():
            lines.append(f"    class {','.join(ids)} {cls}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- DOT

_DOT_SHAPES = {
    "Task": "box",
    "Pass": "box",
    "Choice": "diamond",
    "Wait": "parallelogram",
    "Succeed": "box",
    "Fail": "box",
    "Map": "box3d",
    "Parallel": "box3d",
    "start": "circle",
    "end": "doublecircle",
}


def _dot_quote(text: str) -> str:
    # a backslash starts an escape in DOT strings (\n, \N, \G...), so it must be doubled first
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _dot_label(lines: list[str]) -> str:
    # each line quoted on its own, then joined with DOT's newline escape
    return '"' + "\\n".join(_dot_quote(line)[1:-1] for line in lines) + '"'


def to_dot(definition: Any, history: Iterable[Any] | None = None) -> str:
    """A Graphviz ``digraph`` of ``definition``, coloured by ``history`` when given."""
    data = _load(definition)
    statuses = state_statuses(data, history) if history is not None else None
    graph = _build(data, statuses)
    title = data.get("Comment") if isinstance(data.get("Comment"), str) else "state machine"
    lines = [
        f"digraph {_dot_quote(title)} {{",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11];',
        '  node [fontname="Helvetica", fontsize=11, shape=box, style="rounded,filled", '
        'fillcolor="white"];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]

    def emit(cluster: _Cluster, depth: int) -> None:
        pad = "  " * depth
        for n in cluster.nodes:
            attrs = [
                f"label={_dot_label(_label_lines(n))}",
                f"shape={_DOT_SHAPES.get(n.kind, 'box')}",
            ]
            if n.kind in ("Succeed", "Fail"):
                attrs.append("peripheries=2")
            if n.status is not None:
                fill, stroke = _COLOURS[n.status]
                style = "rounded,filled,dashed" if n.status == "not run" else "rounded,filled"
                attrs += [f'fillcolor="{fill}"', f'color="{stroke}"', f'style="{style}"']
            lines.append(f"{pad}{_dot_quote(n.key)} [{', '.join(attrs)}];")
        for sub in cluster.clusters:
            lines.append(f"{pad}subgraph cluster_{sub.id} {{")
            lines.append(f"{pad}  label={_dot_quote(sub.label)};")
            lines.append(f'{pad}  style="rounded,dashed";')
            emit(sub, depth + 1)
            lines.append(f"{pad}}}")

    emit(graph.root, 1)
    for e in graph.edges:
        src, dst = graph.nodes[e.src].key, graph.nodes[e.dst].key
        attrs = []
        if e.label:
            attrs.append(f"label={_dot_quote(e.label)}")
        if e.style != "solid":
            attrs.append(f"style={e.style}")
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_quote(src)} -> {_dot_quote(dst)}{tail};")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["StateStatus", "describe_rule", "state_statuses", "to_dot", "to_mermaid"]


# ------------------------------------------------------------------------------------ JSON


def graph_model(
    definition: Any, statuses: Mapping[str, StateStatus] | None = None
) -> dict[str, Any]:
    """The diagram as data for a program that draws it (the web console): a tree of clusters
    (the machine, each Map processor and Parallel branch) holding nodes, and the edges.

    A node's `path` is its state's scope path (``Cells[*]/Composite``), the key of
    ``statuses`` (from :func:`state_statuses`), which paints the nodes when given."""
    data = _load(definition)
    graph = _build(data, dict(statuses) if statuses is not None else None)

    def node(n: _Node) -> dict[str, Any]:
        out: dict[str, Any] = {"id": n.id, "path": n.key, "name": n.name, "kind": n.kind}
        st = statuses.get(n.key) if statuses is not None else None
        if st is not None:
            out.update(status=st.status, note=st.note, caught=st.caught, error=st.error)
            if st.items is not None:
                out["items"] = {k: v for k, v in st.items.items() if v}
            if st.total is not None:
                counts: dict[str, int] = {}
                for outcome in st.iterations.values():
                    counts[outcome] = counts.get(outcome, 0) + 1
                waiting = st.total - st.started
                if waiting > 0:
                    counts["waiting" if st.status == "running" else "not started"] = waiting
                out["total"], out["items"] = st.total, counts
        return out

    def cluster(c: _Cluster) -> dict[str, Any]:
        return {
            "id": c.id,
            "label": c.label,
            "nodes": [node(n) for n in c.nodes],
            "clusters": [cluster(s) for s in c.clusters],
        }

    return {
        "root": cluster(graph.root),
        "edges": [
            {"src": e.src, "dst": e.dst, "label": e.label, "style": e.style} for e in graph.edges
        ],
    }


def scope_prefix(definition: Any, scope: str) -> str | None:
    """The path prefix of a history scope: ``Cells[*]/`` for ``Cells[3]``, "" at the top level,
    None when the scope is not one of the definition's."""
    where = _locate(_load(definition), scope)
    return where[0] if where is not None else None
