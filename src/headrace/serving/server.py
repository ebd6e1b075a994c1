"""`headrace serve`: the HTTP front, its replicas, metrics, access logs, the model alias
watch and a graceful drain on SIGTERM, on one event loop (uvloop when installed)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from headrace.errors import AppError
from headrace.functions.spec import FunctionSpec
from headrace.serving.front import FrontConfig, HttpConnection
from headrace.serving.pool import PoolOptions, ReplicaPool
from headrace.serving.pools import PoolPlan, PoolSet, plan_pools
from headrace.serving.routes import RouteSpec, RouteTable

logger = logging.getLogger("headrace.serving")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: bytes | None = None  # required of every request when set
    max_body: int = 6 * 1024 * 1024  # bytes; Lambda's synchronous payload limit
    max_header: int = 64 * 1024  # bytes of request line + headers; more get 431
    read_timeout: float = 30.0  # seconds for a started request to arrive whole; then 408
    max_concurrency: int = 256  # requests in flight at once; more get 503 + Retry-After
    drain_timeout: float = 30.0
    timeout: float | None = None  # per request, seconds; default: each function's timeout
    model_poll: float = 1.0  # seconds between looks at a bound model's alias
    access_log: TextIO | None = field(default_factory=lambda: sys.stderr)
    pool: PoolOptions = field(default_factory=PoolOptions)
    # "local": replica processes here; "ray" (a local Ray), "auto" or "ray://HOST:10001":
    # a Ray Serve deployment behind the same front
    serving: str = "local"
    # the project setting the address came from, named by errors ("" names --host/--port)
    listen_setting: str = ""


class _ReplacedCounter:
    """The pools' own count of replaced replicas, exposed as the counter it is (it only grows)."""

    def __init__(self, pool: PoolSet) -> None:
        self.pool = pool

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "headrace_serving_replicas_replaced",
            "Replicas replaced after a crash or hang",
            value=self.pool.replaced,
        )


class ServingMetrics:
    def __init__(self, routes: list[RouteSpec], pool: PoolSet) -> None:
        self.registry = CollectorRegistry()
        self.keys = [r.key for r in routes]
        self.requests = Counter(
            "headrace_http_requests_total",
            "HTTP requests answered, by route and status",
            ["route", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "headrace_http_errors_total", "5xx answers by route", ["route"], registry=self.registry
        )
        self.latency = Histogram(
            "headrace_http_request_duration_seconds",
            "Time from request to response, by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
        )
        g = Gauge(
            "headrace_http_in_flight",
            "Requests sent to replicas and not yet answered",
            registry=self.registry,
        )
        g.set_function(lambda: pool.in_flight)
        g = Gauge(
            "headrace_http_queue_depth",
            "Requests waiting behind another one in their replica",
            registry=self.registry,
        )
        g.set_function(lambda: max(0, pool.in_flight - len(pool.ready)))
        g = Gauge("headrace_serving_replicas", "Replicas taking requests", registry=self.registry)
        g.set_function(lambda: len(pool.ready))
        per_route = Gauge(
            "headrace_serving_route_replicas",
            "Replicas taking the route's requests (its own, or the shared ones)",
            ["route"],
            registry=self.registry,
        )
        depth = Gauge(
            "headrace_http_route_queue_depth",
            "Requests of the route waiting for a replica to start them",
            ["route"],
            registry=self.registry,
        )
        for index, route in enumerate(routes):
            serving = pool.for_route[index]
            per_route.labels(route.key).set_function(lambda p=serving: len(p.ready))
            local = pool.local[index]
            depth.labels(route.key).set_function(lambda p=serving, i=local: p.queued(i))
        self.read_timeouts = Counter(
            "headrace_http_read_timeouts_total",
            "Connections closed because a request did not arrive whole in --read-timeout",
            registry=self.registry,
        )
        self.registry.register(_ReplacedCounter(pool))
        self._children: dict[tuple[int, int], tuple[Any, Any, Any]] = {}

    def observe(self, index: int, method: str, status: int, seconds: float, size: int) -> None:
        key = (index, status)
        children = self._children.get(key)
        if children is None:
            route = self.keys[index] if index >= 0 else "-"
            children = self._children[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
                self.errors.labels(route) if status >= 500 else None,
            )
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def by_route(self) -> dict[str, dict[str, Any]]:
        """Per route key: requests by status code, 5xx answers, and latency (count, mean, and
        the 50th and 95th percentiles as the histogram bucket they fall in, in ms)."""
        out: dict[str, dict[str, Any]] = {
            key: {"requests": {}, "errors": 0, "latency": None} for key in self.keys
        }
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    route = out.setdefault(
                        sample.labels["route"], {"requests": {}, "errors": 0, "latency": None}
                    )
                    route["requests"][sample.labels["code"]] = int(sample.value)
        for metric in self.errors.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["route"] in out:
                    out[sample.labels["route"]]["errors"] = int(sample.value)
        buckets: dict[str, list[tuple[float, float]]] = {}
        sums: dict[str, float] = {}
        for metric in self.latency.collect():
            for sample in metric.samples:
                route = sample.labels["route"]
                if sample.name.endswith("_bucket"):
                    buckets.setdefault(route, []).append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    sums[route] = sample.value
        for route, counts in buckets.items():
            counts.sort()
            total = counts[-1][1] if counts else 0
            if route not in out or not total:
                continue
            out[route]["latency"] = {
                "count": int(total),
                "mean_ms": round(sums.get(route, 0.0) / total * 1000, 3),
                "p50_ms_at_most": _quantile_bound(counts, total, 0.5),
                "p95_ms_at_most": _quantile_bound(counts, total, 0.95),
            }
        return out


def _quantile_bound(counts: list[tuple[float, float]], total: float, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile `q`; None past the last
    finite bucket."""
    for upper, seen in counts:
        if seen >= q * total:
            return None if upper == float("inf") else upper * 1000
    return None


class AccessLog:
    """Lines gathered in memory and written every half second: no write per request."""

    def __init__(self, stream: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.loop = loop
        loop.call_later(0.5, self.flush)

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def flush(self, again: bool = True) -> None:
        if self.lines:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            lines, self.lines = self.lines, []
            self.stream.write("".join(f"{stamp} {line}\n" for line in lines))
            self.stream.flush()
        if again:
            self.loop.call_later(0.5, self.flush)


def replica_config(
    routes: list[RouteSpec],
    functions: dict[str, FunctionSpec],
    sys_path: list[str],
    storage_url: str,
) -> dict[str, Any]:
    """What each replica needs to import and run the routes' handlers."""
    out = []
    for route in routes:
        spec = functions[route.function]
        out.append(
            {
                "function": spec.name,
                "handler": spec.handler,
                "payload": route.payload,
                "key": route.key,
                "resource": route.path,
                "max_batch_size": route.max_batch_size,
                "max_wait_ms": route.max_wait_ms,
                "timeout": spec.timeout,
                "memory": spec.memory,
                "arn": spec.arn,
            }
        )
    return {"routes": out, "sys_path": sys_path, "storage_url": storage_url}


class ModelBinding:
    """The one model alias the routes bind, and the environment a replica gets for a version."""

    def __init__(self, routes: list[RouteSpec], registry_factory: Callable[[], Any]) -> None:
        refs = {r.model for r in routes if r.model}
        if len(refs) > 1:
            raise AppError(
                "routes",
                f"bind several models ({', '.join(sorted(refs))})",
                "serve one model per app, or run one `headrace serve` per model",
            )
        self.ref = refs.pop() if refs else None
        self.env_names = sorted({r.model_env for r in routes if r.model_env})
        self.registry_factory = registry_factory
        self.refused: set[int] = set()  # versions that failed a roll-over
        if self.ref:
            from headrace.models import parse_ref

            parsed = parse_ref(self.ref)
            self.name, self.alias, self.pinned = parsed.name, parsed.alias, parsed.version

    def target(self) -> int | None:
        """The version the alias points at now (None: no model bound)."""
        if not self.ref:
            return None
        registry = self.registry_factory()
        return registry.get(self.name, self.pinned, alias=self.alias).version

    def generation(self, version: int | None) -> dict[str, str]:
        if version is None:
            return {}
        found, path = self.registry_factory().fetch(self.name, version)
        env = {
            "HEADRACE_MODEL": found.ref,
            "HEADRACE_MODEL_PATH": str(path),
            "HEADRACE_MODEL_FORMAT": found.format,
        }
        for name in self.env_names:
            env[name] = str(path)
        return env

    def roll_back(self, failed: int) -> None:
        """Move the alias off `failed` if it still points there."""
        self.refused.add(failed)
        if self.alias is None:
            return
        # one compare-and-move under the model's lock: a user's move made after the failure
        # (a rollback, a new promotion) is never undone
        move = self.registry_factory().rollback_from(self.name, self.alias, failed)
        if move is None:
            logger.error(
                "version %s of %s failed; %s@%s was moved meanwhile, so it is left where it is",
                failed,
                self.name,
                self.name,
                self.alias,
            )
        else:
            logger.error("rolled %s@%s back to version %s", self.name, self.alias, move.version)


async def _watch_alias_during(
    binding: ModelBinding, target: int, abandon: asyncio.Event, poll: float
) -> None:
    """While replicas roll over to `target`, give the roll-over up as soon as the alias moves
    elsewhere (a user's rollback): a replica that hangs while loading does not make the user
    wait for --start-timeout."""
    while True:
        await asyncio.sleep(poll)
        try:
            now = await asyncio.to_thread(binding.target)
        except Exception:  # the ledger may be briefly unreachable; look again
            continue
        if now != target:
            logger.warning(
                "%s moved to version %s during the roll-over: giving it up", binding.ref, now
            )
            abandon.set()
            return


async def _watch_model(binding: ModelBinding, pool: PoolSet, current: int, poll: float) -> None:
    while not pool.stopping:
        await asyncio.sleep(poll)
        try:
            target = await asyncio.to_thread(binding.target)
        except Exception as exc:  # the ledger may be briefly unreachable; keep serving
            logger.warning("cannot read %s: %s", binding.ref, exc)
            continue
        if target is None or target == current or target in binding.refused:
            continue
        logger.info("%s moved to version %s: rolling replicas over", binding.ref, target)
        abandon = asyncio.Event()
        pool.set_abandon(abandon)
        watch = asyncio.ensure_future(_watch_alias_during(binding, target, abandon, poll))
        try:
            generation = await asyncio.to_thread(binding.generation, target)
            ok = await pool.roll_over(generation)
        except Exception as exc:
            logger.error("version %s cannot be served: %s", target, exc)
            ok = False
        finally:
            watch.cancel()
            pool.set_abandon(None)
        if ok:
            current = target
            logger.info("serving %s:%s", binding.name, target)
        else:
            await asyncio.to_thread(binding.roll_back, target)


def _listen(host: str, port: int, setting: str = "") -> socket.socket:
    try:
        return socket.create_server(
            (host, port), backlog=1024, family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        reason = f"cannot listen there: {os.strerror(exc.errno) if exc.errno else exc}"
        if setting:
            shown = f"[{host}]" if ":" in host else host
            raise AppError(
                f"setting '{setting}' ({shown}:{port})",
                reason,
                "stop what uses that port (`ss -ltnp` names it) or choose another in "
                f'headrace.toml or $HEADRACE_{setting.upper()}: {setting} = "{shown}:0" takes '
                "any free port",
            ) from None
        raise AppError(
            f"--host {host} --port {port}",
            reason,
            "stop what uses that port (`ss -ltnp` names it) or choose another --port "
            "(0 takes any free one)",
        ) from None


def make_pool(
    config: dict[str, Any],
    options: ServeOptions,
    pool: PoolOptions | None = None,
    *,
    replicas_in_all: int | None = None,
) -> Any:
    """The replicas for `options.serving`: processes here, or a Ray Serve deployment; with
    `pool`'s counts instead of the server's (a route's own). `replicas_in_all`: the most
    replicas every pool of the server may run together, which a local Ray's CPUs are shared
    among."""
    pool = pool or options.pool
    if options.serving == "local":
        return ReplicaPool(config, pool)
    if (
        options.serving == "ray"
        or options.serving == "auto"
        or options.serving.startswith("ray://")
    ):
        from headrace.serving.ray_pool import RayPool

        address = None if options.serving == "ray" else options.serving
        if address is None and replicas_in_all:
            # every replica must fit twice over (a roll-over starts the new ones beside the old)
            share = min(1.0, 2 / (2 * replicas_in_all))
            return RayPool(config, pool, address=address, replica_cpus=share)
        return RayPool(config, pool, address=address)
    raise AppError(
        f"serving = {options.serving!r}",
        "is not a serving backend",
        'write "local" (replica processes), "ray" (a local Ray) or "ray://HOST:10001"',
    )


async def serve_async(
    routes: list[RouteSpec],
    config: dict[str, Any],
    binding: ModelBinding,
    options: ServeOptions,
    *,
    announce: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
    on_serving: Callable[[Any, ServingMetrics], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, or, when `stop` is given (a coordinator runs the routes
    in a thread of its own), until it is set; `on_listening` gets the port once replicas serve,
    `on_serving` the replica pool and the metrics (what the coordinator's console shows)."""
    loop = asyncio.get_running_loop()
    table = RouteTable(routes)
    ordered = table.routes  # the order replicas index routes by
    config = {**config, "routes": [config["routes"][routes.index(r)] for r in ordered]}
    # before any replica starts: a used port fails fast
    sock = _listen(options.host, options.port, options.listen_setting)

    plans = plan_pools(ordered, options.pool)
    most = sum(
        max(p.options.max_replicas or p.options.replicas, p.options.min_replicas or 0)
        for p in plans
    )

    def make(plan: PoolPlan) -> Any:
        own = {**config, "routes": [config["routes"][i] for i in plan.routes]}
        return make_pool(own, options, plan.options, replicas_in_all=most)

    pool = PoolSet(plans, make)
    try:
        version = await asyncio.to_thread(binding.target)
        generation = await asyncio.to_thread(binding.generation, version)
        try:
            await pool.start(generation)
        except RuntimeError as exc:
            what = f"model {binding.name}:{version}" if version is not None else "the app's routes"
            raise AppError(
                what,
                f"its replicas did not start: {exc}",
                "fix what the replica's log above shows "
                "(or raise --start-timeout if it only loads slowly)"
                + (
                    f", or point {binding.name}@{binding.alias} at a version that loads "
                    f"(`headrace models rollback {binding.name} {binding.alias}`)"
                    if version is not None and binding.alias
                    else ""
                ),
            ) from None
        metrics = ServingMetrics(ordered, pool)
        if on_serving is not None:
            on_serving(pool, metrics)
        access = AccessLog(options.access_log, loop) if options.access_log else None
        cfg = FrontConfig(
            table,
            pool,
            token=options.token,
            max_body=options.max_body,
            max_header=options.max_header,
            read_timeout=options.read_timeout,
            on_read_timeout=metrics.read_timeouts.inc,
            max_concurrency=options.max_concurrency,
            timeouts=[options.timeout or r["timeout"] for r in config["routes"]],
            observe=metrics.observe,
            metrics_text=metrics.text,
            access=access,
        )
        server = await loop.create_server(lambda: HttpConnection(cfg), sock=sock)
        # the front's long-lived objects (routes, metrics, imported modules) out of the
        # collector's sight: a full collection then walks only what requests left behind
        gc.collect()
        gc.freeze()
        port = sock.getsockname()[1]
        if stop is None:
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        if on_listening is not None:
            on_listening(port)
        watcher = None
        if version is not None:
            watcher = loop.create_task(_watch_model(binding, pool, version, options.model_poll))
        shown_host = f"[{options.host}]" if ":" in options.host else options.host
        model = f", model {binding.name}:{version}" if version is not None else ""
        own = len(pool.pools) - (1 if pool.plans[0].label == "shared" else 0)
        announce(
            f"serving {_count(len(routes), 'route')} on http://{shown_host}:{port} "
            f"with {_count(len(pool.ready), 'replica')}{model}"
            + (f" ({_count(own, 'route')} with replicas of their own)" if own else "")
        )
        await stop.wait()
        announce(f"draining: {pool.in_flight} requests in flight")
        cfg.draining = True
        if watcher is not None:
            watcher.cancel()
        server.close()
        for conn in list(cfg.connections):
            conn.close_if_idle()
        await pool.shutdown(options.drain_timeout)
        for conn in list(cfg.connections):
            if conn.transport is not None:
                conn.transport.close()
        if access is not None:
            access.flush(again=False)
        announce("stopped")
    finally:
        sock.close()
        if not pool.stopping:  # a start that failed half-way: its replicas go too
            await pool.shutdown(0)
        pool.remove_folder()  # also when a start fails or the drain is cut short


def _count(n: int, noun: str) -> str:
    """ "1 route", "3 routes"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run(
    routes: list[RouteSpec],
    config: dict[str, Any],
    binding: ModelBinding,
    options: ServeOptions,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve_async(routes, config, binding, options, announce=announce))
