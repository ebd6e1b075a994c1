"""The coordinator's Prometheus endpoint.

Bound to 127.0.0.1 by default; any other address requires a bearer token (HEADRACE_TOKEN), so
exposing it on a network is a deliberate choice.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from headrace.errors import ConfigError


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


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve_metrics(metrics: Metrics, address: str) -> tuple[WSGIServer, str]:
    """Start the endpoint in a daemon thread; returns the server and its URL."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    token = os.environ.get("HEADRACE_TOKEN", "")
    if not loopback and not token:
        raise ConfigError(
            f"metrics address {address!r}",
            "listens beyond this machine without a token",
            "set HEADRACE_TOKEN, or bind 127.0.0.1",
        )
    inner = make_wsgi_app(metrics.registry)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        if token:
            given = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given, token):
                start_response("401 Unauthorized", [("Content-Type", "text/plain")])
                return [b"missing or wrong bearer token\n"]
        return inner(environ, start_response)

    server = make_server(host, int(port or 0), app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="headrace-metrics", daemon=True).start()
    return server, f"http://{host}:{server.server_port}/metrics"
