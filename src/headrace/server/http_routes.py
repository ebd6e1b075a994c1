"""The app's HTTP routes served by the coordinator (`headrace up`), as `headrace serve` serves
them: the same front, replicas, model binding and roll-over, on an event loop in a thread of
the coordinator's own. The `serve` setting is the listen address ("" serves no routes); the
port it got is in the coordinator's info file and its summary. Requests are logged to
`<home>/logs/access.log`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any, TextIO

from headrace.addresses import is_loopback
from headrace.app import App
from headrace.config import Settings, listen_address
from headrace.errors import ConfigError, HeadraceError

log = logging.getLogger("headrace.server")


def serve_token(settings: Settings) -> bytes | None:
    """The token requests to the routes must carry (None: any request, on loopback only);
    ConfigError when the `serve` address listens beyond this machine without HEADRACE_TOKEN.
    The coordinator asks before it starts anything, so such a setting fails at once."""
    from headrace.server.metrics import check_token

    host, _ = listen_address(settings.serve, "serve")
    try:
        return check_token(os.environ.get("HEADRACE_TOKEN", ""), required=not is_loopback(host))
    except HeadraceError as exc:
        raise ConfigError(
            f"setting 'serve' ({settings.serve!r})",
            f"listens beyond this machine and HEADRACE_TOKEN {exc.reason}",
            f"{exc.fix}, or serve on 127.0.0.1",
        ) from None


class RouteServer:
    def __init__(self, settings: Settings, app: App) -> None:
        from headrace.serving.pool import PoolOptions
        from headrace.serving.server import ModelBinding, ServeOptions, replica_config

        self.settings = settings
        self.app = app
        host, port = listen_address(settings.serve, "serve")
        token = serve_token(settings)
        functions = app.functions
        per_request = max(functions[r.function].timeout for r in app.routes)
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self._access: TextIO = open(  # noqa: SIM115 (closed in stop)
            settings.logs_dir / "access.log", "a", encoding="utf-8"
        )
        self.options = ServeOptions(
            host=host,
            port=port,
            token=token,
            access_log=self._access,
            pool=PoolOptions(replicas=settings.serve_replicas, timeout=per_request),
            serving=settings.serving,
            listen_setting="serve",
        )
        self.config = replica_config(
            app.routes, functions, [str(settings.project_dir)], settings.storage_url
        )

        def registry() -> Any:
            from headrace.models import ModelRegistry

            return ModelRegistry.from_settings(settings)

        self.binding = ModelBinding(app.routes, registry)
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._pool: Any = None
        self._metrics: Any = None

    def start(self) -> str:
        """Start the front and its replicas; the URL once they serve. Raises what stopped
        them (a used port, a handler module that does not import)."""
        self._thread = threading.Thread(target=self._run, name="headrace-serve", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            self._access.close()
            raise self._error
        return self.url

    def _run(self) -> None:
        from headrace.serving.server import serve_async

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            host = self.options.host

            def listening(port: int) -> None:
                shown = f"[{host}]" if ":" in host else host
                self.url = f"http://{shown}:{port}"
                self._started.set()

            await serve_async(
                self.app.routes,
                self.config,
                self.binding,
                self.options,
                announce=lambda text: log.info("routes: %s", text),
                stop=self._stop,
                on_listening=listening,
                on_serving=self._serving,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start(), or logged when it comes later
            if not self._started.is_set():
                self._error = exc
            else:
                log.exception("serving the HTTP routes stopped")
        finally:
            self._started.set()

    def _serving(self, pool: Any, metrics: Any) -> None:
        self._pool, self._metrics = pool, metrics

    def describe(self) -> dict[str, Any]:
        """What the console's Serving page shows: the endpoint, its routes with requests and
        latency, the replicas, and the model version they serve. Read from another thread:
        only copies of the serving loop's lists are walked."""
        pool, metrics, binding = self._pool, self._metrics, self.binding
        stats = metrics.by_route() if metrics is not None else {}
        routes = []
        for r in self.app.routes:
            seen = stats.get(r.key, {})
            routes.append(
                {
                    "key": r.key,
                    "method": r.method,
                    "path": r.path,
                    "function": r.function,
                    "model": r.model,
                    "max_batch_size": r.max_batch_size,
                    "requests": seen.get("requests", {}),
                    "errors": seen.get("errors", 0),
                    "latency": seen.get("latency"),
                }
            )
        replicas = []
        for replica in list(pool.ready) if pool is not None else []:
            replicas.append(
                {
                    "number": replica.number,
                    "pid": replica.pid,
                    "state": replica.state,
                    "in_flight": len(replica.outstanding),
                    "answered": replica.answered,
                    "failed": replica.failed,
                    "model": replica.generation.get("HEADRACE_MODEL"),
                }
            )
        model = None
        if binding.ref:
            model = {
                "ref": binding.ref,
                "name": binding.name,
                "alias": binding.alias,
                "pinned": binding.pinned,
                "serving": sorted({r["model"] for r in replicas if r["model"]}),
                "refused": sorted(binding.refused),
            }
        return {
            "url": self.url,
            "replicas_wanted": self.options.pool.replicas,
            "routes": routes,
            "replicas": replicas,
            "model": model,
        }

    def stop(self, timeout: float) -> None:
        """Drain: no new requests, those in flight answered (up to `timeout`), replicas gone."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout + 10.0)
        self._access.close()
