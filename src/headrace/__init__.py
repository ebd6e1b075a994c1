"""headrace: event-driven data and ML pipelines for Python."""

from headrace.app import App
from headrace.config import Settings, load_settings
from headrace.functions import Context

__all__ = ["App", "Context", "Settings", "load_settings"]
__version__ = "0.1.0"
