"""What an HTTP route is: method and path template, the function it invokes, the payload
format its handler speaks, and the batching and model binding it opts into."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.errors import AppError

#: How a request reaches the handler. "v1": an API Gateway REST proxy event; "v2": an HTTP API
#: (payload 2.0) event; "json": the JSON body alone, the return value is the JSON answer.
PayloadFormat = Literal["v1", "v2", "json"]
PAYLOADS: tuple[str, ...] = ("v1", "v2", "json")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")

_SEGMENT = re.compile(r"^(\{[A-Za-z_][A-Za-z0-9_]*\+?\}|[A-Za-z0-9._~!$&'()*,;=:@-]+)$")


@dataclass(frozen=True)
class RouteSpec:
    """`method path` → function; e.g. RouteSpec("POST", "/classify_digit", "inference")."""

    method: str
    path: str  # API Gateway resource syntax: /items/{id}, /files/{proxy+}
    function: str
    payload: PayloadFormat = "v1"
    max_batch_size: int = 1  # >1: the handler takes a list of events, returns a list
    max_wait_ms: float = 0.0  # how long a replica waits to fill a batch once one request came
    model: str | None = None  # "NAME@ALIAS" (or NAME:VERSION): replicas load that version
    model_env: str | None = None  # also put the model's local path in this variable
    api_key: str | None = None  # an x-api-key header this route requires (usage-plan style)
    # replicas of the route's own (None: the server's shared replicas serve it); min/max
    # bound its autoscaling, as `headrace serve --min-replicas/--max-replicas` do for the rest
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subject = f"route {self.method} {self.path}"
        if self.method not in METHODS:
            raise AppError(subject, f"method {self.method!r} is unknown", f"use {METHODS}")
        if not self.path.startswith("/"):
            raise AppError(subject, "the path does not start with '/'", "write e.g. /items/{id}")
        if "//" in self.path:
            raise AppError(
                subject, "the path has an empty segment ('//')", "write one '/' between segments"
            )
        parts = tuple(p for p in self.path.split("/") if p)
        if parts and parts[0] == "_headrace":
            raise AppError(
                subject,
                "/_headrace/ is the server's own (health and metrics answer there)",
                "choose another first segment",
            )
        names: set[str] = set()
        for i, part in enumerate(parts):
            if part in (".", ".."):
                # requests holding them are refused (400) before routing: it could never match
                raise AppError(
                    subject, f"the segment {part!r} can never match a request", "remove it"
                )
            if part.startswith("{"):
                name = part.strip("{}+")
                if name in names:
                    raise AppError(
                        subject,
                        f"the parameter {{{name}}} appears twice (the first value would be lost)",
                        "give each parameter its own name",
                    )
                names.add(name)
            if not _SEGMENT.match(part):
                raise AppError(
                    subject,
                    f"path segment {part!r} is not a literal or a {{name}} parameter",
                    "use letters, digits and -._~ or {name}; {name+} only last",
                )
            if part.endswith("+}") and i != len(parts) - 1:
                raise AppError(subject, f"{part} is not the last segment", "move it last")
        if self.payload not in PAYLOADS:
            raise AppError(subject, f"payload {self.payload!r} is unknown", f"use {PAYLOADS}")
        if not 1 <= self.max_batch_size <= 4096:
            raise AppError(subject, "max_batch_size must be 1..4096", "e.g. max_batch_size=32")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise AppError(subject, "max_wait_ms must be 0..10000", "e.g. max_wait_ms=2")
        if self.model is not None and not re.match(r"^[^@:]+([@:][^@:]+)?$", self.model):
            raise AppError(subject, f"model {self.model!r}", "write NAME@ALIAS or NAME:VERSION")
        self._check_replicas(subject)
        object.__setattr__(self, "segments", parts)

    def _check_replicas(self, subject: str) -> None:
        counts = {
            "replicas": self.replicas,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
        }
        for name, value in counts.items():
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256
            ):
                raise AppError(subject, f"{name}={value!r} is not 1..256", f"e.g. {name}=2")
        low, high, start = self.min_replicas, self.max_replicas, self.replicas
        if low is not None and high is not None and low > high:
            raise AppError(
                subject,
                f"min_replicas={low} is above max_replicas={high}",
                "make min_replicas at most max_replicas",
            )
        if start is not None and (
            (low is not None and start < low) or (high is not None and start > high)
        ):
            raise AppError(
                subject,
                f"replicas={start} is outside min_replicas..max_replicas "
                f"({low or 1}..{high or start})",
                "start with a count between the two bounds",
            )

    @property
    def own_replicas(self) -> tuple[int, int, int] | None:
        """(replicas to start, min, max) when the route has replicas of its own, else None."""
        if self.replicas is None and self.min_replicas is None and self.max_replicas is None:
            return None
        low = self.min_replicas or self.replicas or 1
        start = self.replicas or low
        high = self.max_replicas or max(start, low)
        return start, low, high

    @property
    def shape(self) -> tuple[str, ...]:
        """The segments with parameters unnamed: two routes of one method and shape match the
        same requests, so the second could never be reached."""
        return tuple(
            "{+}" if s.endswith("+}") else "{}" if s.startswith("{") else s for s in self.segments
        )

    @property
    def key(self) -> str:
        """The route key as API Gateway writes it: "POST /classify_digit"."""
        return f"{'ANY' if self.method == 'ANY' else self.method} {self.path}"

    def match(self, method: str, parts: list[str]) -> dict[str, str] | None:
        """The path parameters when `parts` (the request path's segments) fits, else None."""
        if self.method != "ANY" and method != self.method:
            return None
        params: dict[str, str] = {}
        segments = self.segments
        for i, seg in enumerate(segments):
            if seg[0] == "{":
                if seg.endswith("+}"):
                    if i >= len(parts):
                        return None
                    params[seg[1:-2]] = "/".join(parts[i:])
                    return params
                if i >= len(parts):
                    return None
                params[seg[1:-1]] = parts[i]
            elif i >= len(parts) or parts[i] != seg:
                return None
        return params if len(parts) == len(segments) else None


def parse_route(text: str) -> tuple[str, str]:
    """ "POST /classify_digit" → ("POST", "/classify_digit")."""
    method, _, path = text.strip().partition(" ")
    path = path.strip()
    if not method or not path:
        raise AppError(
            f"route {text!r}", "is not 'METHOD /path'", 'write e.g. "POST /classify_digit"'
        )
    return method.upper(), path


class RouteTable:
    """Routes in match order: literal segments before parameters, longer paths first, as API
    Gateway picks the most specific resource."""

    def __init__(self, routes: list[RouteSpec]) -> None:
        self.routes = sorted(routes, key=_specificity)
        self._exact: dict[tuple[str, str], RouteSpec] = {
            (r.method, r.path.rstrip("/") or "/"): r
            for r in routes
            if "{" not in r.path and r.method != "ANY"
        }

    def find(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        hit = self._exact.get((method, path.rstrip("/") or "/"))
        if hit is not None:  # the common case, without splitting the path
            return hit, {}
        parts = [p for p in path.split("/") if p]
        for route in self.routes:
            params = route.match(method, parts)
            if params is not None:
                return route, params
        return None

    def allows(self, path: str) -> list[str]:
        """Methods some route accepts on `path` (for 405 versus 404)."""
        parts = [p for p in path.split("/") if p]
        return sorted({r.method for r in self.routes if r.match(r.method, parts) is not None})


def _specificity(route: RouteSpec) -> tuple[Any, ...]:
    kinds = tuple(2 if s.endswith("+}") else 1 if s[0] == "{" else 0 for s in route.segments)
    return (kinds, -len(route.segments), route.method == "ANY")
