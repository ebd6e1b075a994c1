"""History events of an execution, named as AWS `GetExecutionHistory` names them.

Every event carries the data needed to rebuild the execution's state by folding the history in
order, so the interpreter can resume an execution from its history alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Step Functions fails a Standard execution whose history reaches this many events; it also
# bounds what a state machine that loops forever (legal ASL) costs in ledger rows
HISTORY_QUOTA = 25_000


@dataclass(slots=True)
class Event:
    id: int  # 1-based position in the history
    type: str
    timestamp: float
    scope: str = ""  # "" for the top level; "Map[3]" for iteration 3 of state Map, nested with "/"
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": self.timestamp,
            "scope": self.scope,
            "details": self.details,
        }


# The state-type prefix AWS uses in event names: TaskStateEntered, MapStateExited, ...
STATE_EVENT_PREFIX = {
    "Task": "Task",
    "Pass": "Pass",
    "Choice": "Choice",
    "Wait": "Wait",
    "Succeed": "Succeed",
    "Fail": "Fail",
    "Map": "Map",
    "Parallel": "Parallel",
}

TERMINAL_EXECUTION_EVENTS = {
    "ExecutionSucceeded": "SUCCEEDED",
    "ExecutionFailed": "FAILED",
    "ExecutionTimedOut": "TIMED_OUT",
    "ExecutionAborted": "ABORTED",
}
