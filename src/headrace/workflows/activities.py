"""Step Functions activities: their ARNs and names, and the history events of activity tasks.

A Task whose `Resource` is `arn:aws:states:REGION:ACCOUNT:activity:NAME` is not run by headrace:
it waits until a worker takes it (GetActivityTask) and answers it (SendTaskSuccess/Failure),
and AWS names its history events Activity… where other tasks have Task…: ActivityScheduled,
ActivityStarted (a worker took it), ActivitySucceeded, ActivityFailed, ActivityTimedOut,
ActivityScheduleFailed (the activity does not exist).
"""

from __future__ import annotations

import re

from headrace.errors import HeadraceError
from headrace.workflows.names import problem

ARN_PREFIX = "arn:aws:states:local:000000000000:activity:"
_ARN = re.compile(r"^arn:aws[a-z-]*:states:[^:]*:[^:]*:activity:(.+)$")


class ActivityError(HeadraceError):
    """An activity that does not exist or cannot be created; `code` is Step Functions' error
    (ActivityDoesNotExist, InvalidName, InvalidArn)."""

    def __init__(self, subject: str, reason: str, fix: str | None = None) -> None:
        super().__init__(subject, reason, fix)
        self.code = reason.split(":", 1)[0]


def activity_name(resource: object) -> str | None:
    """NAME of an activity ARN used as a Task's Resource; None for any other resource."""
    if not isinstance(resource, str):
        return None
    match = _ARN.match(resource)
    return match.group(1) if match else None


def activity_arn(name: str) -> str:
    return ARN_PREFIX + name


def check_activity_name(name: str) -> str:
    """`name` if CreateActivity would accept it (the rules of execution names), else raise."""
    reason = problem(name)
    if reason is not None:
        raise ActivityError(
            f"activity name {name!r}",
            f"InvalidName: {reason}",
            "use 1 to 80 letters, digits, '-', '_' or '.'",
        )
    return name


def name_of(name_or_arn: str) -> str:
    """An activity's name from its name or ARN (as the CLI takes either)."""
    name = activity_name(name_or_arn)
    if name is None and name_or_arn.startswith("arn:"):
        raise ActivityError(
            f"activity ARN {name_or_arn!r}",
            "InvalidArn: it is not an activity's ARN",
            "pass arn:aws:states:REGION:ACCOUNT:activity:NAME, or the activity's name",
        )
    return name if name is not None else name_or_arn


def event_kind(kind: str, resource: object) -> str:
    """A task event's name (TaskScheduled, TaskSucceeded, ...) as AWS records it for this
    resource: Activity… for an activity task."""
    if kind.startswith("Task") and kind != "TaskHeartbeat" and activity_name(resource):
        return "Activity" + kind.removeprefix("Task")
    return kind
