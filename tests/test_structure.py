"""The layout docs/architecture.md describes stays true: backends of one kind side by side (one
interface module, one file per backend)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

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
    "job runner": (
        "headrace.jobs.runners",
        "JobRunner",
        {"headrace.jobs.subprocess_runner": "SubprocessRunner"},
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
