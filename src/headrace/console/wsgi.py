"""The console as one WSGI app: `/` and the static files, `/api/…`, `/api/live` (events)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from headrace.console.api import Api
from headrace.console.data_api import Download
from headrace.console.http import (
    HttpError,
    Request,
    json_response,
    parse_query,
    static_file,
)
from headrace.ledger import dataset_runs
from headrace.ledger.schema import (
    attempts,
    dead_letters,
    executions,
    history,
    stream_checkpoints,
)

log = logging.getLogger("headrace.console")

#: How often the live stream looks for changes, in seconds.
LIVE_INTERVAL = 1.0

#: A live stream ends after this (the browser reconnects at once): the HTTP server closes any
#: connection older than its request deadline.
LIVE_SECONDS = 20.0


@dataclass
class ConsoleContext:
    """What the console reads: the coordinator's settings, app, ledger and storage."""

    settings: Any
    app: Any
    ledger: Any
    store: Any
    coordinator_id: Callable[[], str]
    wake: Callable[[], None] = lambda: None
    #: the coordinator's route server (`server.http_routes.RouteServer`), None when it serves
    #: no routes
    routes: Callable[[], Any] = lambda: None


class Console:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.api = Api(ctx)
        dataset_runs.ensure_tables(ctx.ledger.engine)  # the live version reads it

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/api/live":
                return self._live(start_response)
            if path.startswith("/api/"):
                return self._api(method, path, environ, start_response)
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}")
            if path in ("/", "/index.html"):
                return static_file(start_response, "index.html")
            if path.startswith("/static/"):
                return static_file(start_response, path[len("/static/") :])
            raise HttpError(404, f"nothing at {path}")
        except HttpError as exc:
            return json_response(start_response, exc.status, {"error": exc.message})

    def _api(self, method: str, path: str, environ: dict[str, Any], start_response: Any) -> Any:
        if method == "POST" and environ.get("HTTP_X_HEADRACE") != "1":
            # a custom header: a form on another site cannot send it, so no cross-site action
            raise HttpError(403, "actions need the header X-Headrace: 1")
        handler, params = self.api.router.match(method, path)
        request = Request(method, path, parse_query(environ), params, environ)
        try:
            body = handler(request)
        except HttpError:
            raise
        except Exception as exc:  # a bug or a ledger error: say so, keep serving
            log.exception("console API %s %s", method, path)
            raise HttpError(500, f"{type(exc).__name__}: {exc}") from None
        if isinstance(body, Download):
            start_response("200 OK", body.headers())
            return body.body()
        return json_response(start_response, 200, body)

    def _live(self, start_response: Any) -> Iterator[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-store"),
                ("X-Accel-Buffering", "no"),
            ],
        )
        return self._ticks()

    def _ticks(self) -> Iterator[bytes]:
        yield b"retry: 500\n\n"
        last = None
        end = time.monotonic() + LIVE_SECONDS
        while time.monotonic() < end:
            try:
                now = self._version()
            except Exception:  # the ledger is busy or failing: try again next tick
                log.debug("live version", exc_info=True)
                now = last
            if now != last:
                last = now
                yield f"event: change\ndata: {json.dumps(now)}\n\n".encode()
            else:
                yield b": idle\n\n"  # a write to a closed browser ends this generator
            time.sleep(LIVE_INTERVAL)

    def _version(self) -> dict[str, Any]:
        """Cheap numbers that change whenever something the pages show changes."""
        with self.ctx.ledger.reader.connect() as conn:
            row = conn.execute(
                select(
                    select(func.max(attempts.c.id)).scalar_subquery(),
                    select(func.max(dead_letters.c.id)).scalar_subquery(),
                    select(func.count()).select_from(executions).scalar_subquery(),
                    select(func.count()).select_from(history).scalar_subquery(),
                    select(func.max(stream_checkpoints.c.updated_at)).scalar_subquery(),
                    select(func.max(dataset_runs.dataset_runs.c.updated_at)).scalar_subquery(),
                )
            ).one()
        keys = ("attempts", "dead_letters", "executions", "history", "streams", "datasets")
        return dict(zip(keys, row, strict=True))
