"""A parser and evaluator for the common subset of DynamoDB expressions.

Supported:
- conditions (ConditionExpression, FilterExpression): `=  <>  <  <=  >  >=`, `BETWEEN … AND …`,
  `IN (…)`, `AND`/`OR`/`NOT`, parentheses, `attribute_exists`, `attribute_not_exists`,
  `attribute_type`, `begins_with`, `contains`, `size`;
- updates (UpdateExpression): `SET a = :v, b = b + :n, c = list_append(c, :l),
  d = if_not_exists(d, :z)`, `REMOVE a, b[0], m.x`, `ADD n :one, s :set`, `DELETE s :set`;
- key conditions (KeyConditionExpression): `pk = :v [AND sk op :v | sk BETWEEN :a AND :b |
  begins_with(sk, :p)]`.

Placeholders (`#n`, `:v`) are resolved while parsing, so the trees below hold attribute names
and canonical attribute values only. Anything outside the subset raises UnsupportedExpression,
anything malformed TableValidationError: never a silent misreading.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from headrace.tables.errors import TableValidationError, UnsupportedExpression
from headrace.tables.types import (
    NUMBER_CONTEXT,
    av_equal,
    b64decode,
    compare,
    number_text,
)

Path = tuple[str | int, ...]
AV = dict[str, Any]

_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<int>\d+)|(?P<op><>|<=|>=|[=<>(),.\[\]+\-]))"
)
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}
_CONDITION_FUNCTIONS = {
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
}
_COMPARATORS = {"=", "<>", "<", "<=", ">", ">="}


def _invalid(expression: str, reason: str) -> TableValidationError:
    return TableValidationError(f"expression {expression!r}", reason)


def _tokenize(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _invalid(expression, f"unexpected character {text[pos:].lstrip()[:1]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(
        self,
        expression: str,
        names: Mapping[str, str] | None,
        values: Mapping[str, AV] | None,
    ) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.pos = 0
        self.names = names or {}
        self.values = values or {}

    # -- token helpers

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "ident" and tok[1].upper() in words

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in ops

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _invalid(self.expression, "ends too early")
        self.pos += 1
        return tok

    def expect_op(self, op: str) -> None:
        tok = self.take()
        if tok != ("op", op):
            raise _invalid(self.expression, f"expected {op!r}, found {tok[1]!r}")

    def expect_keyword(self, word: str) -> None:
        if not self.at_keyword(word):
            tok = self.peek()
            raise _invalid(self.expression, f"expected {word}, found {tok[1] if tok else 'end'}")
        self.pos += 1

    def done(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise _invalid(self.expression, f"unexpected {tok[1]!r}")

    # -- operands

    def name(self) -> str:
        kind, text = self.take()
        if kind == "name":
            if text not in self.names:
                raise _invalid(self.expression, f"{text} is not in ExpressionAttributeNames")
            return self.names[text]
        if kind == "ident" and text.upper() not in _KEYWORDS:
            return text
        raise _invalid(self.expression, f"expected an attribute name, found {text!r}")

    def path(self) -> Path:
        parts: list[str | int] = [self.name()]
        while True:
            if self.at_op("."):
                self.pos += 1
                parts.append(self.name())
            elif self.at_op("["):
                self.pos += 1
                kind, text = self.take()
                if kind != "int":
                    raise _invalid(self.expression, f"a list index must be a number, not {text!r}")
                parts.append(int(text))
                self.expect_op("]")
            else:
                return tuple(parts)

    def value(self) -> tuple:
        _, text = self.take()
        if text not in self.values:
            raise _invalid(self.expression, f"{text} is not in ExpressionAttributeValues")
        return ("value", self.values[text])

    def is_call(self) -> bool:
        tok, nxt = self.peek(), self.peek(1)
        return tok is not None and tok[0] == "ident" and nxt == ("op", "(")

    def operand(self) -> tuple:
        """A condition operand: path, :value or size(path)."""
        tok = self.peek()
        if tok is None:
            raise _invalid(self.expression, "ends too early")
        if tok[0] == "value":
            return self.value()
        if self.is_call():
            fname = tok[1]
            if fname != "size":
                raise UnsupportedExpression(
                    f"expression {self.expression!r}", f"function {fname!r} is not supported here"
                )
            self.pos += 2
            path = self.path()
            self.expect_op(")")
            return ("size", path)
        return ("path", self.path())

    # -- conditions

    def condition(self) -> tuple:
        left = self.conjunction()
        while self.at_keyword("OR"):
            self.pos += 1
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self) -> tuple:
        left = self.negation()
        while self.at_keyword("AND"):
            self.pos += 1
            left = ("and", left, self.negation())
        return left

    def negation(self) -> tuple:
        if self.at_keyword("NOT"):
            self.pos += 1
            return ("not", self.negation())
        return self.primary()

    def primary(self) -> tuple:
        if self.at_op("("):
            self.pos += 1
            inner = self.condition()
            self.expect_op(")")
            return inner
        tok = self.peek()
        if self.is_call() and tok is not None and tok[1] in _CONDITION_FUNCTIONS:
            return self.condition_function(tok[1])
        if self.is_call() and tok is not None and tok[1] != "size":
            raise UnsupportedExpression(
                f"expression {self.expression!r}", f"function {tok[1]!r} is not supported"
            )
        left = self.operand()
        if self.at_keyword("BETWEEN"):
            self.pos += 1
            low = self.operand()
            self.expect_keyword("AND")
            return ("between", left, low, self.operand())
        if self.at_keyword("IN"):
            self.pos += 1
            self.expect_op("(")
            options = [self.operand()]
            while self.at_op(","):
                self.pos += 1
                options.append(self.operand())
            self.expect_op(")")
            return ("in", left, options)
        tok = self.take()
        if tok[0] != "op" or tok[1] not in _COMPARATORS:
            raise _invalid(self.expression, f"expected a comparison, found {tok[1]!r}")
        return ("cmp", tok[1], left, self.operand())

    def condition_function(self, fname: str) -> tuple:
        self.pos += 2
        path = self.path()
        if fname in ("attribute_exists", "attribute_not_exists"):
            self.expect_op(")")
            return (fname, path)
        self.expect_op(",")
        arg = self.operand()
        self.expect_op(")")
        return (fname, ("path", path), arg)

    # -- updates

    def update(self) -> list[tuple]:
        actions: list[tuple] = []
        seen: set[str] = set()
        if self.peek() is None:
            raise _invalid(self.expression, "is empty")
        while self.peek() is not None:
            tok = self.take()
            clause = tok[1].upper() if tok[0] == "ident" else ""
            if clause not in ("SET", "REMOVE", "ADD", "DELETE"):
                raise _invalid(
                    self.expression, f"expected SET, REMOVE, ADD or DELETE, found {tok[1]!r}"
                )
            if clause in seen:
                raise _invalid(self.expression, f"the {clause} clause appears twice")
            seen.add(clause)
            while True:
                actions.append(self.update_action(clause))
                if not self.at_op(","):
                    break
                self.pos += 1
        return actions

    def update_action(self, clause: str) -> tuple:
        path = self.path()
        if clause == "REMOVE":
            return ("remove", path)
        if clause == "SET":
            self.expect_op("=")
            return ("set", path, self.set_value())
        if not (self.peek() or ("", ""))[0] == "value":
            raise _invalid(self.expression, f"{clause} takes a :value after the attribute")
        return (clause.lower(), path, self.value())

    def set_value(self) -> tuple:
        left = self.set_operand()
        if self.at_op("+", "-"):
            op = self.take()[1]
            return (op, left, self.set_operand())
        return left

    def set_operand(self) -> tuple:
        tok = self.peek()
        if tok is not None and tok[0] == "value":
            return self.value()
        if self.is_call():
            assert tok is not None
            fname = tok[1]
            self.pos += 2
            if fname == "if_not_exists":
                path = self.path()
                self.expect_op(",")
                default = self.set_value()
                self.expect_op(")")
                return ("if_not_exists", path, default)
            if fname == "list_append":
                first = self.set_value()
                self.expect_op(",")
                second = self.set_value()
                self.expect_op(")")
                return ("list_append", first, second)
            raise UnsupportedExpression(
                f"expression {self.expression!r}", f"function {fname!r} is not supported in SET"
            )
        return ("path", self.path())


def parse_condition(
    expression: str, names: Mapping[str, str] | None = None, values: Mapping[str, AV] | None = None
) -> tuple:
    parser = _Parser(expression, names, values)
    tree = parser.condition()
    parser.done()
    return tree


def parse_update(
    expression: str, names: Mapping[str, str] | None = None, values: Mapping[str, AV] | None = None
) -> list[tuple]:
    parser = _Parser(expression, names, values)
    actions = parser.update()
    parser.done()
    paths = [a[1] for a in actions]
    for i, p in enumerate(paths):
        for q in paths[i + 1 :]:
            short = min(len(p), len(q))
            if p[:short] == q[:short]:
                raise _invalid(expression, f"two actions change overlapping paths {p} and {q}")
    return actions


# -- evaluation -------------------------------------------------------------------------------


def path_text(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def resolve(item: Mapping[str, AV] | None, path: Path) -> AV | None:
    """The attribute value at `path`, or None when any step is missing."""
    if not item:
        return None
    current: Any = item.get(path[0])  # type: ignore[call-overload]
    for part in path[1:]:
        if current is None:
            return None
        if isinstance(part, int):
            seq = current.get("L")
            if seq is None or part >= len(seq):
                return None
            current = seq[part]
        else:
            members = current.get("M")
            if members is None:
                return None
            current = members.get(part)
    return current


def _size(av: AV | None) -> AV | None:
    if av is None:
        return None
    ((kind, value),) = av.items()
    if kind == "S":
        return {"N": str(len(value))}
    if kind == "B":
        return {"N": str(len(b64decode(value)))}
    if kind in ("SS", "NS", "BS", "L", "M"):
        return {"N": str(len(value))}
    return None


def _operand(item: Mapping[str, AV] | None, node: tuple) -> AV | None:
    kind = node[0]
    if kind == "value":
        return node[1]
    if kind == "path":
        return resolve(item, node[1])
    if kind == "size":
        return _size(resolve(item, node[1]))
    raise AssertionError(kind)


def _begins_with(target: AV | None, prefix: AV | None) -> bool:
    if target is None or prefix is None:
        return False
    if "S" in target and "S" in prefix:
        return target["S"].startswith(prefix["S"])
    if "B" in target and "B" in prefix:
        return b64decode(target["B"]).startswith(b64decode(prefix["B"]))
    return False


def _contains(target: AV | None, operand: AV | None) -> bool:
    if target is None or operand is None:
        return False
    ((kind, value),) = target.items()
    if kind == "S":
        return "S" in operand and operand["S"] in value
    if kind == "B":
        return "B" in operand and b64decode(operand["B"]) in b64decode(value)
    if kind in ("SS", "NS", "BS"):
        member = kind[0]
        return any(av_equal({member: v}, operand) for v in value)
    if kind == "L":
        return any(av_equal(v, operand) for v in value)
    return False


def evaluate(tree: tuple, item: Mapping[str, AV] | None) -> bool:
    """Whether `item` (None: no item) satisfies the condition tree."""
    kind = tree[0]
    if kind == "and":
        return evaluate(tree[1], item) and evaluate(tree[2], item)
    if kind == "or":
        return evaluate(tree[1], item) or evaluate(tree[2], item)
    if kind == "not":
        return not evaluate(tree[1], item)
    if kind == "attribute_exists":
        return resolve(item, tree[1]) is not None
    if kind == "attribute_not_exists":
        return resolve(item, tree[1]) is None
    if kind == "attribute_type":
        target, wanted = _operand(item, tree[1]), _operand(item, tree[2])
        return target is not None and wanted is not None and wanted.get("S") in target
    if kind == "begins_with":
        return _begins_with(_operand(item, tree[1]), _operand(item, tree[2]))
    if kind == "contains":
        return _contains(_operand(item, tree[1]), _operand(item, tree[2]))
    if kind == "between":
        x, low, high = (_operand(item, n) for n in tree[1:])
        lo, hi = compare(x, low), compare(x, high)
        return lo is not None and hi is not None and lo >= 0 and hi <= 0
    if kind == "in":
        x = _operand(item, tree[1])
        return any(av_equal(x, _operand(item, o)) for o in tree[2])
    if kind == "cmp":
        op, a, b = tree[1], _operand(item, tree[2]), _operand(item, tree[3])
        if op == "=":
            return av_equal(a, b)
        if op == "<>":
            return not av_equal(a, b)
        order = compare(a, b)
        if order is None:
            return False
        return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[op]
    raise AssertionError(kind)


def _update_invalid(reason: str) -> TableValidationError:
    return TableValidationError("update", reason)


def _set_value(item: Mapping[str, AV], node: tuple) -> AV:
    """The value a SET action writes, computed from the item as it was before the update."""
    kind = node[0]
    if kind == "value":
        return node[1]
    if kind == "path":
        found = resolve(item, node[1])
        if found is None:
            raise _update_invalid(
                f"the attribute {path_text(node[1])} does not exist in the item; "
                "use if_not_exists() for a default"
            )
        return found
    if kind == "if_not_exists":
        found = resolve(item, node[1])
        return found if found is not None else _set_value(item, node[2])
    if kind == "list_append":
        first, second = _set_value(item, node[1]), _set_value(item, node[2])
        if "L" not in first or "L" not in second:
            raise _update_invalid("list_append takes two lists")
        return {"L": first["L"] + second["L"]}
    if kind in ("+", "-"):
        a, b = _set_value(item, node[1]), _set_value(item, node[2])
        if "N" not in a or "N" not in b:
            raise _update_invalid(f"{kind} takes two numbers")
        x, y = Decimal(a["N"]), Decimal(b["N"])
        try:
            result = NUMBER_CONTEXT.add(x, y) if kind == "+" else NUMBER_CONTEXT.subtract(x, y)
        except ArithmeticError:
            raise _update_invalid("the result has more than 38 significant digits") from None
        return {"N": number_text(result)}
    raise AssertionError(kind)


def _parent(item: dict[str, AV], path: Path) -> Any:
    """The container (dict of members or list) that holds the last step of `path`."""
    if len(path) == 1:
        return item
    holder = resolve(item, path[:-1])
    wanted = "L" if isinstance(path[-1], int) else "M"
    if holder is None or wanted not in holder:
        raise _update_invalid(
            f"the document path {path_text(path)} is invalid: "
            f"{path_text(path[:-1])} is not an existing {'list' if wanted == 'L' else 'map'}"
        )
    return holder[wanted]


def _put(item: dict[str, AV], path: Path, value: AV) -> None:
    parent, last = _parent(item, path), path[-1]
    if isinstance(last, int):
        if last >= len(parent):
            parent.append(value)  # as DynamoDB: an index past the end appends
        else:
            parent[last] = value
    else:
        parent[last] = value


def _drop(item: dict[str, AV], path: Path) -> None:
    try:
        parent = _parent(item, path)
    except TableValidationError:
        return  # removing below something that is not there is a no-op
    last = path[-1]
    if isinstance(last, int):
        if last < len(parent):
            del parent[last]
    else:
        parent.pop(last, None)


def _add(existing: AV | None, value: AV) -> AV:
    ((kind, addend),) = value.items()
    if kind not in ("N", "SS", "NS", "BS"):
        raise _update_invalid("ADD takes a number or a set")
    if existing is None:
        return value
    if kind not in existing:
        raise _update_invalid(f"ADD of a {kind} to a {next(iter(existing))} attribute")
    if kind == "N":
        try:
            total = NUMBER_CONTEXT.add(Decimal(existing["N"]), Decimal(addend))
        except ArithmeticError:
            raise _update_invalid("the sum has more than 38 significant digits") from None
        return {"N": number_text(total)}
    merged = set(existing[kind]) | set(addend)
    key = Decimal if kind == "NS" else None
    if kind == "NS":  # numbers equal in value but written differently are one member
        merged = {number_text(v) for v in merged}
    return {kind: sorted(merged, key=key)}


def _delete(existing: AV | None, value: AV) -> AV | None:
    ((kind, members),) = value.items()
    if kind not in ("SS", "NS", "BS"):
        raise _update_invalid("DELETE takes a set")
    if existing is None:
        return None
    if kind not in existing:
        raise _update_invalid(f"DELETE of a {kind} from a {next(iter(existing))} attribute")
    if kind == "NS":
        gone = {Decimal(v) for v in members}
        left = [v for v in existing[kind] if Decimal(v) not in gone]
    else:
        left = [v for v in existing[kind] if v not in set(members)]
    return {kind: left} if left else None


def apply_update(item: Mapping[str, AV], actions: list[tuple]) -> dict[str, AV]:
    """The item after the actions. Every right-hand side reads the item before the update."""
    values = [
        _set_value(item, a[2]) if a[0] == "set" else (a[2][1] if len(a) > 2 else None)
        for a in actions
    ]
    new = copy.deepcopy(dict(item))
    # removals of list elements go last and from the highest index, so earlier ones do not
    # shift the indexes later ones name
    ordered = sorted(
        zip(actions, values, strict=True),
        key=lambda av: (av[0][0] == "remove", -_last_index(av[0][1])),
    )
    for action, value in ordered:
        kind, path = action[0], action[1]
        if kind == "set":
            _put(new, path, value)
        elif kind == "remove":
            _drop(new, path)
        elif kind == "add":
            _put(new, path, _add(resolve(new, path), value))
        elif kind == "delete":
            left = _delete(resolve(new, path), value)
            if left is None:
                _drop(new, path)
            else:
                _put(new, path, left)
    return new


def _last_index(path: Path) -> int:
    return path[-1] if isinstance(path[-1], int) else -1


def key_condition(tree: tuple, hash_name: str, range_name: str | None) -> tuple[AV, tuple | None]:
    """Split a parsed KeyConditionExpression into the hash value and the range condition.

    The range condition is (op, value) for `= < <= > >=`, ("between", low, high) or
    ("begins_with", prefix).
    """
    parts = [tree[1], tree[2]] if tree[0] == "and" else [tree]
    hash_value: AV | None = None
    range_cond: tuple | None = None

    def unsupported(reason: str) -> UnsupportedExpression:
        return UnsupportedExpression("KeyConditionExpression", reason)

    for part in parts:
        kind = part[0]
        if kind == "cmp" and part[2][0] == "path" and part[3][0] == "value":
            name = _single(part[2][1])
            if name == hash_name and part[1] == "=" and hash_value is None:
                hash_value = part[3][1]
                continue
            if name == range_name and part[1] != "<>" and range_cond is None:
                range_cond = (part[1], part[3][1])
                continue
        elif kind == "between" and part[1][0] == "path" and range_cond is None:
            if _single(part[1][1]) == range_name and part[2][0] == part[3][0] == "value":
                range_cond = ("between", part[2][1], part[3][1])
                continue
        elif (
            kind == "begins_with"
            and part[1][0] == "path"
            and range_cond is None
            and _single(part[1][1]) == range_name
            and part[2][0] == "value"
        ):
            range_cond = ("begins_with", part[2][1])
            continue
        raise unsupported(
            f"a key condition is `{hash_name} = :v` optionally AND one condition on "
            f"{range_name or 'the range key'} (=, <, <=, >, >=, BETWEEN, begins_with)"
        )
    if hash_value is None:
        raise unsupported(f"the key condition must include `{hash_name} = :value`")
    return hash_value, range_cond


def _single(path: Path) -> str | None:
    return path[0] if len(path) == 1 and isinstance(path[0], str) else None
