"""JSONPath as Amazon States Language uses it, and ResultPath semantics.

Supported syntax: ``$`` (the state's data) and ``$$`` (the context object), ``.name``,
``['name']`` / ``["name"]``, ``[n]`` (negative counts from the end), ``[*]`` / ``.*``, unions
``[a,b]`` of indexes or quoted names, slices ``[s:e]`` / ``[s:e:step]``, descent ``..name`` /
``..*`` / ``..[...]``, and filters ``[?(@.x OP literal)]`` with ==, !=, <, <=, >, >= or the bare
existence test ``[?(@.x)]``, joined with ``&&`` / ``||``.

A *reference path* (AWS "Paths": it can identify only a single node) uses only ``.name``,
``['name']`` and ``[n]``. Evaluating a reference path returns the node itself and raises
:class:`PathError` when it does not exist. Any other path returns the list of all matches, which
may be empty: this is what AWS returns for e.g. ``InputPath: "$.items[*].id"``.

Where AWS is silent:

* filter comparisons between different JSON types are false (``"1" == 1`` is false; booleans
  are not numbers); ``<``/``>`` compare numbers with numbers and strings with strings only;
* ``..name`` returns matches in document (pre-)order;
* ``ResultPath`` may index an existing array element (``$.a[0]``) but never grows an array; an
  index out of range, or a step through a non-object value, is ``States.ResultPathMatchFailure``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from headrace.workflows.errors import RESULT_PATH_MATCH_FAILURE, RUNTIME, StatesError


class PathError(StatesError):
    """A path that is malformed or matches nothing where it must (``States.Runtime``)."""

    def __init__(self, path: str, cause: str, error: str = RUNTIME) -> None:
        self.path = path
        super().__init__(error, cause)

    def __reduce__(self):
        return (self.__class__, (self.path, self.cause, self.error))


class UnassignedVariable(PathError):
    """A ``$name`` path names a variable this scope cannot see (``States.Runtime``)."""


class PathSyntaxError(ValueError):
    """The text is not a path we can evaluate; ``position`` is the offending character."""

    def __init__(self, path: str, position: int, message: str) -> None:
        self.path = path
        self.position = position
        super().__init__(f"invalid path {path!r} at position {position}: {message}")


# ---------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Index:
    index: int


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Union:
    keys: tuple[str | int, ...]


@dataclass(frozen=True)
class Slice:
    start: int | None
    end: int | None
    step: int | None


@dataclass(frozen=True)
class Descend:
    step: Any  # the selector applied to every node at or below the current one


@dataclass(frozen=True)
class Compare:
    steps: tuple[Any, ...]  # relative path from @
    op: str | None  # None: existence test
    value: Any = None


@dataclass(frozen=True)
class Logic:
    op: str  # "&&" or "||"
    left: Any
    right: Any


@dataclass(frozen=True)
class Filter:
    expr: Any


@dataclass(frozen=True)
class ParsedPath:
    text: str
    context: bool  # starts with $$
    steps: tuple[Any, ...]
    variable: str | None = None  # $name...: a workflow variable's value is the root

    @property
    def is_reference(self) -> bool:
        return all(isinstance(s, Field | Index) for s in self.steps)


# a variable name as AWS allows it: a letter or underscore, then letters, digits, underscores
# (Unicode ID_Start / ID_Continue: \w covers them, and the first character is not a digit)
_VARIABLE = re.compile(r"[^\W\d]\w*")
_NAME = re.compile(r"[^\s.\[\]()'\",:?@=!<>&|*]+")
_INT = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_PARSE_CACHE: dict[str, ParsedPath] = {}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> PathSyntaxError:
        return PathSyntaxError(self.text, self.pos, message)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def expect(self, token: str) -> None:
        self.skip_ws()
        if not self.text.startswith(token, self.pos):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def parse(self) -> ParsedPath:
        if not self.text.startswith("$"):
            raise self.fail("a path starts with '$'")
        context = self.text.startswith("$$")
        self.pos = 2 if context else 1
        variable = None
        if not context:
            m = _VARIABLE.match(self.text, 1)
            if m:
                variable = m.group()
                self.pos = m.end()
        steps = self.steps(stop_chars="")
        if self.pos != len(self.text):
            raise self.fail("unexpected character")
        return ParsedPath(self.text, context, tuple(steps), variable)

    def steps(self, stop_chars: str) -> list[Any]:
        steps: list[Any] = []
        while self.pos < len(self.text) and self.text[self.pos] not in stop_chars:
            c = self.text[self.pos]
            if self.peek(2) == "..":
                self.pos += 2
                if self.peek() == "[":
                    steps.append(Descend(self.bracket()))
                else:
                    steps.append(Descend(self.dot_member()))
            elif c == ".":
                self.pos += 1
                steps.append(self.dot_member())
            elif c == "[":
                steps.append(self.bracket())
            else:
                break
        return steps

    def dot_member(self) -> Any:
        if self.peek() == "*":
            self.pos += 1
            return Wildcard()
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a field name after '.'")
        self.pos = m.end()
        return Field(m.group())

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if c == quote:
                self.pos += 1
                return "".join(out)
            out.append(c)
            self.pos += 1
        raise self.fail("unterminated string")

    def integer(self) -> int:
        self.skip_ws()
        m = _INT.match(self.text, self.pos)
        if not m:
            raise self.fail("expected an integer")
        self.pos = m.end()
        return int(m.group())

    def bracket(self) -> Any:
        self.pos += 1  # "["
        self.skip_ws()
        c = self.peek()
        if c == "*":
            self.pos += 1
            self.expect("]")
            return Wildcard()
        if c == "?":
            self.pos += 1
            self.expect("(")
            expr = self.filter_or()
            self.expect(")")
            self.expect("]")
            return Filter(expr)
        keys: list[str | int] = []
        if c in "'\"":
            while True:
                self.skip_ws()
                if self.peek() not in ("'", '"') or not self.peek():
                    raise self.fail("expected a quoted name")
                keys.append(self.quoted())
                self.skip_ws()
                if self.peek() == ",":
                    self.pos += 1
                    continue
                break
            self.expect("]")
            return Field(keys[0]) if len(keys) == 1 else Union(tuple(keys))
        parts: list[int | None] = []
        colons = 0
        while True:
            self.skip_ws()
            if self.peek() in (":", "]", ","):
                parts.append(None)
            else:
                parts.append(self.integer())
            self.skip_ws()
            nxt = self.peek()
            if nxt == ":":
                colons += 1
                if colons > 2 or keys:
                    raise self.fail("bad slice")
                self.pos += 1
                continue
            if nxt == ",":
                if colons or parts[-1] is None:
                    raise self.fail("bad index list")
                keys.append(parts[-1])
                parts = []
                self.pos += 1
                continue
            break
        self.expect("]")
        if colons:
            parts += [None] * (3 - len(parts))
            if parts[2] == 0:
                raise self.fail("slice step cannot be 0")
            return Slice(parts[0], parts[1], parts[2])
        if parts[-1] is None:
            raise self.fail("expected an index")
        keys.append(parts[-1])
        return Index(keys[0]) if len(keys) == 1 else Union(tuple(keys))

    def filter_or(self) -> Any:
        left = self.filter_and()
        while True:
            self.skip_ws()
            if self.peek(2) != "||":
                return left
            self.pos += 2
            left = Logic("||", left, self.filter_and())

    def filter_and(self) -> Any:
        left = self.filter_cmp()
        while True:
            self.skip_ws()
            if self.peek(2) != "&&":
                return left
            self.pos += 2
            left = Logic("&&", left, self.filter_cmp())

    def filter_cmp(self) -> Any:
        self.skip_ws()
        if self.peek() == "(":
            self.pos += 1
            inner = self.filter_or()
            self.expect(")")
            return inner
        if self.peek() != "@":
            raise self.fail("a filter starts with '@'")
        self.pos += 1
        steps = self.steps(stop_chars=" \t=!<>)&|")
        if not all(isinstance(s, Field | Index) for s in steps):
            raise self.fail("filters may only use .name, ['name'] and [n] after '@'")
        self.skip_ws()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return Compare(tuple(steps), op, self.literal())
        return Compare(tuple(steps), None)

    def literal(self) -> Any:
        self.skip_ws()
        c = self.peek()
        if c in ("'", '"') and c:
            return self.quoted()
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return value
        m = _NUMBER.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a literal")
        self.pos = m.end()
        return float(m.group()) if m.group(1) or m.group(2) else int(m.group())


def parse_path(path: str) -> ParsedPath:
    """Parse ``path``; raises :class:`PathSyntaxError` (a ``ValueError``) with the position."""
    if not isinstance(path, str):
        raise PathSyntaxError(repr(path), 0, "a path is a string")
    cached = _PARSE_CACHE.get(path)
    if cached is None:
        cached = _Parser(path).parse()
        if len(_PARSE_CACHE) < 4096:
            _PARSE_CACHE[path] = cached
    return cached


def is_valid_path(path: Any) -> bool:
    try:
        parse_path(path)
    except PathSyntaxError:
        return False
    return True


def is_reference_path(path: str) -> bool:
    """Whether ``path`` is a syntactically valid reference path (single node, no wildcards)."""
    try:
        return parse_path(path).is_reference
    except PathSyntaxError:
        return False


# ------------------------------------------------------------------------------- evaluation


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _select(step: Any, node: Any) -> list[Any]:
    if isinstance(step, Field):
        return [node[step.name]] if isinstance(node, dict) and step.name in node else []
    if isinstance(step, Index):
        if isinstance(node, list) and -len(node) <= step.index < len(node):
            return [node[step.index]]
        return []
    if isinstance(step, Wildcard):
        if isinstance(node, dict):
            return list(node.values())
        return list(node) if isinstance(node, list) else []
    if isinstance(step, Union):
        out: list[Any] = []
        for key in step.keys:
            sub = Field(key) if isinstance(key, str) else Index(key)
            out.extend(_select(sub, node))
        return out
    if isinstance(step, Slice):
        return node[step.start : step.end : step.step] if isinstance(node, list) else []
    if isinstance(step, Filter):
        items = (
            node
            if isinstance(node, list)
            else list(node.values())
            if isinstance(node, dict)
            else []
        )
        return [item for item in items if _test(step.expr, item)]
    if isinstance(step, Descend):
        out = []
        for sub in _walk(node):
            out.extend(_select(step.step, sub))
        return out
    raise AssertionError(step)


def _walk(node: Any) -> list[Any]:
    """``node`` and every value below it, in document pre-order."""
    stack = [node]
    result: list[Any] = []
    while stack:
        cur = stack.pop()
        result.append(cur)
        children = (
            list(cur.values()) if isinstance(cur, dict) else cur if isinstance(cur, list) else []
        )
        stack.extend(reversed(children))
    return result


def _test(expr: Any, item: Any) -> bool:
    if isinstance(expr, Logic):
        if expr.op == "&&":
            return _test(expr.left, item) and _test(expr.right, item)
        return _test(expr.left, item) or _test(expr.right, item)
    nodes = [item]
    for step in expr.steps:
        nodes = [n for node in nodes for n in _select(step, node)]
    if not nodes:
        return False
    if expr.op is None:
        return True
    return _compare(nodes[0], expr.op, expr.value)


def _compare(left: Any, op: str, right: Any) -> bool:
    comparable = (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable:
        if op in ("==", "!="):
            same = type(left) is type(right) and left == right
            return same if op == "==" else not same
        return False
    return {
        "==": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]


def _normalized(parsed: ParsedPath) -> str:
    out = "$$" if parsed.context else "$" + (parsed.variable or "")
    for step in parsed.steps:
        if isinstance(step, Field):
            out += f"['{step.name}']"
        elif isinstance(step, Index):
            out += f"[{step.index}]"
    return out


def evaluate_path(path: str, data: Any, context: dict | None = None) -> Any:
    """Apply ``path`` to ``data`` (or to ``context`` for ``$$`` paths).

    A reference path returns the single node it names or raises :class:`PathError`; any other
    path returns the list of matches.
    """
    try:
        parsed = parse_path(path)
    except PathSyntaxError as exc:
        raise PathError(str(path), f"Invalid path '{path}': {exc}") from None
    if parsed.variable is not None:
        root = variable_value(parsed.variable, context, path)
    else:
        root = (dict(context) if context is not None else {}) if parsed.context else data
    nodes = [root]
    for step in parsed.steps:
        nodes = [n for node in nodes for n in _select(step, node)]
        if not nodes and parsed.is_reference:
            break
    if parsed.is_reference:
        if not nodes:
            raise PathError(
                path, f"Invalid path '{path}' : No results for path: {_normalized(parsed)}"
            )
        return nodes[0]
    return nodes


class Context(dict):
    """The context object (``$$``) of one state, with the workflow variables it can see.

    The variables are an attribute, not a key: ``$$`` never shows them, ``$name`` reads them."""

    __slots__ = ("variables",)

    @classmethod
    def of(cls, fields: dict[str, Any], variables: dict[str, Any]) -> Context:
        ctx = cls(fields)
        ctx.variables = variables
        return ctx

    def extend(self, **fields: Any) -> Context:
        """A copy with ``fields`` added (``Map`` for an iteration), seeing the same variables."""
        ctx = Context(self, **fields)
        ctx.variables = getattr(self, "variables", {})
        return ctx


def variable_value(name: str, context: dict | None, path: str = "") -> Any:
    """The value of ``$name``; a variable never assigned is ``States.Runtime``, as on AWS."""
    variables = getattr(context, "variables", None) or {}
    if name not in variables:
        shown = path or "$" + name
        raise UnassignedVariable(
            shown, f"Invalid path '{shown}': The variable '${name}' has not been assigned"
        )
    return variables[name]


def path_exists(path: str, data: Any, context: dict | None = None) -> bool:
    """Whether a reference path names an existing node (for Choice ``IsPresent``)."""
    try:
        result = evaluate_path(path, data, context)
    except PathError:
        return False
    return not (not parse_path(path).is_reference and result == [])


# ------------------------------------------------------------------------------- ResultPath


def set_result_path(data: Any, path: str | None, result: Any) -> Any:
    """Place ``result`` into a copy of ``data`` at ``path`` (ResultPath semantics).

    ``"$"`` replaces the input with the result, ``None`` (JSON null) discards the result and
    keeps the input, and a deeper path creates missing intermediate objects.
    """
    if path is None:
        return copy.deepcopy(data)
    try:
        parsed = parse_path(path)
    except PathSyntaxError as exc:
        raise PathError(str(path), f"Invalid ResultPath '{path}': {exc}") from None
    if parsed.context or parsed.variable is not None or not parsed.is_reference:
        raise PathError(
            path,
            f"Invalid ResultPath '{path}': ResultPath must be a reference path into the input",
        )
    result = copy.deepcopy(result)
    if not parsed.steps:
        return result
    out = copy.deepcopy(data)
    node = out
    for i, step in enumerate(parsed.steps):
        last = i == len(parsed.steps) - 1
        if isinstance(step, Field) and isinstance(node, dict):
            if last:
                node[step.name] = result
            else:
                if step.name not in node:
                    node[step.name] = {}
                node = node[step.name]
            continue
        if (
            isinstance(step, Index)
            and isinstance(node, list)
            and -len(node) <= step.index < len(node)
        ):
            if last:
                node[step.index] = result
            else:
                node = node[step.index]
            continue
        raise PathError(
            path,
            f'Unable to apply ResultPath "{path}" to input '
            f"{json.dumps(data, separators=(',', ':'), default=str)[:200]}",
            RESULT_PATH_MATCH_FAILURE,
        )
    return out
