"""End of input for a pipeline: `headrace streams flush PIPELINE` and `headrace.flush_pipeline`.

A flush processes every record the pipeline's stream holds at that moment, then closes every
open window (emitting it as if the watermark had passed its end plus grace) and writes every
sink buffer, in checkpointed micro-batches like any other. A bounded replay — a backfill of a
file or of a fixed range appended to a stream — gives its final answer this way without
waiting for later records.

Whoever holds the pipeline's lease runs it (`headrace.ledger.pipeline_leases`), so a flush
never runs beside a batch of the same pipeline:

- no one holds it (no coordinator runs, or the coordinator runs another app): this process
  takes the lease, opens the pipeline and flushes it;
- a running coordinator holds it: the flush is asked of it through the ledger and it runs the
  flush between two of its micro-batches; this waits for the outcome.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from headrace.app import App, load_app
from headrace.config import Settings, load_settings
from headrace.errors import StreamError
from headrace.ledger import Ledger
from headrace.ledger.pipeline_leases import (
    cancel_flush,
    ensure_tables,
    flush_outcome,
    holder,
    request_flush,
)
from headrace.server.metrics import StreamMetrics
from headrace.server.streams import StreamService
from headrace.storage import ObjectStore

__all__ = ["flush_pipeline"]

WAIT_POLL = 0.1  # how often the outcome of a flush asked of the coordinator is looked up


def flush_pipeline(
    pipeline: str,
    *,
    app: App | None = None,
    project: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Process every record `pipeline`'s stream holds, then close its open windows.

    `app` defaults to the project's (`headrace.toml` in `project`, default: here). Returns
    `{"pipeline", "records", "windows", "late", "partitions": [...], "by"}`: records read,
    windows closed by the flush, records found late, and who ran it. Raises StreamError when
    the pipeline is unknown, another flush of it is running, or the coordinator asked to run
    it did not finish within `timeout` seconds (it goes on; `headrace streams stats` shows it).
    """
    settings = settings or load_settings(Path(project) if project is not None else None)
    app = app if app is not None else load_app(settings)
    if pipeline not in app.pipelines:
        known = ", ".join(sorted(app.pipelines)) or "none"
        raise StreamError(
            f"pipeline {pipeline!r}",
            f"is not defined by the app (pipelines: {known})",
            "name one of the app's pipelines",
        )
    app.check_streams()
    ledger = Ledger(settings.ledger_url, sync=settings.ledger_sync)
    try:
        ensure_tables(ledger)
        service = StreamService(
            settings,
            app,
            ledger,
            ObjectStore(settings.storage_url),
            StreamMetrics(CollectorRegistry()),
            lambda functions: None,  # invocations wait in the ledger for the coordinator
        )
        service.want([pipeline], purpose="flush")
        if service.claim_leases():
            return _flush_here(service, pipeline)
        return _ask_holder(ledger, pipeline, timeout)
    finally:
        ledger.close()


def _flush_here(service: StreamService, pipeline: str) -> dict[str, Any]:
    try:
        service.open([pipeline])
        result = service.flush(pipeline)
    finally:
        service.release_leases()
        service.close()
    return {**result, "by": "this process"}


def _ask_holder(ledger: Ledger, pipeline: str, timeout: float) -> dict[str, Any]:
    with ledger.begin() as conn:
        running = holder(conn, pipeline)
        if running is None:  # freed since the lease was asked for
            raise StreamError(
                f"pipeline {pipeline!r}",
                "its lease was freed while the flush was being asked for",
                "run the flush again",
            )
        if running.purpose != "coordinator":
            raise StreamError(
                f"pipeline {pipeline!r}",
                f"is being flushed by {running.describe()} already",
                "wait for that flush to finish; a second one would find nothing left to close",
            )
        ident = request_flush(conn, pipeline)
    deadline = time.monotonic() + timeout
    while True:
        with ledger.reader.connect() as conn:
            outcome = flush_outcome(conn, ident)
            now_running = None if outcome.done else holder(conn, pipeline)
        if outcome.done:
            break
        if now_running is None or now_running.owner != running.owner:
            # it stopped before running the flush: no later coordinator may run it unasked
            with ledger.begin() as conn:
                cancelled = cancel_flush(conn, ident, "its coordinator stopped first")
            if cancelled:
                raise StreamError(
                    f"pipeline {pipeline!r}",
                    f"the coordinator ({running.describe()}) stopped before it ran the flush",
                    "run the flush again",
                )
            continue
        if time.monotonic() >= deadline:
            raise StreamError(
                f"pipeline {pipeline!r}",
                f"the coordinator ({running.describe()}) did not finish the flush in {timeout:g} s",
                "it goes on in the coordinator; follow it with `headrace streams stats`, or "
                "wait longer with --timeout",
            )
        time.sleep(WAIT_POLL)
    if outcome.error is not None:
        raise StreamError(
            f"pipeline {pipeline!r}",
            f"the coordinator's flush failed: {outcome.error}",
            "fix the cause (see `headrace streams stats`) and flush again",
        )
    return {**(outcome.result or {}), "by": running.describe()}
