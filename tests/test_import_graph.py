"""No cycles between headrace's packages, lazy imports included.

The graph has one node per top-level package or module of `src/headrace` (`workflows`, `jobs`,
`app`, `errors`, ...; `headrace` itself for `src/headrace/__init__.py`). An edge A -> B is any
`import` or `from ... import` in A that names B, wherever it is written: at module level, inside
a function (a lazy import does not make a dependency go away, it only hides it until run time),
or under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from pathlib import Path

import headrace

SRC = Path(headrace.__file__).parent
Graph = dict[str, dict[str, list[str]]]  # node -> neighbour -> where ("file:line")


def _node(root: Path, module: str) -> str | None:
    """The graph node of a dotted module name, or None when it is not one of ours."""
    parts = module.split(".")
    if parts[0] != root.name:
        return None
    return parts[1] if len(parts) > 1 else root.name


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(root: Path, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    if node.level:  # relative: from the file's package, up level - 1
        package = _module_name(root, path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        module = ".".join([*package, module] if module else package)
    # `from headrace import errors` names the module headrace.errors, not headrace itself
    return [f"{module}.{alias.name}" for alias in node.names] + [module]


def import_graph(root: Path) -> Graph:
    graph: Graph = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        source = _node(root, _module_name(root, path))
        assert source is not None
        graph[source]  # every package is a node, even one that imports nothing of ours
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _targets(root, path, node)
            if isinstance(node, ast.ImportFrom):
                # `from pkg import name`: an edge to the module `pkg.name` if it is one, else
                # to `pkg`
                submodules = [n for n in names[:-1] if _is_module(root, n)]
                names = submodules or names[-1:]
            for name in names:
                target = _node(root, name)
                if target is not None and target != source:
                    graph[source][target].append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return graph


def _is_module(root: Path, dotted: str) -> bool:
    base = root.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def explain(graph: Graph, component: list[str]) -> str:
    lines = [" <-> ".join(component)]
    for a in component:
        for b in component:
            if b in graph.get(a, {}):
                lines.append(f"  {a} -> {b}: {', '.join(graph[a][b][:3])}")
    return "\n".join(lines)


def test_headrace_packages_have_no_import_cycles():
    graph = import_graph(SRC)
    assert {"app", "workflows", "jobs", "errors", "headrace"} <= set(graph)
    found = cycles(graph)
    assert not found, "import cycles between packages:\n" + "\n".join(
        explain(graph, c) for c in found
    )


def test_the_registry_is_imported_by_nothing_below_it():
    # the coordinator, the CLI and the package's own __init__ may read the App; the workflow
    # engine, jobs and the rest are handed what they need
    graph = import_graph(SRC)
    importers = {a for a, targets in graph.items() if "app" in targets}
    assert importers <= {
        "headrace",
        "server",
        "cli",
        "cli_common",
        "cli_jobs",
        "cli_streams",
        "cli_serve",
        "cli_status",
        "cli_storage",
    }, importers


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "errors.py": "class E(Exception): ...\n",
        "app.py": "from pkg.workflows import run\n",
        "workflows/__init__.py": "from .driver import run\n",
        "workflows/driver.py": """
            from pkg import errors

            def run(app):
                from pkg.app import App  # lazy: hides the cycle until run time
                return App
            """,
        "jobs/__init__.py": "from pkg.errors import E\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    graph = import_graph(root)
    assert dict(graph["workflows"]) == {
        "errors": ["pkg/workflows/driver.py:2"],
        "app": ["pkg/workflows/driver.py:5"],
    }
    assert cycles(graph) == [["app", "workflows"]]
    (root / "workflows/driver.py").write_text("def run(app):\n    return app\n")
    assert cycles(import_graph(root)) == []
