"""The coordinator's Prometheus endpoint.

Bound to 127.0.0.1 by default; any other address requires a bearer token (HEADRACE_TOKEN, at
least 16 characters, sent as `Authorization: Bearer <token>`), so exposing it on a network is a
deliberate choice. A set token is required on loopback too.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import socketserver
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from headrace.config import listen_address
from headrace.errors import ConfigError

logger = logging.getLogger("headrace.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.objects = Counter(
            "headrace_objects_ingested_total",
            "Object versions seen in watched buckets and turned into events",
            ["bucket"],
            registry=self.registry,
        )
        self.invocations = Counter(
            "headrace_invocations_total",
            "Finished attempts by function and outcome",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "headrace_invocation_duration_seconds",
            "Wall time of attempts",
            ["function"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "headrace_invocations_in_flight", "Attempts running in workers", registry=self.registry
        )
        self.dead = Counter(
            "headrace_dead_letters_total",
            "Invocations parked after their last attempt",
            ["function"],
            registry=self.registry,
        )
        self.streams = StreamMetrics(self.registry)


class StreamMetrics:
    """Stream pipelines, sources and the bus (registered on the coordinator's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "headrace_stream_records_total",
            "Records into and out of each pipeline stage",
            ["pipeline", "stage", "direction"],
            registry=registry,
        )
        self.bytes = Counter(
            "headrace_stream_bytes_total",
            "Arrow bytes into and out of each pipeline stage",
            ["pipeline", "stage", "direction"],
            registry=registry,
        )
        self.late = Counter(
            "headrace_stream_late_records_total",
            "Records a window received after it was closed (sent to the late output)",
            ["pipeline", "stage"],
            registry=registry,
        )
        self.lag = Gauge(
            "headrace_stream_consumer_lag_records",
            "Records in the log the pipeline has not processed yet",
            ["pipeline", "partition"],
            registry=registry,
        )
        self.watermark = Gauge(
            "headrace_stream_watermark_seconds",
            "Event-time watermark of the pipeline (epoch seconds)",
            ["pipeline", "partition"],
            registry=registry,
        )
        self.errors = Counter(
            "headrace_stream_errors_total",
            "Failed micro-batches (retried from their checkpoint)",
            ["pipeline"],
            registry=registry,
        )
        self.source_records = Counter(
            "headrace_source_records_total",
            "Records polled by each source",
            ["source"],
            registry=registry,
        )
        self.source_failures = Counter(
            "headrace_source_failures_total",
            "Failed polls (errors, 429, malformed bodies)",
            ["source"],
            registry=registry,
        )
        self.source_rejected = Counter(
            "headrace_source_rejected_records_total",
            "Records a source could not deliver, written to its error stream with the reason",
            ["source"],
            registry=registry,
        )
        self.component_up = Gauge(
            "headrace_stream_component_up",
            "1 while a source or stream thread works, 0 while it is failing",
            ["component"],
            registry=registry,
        )
        self.thread_restarts = Counter(
            "headrace_stream_thread_restarts_total",
            "Stream threads (sources, pipelines) that died and were restarted",
            ["thread"],
            registry=registry,
        )
        self.bus_events = Counter(
            "headrace_bus_events_total",
            "Envelopes delivered by the bus, per target",
            ["target"],
            registry=registry,
        )


#: A client gets this long to send its request and to read the answer; an idle or slow
#: connection then is closed instead of holding a thread.
SOCKET_TIMEOUT = 5.0

#: Connections served at once. A new one beyond this closes the oldest open connection, so a
#: flood of idle or trickling clients cannot pile up threads nor lock out a scrape (a scrape
#: takes milliseconds: it is never the oldest for long).
MAX_CONNECTIONS = 64

#: The whole exchange of one connection must end within this: the socket timeout bounds each
#: read, not a client that trickles a byte every few seconds.
REQUEST_DEADLINE = 30.0

#: Shortest HEADRACE_TOKEN accepted: a token guards a port open to the network.
MIN_TOKEN_LENGTH = 16


class _Handler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT  # StreamRequestHandler applies it to the socket

    def setup(self) -> None:
        super().setup()
        self._deadline = threading.Timer(REQUEST_DEADLINE, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)  # unblocks the handler's read or write

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):  # the client may be gone (or cut off above)
            super().finish()

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per connection (bounded), so one idle client cannot block the endpoint."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # listen backlog; socketserver's 5 drops SYNs under a burst

    def __init__(self, family: int, sockaddr: tuple, handler: type[_Handler]) -> None:
        self.address_family = family
        self._open: OrderedDict[int, socket.socket] = OrderedDict()  # oldest first
        self._open_lock = threading.Lock()
        super().__init__(sockaddr[:2] if family == socket.AF_INET else sockaddr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            while len(self._open) >= MAX_CONNECTIONS:
                _, oldest = self._open.popitem(last=False)
                with contextlib.suppress(OSError):  # unblocks its thread, which then ends
                    oldest.shutdown(socket.SHUT_RDWR)
            self._open[id(request)] = request
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._open_lock:
            if self._open.get(id(request)) is request:
                del self._open[id(request)]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a broken client is not worth one.
        logger.debug("metrics request from %s failed", client_address, exc_info=True)


def check_token(token: str, *, required: bool) -> bytes | None:
    """HEADRACE_TOKEN as bytes (None when unset and not `required`), or ConfigError.

    A token must be printable ASCII (it travels in an HTTP header) without spaces, and at
    least MIN_TOKEN_LENGTH characters long.
    """
    fix = (
        f"set HEADRACE_TOKEN to at least {MIN_TOKEN_LENGTH} random printable ASCII characters,"
        " e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )
    if not token:
        if required:
            raise ConfigError("HEADRACE_TOKEN", "is not set", fix)
        return None
    if not token.strip():
        raise ConfigError("HEADRACE_TOKEN", "is blank", fix)
    if not all("!" <= c <= "~" for c in token):
        raise ConfigError("HEADRACE_TOKEN", "holds spaces, control or non-ASCII characters", fix)
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            "HEADRACE_TOKEN",
            f"is {len(token)} characters long, shorter than {MIN_TOKEN_LENGTH}",
            fix,
        )
    return token.encode("ascii")


def _bearer(header: str) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` header, else None."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    try:
        # wsgiref decodes headers as latin-1; encoding back gives the bytes that were sent.
        return credentials.strip().encode("latin-1")
    except UnicodeEncodeError:
        return None


def _cookie_token(header: str) -> bytes | None:
    """The `headrace_token` cookie: a browser cannot send a bearer header on navigation."""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "headrace_token" and value:
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                return None
    return None


def _login(environ: dict[str, Any], token: bytes) -> bool:
    """`GET /login?token=…` with the right token (how a browser signs in to the console)."""
    if environ.get("PATH_INFO") != "/login":
        return False
    given = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    try:
        return hmac.compare_digest(given.encode("latin-1"), token)
    except UnicodeEncodeError:
        return False


def _unauthorized(start_response: Any) -> list[bytes]:
    start_response(
        "401 Unauthorized",
        [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="headrace"')],
    )
    return [
        b"missing or wrong bearer token: send `Authorization: Bearer <HEADRACE_TOKEN>`,"
        b" or in a browser sign in once at /login?token=<HEADRACE_TOKEN>\n"
    ]


def _forbidden(start_response: Any, message: str) -> list[bytes]:
    data = json.dumps({"error": message}).encode()
    start_response(
        "403 Forbidden",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _local_names(bound: str, port: int) -> frozenset[str]:
    """The Host (and Origin host) values a request to this tokenless endpoint may carry.

    Without a token, the only guard against DNS rebinding (a web page whose name now resolves
    to 127.0.0.1) is that its browser sends that page's name as Host, and its origin as Origin.
    """
    hosts = {"127.0.0.1", "localhost", "[::1]", f"[{bound}]" if ":" in bound else bound}
    names = {f"{h}:{port}" for h in hosts}
    if port == 80:  # a browser leaves out the default port
        names |= hosts
    return frozenset(names)


def _origin_host(origin: str) -> str:
    scheme, sep, rest = origin.partition("://")
    return rest.rstrip("/").lower() if sep and scheme.lower() == "http" else ""


def serve_metrics(
    metrics: Metrics, address: str, console: Any | None = None
) -> tuple[WSGIServer, str]:
    """Start the endpoint in a daemon thread; returns the server and its URL.

    `console`, a WSGI app, answers every path but `/metrics` (the web console and its API),
    behind the same token.

    Raises ConfigError for a malformed address, for a non-loopback address without a good
    HEADRACE_TOKEN, and for a set but unusable token.
    """
    host, port = listen_address(address)
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"metrics address {address!r}", f"cannot be resolved: {exc}", "use an IP address"
        ) from None
    loopback = ipaddress.ip_address(sockaddr[0]).is_loopback
    try:
        token = check_token(os.environ.get("HEADRACE_TOKEN", ""), required=not loopback)
    except ConfigError as exc:
        if loopback:
            raise
        raise ConfigError(
            f"metrics address {address!r}",
            f"listens beyond this machine, and HEADRACE_TOKEN {exc.reason}",
            f"{exc.fix}, or bind 127.0.0.1",
        ) from None
    inner = make_wsgi_app(metrics.registry)

    local: frozenset[str] = frozenset()  # set once the port is bound

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        if token is None:
            host = environ.get("HTTP_HOST", "").strip().lower()
            if host not in local:
                return _forbidden(
                    start_response,
                    f"Host {host!r} is not this endpoint's address; without HEADRACE_TOKEN"
                    f" only {', '.join(sorted(local))} are served (set HEADRACE_TOKEN to"
                    " serve other names)",
                )
            origin = environ.get("HTTP_ORIGIN")
            if (
                environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD")
                and origin is not None
                and _origin_host(origin) not in local
            ):
                return _forbidden(
                    start_response,
                    f"Origin {origin!r} is not this endpoint's address; actions are accepted"
                    " only from the console's own pages",
                )
        else:
            offered = (
                _bearer(environ.get("HTTP_AUTHORIZATION", "")),
                _cookie_token(environ.get("HTTP_COOKIE", "")),
            )
            if not any(g is not None and hmac.compare_digest(g, token) for g in offered):
                if console is not None and _login(environ, token):
                    # the console's sign-in link: keep the token in a cookie the browser sends
                    start_response(
                        "303 See Other",
                        [
                            ("Location", "/"),
                            (
                                "Set-Cookie",
                                f"headrace_token={token.decode('ascii')}; Path=/; HttpOnly;"
                                " SameSite=Strict",
                            ),
                        ],
                    )
                    return [b""]
                return _unauthorized(start_response)
        if console is not None and environ.get("PATH_INFO", "/") != "/metrics":
            return console(environ, start_response)
        return inner(environ, start_response)

    try:
        server = _Server(family, sockaddr, _Handler)
    except OSError as exc:
        raise ConfigError(
            f"metrics address {address!r}",
            f"cannot be bound: {exc.strerror or exc}",
            "choose a free port and an address of this machine, or port 0 for any free port",
        ) from None
    local = _local_names(server.server_address[0], server.server_port)
    server.set_app(app)
    threading.Thread(target=server.serve_forever, name="headrace-metrics", daemon=True).start()
    bound = server.server_address[0]
    shown = f"[{bound}]" if family == socket.AF_INET6 else bound
    return server, f"http://{shown}:{server.server_port}/metrics"
