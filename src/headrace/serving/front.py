"""The HTTP front: an asyncio protocol on httptools (the parser uvicorn uses), one process,
that matches routes, checks the token, body size and concurrency, and hands each request to
a replica as one frame. Chosen over Starlette on uvicorn so that the one front process does
no per-request Python beyond parsing and routing (uvicorn's ASGI layer adds a scope dict,
receive/send coroutines and header lists per request); that comparison is still to be
measured side by side.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from headrace.serving import protocol
from headrace.serving.pools import PoolSet
from headrace.serving.routes import RouteTable

_JSON = [(b"content-type", b"application/json")]
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
HEALTH_PATH = b"/_headrace/health"
METRICS_PATH = b"/_headrace/metrics"


def _message(status: int, text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, _JSON, b'{"message": "' + text.encode() + b'"}'


NOT_FOUND = _message(404, "Not Found")
FORBIDDEN = _message(403, "Forbidden")
UNAUTHORIZED = (
    401,
    [*_JSON, (b"www-authenticate", b'Bearer realm="headrace"')],
    b'{"message": "Unauthorized"}',
)
TOO_LARGE = _message(413, "Request Entity Too Large")
HEADERS_TOO_LARGE = _message(431, "Request Header Fields Too Large")
READ_TIMEOUT = _message(408, "Request Timeout")
BAD_REQUEST = _message(400, "Bad Request")
UNAVAILABLE = (503, [*_JSON, (b"retry-after", b"1")], b'{"message": "Service Unavailable"}')
# every replica lost and none ready yet: the client may retry, and its log can tell the cause
NO_REPLICA = (
    503,
    [*_JSON, (b"retry-after", b"1")],
    b'{"message": "Service Unavailable: no replica is ready (replacements are starting)"}',
)
DRAINING = (
    503,
    [*_JSON, (b"retry-after", b"1"), (b"connection", b"close")],
    b'{"message": "Service Unavailable"}',
)


class FrontConfig:
    def __init__(
        self,
        routes: RouteTable,
        pool: PoolSet,
        *,
        token: bytes | None,
        max_body: int,
        max_concurrency: int,
        timeouts: list[float],
        observe: Callable[[int, str, int, float, int], None],
        metrics_text: Callable[[], bytes],
        access: Callable[[str], None] | None,
        max_header: int = 64 * 1024,
        read_timeout: float = 30.0,
        on_read_timeout: Callable[[], None] | None = None,
    ) -> None:
        self.routes = routes
        self.route_index = {id(r): i for i, r in enumerate(routes.routes)}
        self.api_keys = {i: r.api_key.encode() for i, r in enumerate(routes.routes) if r.api_key}
        self.pool = pool
        self.token = token or None
        self.max_body = max_body
        self.max_header = max_header  # bytes of request line + headers
        self.read_timeout = read_timeout  # seconds a started request may take to arrive whole
        self.on_read_timeout = on_read_timeout  # counts connections closed for it
        self.max_concurrency = max_concurrency
        self.timeouts = timeouts  # seconds, by route index
        self.observe = observe  # (route index, method, status, seconds, body bytes)
        self.metrics_text = metrics_text
        self.access = access
        self.draining = False
        self.connections: set[HttpConnection] = set()


class HttpConnection(asyncio.Protocol):
    """One client connection; requests on it are answered in order (pipelining included)."""

    __slots__ = (
        "body",
        "busy",
        "cfg",
        "completed",
        "expect",
        "head_size",
        "headers",
        "in_head",
        "parser",
        "peer",
        "queue",
        "size",
        "timer",
        "too_large",
        "transport",
        "url",
    )

    def __init__(self, cfg: FrontConfig) -> None:
        self.cfg = cfg
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b"127.0.0.1"
        self.busy = False
        self.queue: deque[tuple[Any, ...]] = deque()
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.in_head = True  # reading a request line and headers (or waiting for one)
        self.head_size = 0
        self.completed = False  # a request ended in the data being fed
        self.expect = False  # the client waits for "100 Continue" before it sends the body
        self.timer: asyncio.TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.cfg.connections.add(self)
        if self.cfg.read_timeout > 0:  # a first request must begin and arrive within it too
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.cfg.read_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cfg.connections.discard(self)
        self.transport = None
        self._stop_timer()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.completed = False
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            self._reject(BAD_REQUEST)
            return
        # httptools keeps a header whole in memory until it ends: bound the head by what has
        # arrived for it (a pipelined chunk that ended a request is not counted, so the bound
        # is reached within one read of the limit)
        if self.in_head and not self.completed:
            self.head_size += len(data)
            if self.head_size > self.cfg.max_header:
                self._reject(HEADERS_TOO_LARGE)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            if self.cfg.on_read_timeout is not None:
                self.cfg.on_read_timeout()
            self._reject(READ_TIMEOUT)

    def _reject(self, answer: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
        """Answer a request refused before it reached a route and close: it is counted (route
        "-") and logged like any other."""
        self._stop_timer()
        status, headers, body = answer
        self._reply_now(status, headers, body, close=True)
        try:
            method = self.parser.get_method()
        except httptools.HttpParserError:
            method = b"-"
        path = self.url.partition(b"?")[0][:200] or b"-"
        self.cfg.observe(-1, method.decode("latin-1"), status, 0.0, len(body))
        if self.cfg.access is not None:
            self.cfg.access(
                f'{self.peer.decode()} "{method.decode("latin-1")} {path.decode("latin-1")}" '
                f"{status} {len(body)} 0.0ms"
            )

    def close_if_idle(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.size = 0
        self.too_large = False
        self.expect = False
        self.in_head = True
        if self.timer is None and self.cfg.read_timeout > 0:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.cfg.read_timeout, self._timed_out)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, value)
        if (
            len(name) == 14
            and name.lower() == b"content-length"
            and value.isdigit()
            and int(value) > self.cfg.max_body
        ):
            self.too_large = True
        elif len(name) == 6 and name.lower() == b"expect":
            self.expect = value.lower() == b"100-continue"

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        self.size += len(body)
        if self.size > self.cfg.max_body:  # a chunked body gets here; it has no Content-Length
            self.too_large = True
            self._reject(TOO_LARGE)
        else:
            self.body.append(body)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_size = 0
        # the bound in data_received only sees the reads that did not end the head: measure
        # the head itself ("METHOD url HTTP/x.y\r\n", "name: value\r\n" each, "\r\n")
        head = len(self.parser.get_method()) + len(self.url) + 14
        head += sum(map(len, self.headers)) + 2 * len(self.headers)
        if head > self.cfg.max_header:
            self.too_large = True  # nothing of this request is dispatched
            self._reject(HEADERS_TOO_LARGE)
        elif self.too_large:  # refuse before the body is sent
            self._reject(TOO_LARGE)
        elif self.expect and not self.busy and not self.queue and self.transport is not None:
            # the body is welcome: without this the client waits (curl 1 s) before sending it.
            # Not while an earlier answer on the connection is pending: it would come first
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_message_complete(self) -> None:
        self._stop_timer()
        self.in_head = True
        self.completed = True
        if self.too_large:
            return
        item = (
            self.parser.get_method(),
            self.url,
            self.headers,
            b"".join(self.body),
            self.parser.should_keep_alive(),
            time.perf_counter(),
        )
        if self.busy:
            self.queue.append(item)
        else:
            self._dispatch(*item)

    # -- requests ----------------------------------------------------------------------------------

    def _dispatch(
        self,
        method: bytes,
        url: bytes,
        headers: list[bytes],
        body: bytes,
        keep: bool,
        started: float,
    ) -> None:
        cfg = self.cfg
        self.busy = True
        path, _, query = url.partition(b"?")
        if cfg.token is not None and not self._has_token(headers):
            self._finish(-1, method, path, started, keep, *UNAUTHORIZED)
            return
        if b"." in path or b"%" in path:
            text = unquote(path.decode("latin-1"))
            if any(p in (".", "..") for p in text.split("/")) or "\0" in text:
                self._finish(-1, method, path, started, keep, *BAD_REQUEST)
                return
        if path.startswith(b"/_headrace/"):
            self._internal(method, path, started, keep)
            return
        found = cfg.routes.find(method.decode(), path.decode("latin-1"))
        if found is None:
            self._finish(-1, method, path, started, keep, *NOT_FOUND)
            return
        route, params = found
        index = cfg.route_index[id(route)]
        if index in cfg.api_keys and not self._has_api_key(headers, cfg.api_keys[index]):
            self._finish(index, method, path, started, keep, *FORBIDDEN)
            return
        if cfg.draining:
            self._finish(index, method, path, started, False, *DRAINING)
            return
        if cfg.pool.in_flight >= cfg.max_concurrency:
            self._finish(index, method, path, started, keep, *UNAVAILABLE)
            return
        flat = []
        for name, value in params.items():
            flat += (name.encode(), value.encode("latin-1"))
        payload = protocol.encode_request(
            cfg.pool.local[index],
            method,
            path,
            query,
            self.peer,
            int(time.time() * 1000),
            flat,
            headers,
            body,
        )

        def done(status: int, out: list[tuple[bytes, bytes]], data: bytes) -> None:
            self._finish(index, method, path, started, keep, status, out, data)

        if not cfg.pool.for_route[index].submit(payload, done, cfg.timeouts[index]):
            self._finish(index, method, path, started, keep, *NO_REPLICA)

    def _has_token(self, headers: list[bytes]) -> bool:
        token = self.cfg.token
        for i in range(0, len(headers), 2):
            if headers[i].lower() == b"authorization":
                # the scheme is case-insensitive (RFC 9110 11.1), as the metrics server has it
                scheme, _, credentials = headers[i + 1].partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(),
                    token,  # type: ignore[arg-type]
                ):
                    # the server's own secret stops here: a handler that logs its event must
                    # not leak it (x-api-key, a route's own key, still reaches it, as API
                    # Gateway passes it on)
                    del headers[i : i + 2]
                    return True
                return False
        return False

    @staticmethod
    def _has_api_key(headers: list[bytes], key: bytes) -> bool:
        for i in range(0, len(headers), 2):
            if headers[i].lower() == b"x-api-key":
                return hmac.compare_digest(headers[i + 1], key)
        return False

    def _internal(self, method: bytes, path: bytes, started: float, keep: bool) -> None:
        if path == HEALTH_PATH:
            ok = self.cfg.pool.serving and not self.cfg.draining
            body = b'{"status": "ok"}' if ok else b'{"status": "unavailable"}'
            self._finish(-1, method, path, started, keep, 200 if ok else 503, _JSON, body)
        elif path == METRICS_PATH:
            out = [(b"content-type", b"text/plain; version=0.0.4")]
            self._finish(-1, method, path, started, keep, 200, out, self.cfg.metrics_text())
        else:
            self._finish(-1, method, path, started, keep, *NOT_FOUND)

    def _finish(
        self,
        index: int,
        method: bytes,
        path: bytes,
        started: float,
        keep: bool,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        cfg = self.cfg
        keep = keep and not cfg.draining
        elapsed = time.perf_counter() - started
        transport = self.transport
        if transport is not None and not transport.is_closing():
            reason = _REASONS.get(status, b"Unknown")
            if method == b"HEAD" or status == 204 or status == 304:
                # no body may follow (the next answer on the connection would start with it):
                # HEAD states the length GET would send, as servers do; 204 and 304 none
                if status == 204 or status == 304:
                    head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
                else:
                    head = [
                        b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, reason, len(body))
                    ]
                body = b""
            else:
                head = [b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, reason, len(body))]
            for name, value in headers:
                if name == b"connection":  # a handler's "close" (the only one that reaches here)
                    keep = False
                    continue
                head.append(name + b": " + value + b"\r\n")
            if not keep:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            transport.write(b"".join(head) + body if len(body) < 65536 else b"".join(head))
            if len(body) >= 65536:
                transport.write(body)
            if not keep:
                transport.close()
        cfg.observe(index, method.decode(), status, elapsed, len(body))
        if cfg.access is not None:
            cfg.access(
                f'{self.peer.decode()} "{method.decode()} {path.decode("latin-1")}" '
                f"{status} {len(body)} {elapsed * 1000:.1f}ms"
            )
        self.busy = False
        if self.queue and self.transport is not None:
            self._dispatch(*self.queue.popleft())

    def _reply_now(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        reason = _REASONS.get(status, b"Unknown")
        head = b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, reason, len(body))
        head += b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        head += b"connection: close\r\n\r\n" if close else b"\r\n"
        transport.write(head + body)
        if close:
            transport.close()
