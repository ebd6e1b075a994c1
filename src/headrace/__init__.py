"""headrace: event-driven data and ML pipelines for Python.

The public names below load on first use, not with the package: every process that imports
a module of headrace imports this file first, and some need none of them (the S3 endpoint's
front, one process per coordinator), while `headrace.app` alone pulls in the storage layer
and fsspec (about 0.15 s; `from headrace import App` costs the same as before).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace.app import App
    from headrace.config import Settings, load_settings
    from headrace.functions import Context
    from headrace.server.pipeline_flush import flush_pipeline

__all__ = ["App", "Context", "Settings", "flush_pipeline", "load_settings"]
__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "App": "headrace.app",
    "Context": "headrace.functions",
    "Settings": "headrace.config",
    "load_settings": "headrace.config",
    "flush_pipeline": "headrace.server.pipeline_flush",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'headrace' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
