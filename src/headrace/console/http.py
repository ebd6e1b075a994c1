"""The console's HTTP plumbing on WSGI: routes, JSON answers, static files, errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

#: The largest request body the API reads (actions take a few ids).
MAX_BODY = 1 << 20

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


#: The largest magnitude a numeric query parameter may have: exact in a float and in JSON, far
#: inside what the ledger's integer and float columns hold.
LARGEST = 2**53


def _bounded(name: str, raw: str, number: float, low: float, high: float) -> float:
    if not math.isfinite(number) or not low <= number <= high:
        raise HttpError(
            400, f"query parameter {name!r}: {raw!r} is not between {low:g} and {high:g}"
        )
    return number


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    params: dict[str, str]
    environ: dict[str, Any]

    def arg(self, name: str, default: str | None = None) -> str | None:
        value = self.query.get(name, "")
        return value if value != "" else default

    def number(
        self,
        name: str,
        default: float | None = None,
        *,
        low: float = -LARGEST,
        high: float = LARGEST,
    ) -> float | None:
        """A finite number within [low, high], or a 400 naming the parameter."""
        value = self.arg(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise HttpError(400, f"query parameter {name!r}: {value!r} is not a number") from None
        return _bounded(name, value, number, low, high)

    def integer(
        self, name: str, default: int | None = None, *, low: int = -LARGEST, high: int = LARGEST
    ) -> int | None:
        """A whole number within [low, high], or a 400 naming the parameter."""
        value = self.arg(name)
        if value is None:
            return default
        try:
            number: float = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not (math.isfinite(number) and number.is_integer()):
                raise HttpError(
                    400, f"query parameter {name!r}: {value!r} is not a whole number"
                ) from None
        return int(_bounded(name, value, number, low, high))

    def choice(self, name: str, allowed: Iterable[str]) -> str | None:
        """One of `allowed` (or None when not given), else a 400 listing them."""
        value = self.arg(name)
        if value is not None and value not in allowed:
            raise HttpError(
                400, f"query parameter {name!r}: {value!r} is not one of {', '.join(allowed)}"
            )
        return value

    def json(self) -> Any:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, f"Content-Length {length} is negative")
        if length > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        raw = self.environ["wsgi.input"].read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"request body is not JSON: {exc}") from None


Handler = Callable[[Request], Any]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        # {name} matches one path segment, {name:path} the rest of the path
        regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, regex, handler in self._routes:
            found = regex.match(path)
            if found:
                if m == method:
                    return handler, found.groupdict()
                allowed = True
        if allowed:
            raise HttpError(405, f"{method} is not allowed on {path}")
        raise HttpError(404, f"no API at {path}")


def parse_query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def json_response(start_response: Any, status: int, body: Any) -> list[bytes]:
    data = json.dumps(body, default=str, separators=(",", ":")).encode()
    start_response(
        f"{status} {_REASONS.get(status, 'OK')}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


_STATIC = resources.files("headrace.console") / "static"
_NAME = re.compile(r"^[a-z0-9_-]+\.(html|js|css|svg)$")


def static_file(start_response: Any, name: str) -> Iterable[bytes]:
    if not _NAME.match(name):
        raise HttpError(404, f"no file {name}")
    item = _STATIC / name
    if not item.is_file():
        raise HttpError(404, f"no file {name}")
    data = item.read_bytes()
    suffix = name[name.rfind(".") :]
    start_response(
        "200 OK",
        [
            ("Content-Type", _TYPES[suffix]),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            # everything the pages load comes from here: nothing from a CDN, no inline script
            (
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
            ),
        ],
    )
    return [data]
