"""EventBridge event patterns: validate a pattern once, compile it into closures, match events.

The semantics are those of Amazon EventBridge content filtering (and of aws/event-ruler, the
engine behind it), so a rule written for EventBridge selects the same events here:

- A pattern is a JSON object shaped like the events it selects. Every field named in it must
  match (AND); the values listed for a field are alternatives (OR). Fields the pattern does not
  name are ignored.
- A value list holds exact values (strings, numbers, `null`, `true`, `false`) and operator
  objects: `prefix`, `suffix` (both also `{"equals-ignore-case": ..}`), `equals-ignore-case`,
  `wildcard` (`*` for any run of characters, `\\*` and `\\\\` for a literal `*` and `\\`),
  `anything-but` (a value, a list of strings or of numbers, or `{"prefix"|"suffix"|"wildcard"|
  "equals-ignore-case": ..}`), `numeric` (`=`, or a bound `<`, `<=`, `>`, `>=`, or a lower then an
  upper bound), `exists` and `cidr`.
- Numbers compare as numbers (300 matches 3.0e2); strings, numbers, booleans and null never
  match each other. String operators only match strings, `numeric` only numbers. The
  `anything-but` forms match any present value that is not excluded, including null.
- If the event holds an array, the field matches when any element matches. A nested pattern
  against an array of objects must match within one element (array-consistent, as
  event-ruler's `rulesForJSONEvent`).
- `exists` tests for a value at the path (a leaf): an object or an empty array there counts as
  absent, as in EventBridge. Every other test fails on an absent field.
- `"$or": [{..}, {..}]` at any level holds alternatives, each a pattern at that level.

Deliberate differences: numbers are Python floats/ints without EventBridge's range and 6-decimal
limits; `"$or"` with something other than a list of objects is rejected rather than read as a
field named "$or"; string values are not matched as IP addresses in canonical form.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any, NoReturn

from headrace.errors import MalformedEvent, PatternError

__all__ = ["OPERATORS", "EventPattern", "compile_pattern", "matches"]

OPERATORS = (
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
)
# event-ruler refuses these as field names inside "$or": they are almost always an operator
# written one level too high, e.g. {"$or": [{"prefix": "a"}, ..]}.
_RESERVED_IN_OR = frozenset(OPERATORS) | {"=", "<", "<=", ">", ">="}
_NUMERIC_OPS = ("=", "<", "<=", ">", ">=")
_MAX_DEPTH = 100

_MISSING = object()
_EMPTY: dict[str, Any] = {}
_LIST_TYPES = (list, tuple)

Matcher = Callable[[Mapping[str, Any]], bool]
ValueTest = Callable[[Any], bool]


# --------------------------------------------------------------------------- public API


class EventPattern:
    """A validated, compiled EventBridge pattern. Build it with `compile_pattern`."""

    __slots__ = ("_match", "_pattern", "_text")

    def __init__(self, pattern: dict[str, Any], match: Matcher) -> None:
        self._pattern = pattern
        self._match = match
        self._text = json.dumps(pattern, sort_keys=True, separators=(",", ":"))

    @property
    def pattern(self) -> dict[str, Any]:
        """The pattern as a JSON-ready dict (a copy; changing it does not change the matcher)."""
        return json.loads(self._text)

    def to_json(self) -> str:
        return json.dumps(self._pattern, separators=(",", ":"))

    def matches(self, event: Mapping[str, Any] | str | bytes) -> bool:
        """True if the event (a dict, or its JSON text) is selected by this pattern."""
        if type(event) is dict:
            return self._match(event)
        return self._match(_as_event(event))

    __call__ = matches

    def filter(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events this pattern selects, in order."""
        match = self._match
        return [e for e in events if (match(e) if type(e) is dict else match(_as_event(e)))]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventPattern) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        text = self.to_json()
        return f"EventPattern({text if len(text) <= 200 else text[:197] + '...'})"

    def __reduce__(self):  # closures do not pickle; recompile from the pattern instead
        return (compile_pattern, (self._pattern,))


def compile_pattern(pattern: Mapping[str, Any] | str | bytes | EventPattern) -> EventPattern:
    """Validate an EventBridge pattern (a dict or its JSON text) and compile it for matching.

    Raises PatternError naming the JSON path of the first problem, what is wrong and the fix.
    """
    if isinstance(pattern, EventPattern):
        return pattern
    if isinstance(pattern, str | bytes | bytearray):
        pattern = _parse_json_pattern(pattern)
    if not isinstance(pattern, Mapping):
        _fail(
            "$",
            f"must be a JSON object, got {_describe(pattern)}",
            'write it as an object of fields, e.g. {"source": ["my.app"]}',
        )
    match = _compile_object(pattern, "$", depth=0, in_or=False)
    return EventPattern(_plain(pattern), match)


def matches(
    pattern: Mapping[str, Any] | str | EventPattern, event: Mapping[str, Any] | str | bytes
) -> bool:
    """One-off check: does `pattern` select `event`? Compiled patterns are cached by content;
    on a hot path hold the EventPattern from `compile_pattern` and call its `matches`."""
    if isinstance(pattern, EventPattern):
        return pattern.matches(event)
    if isinstance(pattern, str):
        return _compile_cached(pattern).matches(event)
    try:
        key = json.dumps(pattern, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return compile_pattern(pattern).matches(event)  # raises the precise PatternError
    return _compile_cached(key).matches(event)


@lru_cache(maxsize=512)
def _compile_cached(text: str) -> EventPattern:
    return compile_pattern(text)


def _plain(value: Any) -> Any:
    """A detached copy in plain JSON types (the pattern is validated, so nothing else is left)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, _LIST_TYPES):
        return [_plain(v) for v in value]
    return value


def _as_event(event: Any) -> Mapping[str, Any]:
    if isinstance(event, Mapping):
        return event
    if isinstance(event, str | bytes | bytearray):
        try:
            parsed = json.loads(event)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvent(
                "event", f"is not valid JSON ({exc})", "send a JSON object as the event"
            ) from None
        if isinstance(parsed, dict):
            return parsed
        event = parsed
    raise MalformedEvent(
        "event",
        f"must be a JSON object to be matched against a pattern, got {_describe(event)}",
        "send events as objects, e.g. make_envelope(source, detail_type, detail)",
    )


# --------------------------------------------------------------------------- errors and paths

_PLAIN_KEY = re.compile(r"[A-Za-z_$][\w$-]*")


def _fail(path: str, reason: str, fix: str) -> NoReturn:
    raise PatternError(f"event pattern at {path}", reason, fix)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, _LIST_TYPES):
        return "an array"
    return f"a {type(value).__name__} (not JSON)"


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _parse_json_pattern(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(
            "$",
            f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            "fix the JSON syntax (quotes around field names, no trailing commas)",
        )
    except (ValueError, RecursionError) as exc:  # bad encoding, absurd nesting
        _fail("$", f"is not valid JSON: {exc}", "send UTF-8 JSON nested less deeply")


# --------------------------------------------------------------------------- objects and $or


def _compile_object(obj: Mapping[Any, Any], path: str, depth: int, in_or: bool) -> Matcher:
    if depth > _MAX_DEPTH:
        _fail(path, f"is nested more than {_MAX_DEPTH} levels deep", "flatten the pattern")
    if not obj:
        _fail(
            path,
            "is an empty object, which EventBridge rejects",
            "name at least one field with a value list, or remove the empty object",
        )
    leaves: list[tuple[str, ValueTest]] = []
    nested: list[tuple[str, Matcher]] = []
    alternatives: list[tuple[Matcher, ...]] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            _fail(path, f"has a field name that is not a string: {key!r}", "use string keys")
        key_path = _child(path, key)
        if key == "$or":
            alternatives.append(_compile_or(value, key_path, depth))
            continue
        if in_or and key in _RESERVED_IN_OR:
            _fail(
                key_path,
                f'"{key}" is an operator, not a field name, and cannot be a field inside $or',
                f'put the operator in the value list of a field: {{"field": [{{"{key}": ...}}]}}',
            )
        if isinstance(value, Mapping):
            nested.append((key, _compile_object(value, key_path, depth + 1, in_or)))
        elif isinstance(value, _LIST_TYPES):
            leaves.append((key, _compile_values(value, key_path)))
        else:
            _fail(
                key_path,
                f"must be an array of values or a nested object, got {_describe(value)}",
                f'wrap the value in an array: "{key}": [{_json_text(value)}]',
            )
    return _object_matcher(tuple(leaves), tuple(nested), tuple(alternatives))


def _compile_or(value: Any, path: str, depth: int) -> tuple[Matcher, ...]:
    fix = 'give $or an array of at least two objects: "$or": [{"a": ["x"]}, {"b": ["y"]}]'
    if not isinstance(value, _LIST_TYPES):
        _fail(path, f"must be an array of pattern objects, got {_describe(value)}", fix)
    if len(value) < 2:
        _fail(path, f"has {len(value)} alternative(s); EventBridge requires at least two", fix)
    branches = []
    for i, branch in enumerate(value):
        branch_path = f"{path}[{i}]"
        if not isinstance(branch, Mapping):
            _fail(branch_path, f"must be a pattern object, got {_describe(branch)}", fix)
        branches.append(_compile_object(branch, branch_path, depth + 1, in_or=True))
    return tuple(branches)


def _object_matcher(
    leaves: tuple[tuple[str, ValueTest], ...],
    nested: tuple[tuple[str, Matcher], ...],
    alternatives: tuple[tuple[Matcher, ...], ...],
) -> Matcher:
    # the common shapes get their own closures: one field, or only leaf fields
    if not nested and not alternatives:
        if len(leaves) == 1:
            ((key, test),) = leaves

            def match_one(obj: Mapping[str, Any]) -> bool:
                return test(obj.get(key, _MISSING))

            return match_one

        def match_leaves(obj: Mapping[str, Any]) -> bool:
            get = obj.get
            for key, test in leaves:  # noqa: SIM110 - a loop is faster than all() over a genexpr
                if not test(get(key, _MISSING)):
                    return False
            return True

        return match_leaves

    def match(obj: Mapping[str, Any]) -> bool:
        get = obj.get
        for key, test in leaves:
            if not test(get(key, _MISSING)):
                return False
        for key, sub in nested:
            if not _match_nested(sub, get(key, _MISSING)):
                return False
        for branches in alternatives:
            for branch in branches:
                if branch(obj):
                    break
            else:
                return False
        return True

    return match


def _match_nested(sub: Matcher, value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return sub(value)
    if kind is list or kind is tuple:
        seen_object = False
        for element in _objects_in(value):
            seen_object = True
            if sub(element):
                return True
        # no object below: only absence tests (exists: false) can still hold
        return False if seen_object else sub(_EMPTY)
    if value is not _MISSING and isinstance(value, Mapping):
        return sub(value)
    return sub(_EMPTY)


def _objects_in(values: list[Any] | tuple[Any, ...]) -> Iterator[Mapping[str, Any]]:
    for v in values:
        if isinstance(v, Mapping):
            yield v
        elif isinstance(v, _LIST_TYPES):
            yield from _objects_in(v)


def _leaves_in(values: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    for v in values:
        if isinstance(v, _LIST_TYPES):
            yield from _leaves_in(v)
        elif not isinstance(v, Mapping):
            yield v


# --------------------------------------------------------------------------- value lists


class _Spec:
    """What one value list accepts, gathered before it is turned into a closure."""

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[int | float] = set()
        self.null = self.true = self.false = False
        self.exists_true = self.exists_false = False
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.prefixes_ic: list[str] = []
        self.suffixes_ic: list[str] = []
        self.equals_ic: set[str] = set()
        self.string_tests: list[Callable[[str], bool]] = []
        self.number_tests: list[Callable[[int | float], bool]] = []
        self.any_tests: list[ValueTest] = []  # anything-but: applies to every present value

    def only_strings(self) -> bool:
        return bool(self.strings) and not (
            self.numbers
            or self.null
            or self.true
            or self.false
            or self.exists_true
            or self.exists_false
            or self.prefixes
            or self.suffixes
            or self.prefixes_ic
            or self.suffixes_ic
            or self.equals_ic
            or self.string_tests
            or self.number_tests
            or self.any_tests
        )


def _compile_values(values: list[Any] | tuple[Any, ...], path: str) -> ValueTest:
    if not values:
        _fail(
            path,
            "is an empty array, which EventBridge rejects (it could never match)",
            'list at least one value, e.g. ["x"], or use [{"exists": false}] for "absent"',
        )
    spec = _Spec()
    for i, value in enumerate(values):
        item_path = f"{path}[{i}]"
        if value is None:
            spec.null = True
        elif value is True:
            spec.true = True
        elif value is False:
            spec.false = True
        elif isinstance(value, str):
            spec.strings.add(value)
        elif isinstance(value, int | float):
            spec.numbers.add(_number(value, item_path))
        elif isinstance(value, Mapping):
            _compile_operator(value, item_path, spec)
        elif isinstance(value, _LIST_TYPES):
            _fail(
                item_path,
                "is an array inside a value list; EventBridge does not allow nesting them",
                "list the values directly in the field's array",
            )
        else:
            _fail(
                item_path,
                f"is {_describe(value)}; values must be strings, numbers, true, false or null",
                'use a JSON value or an operator object such as {"prefix": ".."}',
            )
    return _value_test(spec)


def _number(value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"must be a number, got {_describe(value)}", "write a JSON number")
    if isinstance(value, float) and not math.isfinite(value):
        _fail(path, f"is {value!r}, which is not a JSON number", "use a finite number")
    return value


def _value_test(spec: _Spec) -> ValueTest:
    general = _general_test(spec)
    if not spec.only_strings():
        return general
    # the usual value list, e.g. "source": ["my.app"]: a string is decided by one lookup
    strings = frozenset(spec.strings)
    if len(strings) == 1:
        (only,) = strings

        def one_string(v: Any) -> bool:
            return v == only if type(v) is str else general(v)

        return one_string

    def some_strings(v: Any) -> bool:
        return v in strings if type(v) is str else general(v)

    return some_strings


def _general_test(spec: _Spec) -> ValueTest:
    strings = frozenset(spec.strings)
    numbers = frozenset(spec.numbers)
    null, true, false = spec.null, spec.true, spec.false
    exists_true, exists_false = spec.exists_true, spec.exists_false
    string_tests = _string_tests(spec)
    number_tests = tuple(spec.number_tests)
    any_tests = tuple(spec.any_tests)

    def scalar(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            if v in strings:
                return True
            for test in string_tests:
                if test(v):
                    return True
        elif kind is int or kind is float:
            if v in numbers:
                return True
            for test in number_tests:
                if test(v):
                    return True
        elif v is None:
            if null:
                return True
        elif kind is bool:
            if true if v else false:
                return True
        else:
            return _scalar_fallback(v, scalar)
        for test in any_tests:  # noqa: SIM110 - hot path, see match_leaves
            if test(v):
                return True
        return False

    def value_test(v: Any) -> bool:
        kind = type(v)
        if kind is dict or v is _MISSING:
            return exists_false
        if kind is list or kind is tuple:
            present = False
            for leaf in _leaves_in(v):
                present = True
                if exists_true or scalar(leaf):
                    return True
            return exists_false if not present else False
        if isinstance(v, Mapping):
            return exists_false
        return exists_true or scalar(v)

    return value_test


def _scalar_fallback(v: Any, scalar: ValueTest) -> bool:
    """Subclasses of str/int/float (enums, numpy scalars) match as their plain values."""
    if isinstance(v, str):
        return scalar(str(v))
    if isinstance(v, int) and not isinstance(v, bool):
        return scalar(int(v))
    if isinstance(v, float):
        return scalar(float(v))
    if type(v).__module__ == "numpy" and hasattr(v, "item"):  # numpy scalars
        item = v.item()
        if type(item) in (str, int, float, bool):
            return scalar(item)
    return False


def _string_tests(spec: _Spec) -> tuple[Callable[[str], bool], ...]:
    tests: list[Callable[[str], bool]] = []
    if spec.prefixes:
        prefixes = tuple(spec.prefixes)
        tests.append(lambda s: s.startswith(prefixes))
    if spec.suffixes:
        suffixes = tuple(spec.suffixes)
        tests.append(lambda s: s.endswith(suffixes))
    if spec.equals_ic:
        folded = frozenset(spec.equals_ic)
        tests.append(lambda s: s.lower() in folded)
    if spec.prefixes_ic:
        prefixes_ic = tuple(spec.prefixes_ic)
        tests.append(lambda s: s.lower().startswith(prefixes_ic))
    if spec.suffixes_ic:
        suffixes_ic = tuple(spec.suffixes_ic)
        tests.append(lambda s: s.lower().endswith(suffixes_ic))
    tests.extend(spec.string_tests)
    return tuple(tests)


# --------------------------------------------------------------------------- operators


def _compile_operator(expr: Mapping[Any, Any], path: str, spec: _Spec) -> None:
    if len(expr) != 1:
        names = ", ".join(map(repr, expr)) or "nothing"
        _fail(
            path,
            f"an operator object must hold exactly one operator, this one holds {names}",
            'write one object per operator: [{"prefix": "a"}, {"suffix": "b"}]',
        )
    ((name, arg),) = expr.items()
    op_path = _child(path, name) if isinstance(name, str) else path
    handler = _OPERATOR_HANDLERS.get(name) if isinstance(name, str) else None
    if handler is None:
        _fail(
            path,
            f"unknown operator {name!r}",
            f"use one of: {', '.join(OPERATORS)}; an exact value is written bare, not in an object",
        )
    handler(arg, op_path, spec)


def _op_prefix(arg: Any, path: str, spec: _Spec) -> None:
    if isinstance(arg, Mapping):
        spec.prefixes_ic.append(_ignore_case_arg(arg, path, "prefix").lower())
    else:
        spec.prefixes.append(_string_arg(arg, path, "prefix"))


def _op_suffix(arg: Any, path: str, spec: _Spec) -> None:
    if isinstance(arg, Mapping):
        spec.suffixes_ic.append(_ignore_case_arg(arg, path, "suffix").lower())
    else:
        spec.suffixes.append(_string_arg(arg, path, "suffix"))


def _op_equals_ignore_case(arg: Any, path: str, spec: _Spec) -> None:
    spec.equals_ic.add(_string_arg(arg, path, "equals-ignore-case").lower())


def _op_wildcard(arg: Any, path: str, spec: _Spec) -> None:
    spec.string_tests.append(_wildcard_test(_string_arg(arg, path, "wildcard"), path))


def _op_exists(arg: Any, path: str, spec: _Spec) -> None:
    if arg is True:
        spec.exists_true = True
    elif arg is False:
        spec.exists_false = True
    else:
        _fail(
            path,
            f"exists must be true or false, got {_describe(arg)}",
            'write {"exists": true} or {"exists": false}',
        )


def _op_cidr(arg: Any, path: str, spec: _Spec) -> None:
    text = _string_arg(arg, path, "cidr")
    fix = 'write an IPv4 or IPv6 network with its prefix length, e.g. {"cidr": "10.0.0.0/24"}'
    _, slash, bits = text.partition("/")
    if not slash:
        _fail(path, f"malformed CIDR {text!r}: one '/' is required", fix)
    if not bits.isdigit():
        _fail(path, f"malformed CIDR {text!r}: the prefix length must be an integer", fix)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        _fail(path, f"malformed CIDR {text!r}: {exc}", fix)
    low, high = int(network.network_address), int(network.broadcast_address)
    version = network.version

    def in_network(s: str) -> bool:
        try:
            ip = ipaddress.ip_address(s)
        except ValueError:
            return False
        return ip.version == version and low <= int(ip) <= high

    spec.string_tests.append(in_network)


def _op_numeric(arg: Any, path: str, spec: _Spec) -> None:
    example = '{"numeric": [">", 0, "<=", 5]}'
    if not isinstance(arg, _LIST_TYPES):
        _fail(path, f"numeric takes an array, got {_describe(arg)}", f"write e.g. {example}")
    if len(arg) not in (2, 4):
        _fail(
            path,
            f"numeric takes one comparison or a lower and an upper bound, got {len(arg)} items",
            f'write ["=", 5], ["<", 10] or a range such as {example}',
        )
    op = arg[0]
    if not isinstance(op, str) or op not in _NUMERIC_OPS:
        _fail(
            f"{path}[0]",
            f"unknown numeric operator {_json_text(op)}",
            f"use one of {', '.join(_NUMERIC_OPS)}",
        )
    value = _number(arg[1], f"{path}[1]")
    if len(arg) == 2:
        if op == "=":
            spec.numbers.add(value)
        else:
            spec.number_tests.append(_range_test(op, value, None, None))
        return
    if op not in (">", ">="):
        _fail(
            path,
            f'a two-comparison range must start with the lower bound (">" or ">="), not "{op}"',
            f"put the lower bound first: {example}",
        )
    op2 = arg[2]
    if not isinstance(op2, str) or op2 not in ("<", "<="):
        _fail(
            f"{path}[2]",
            f'the upper bound of a range must use "<" or "<=", got {_json_text(op2)}',
            f"write e.g. {example}",
        )
    top = _number(arg[3], f"{path}[3]")
    if not value < top:
        _fail(
            path,
            f"the lower bound {value!r} must be less than the upper bound {top!r}",
            "swap or correct the bounds",
        )
    spec.number_tests.append(_range_test(op, value, op2, top))


def _range_test(
    op: str, value: int | float, op2: str | None, top: int | float | None
) -> Callable[[int | float], bool]:
    if op2 is None:
        return {
            "<": lambda x: x < value,
            "<=": lambda x: x <= value,
            ">": lambda x: x > value,
            ">=": lambda x: x >= value,
        }[op]
    return {
        (">", "<"): lambda x: value < x < top,
        (">", "<="): lambda x: value < x <= top,
        (">=", "<"): lambda x: value <= x < top,
        (">=", "<="): lambda x: value <= x <= top,
    }[(op, op2)]


def _op_anything_but(arg: Any, path: str, spec: _Spec) -> None:
    if isinstance(arg, Mapping):
        spec.any_tests.append(_anything_but_operator(arg, path))
        return
    values = list(arg) if isinstance(arg, _LIST_TYPES) else [arg]
    if not values:
        _fail(path, "anything-but has an empty list", "list at least one value to exclude")
    fix = 'exclude strings or numbers, e.g. {"anything-but": ["stopped", "overloaded"]}'
    for i, v in enumerate(values):
        item_path = f"{path}[{i}]" if isinstance(arg, _LIST_TYPES) else path
        if v is None or isinstance(v, bool) or not isinstance(v, str | int | float):
            _fail(item_path, f"anything-but cannot exclude {_describe(v)}", fix)
        if isinstance(v, float):
            _number(v, item_path)
    has_strings = any(isinstance(v, str) for v in values)
    if has_strings and not all(isinstance(v, str) for v in values):
        _fail(path, "anything-but mixes strings and numbers in one list", fix)
    excluded_strings = frozenset(v for v in values if isinstance(v, str))
    excluded_numbers = frozenset(v for v in values if not isinstance(v, str))

    def not_excluded(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            return v not in excluded_strings
        if kind is int or kind is float:
            return v not in excluded_numbers
        return True  # null and booleans are never in the excluded set

    spec.any_tests.append(not_excluded)


def _anything_but_operator(arg: Mapping[Any, Any], path: str) -> ValueTest:
    inner = ("prefix", "suffix", "wildcard", "equals-ignore-case")
    if len(arg) != 1:
        _fail(
            path,
            f"anything-but takes one operator object, this one holds {len(arg)} keys",
            'write e.g. {"anything-but": {"prefix": "init"}}',
        )
    ((name, value),) = arg.items()
    if name not in inner:
        _fail(
            path,
            f"anything-but does not support {_json_text(name)}",
            f"use one of {', '.join(inner)}, or a value or list of values",
        )
    op_path = _child(path, name)
    texts = list(value) if isinstance(value, _LIST_TYPES) else [value]
    if not texts:
        _fail(op_path, "is an empty list", "list at least one string")
    for i, text in enumerate(texts):
        item_path = f"{op_path}[{i}]" if isinstance(value, _LIST_TYPES) else op_path
        _string_arg(text, item_path, f"anything-but {name}")
        if name in ("prefix", "suffix") and not text:
            _fail(item_path, f"an empty {name} would exclude every string", f"give a {name}")
    # the string operators never match non-strings, so anything-but lets those through
    if name == "prefix":
        prefixes = tuple(texts)
        return lambda v: type(v) is not str or not v.startswith(prefixes)
    if name == "suffix":
        suffixes = tuple(texts)
        return lambda v: type(v) is not str or not v.endswith(suffixes)
    if name == "equals-ignore-case":
        folded = frozenset(t.lower() for t in texts)
        return lambda v: type(v) is not str or v.lower() not in folded
    wildcards = tuple(_wildcard_test(t, op_path) for t in texts)
    return lambda v: type(v) is not str or not any(w(v) for w in wildcards)


def _string_arg(arg: Any, path: str, name: str) -> str:
    if not isinstance(arg, str):
        _fail(path, f"{name} takes a string, got {_describe(arg)}", f'write {{"{name}": "..."}}')
    return arg


def _ignore_case_arg(arg: Mapping[Any, Any], path: str, name: str) -> str:
    if len(arg) != 1 or "equals-ignore-case" not in arg:
        keys = ", ".join(map(_json_text, arg)) or "nothing"
        _fail(
            path,
            f'{name} takes a string or {{"equals-ignore-case": ..}}, got an object with {keys}',
            f'write {{"{name}": "abc"}} or {{"{name}": {{"equals-ignore-case": "abc"}}}}',
        )
    return _string_arg(arg["equals-ignore-case"], _child(path, "equals-ignore-case"), name)


def _wildcard_test(text: str, path: str) -> Callable[[str], bool]:
    segments = _wildcard_segments(text, path)
    if len(segments) == 1:
        (literal,) = segments
        return lambda s: s == literal
    first, last = segments[0], segments[-1]
    middle = tuple(seg for seg in segments[1:-1] if seg)
    least = len(first) + len(last)

    # Leftmost placement of each middle segment is optimal for '*'-only globs, so this is
    # linear in the value and cannot backtrack the way a regex built from the pattern can.
    def glob(s: str) -> bool:
        if len(s) < least or not s.startswith(first) or not s.endswith(last):
            return False
        pos, end = len(first), len(s) - len(last)
        for seg in middle:
            found = s.find(seg, pos, end)
            if found < 0:
                return False
            pos = found + len(seg)
        return True

    return glob


def _wildcard_segments(text: str, path: str) -> list[str]:
    """The literal pieces between unescaped '*'; validates escapes as EventBridge does."""
    segments: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "*":
            if i + 1 < n and text[i + 1] == "*":
                _fail(
                    path,
                    f"consecutive wildcard characters at position {i} of {text!r}",
                    "one '*' already matches any run of characters; remove the extra '*'",
                )
            segments.append("".join(current))
            current = []
        elif ch == "\\":
            if i + 1 < n and text[i + 1] in "*\\":
                current.append(text[i + 1])
                i += 1
            else:
                _fail(
                    path,
                    f"invalid escape at position {i} of {text!r}: "
                    "'\\' may only precede '*' or '\\'",
                    "write '\\*' for a literal '*', '\\\\' for a literal backslash",
                )
        else:
            current.append(ch)
        i += 1
    segments.append("".join(current))
    return segments


_OPERATOR_HANDLERS: dict[str, Callable[[Any, str, _Spec], None]] = {
    "prefix": _op_prefix,
    "suffix": _op_suffix,
    "equals-ignore-case": _op_equals_ignore_case,
    "wildcard": _op_wildcard,
    "anything-but": _op_anything_but,
    "numeric": _op_numeric,
    "exists": _op_exists,
    "cidr": _op_cidr,
}
