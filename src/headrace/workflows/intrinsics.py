"""Intrinsic functions (``States.Format(...)`` and friends) for JSONPath states.

Syntax, as AWS documents it: ``States.Name(arg, ...)`` where each argument is a string literal
in single quotes, a number, ``true``/``false``/``null``, a path (``$.x``, ``$$.Execution.Id``)
or another intrinsic call (at most 10 calls nested). Inside a string literal the reserved
characters ``'``, ``{``, ``}`` and ``\\`` are escaped with a backslash; an escaped ``\\{\\}``
in a ``States.Format`` template is literal text, not a placeholder.

Errors are ``StatesError("States.IntrinsicFailure", cause)``; a path argument that matches
nothing raises the path error (``States.Runtime``), as a ``.$`` path in Parameters does.

Where AWS is silent we chose:

* integer arguments accept integral floats (``2.0``); booleans are never numbers;
* ``States.Format`` accepts string, number, boolean and null arguments only (objects and
  arrays fail); a template taken from a path has no escapes, so every ``{}`` is a placeholder;
* ``States.StringSplit`` treats the splitter as a *set* of delimiter characters and drops empty
  tokens, which reproduces AWS's documented example (``"This.is+a,test=string"`` split on
  ``".+,="``);
* ``States.ArrayUnique``/``ArrayContains`` compare JSON values (``1 == 1.0``, ``1 != true``);
* ``States.Hash``, ``Base64Encode`` and ``Base64Decode`` take strings of at most 10,000
  characters; ``States.ArrayRange`` returns at most 1,000 items;
* ``States.MathRandom`` calls ``random_fn(start, end, seed)`` (end exclusive); the default is
  seeded by ``seed`` when given, so only unseeded calls need the caller's ``random_fn`` for
  replays to be deterministic. ``States.UUID`` calls ``uuid_fn()``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.workflows.errors import INTRINSIC_FAILURE, StatesError
from headrace.workflows.paths import PathSyntaxError, evaluate_path, parse_path

MAX_NESTING = 10
MAX_STRING = 10_000
MAX_RANGE_ITEMS = 1000

#: Function name → (minimum, maximum) number of arguments; None means unbounded.
ARITY: dict[str, tuple[int, int | None]] = {
    "States.Format": (1, None),
    "States.StringToJson": (1, 1),
    "States.JsonToString": (1, 1),
    "States.Array": (0, None),
    "States.ArrayPartition": (2, 2),
    "States.ArrayContains": (2, 2),
    "States.ArrayRange": (3, 3),
    "States.ArrayGetItem": (2, 2),
    "States.ArrayLength": (1, 1),
    "States.ArrayUnique": (1, 1),
    "States.Base64Encode": (1, 1),
    "States.Base64Decode": (1, 1),
    "States.Hash": (2, 2),
    "States.JsonMerge": (3, 3),
    "States.MathRandom": (2, 3),
    "States.MathAdd": (2, 2),
    "States.StringSplit": (2, 2),
    "States.UUID": (0, 0),
}

HASH_ALGORITHMS = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


@dataclass(frozen=True)
class Literal:
    value: Any
    # indexes into ``value`` (a str) of braces that were escaped, so Format keeps them literal
    escaped: frozenset[int] = frozenset()


@dataclass(frozen=True)
class PathArg:
    path: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


_CALL_START = re.compile(r"\s*States\.[A-Za-z0-9]+\s*\(")
_NAME = re.compile(r"States\.[A-Za-z0-9]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_ESCAPABLE = "'{}\\"


def is_intrinsic(value: Any) -> bool:
    """Whether a ``.$`` value is an intrinsic call rather than a path."""
    return isinstance(value, str) and bool(_CALL_START.match(value))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> ValueError:
        where = self.pos if pos is None else pos
        return ValueError(f"invalid intrinsic function at position {where}: {message}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> Call:
        self.skip_ws()
        call = self.call(depth=1)
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the closing parenthesis")
        return call

    def call(self, depth: int) -> Call:
        start = self.pos
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail("expected an intrinsic function name such as States.Format")
        name = m.group()
        if name not in ARITY:
            raise self.fail(f"unknown intrinsic function {name}", start)
        if depth > MAX_NESTING:
            raise self.fail(f"more than {MAX_NESTING} nested intrinsic functions", start)
        self.pos = m.end()
        self.skip_ws()
        if self.text[self.pos : self.pos + 1] != "(":
            raise self.fail("expected '('")
        self.pos += 1
        args: list[Any] = []
        self.skip_ws()
        if self.text[self.pos : self.pos + 1] == ")":
            self.pos += 1
        else:
            while True:
                self.skip_ws()
                args.append(self.argument(depth))
                self.skip_ws()
                c = self.text[self.pos : self.pos + 1]
                if c == ",":
                    self.pos += 1
                    continue
                if c == ")":
                    self.pos += 1
                    break
                raise self.fail("expected ',' or ')'")
        low, high = ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            want = (
                str(low) if low == high else f"at least {low}" if high is None else f"{low}-{high}"
            )
            raise self.fail(f"{name} takes {want} arguments, got {len(args)}", start)
        return Call(name, tuple(args))

    def argument(self, depth: int) -> Any:
        c = self.text[self.pos : self.pos + 1]
        if c == "'":
            return self.string()
        if c == "$":
            return self.path()
        if self.text.startswith("States.", self.pos):
            return self.call(depth + 1)
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return Literal(value)
        m = _NUMBER.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            text = m.group()
            return Literal(float(text) if m.group(1) or m.group(2) else int(text))
        raise self.fail("expected a string, number, boolean, null, path or intrinsic function")

    def string(self) -> Literal:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        escaped: set[int] = set()
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt not in _ESCAPABLE or not nxt:
                    raise self.fail("only ', {, } and \\ can be escaped with \\")
                escaped.add(len(chars))
                chars.append(nxt)
                self.pos += 2
                continue
            if c == "'":
                self.pos += 1
                return Literal("".join(chars), frozenset(escaped))
            chars.append(c)
            self.pos += 1
        raise self.fail("unterminated string literal", start)

    def path(self) -> PathArg:
        start = self.pos
        depth = 0
        quote = ""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if quote:
                if c == "\\":
                    self.pos += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c in "[(":
                depth += 1
            elif c in "])":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                break
            self.pos += 1
        text = self.text[start : self.pos].strip()
        try:
            parse_path(text)
        except PathSyntaxError as exc:
            raise self.fail(f"bad path {text!r}: {exc}", start + exc.position) from None
        return PathArg(text)


def parse_intrinsic(expr: str) -> Call:
    """Parse and statically check ``expr`` (names, arity, nesting); ValueError on failure."""
    if not isinstance(expr, str):
        raise ValueError("invalid intrinsic function at position 0: not a string")
    return _Parser(expr).parse()


# ------------------------------------------------------------------------------- evaluation


def _fail(cause: str) -> StatesError:
    return StatesError(INTRINSIC_FAILURE, cause)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(name: str, index: int, v: Any) -> int:
    if _is_number(v) and float(v).is_integer():
        return int(v)
    raise _fail(f"The value of argument {index + 1} of {name} must be an integer, got {_show(v)}")


def _str(name: str, index: int, v: Any, limit: int | None = None) -> str:
    if not isinstance(v, str):
        raise _fail(f"The value of argument {index + 1} of {name} must be a string, got {_show(v)}")
    if limit is not None and len(v) > limit:
        raise _fail(f"The value of argument {index + 1} of {name} exceeds {limit} characters")
    return v


def _list(name: str, index: int, v: Any) -> list:
    if not isinstance(v, list):
        raise _fail(f"The value of argument {index + 1} of {name} must be an array, got {_show(v)}")
    return v


def _show(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)[:200]


def _key(v: Any) -> str:
    """A canonical JSON text, so JSON-equal values (1 and 1.0) compare equal."""

    def norm(x: Any) -> Any:
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, dict):
            return {k: norm(y) for k, y in x.items()}
        if isinstance(x, list):
            return [norm(y) for y in x]
        return x

    return json.dumps(norm(v), sort_keys=True, default=str)


def _rounded(name: str, index: int, v: Any) -> int:
    """A number argument rounded half up, as Java's Math.round does (2.5 -> 3, -2.5 -> -2)."""
    if not _is_number(v):
        raise _fail(f"The value of argument {index + 1} of {name} must be a number, got {_show(v)}")
    if isinstance(v, int):
        return v
    return math.floor(v + 0.5)


def _format_arg(v: Any) -> str:
    """How States.Format prints a value: JSON scalars as JSON, strings bare, and objects and
    arrays as the service's Java maps and lists print (``{Arg1=1, Arg2=[]}``)."""
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, bool) or _is_number(v):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_format_arg(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(_format_arg(x) for x in v) + "]"


def _default_random(start: int, end: int, seed: int | None) -> int:
    rng = random.Random(seed) if seed is not None else random
    return rng.randrange(start, end)


def _default_uuid() -> str:
    return str(uuid.uuid4())


def evaluate_intrinsic(
    expr: str | Call,
    data: Any,
    context: dict | None = None,
    *,
    uuid_fn: Callable[[], str] = _default_uuid,
    random_fn: Callable[[int, int, int | None], int] = _default_random,
) -> Any:
    """Evaluate an intrinsic call against the state's ``data`` and the context object."""
    if isinstance(expr, Call):
        call = expr
    else:
        try:
            call = parse_intrinsic(expr)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    return _Evaluator(data, context, uuid_fn, random_fn).call(call)


class _Evaluator:
    def __init__(self, data: Any, context: dict | None, uuid_fn: Callable, random_fn: Callable):
        self.data = data
        self.context = context
        self.uuid_fn = uuid_fn
        self.random_fn = random_fn

    def value(self, arg: Any) -> Any:
        if isinstance(arg, Literal):
            return arg.value
        if isinstance(arg, PathArg):
            return evaluate_path(arg.path, self.data, self.context)
        return self.call(arg)

    def call(self, call: Call) -> Any:
        args = [self.value(a) for a in call.args]
        handler = getattr(self, "fn_" + call.name.removeprefix("States."))
        if call.name == "States.Format":
            return handler(call, args)
        return handler(args)

    def fn_Format(self, call: Call, args: list) -> str:
        template = _str(call.name, 0, args[0])
        first = call.args[0]
        escaped = first.escaped if isinstance(first, Literal) else frozenset()
        out: list[str] = []
        values = iter(args[1:])
        used = 0
        i = 0
        while i < len(template):
            if template.startswith("{}", i) and i not in escaped and i + 1 not in escaped:
                used += 1
                try:
                    out.append(_format_arg(next(values)))
                except StopIteration:
                    raise _fail(
                        f"States.Format has {used}+ placeholders but {len(args) - 1} arguments"
                    ) from None
                i += 2
                continue
            out.append(template[i])
            i += 1
        if used != len(args) - 1:
            raise _fail(f"States.Format has {used} placeholders but {len(args) - 1} arguments")
        return "".join(out)

    def fn_StringToJson(self, args: list) -> Any:
        text = _str("States.StringToJson", 0, args[0])
        if not text.strip():  # AWS's parser reads nothing from an empty or blank string
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise _fail(f"States.StringToJson: not valid JSON: {text[:200]}") from None

    def fn_JsonToString(self, args: list) -> str:
        return json.dumps(args[0], separators=(",", ":"), ensure_ascii=False)

    def fn_Array(self, args: list) -> list:
        return list(args)

    def fn_ArrayPartition(self, args: list) -> list:
        items = _list("States.ArrayPartition", 0, args[0])
        size = _int("States.ArrayPartition", 1, args[1])
        if size <= 0:
            raise _fail("The chunk size of States.ArrayPartition must be greater than 0")
        return [items[i : i + size] for i in range(0, len(items), size)]

    def fn_ArrayContains(self, args: list) -> bool:
        items = _list("States.ArrayContains", 0, args[0])
        wanted = _key(args[1])
        return any(_key(item) == wanted for item in items)

    def fn_ArrayRange(self, args: list) -> list:
        start, end, step = (_int("States.ArrayRange", i, v) for i, v in enumerate(args))
        if step == 0:
            raise _fail("The step of States.ArrayRange must not be 0")
        count = max(0, (end - start) // step + 1)
        if count > MAX_RANGE_ITEMS:
            raise _fail(f"States.ArrayRange would return {count} items; the maximum is 1000")
        return [start + i * step for i in range(count)]

    def fn_ArrayGetItem(self, args: list) -> Any:
        items = _list("States.ArrayGetItem", 0, args[0])
        index = _int("States.ArrayGetItem", 1, args[1])
        if not 0 <= index < len(items):
            raise _fail(
                f"The index {index} of States.ArrayGetItem is out of bounds "
                f"for an array of length {len(items)}"
            )
        return items[index]

    def fn_ArrayLength(self, args: list) -> int:
        return len(_list("States.ArrayLength", 0, args[0]))

    def fn_ArrayUnique(self, args: list) -> list:
        seen: set[str] = set()
        out = []
        for item in _list("States.ArrayUnique", 0, args[0]):
            key = _key(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return out

    def fn_Base64Encode(self, args: list) -> str:
        text = _str("States.Base64Encode", 0, args[0], MAX_STRING)
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    def fn_Base64Decode(self, args: list) -> str:
        text = _str("States.Base64Decode", 0, args[0], MAX_STRING)
        try:
            return base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise _fail(f"States.Base64Decode: not valid base64 text: {text[:200]}") from None

    def fn_Hash(self, args: list) -> str:
        text = _str("States.Hash", 0, args[0], MAX_STRING)
        algorithm = args[1]
        if algorithm not in HASH_ALGORITHMS:
            raise _fail(
                f"States.Hash algorithm {_show(algorithm)} is not one of "
                + ", ".join(HASH_ALGORITHMS)
            )
        return hashlib.new(HASH_ALGORITHMS[algorithm], text.encode("utf-8")).hexdigest()

    def fn_JsonMerge(self, args: list) -> dict:
        left, right, deep = args
        for i, v in enumerate((left, right)):
            if not isinstance(v, dict):
                raise _fail(
                    f"The value of argument {i + 1} of States.JsonMerge must be an object, "
                    f"got {_show(v)}"
                )
        if deep is not False:
            raise _fail(
                "States.JsonMerge supports only shallow merging: the third argument must be false"
            )
        return {**left, **right}

    def fn_MathRandom(self, args: list) -> int:
        start = _int("States.MathRandom", 0, args[0])
        end = _int("States.MathRandom", 1, args[1])
        seed = _int("States.MathRandom", 2, args[2]) if len(args) > 2 else None
        if end <= start:
            raise _fail("The end of States.MathRandom must be greater than its start")
        return self.random_fn(start, end, seed)

    def fn_MathAdd(self, args: list) -> int:
        return _rounded("States.MathAdd", 0, args[0]) + _rounded("States.MathAdd", 1, args[1])

    def fn_StringSplit(self, args: list) -> list[str]:
        text = _str("States.StringSplit", 0, args[0])
        splitter = _str("States.StringSplit", 1, args[1])
        if not splitter:
            return [text] if text else []
        pattern = "[" + re.escape(splitter) + "]+"
        return [token for token in re.split(pattern, text) if token]

    def fn_UUID(self, args: list) -> str:
        return self.uuid_fn()
