"""The AWS CLI shorthand syntax, as `aws emr add-steps --steps` takes it.

    Type=Spark,Name="Spark Application Step",ActionOnFailure=CONTINUE,Args=[app.py,--n,3]

A structure is `Key=value` pairs separated by commas. A value is

* bare text, up to the next comma (or, inside brackets or braces, the closing bracket);
* quoted with `"` or `'` (commas, brackets and `=` are then plain text; `\\"` escapes);
* a list, `[a,b,"c d",[nested]]`, or a structure in braces, `{Key=value,...}`;
* several values separated by commas when the next one is not `Key=`: `Args=a,b,c` is the
  list `[a, b, c]`, as the AWS CLI reads it.

`parse` returns dicts, lists and strings; a malformed text raises `ShorthandError`, which shows
the text with a caret under the place where parsing stopped and says what was expected there.
"""

from __future__ import annotations

import re
from typing import Any

from headrace.jobs.errors import InvalidJobDefinition

_KEY = re.compile(r"[A-Za-z0-9_.:-]+")
_KEY_AHEAD = re.compile(r"\s*[A-Za-z0-9_.:-]+\s*=")


class ShorthandError(InvalidJobDefinition):
    """Shorthand text that does not parse."""

    def __init__(self, subject: str, text: str, position: int, expected: str) -> None:
        shown, caret = _context(text, position)
        super().__init__(
            subject,
            f"at character {position + 1}: {expected}\n    {shown}\n    {caret}",
            "write Key=value pairs separated by commas, lists in [brackets], and quote values "
            "that contain commas, brackets or spaces, e.g. "
            'Type=Spark,Name="My step",ActionOnFailure=CONTINUE,Args=[app.py,--input,s3://b/k]',
        )
        self.position = position


def _context(text: str, position: int, width: int = 70) -> tuple[str, str]:
    start = max(0, position - width // 2)
    end = min(len(text), start + width)
    shown = text[start:end]
    prefix = "…" if start else ""
    return prefix + shown + ("…" if end < len(text) else ""), " " * (
        len(prefix) + position - start
    ) + "^"


class _Parser:
    def __init__(self, text: str, subject: str) -> None:
        self.text = text
        self.subject = subject
        self.i = 0

    def fail(self, expected: str, at: int | None = None) -> ShorthandError:
        return ShorthandError(self.subject, self.text, self.i if at is None else at, expected)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t", "\n"):
            self.i += 1

    # structure := key '=' value (',' key '=' value)*
    def structure(self, closing: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self.skip_spaces()
            start = self.i
            match = _KEY.match(self.text, self.i)
            if match is None:
                found = self.peek() or "the end of the text"
                raise self.fail(f"expected a key (Key=value), found {found!r}")
            key = match.group(0)
            self.i = match.end()
            self.skip_spaces()
            if self.peek() != "=":
                raise self.fail(f"expected '=' after the key {key!r}")
            self.i += 1
            if key in out:
                raise self.fail(f"the key {key!r} is given twice", start)
            out[key] = self.values(closing)
            self.skip_spaces()
            char = self.peek()
            if char == ",":
                self.i += 1
                continue
            if char == closing or (not closing and not char):
                return out
            raise self.fail(f"expected ',' or {'the end' if not closing else repr(closing)}")

    # value (',' value)* while the next item is not `Key=`: an implicit list
    def values(self, closing: str) -> Any:
        first = self.value(closing, in_list=False)
        items = [first]
        while self.peek() == "," and not _KEY_AHEAD.match(self.text, self.i + 1):
            self.i += 1
            items.append(self.value(closing, in_list=False))
        return first if len(items) == 1 else items

    def value(self, closing: str, *, in_list: bool) -> Any:
        self.skip_spaces()
        char = self.peek()
        if char == "[":
            return self.list_()
        if char == "{":
            self.i += 1
            out = self.structure("}")
            self.i += 1
            return out
        if char in ('"', "'"):
            return self.quoted()
        stops = {",", "]"} if in_list else {","}
        if closing:
            stops.add(closing)
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in stops:
            if self.text[self.i] in "[{\"'" and self.i > start:
                # quoting or brackets in the middle of bare text is almost always a typo
                raise self.fail(f"unexpected {self.text[self.i]!r} inside a bare value; quote it")
            self.i += 1
        text = self.text[start : self.i].strip()
        if not text:
            raise self.fail('expected a value here (write "" for an empty string)', start)
        return text

    def list_(self) -> list[Any]:
        opened = self.i
        self.i += 1
        items: list[Any] = []
        self.skip_spaces()
        if self.peek() == "]":
            self.i += 1
            return items
        while True:
            items.append(self.value("]", in_list=True))
            self.skip_spaces()
            char = self.peek()
            if char == ",":
                self.i += 1
                continue
            if char == "]":
                self.i += 1
                return items
            if not char:
                raise self.fail("the list opened here is not closed with ']'", opened)
            raise self.fail(f"expected ',' or ']' in the list, found {char!r}")

    def quoted(self) -> str:
        quote = self.peek()
        opened = self.i
        self.i += 1
        out = []
        while self.i < len(self.text):
            char = self.text[self.i]
            if char == "\\" and self.i + 1 < len(self.text):
                out.append(self.text[self.i + 1])
                self.i += 2
                continue
            if char == quote:
                self.i += 1
                return "".join(out)
            out.append(char)
            self.i += 1
        raise self.fail(f"the quote {quote} opened here is not closed", opened)


def parse(text: str, subject: str = "shorthand") -> dict[str, Any]:
    """`Key=value,...` → a dict (values: strings, lists, dicts)."""
    if not isinstance(text, str) or not text.strip():
        raise ShorthandError(subject, str(text), 0, "the text is empty")
    parser = _Parser(text, subject)
    return parser.structure()
