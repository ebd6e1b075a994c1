"""The event bus: rules (an EventBridge pattern and a target) and routing of envelopes.

Routing is pure: `Bus.route` says which envelopes go to which target. Delivering them (appending
to a stream, enqueueing invocations, starting executions) is the coordinator's job, so this module
stays free of the ledger and the stream logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from headrace.errors import PatternError
from headrace.events.patterns import EventPattern, compile_pattern

TARGET_KINDS = {"stream": "stream", "function": "function", "states": "state_machine"}
TARGET_KINDS["state_machine"] = "state_machine"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


@dataclass(frozen=True)
class Target:
    kind: str  # "stream" | "function" | "state_machine"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_target(target: str | Target) -> Target:
    """`"stream:NAME"`, `"function:NAME"` or `"states:NAME"` (also `state_machine:NAME`)."""
    if isinstance(target, Target):
        return target
    kind, sep, name = str(target).partition(":")
    if not sep or kind not in TARGET_KINDS or not _NAME.match(name):
        raise PatternError(
            f"rule target {target!r}",
            "is not KIND:NAME with a known kind and a valid name",
            "write e.g. 'stream:transactions', 'function:score' or 'states:etl'",
        )
    return Target(TARGET_KINDS[kind], name)


@dataclass
class Rule:
    name: str
    pattern: EventPattern
    target: Target

    @classmethod
    def create(cls, name: str, pattern: dict | str, target: str | Target) -> Rule:
        if not _NAME.match(name or ""):
            raise PatternError(
                f"rule {name!r}", "is not a valid rule name", "use letters, digits, '_', '-', '.'"
            )
        return cls(name, compile_pattern(pattern), parse_target(target))


class Bus:
    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: list[Rule] = list(rules)

    def route(self, events: Iterable[dict[str, Any]]) -> dict[Target, list[dict[str, Any]]]:
        """Each target with the envelopes that some rule sends it, in arrival order.

        An envelope matched by two rules with the same target is delivered once to it.
        """
        events = list(events)
        chosen: dict[Target, set[int]] = {}
        for rule in self.rules:
            for index, event in enumerate(events):
                if rule.pattern.matches(event):
                    chosen.setdefault(rule.target, set()).add(index)
        return {target: [events[i] for i in sorted(ix)] for target, ix in chosen.items()}
