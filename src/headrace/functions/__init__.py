"""Functions: specs (limits, retries), the Lambda-compatible context, and the worker runtime."""

from headrace.functions.context import Context
from headrace.functions.spec import FunctionSpec

__all__ = ["Context", "FunctionSpec"]
