"""JSON text from users (command-line options, state machine definitions), parsed with limits.

`json.loads` accepts what later code cannot hold: nesting deep enough to exhaust Python's
recursion limit (in the parser itself, or later in `json.dumps`, the workflow interpreter, a
handler), integers longer than Python converts (`sys.get_int_max_str_digits()`), numbers that
overflow to infinity, and the non-JSON constants NaN and Infinity. Each of these is refused here
with a message saying which limit was hit, instead of a traceback somewhere downstream.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

#: Deepest nesting of arrays and objects accepted (serde_json's default recursion limit).
#: Real events and definitions stay far below it, and every recursive walk over the value
#: (validation, `json.dumps`, path evaluation) stays far from Python's recursion limit.
MAX_DEPTH = 128

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonInputError(ValueError):
    """JSON text that cannot be used; the message says what is wrong and which limit.

    `syntax` is the parser's error when the text is not JSON at all, None for a broken limit.
    """

    def __init__(self, message: str, syntax: json.JSONDecodeError | None = None) -> None:
        super().__init__(message)
        self.syntax = syntax


def parse_json(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The value of `text`, or JsonInputError naming the problem (syntax or a limit)."""
    try:
        value = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_no_constant
        )
    except json.JSONDecodeError as exc:
        raise JsonInputError(
            f"is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", exc
        ) from None
    except RecursionError:
        raise _too_deep(_text_depth(text), max_depth) from None
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"is not UTF-8 text ({exc.reason})") from None
    if too_deep(value, max_depth):
        raise _too_deep(_text_depth(text), max_depth)
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """JsonInputError if `value` (lists and dicts) nests more than `max_depth` levels deep."""
    if too_deep(value, max_depth):
        raise _too_deep(None, max_depth)


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether `value` nests lists and dicts more than `max_depth` levels deep.

    Iterative, so it works on values too deep for recursive code."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep(depth: int | None, max_depth: int) -> JsonInputError:
    how_deep = f"{depth} levels deep" if depth else f"more than {max_depth} levels deep"
    return JsonInputError(f"nests arrays and objects {how_deep}; the limit is {max_depth} levels")


def _text_depth(text: str | bytes) -> int | None:
    """Deepest bracket nesting in JSON text (outside strings); only for error messages."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return None
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _parse_int(digits: str) -> int:
    limit = sys.get_int_max_str_digits()
    count = len(digits.lstrip("-"))
    if limit and count > limit:
        raise JsonInputError(
            f"has an integer of {count} digits; the limit is {limit} digits"
            " (Python's int_max_str_digits)"
        )
    return int(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"
        raise JsonInputError(f"has the number {shown}, too large for a 64-bit float")
    return value


def _no_constant(name: str) -> Any:
    raise JsonInputError(f"has {name}, which is not JSON (only finite numbers are)")
