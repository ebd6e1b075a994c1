"""headrace: event-driven data and ML pipelines for Python."""

from typing import Any

from headrace.app import App
from headrace.config import Settings, load_settings
from headrace.functions import Context

__all__ = ["App", "Context", "Settings", "flush_pipeline", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the coordinator's modules load only for who flushes: `import headrace` stays light
    if name == "flush_pipeline":
        from headrace.server.pipeline_flush import flush_pipeline

        return flush_pipeline
    raise AttributeError(f"module 'headrace' has no attribute {name!r}")
