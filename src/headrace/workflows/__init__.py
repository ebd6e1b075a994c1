"""Workflows: Amazon States Language state machines, run durably.

`headrace.workflows.execute(definition, input)` runs one in this process (for scripts and tests).
"""

from headrace.workflows.execute_local import ExecutionResult, execute

__all__ = ["ExecutionResult", "execute"]
