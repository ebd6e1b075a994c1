"""API Gateway's side of a Lambda proxy integration: the event a request becomes (REST API
proxy events, "v1", and HTTP API payload 2.0, "v2") and the HTTP response a handler's return
value becomes, refused with a 502 as API Gateway refuses a malformed one."""

from __future__ import annotations

import base64
import functools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

ACCOUNT_ID = "000000000000"
API_ID = "headrace"
STAGE = "$default"

#: Bodies of these types reach the handler as text; every other body is base64-encoded with
#: isBase64Encoded, as API Gateway does for binary media types.
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
    "application/graphql",
)


_EVENT_HEADERS = frozenset({"content-type", "host", "user-agent", "x-api-key"})
_random_bits = random.Random().getrandbits  # seeded from os.urandom once, per process
_UUID4_MASK = ~((0xF << 76) | (0x3 << 62))
_UUID4_BITS = (4 << 76) | (2 << 62)  # the version (4) and variant (10) bits


@dataclass(slots=True)
class Request:
    """One HTTP request as the front hands it to a replica."""

    method: str
    path: str  # as sent, percent-encoded
    query: str = ""  # the raw query string, without '?'
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    route_key: str = ""  # "POST /items/{id}"
    resource: str = ""  # "/items/{id}"
    params: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    time_ms: int = 0

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in reversed(self.headers):
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def is_text(content_type: str | None) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return not kind or kind.startswith(_TEXT_TYPES) or kind.endswith(("+json", "+xml"))


def _body(request: Request, content_type: str | None = None) -> tuple[str | None, bool]:
    if not request.body:
        return None, False
    if content_type is None:
        content_type = request.header("content-type")
    if is_text(content_type):
        try:
            return request.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(request.body).decode("ascii"), True


def new_request_id() -> str:
    """A random (version 4) UUID as text, drawn without a system call: uuid.uuid4() reads
    os.urandom, a getrandom() call per request that costs tens of µs on a loaded machine.
    Request ids are labels, not secrets."""
    h = f"{_random_bits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _ids(request: Request) -> tuple[str, int]:
    return request.request_id or new_request_id(), request.time_ms or int(time.time() * 1000)


def rest_event(request: Request) -> dict[str, Any]:
    """An API Gateway REST API (v1) Lambda proxy event."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    # the headers the event names, found in the same pass (the last one wins, as API Gateway)
    known: dict[str, str] = {}
    for name, value in request.headers:
        headers[name] = value
        if name in multi_headers:
            multi_headers[name].append(value)
        else:
            multi_headers[name] = [value]
        lower = name.lower()
        if lower in _EVENT_HEADERS:
            known[lower] = value
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True) if request.query else ():
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    body, encoded = _body(request, known.get("content-type", ""))
    request_id, epoch_ms = _ids(request)
    path = unquote(request.path) if "%" in request.path else request.path
    resource = request.resource or path
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": request.params or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "resourceId": resource,
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": path,
            "stage": STAGE,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": _clf_time(epoch_ms),
            "requestTimeEpoch": epoch_ms,
            "domainName": known.get("host") or "localhost",
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": known.get("user-agent"),
                "apiKey": known.get("x-api-key"),
            },
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def http_api_event(request: Request) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event: lower-case headers, repeated ones joined
    with commas, cookies apart."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    body, encoded = _body(request)
    request_id, epoch_ms = _ids(request)
    path = unquote(request.path)
    route_key = request.route_key or "$default"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": headers.get("host", "localhost").split(".")[0],
            "http": {
                "method": request.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": STAGE,
            "time": _clf_time(epoch_ms),
            "timeEpoch": epoch_ms,
        },
        "isBase64Encoded": encoded,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if request.params:
        event["pathParameters"] = request.params
    if body is not None:
        event["body"] = body
    return event


def _clf_time(epoch_ms: int) -> str:
    return _clf_second(epoch_ms // 1000)


@functools.lru_cache(maxsize=4)
def _clf_second(epoch_s: int) -> str:
    """Formatted once per second, not once per request."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


# -- responses ---------------------------------------------------------------------------------


class MalformedResponse(ValueError):
    """A handler's return value API Gateway would refuse (it answers 502)."""


_V1_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
#: Headers that frame the message on the connection: the server writes its own, and a
#: handler's copy would contradict them (two content-lengths, chunked beside a length), so
#: they are dropped, as API Gateway drops or remaps them.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_SCALARS = (str, int, float, bool)


def error_response(
    status: int, message: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    """An error as API Gateway writes it: {"message": ...} in JSON."""
    body = json.dumps({"message": message}).encode()
    headers = [("content-type", "application/json"), *(extra or [])]
    return Response(status, headers, body)


def internal_error() -> Response:
    return error_response(502, "Internal server error")


def _header_value(name: str, value: Any) -> str:
    if not isinstance(value, _SCALARS) or value is None:
        raise MalformedResponse(f"header {name!r} has a {type(value).__name__} value")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if "\r" in text or "\n" in text or "\0" in text:
        raise MalformedResponse(f"header {name!r} holds a line break")
    return text


def _header_name(name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in " \t\r\n:\0"):
        raise MalformedResponse(f"header name {name!r} is not a token")
    return name


def proxy_response(result: Any, payload: str) -> Response:
    """The HTTP response for a handler's return value; MalformedResponse when API Gateway
    would refuse it. HTTP APIs (v2) also take a value without statusCode as a 200 JSON body."""
    if payload == "v2" and not (isinstance(result, dict) and "statusCode" in result):
        if isinstance(result, str):
            return Response(200, [("content-type", "application/json")], result.encode())
        try:
            body = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(f"the return value is not JSON: {exc}") from None
        return Response(200, [("content-type", "application/json")], body)
    if not isinstance(result, dict):
        raise MalformedResponse(f"the handler returned a {type(result).__name__}, not a dict")
    if payload == "v1":
        unknown = set(result) - _V1_KEYS
        if unknown:
            raise MalformedResponse(f"unknown keys {sorted(unknown)}")
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    # 1xx are interim answers, never a final one: API Gateway answers 502 for them too
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise MalformedResponse(f"statusCode {status!r} is not a final HTTP status (200-599)")
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedResponse("headers and multiValueHeaders must be objects")
    for name, value in single.items():
        if name not in multi:
            headers.append((_header_name(name), _header_value(name, value)))
    for name, values in multi.items():
        if not isinstance(values, list):
            raise MalformedResponse(f"multiValueHeaders[{name!r}] is not a list")
        headers.extend((_header_name(name), _header_value(name, v)) for v in values)
    for cookie in result.get("cookies") or () if payload == "v2" else ():
        headers.append(("set-cookie", _header_value("set-cookie", cookie)))
    if any(name.lower() in _FRAMING for name, _ in headers):
        close = any(k.lower() == "connection" and "close" in v.lower() for k, v in headers)
        headers = [(k, v) for k, v in headers if k.lower() not in _FRAMING]
        if close:  # honoured: the front closes the connection after this answer
            headers.append(("connection", "close"))
    body = result.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        data = body.encode("utf-8")
    elif payload == "v2":
        data = json.dumps(body).encode()
    else:
        raise MalformedResponse(f"body is a {type(body).__name__}, not a string")
    if result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            raise MalformedResponse("isBase64Encoded is set but body is not base64") from None
    if payload == "v2" and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("content-type", "application/json"))
    return Response(status, headers, data)
