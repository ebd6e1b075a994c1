"""Execution names (and inputs), checked as Step Functions checks them at StartExecution.

A name becomes part of the execution's ARN and of the keys a Map `ResultWriter` writes
(`<Prefix>/<name>/manifest.json`), so a name like `../../x` must never get that far.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from headrace.errors import HeadraceError
from headrace.jsontext import MAX_DEPTH, JsonInputError, check_depth

MAX_LENGTH = 80
# StartExecution's rules: no whitespace, brackets, wildcards, these special characters, or
# control characters (U+0000-001F, U+007F-009F)
_FORBIDDEN = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")


class InvalidExecutionName(HeadraceError):
    """An execution name that Step Functions would refuse."""


class InvalidExecutionInput(HeadraceError):
    """An execution input that cannot be run (Step Functions' InvalidExecutionInput)."""


def check_execution_input(value: Any) -> Any:
    """Return `value` if its nesting is within headrace.jsontext's limit, else raise
    InvalidExecutionInput: deeper values break the recursive code that reads them."""
    try:
        check_depth(value)
    except JsonInputError as exc:
        raise InvalidExecutionInput(
            "execution input", str(exc), f"flatten it to at most {MAX_DEPTH} levels"
        ) from None
    return value


def problem(name: object) -> str | None:
    """Why `name` is not a valid execution name, or None when it is."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not 1 <= len(name) <= MAX_LENGTH:
        return f"must be 1 to {MAX_LENGTH} characters long (it has {len(name)})"
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        return f"contains {bad.group()!r} at position {bad.start()}"
    return None


def check_execution_name(name: object) -> str:
    """Return `name` if Step Functions would accept it, else raise InvalidExecutionName."""
    reason = problem(name)
    if reason is not None:
        shown = name[:100] + "…" if isinstance(name, str) and len(name) > 100 else name
        raise InvalidExecutionName(
            f"execution name {shown!r}",
            reason,
            f"use 1 to {MAX_LENGTH} letters, digits, '-', '_' or '.'; no whitespace, brackets, "
            'wildcards or any of " # % \\ ^ | ~ ` $ & , ; : /',
        )
    return name  # type: ignore[return-value]


def name_for(prefix: str, text: str) -> str:
    """A valid, deterministic execution name for `text` (an event id, say): `prefix` + `text`
    when that is valid, else `prefix` + a hash of `text`, so the same event always names the
    same execution (starting it twice is refused) whatever characters its id has."""
    candidate = f"{prefix}{text}"
    if problem(candidate) is None:
        return candidate
    return f"{prefix}{hashlib.sha256(text.encode()).hexdigest()[:40]}"
