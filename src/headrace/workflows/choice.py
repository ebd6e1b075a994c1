"""Choice rules: comparison operators, And/Or/Not, type tests, and picking the next state.

Semantics follow AWS "Choice workflow state":

* A comparison whose operand is not of the operator's type is false (``StringEquals`` against
  a number, ``NumericEquals`` against ``"1"``); booleans are never numbers.
* Timestamps use AWS's RFC 3339 profile: ``YYYY-MM-DDThh:mm:ss[.fff…](Z|±hh:mm)``, with an
  uppercase ``T`` and ``Z``. They compare as instants, so ``...T01:00:00+01:00`` equals
  ``...T00:00:00Z``; fractional seconds compare with full precision.
* ``StringMatches`` accepts ``*`` for any run of characters; ``\\*`` is a literal star and
  ``\\\\`` a literal backslash (JSON text doubles each backslash).
* A ``Variable`` (or ``...Path`` operand) that matches nothing raises ``States.Runtime``;
  only ``IsPresent`` tolerates it.
* ``choose`` returns the ``Next`` of the first matching rule, else ``Default``, else raises
  ``States.NoChoiceMatched``.

Where AWS is silent: string ordering compares Unicode code points; a ``Variable`` written as a
non-reference path (``$.a[*]``) yields the list of matches, which no typed comparison accepts,
and ``IsPresent`` is true when that list is non-empty.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from headrace.workflows.errors import NO_CHOICE_MATCHED, RUNTIME, StatesError
from headrace.workflows.paths import PathError, evaluate_path, path_exists

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Base operator names by operand type; each also exists with a ``Path`` suffix.
STRING_OPS = (
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
)
NUMERIC_OPS = (
    "NumericEquals",
    "NumericLessThan",
    "NumericGreaterThan",
    "NumericLessThanEquals",
    "NumericGreaterThanEquals",
)
TIMESTAMP_OPS = (
    "TimestampEquals",
    "TimestampLessThan",
    "TimestampGreaterThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThanEquals",
)
BOOLEAN_OPS = ("BooleanEquals",)
TYPE_TESTS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")
PATH_OPS = tuple(op + "Path" for op in STRING_OPS + NUMERIC_OPS + TIMESTAMP_OPS + BOOLEAN_OPS)
#: Every operator that goes with ``Variable``: exactly one must appear in a data-test rule.
COMPARISON_OPS = frozenset(
    STRING_OPS
    + NUMERIC_OPS
    + TIMESTAMP_OPS
    + BOOLEAN_OPS
    + TYPE_TESTS
    + PATH_OPS
    + ("StringMatches",)
)
BOOLEAN_COMBINATORS = ("And", "Or", "Not")


def parse_timestamp(value: Any) -> Decimal | None:
    """Seconds since the epoch for an AWS-profile RFC 3339 timestamp, else None."""
    if not isinstance(value, str):
        return None
    m = _TIMESTAMP.match(value)
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if zone == "Z":
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz
        )
    except ValueError:
        return None
    delta = moment - _EPOCH  # integer arithmetic: float seconds would lose precision
    whole = delta.days * 86400 + delta.seconds
    return Decimal(whole) + (Decimal("0." + fraction) if fraction else Decimal(0))


def is_timestamp(value: Any) -> bool:
    return parse_timestamp(value) is not None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def string_matches(value: str, pattern: str) -> bool:
    """AWS ``StringMatches``: ``*`` is a wildcard, a backslash escapes the next character."""
    regex = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            regex.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        regex.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.fullmatch("".join(regex), value, flags=re.DOTALL) is not None


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op.endswith("GreaterThanEquals"):
        return left >= right
    if op.endswith("LessThanEquals"):
        return left <= right
    if op.endswith("GreaterThan"):
        return left > right
    if op.endswith("LessThan"):
        return left < right
    return left == right  # ...Equals


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op.startswith("String"):
        return isinstance(value, str) and isinstance(operand, str) and _ordered(op, value, operand)
    if op.startswith("Numeric"):
        return _is_number(value) and _is_number(operand) and _ordered(op, value, operand)
    if op.startswith("Boolean"):
        return isinstance(value, bool) and isinstance(operand, bool) and value == operand
    left, right = parse_timestamp(value), parse_timestamp(operand)
    return left is not None and right is not None and _ordered(op, left, right)


def _lookup(path: Any, data: Any, context: dict | None) -> Any:
    if not isinstance(path, str):
        raise StatesError(RUNTIME, f"Invalid path {path!r}: a path must be a string")
    try:
        return evaluate_path(path, data, context)
    except PathError:
        raise StatesError(
            RUNTIME,
            f"Invalid path '{path}': The choice state's condition path references an "
            "invalid value.",
        ) from None


def evaluate_rule(rule: dict, data: Any, context: dict | None = None) -> bool:
    """Whether a Choice rule (top-level or nested) matches ``data``."""
    if "And" in rule:
        return all(evaluate_rule(sub, data, context) for sub in rule["And"])
    if "Or" in rule:
        return any(evaluate_rule(sub, data, context) for sub in rule["Or"])
    if "Not" in rule:
        return not evaluate_rule(rule["Not"], data, context)
    ops = [key for key in rule if key in COMPARISON_OPS]
    if len(ops) != 1 or "Variable" not in rule:
        raise StatesError(
            RUNTIME, "A Choice rule needs a Variable and exactly one comparison operator"
        )
    op = ops[0]
    operand = rule[op]
    variable = rule["Variable"]
    if op == "IsPresent":
        return path_exists(variable, data, context) == bool(operand)
    value = _lookup(variable, data, context)
    if op in TYPE_TESTS:
        matched = {
            "IsNull": value is None,
            "IsNumeric": _is_number(value),
            "IsString": isinstance(value, str),
            "IsBoolean": isinstance(value, bool),
            "IsTimestamp": is_timestamp(value),
        }[op]
        return matched == bool(operand)
    if op == "StringMatches":
        return (
            isinstance(value, str) and isinstance(operand, str) and string_matches(value, operand)
        )
    if op.endswith("Path"):
        return _compare(op[: -len("Path")], value, _lookup(operand, data, context))
    return _compare(op, value, operand)


def choose(state: dict, data: Any, context: dict | None = None) -> str:
    """The next state's name: first matching rule's ``Next``, else ``Default``."""
    return choose_rule(state, data, context)[0]


def choose_rule(
    state: dict, data: Any, context: dict | None = None, test: Any = None
) -> tuple[str, dict | None]:
    """The next state's name and the rule that matched (None when ``Default`` is taken).
    ``test(rule)`` decides a rule (JSONata's Condition); the default evaluates JSONPath rules."""
    for rule in state.get("Choices", []):
        if test(rule) if test is not None else evaluate_rule(rule, data, context):
            return rule["Next"], rule
    if "Default" in state:
        return state["Default"], None
    raise StatesError(NO_CHOICE_MATCHED, "No Choice Rules matched and no Default was specified")
