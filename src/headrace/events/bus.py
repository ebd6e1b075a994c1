"""The event bus: rules (an EventBridge pattern and a target) and routing of envelopes.

Routing is pure: `Bus.route` says which envelopes go to which target. Delivering them (appending
to a stream, enqueueing invocations, starting executions) is the coordinator's job, so this module
stays free of the ledger and the stream logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from headrace.errors import PatternError
from headrace.events.envelope import without_precise_time
from headrace.events.patterns import compile_pattern
from headrace.events.s3 import (
    OBJECT_CREATED_SOURCE,
    OBJECT_CREATED_TYPE,
    notification_from_envelope,
)

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


class Matcher(Protocol):
    def matches(self, event: Any) -> bool: ...


@dataclass(frozen=True)
class AllOf:
    """Every pattern matches. S3 notification filters AND a key prefix with a key suffix, which
    one EventBridge pattern cannot say of one field (its values are alternatives)."""

    patterns: tuple[Matcher, ...]

    def matches(self, event: Any) -> bool:
        return all(p.matches(event) for p in self.patterns)


@dataclass
class Rule:
    name: str
    pattern: Matcher
    target: Target
    # what the target receives instead of the envelope (EventBridge's input transformer)
    input: Callable[[dict[str, Any]], Any] | None = None
    # buckets whose created objects this rule selects by name: the coordinator watches them
    buckets: tuple[str, ...] = ()

    @classmethod
    def create(cls, name: str, pattern: dict | str, target: str | Target) -> Rule:
        if not _NAME.match(name or ""):
            raise PatternError(
                f"rule {name!r}", "is not a valid rule name", "use letters, digits, '_', '-', '.'"
            )
        compiled = compile_pattern(pattern)
        return cls(name, compiled, parse_target(target), buckets=_watched(compiled.pattern))

    def payload(self, envelope: dict[str, Any]) -> Any:
        if self.input is not None:
            return self.input(envelope)
        return without_precise_time(envelope)


def object_created_rule(
    function: str, *, bucket: str, prefix: str = "", suffixes: tuple[str, ...] = ()
) -> Rule:
    """An object trigger as a bus rule: objects created in `bucket` whose key starts with
    `prefix` and ends with one of `suffixes` (case-insensitive) invoke `function` with the S3
    notification event a Lambda handler expects."""
    key: list[Any] = [{"prefix": prefix}] if prefix else []
    base: dict[str, Any] = {
        "source": [OBJECT_CREATED_SOURCE],
        "detail-type": [OBJECT_CREATED_TYPE],
        "detail": {"bucket": {"name": [bucket]}},
    }
    if key:
        base["detail"]["object"] = {"key": key}
    patterns: list[Matcher] = [compile_pattern(base)]
    if suffixes:
        ends = [{"suffix": {"equals-ignore-case": s}} for s in suffixes]
        patterns.append(compile_pattern({"detail": {"object": {"key": ends}}}))
    return Rule(
        name=f"s3-{bucket}-{function}"[:80],
        pattern=AllOf(tuple(patterns)),
        target=Target("function", function),
        input=notification_from_envelope,
        buckets=(bucket,),
    )


def _watched(pattern: dict[str, Any]) -> tuple[str, ...]:
    """The buckets an object-created rule selects (a rule written for S3's EventBridge events,
    e.g. {"source": ["aws.s3"], "detail": {"bucket": {"name": ["in"]}}}): the coordinator watches
    them, so they must be named exactly — a bucket matched by prefix would never be watched and
    the rule would never fire."""
    sources = pattern.get("source")
    if not isinstance(sources, list) or OBJECT_CREATED_SOURCE not in sources:
        return ()
    detail = pattern.get("detail")
    bucket = detail.get("bucket") if isinstance(detail, dict) else None
    names = bucket.get("name") if isinstance(bucket, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise PatternError(
            "rule on aws.s3 events",
            f"does not name its buckets exactly (detail.bucket.name is {names!r}), so headrace "
            "cannot tell which bucket folders to watch and the rule would never fire",
            'list the bucket names, e.g. "detail": {"bucket": {"name": ["landing", "reports"]}}',
        )
    return tuple(names)


class Bus:
    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: list[Rule] = list(rules)

    def route(self, events: Iterable[dict[str, Any]]) -> dict[Target, list[dict[str, Any]]]:
        """Each target with the envelopes that some rule sends it, in arrival order.

        An envelope matched by two rules with the same target is delivered once to it.
        """
        routed = self.deliveries(events)
        return {target: [envelope for envelope, _ in pairs] for target, pairs in routed.items()}

    def deliveries(
        self, events: Iterable[dict[str, Any]]
    ) -> dict[Target, list[tuple[dict[str, Any], Any]]]:
        """Like `route`, with what each target receives: the envelope, or its rule's input
        (the first matching rule's, in rule order, when several send it to one target)."""
        events = list(events)
        chosen: dict[Target, dict[int, Rule]] = {}
        for rule in self.rules:
            for index, event in enumerate(events):
                if rule.pattern.matches(event):
                    chosen.setdefault(rule.target, {}).setdefault(index, rule)
        return {
            target: [(events[i], rules[i].payload(events[i])) for i in sorted(rules)]
            for target, rules in chosen.items()
        }
