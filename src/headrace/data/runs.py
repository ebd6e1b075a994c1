"""Dataset runs recorded in the project's ledger, for the console and `headrace datasets`.

A Dataset executed in a process of a headrace project (a script run where the project's
settings resolve: a `headrace.toml` in `$HEADRACE_PROJECT` or the current folder, or the
variables a headrace job gets) is a row of `ledger.dataset_runs`: its plan's steps, its engine,
its progress while it runs (written at most every `PROGRESS_SECONDS`, from a thread of its own,
so the pipeline never waits on the ledger for it) and how it ended. Outside a project nothing
is recorded. Recording never fails the user's pipeline: a ledger that cannot be reached is a
warning in the log, and the dataset runs on.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from headrace.config import find_project, load_settings
from headrace.data.engine import ExecutionStats
from headrace.data.plan import Node
from headrace.ledger import dataset_runs
from headrace.ledger.db import create_ledger_engine

log = logging.getLogger("headrace.data")

#: The shortest time between two progress writes of one run, in seconds.
PROGRESS_SECONDS = 0.5

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _ledger() -> Engine | None:
    """The project's ledger (opened once per process), or None outside a project."""
    if find_project() is None:
        return None
    settings = load_settings()
    url = settings.ledger_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_ledger_engine(url, sync=settings.ledger_sync)
            dataset_runs.ensure_tables(engine)
            _engines[url] = engine
        return engine


def steps(plan: Node) -> list[str]:
    """The plan's operations from the reads to the end, one label each."""
    out: list[str] = []
    for child in plan.children():
        out.extend(steps(child))
    out.append(plan.label())
    return out


def snapshot(stats: ExecutionStats) -> dict[str, Any]:
    """Where an execution is: its stages, blocks done of the total where a stage knows it (the
    reads: one task per fragment), and the rows the caller got so far (rows written, for a
    write; else those out of the last stage)."""
    stages = [
        {
            "name": s.name,
            "tasks": s.tasks,
            "total": s.total,
            "rows": s.rows,
            "seconds": round(s.seconds, 3),
        }
        for s in list(stats.stages)
    ]
    counted = next((s for s in stages if s["total"] is not None), None)
    if counted is None and stages:
        counted = stages[-1]
    rows = stats.rows_out
    if rows is None:
        rows = stages[-1]["rows"] if stages else 0
    return {
        "stages": stages,
        "tasks_done": counted["tasks"] if counted else 0,
        "tasks_total": counted["total"] if counted else None,
        "rows_out": rows,
    }


def _program() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-"):
        return "python"
    path = Path(argv0)
    if path.name == "__main__.py":  # python -m package
        return f"python -m {path.parent.name}"
    return path.name


class _Run:
    """One recorded run: its row, and the thread that writes its progress."""

    def __init__(self, db: Engine, run_id: str, stats: ExecutionStats) -> None:
        self.db = db
        self.id = run_id
        self.stats = stats
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(
            target=self._watch, name="headrace-dataset-progress", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        last = None
        while not self._stop.wait(PROGRESS_SECONDS):
            now = snapshot(self.stats)
            if now == last:
                continue
            last = now
            try:
                with self.db.begin() as conn:
                    dataset_runs.progress(conn, self.id, now)
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("dataset run %s: progress not recorded: %s", self.id, exc)

    def end(self, status: str, error: str | None) -> None:
        self._stop.set()
        self._thread.join()
        try:
            with self.db.begin() as conn:
                dataset_runs.finish(conn, self.id, status, snapshot(self.stats), error)
        except Exception as exc:
            log.warning("dataset run %s: its end (%s) not recorded: %s", self.id, status, exc)


def _begin(
    plan: Node, stats: ExecutionStats, action: str, output: str | None, last_step: str | None
) -> _Run | None:
    try:
        db = _ledger()
        if db is None:
            return None
        run_id = str(uuid.uuid4())
        labels = steps(plan) + ([last_step] if last_step else [])
        row = {
            "id": run_id,
            "name": _program()[:255],
            "job_id": os.environ.get("HEADRACE_JOB_ID"),
            "engine": stats.engine,
            "action": action,
            "steps": labels,
            "output": output,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        with db.begin() as conn:
            dataset_runs.start(conn, row)
    except Exception as exc:
        log.warning("dataset run not recorded in the project's ledger: %s", exc)
        return None
    return _Run(db, run_id, stats)


@contextmanager
def recording(
    plan: Node,
    stats: ExecutionStats,
    action: str,
    *,
    output: str | None = None,
    last_step: str | None = None,
) -> Iterator[None]:
    """Record the execution inside the block as a dataset run (when in a project); a write
    names its folder (`output`) and its step (`last_step`, which the plan does not hold).
    Leaving the block by GeneratorExit (the caller stopped reading) ends the run STOPPED."""
    run = _begin(plan, stats, action, output, last_step)
    if run is None:
        yield
        return
    status, error = "SUCCEEDED", None
    try:
        yield
    except GeneratorExit:
        status = "STOPPED"
        raise
    except BaseException as exc:
        status, error = "FAILED", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run.end(status, error)


def recorded(
    blocks: Iterator[Any], plan: Node, stats: ExecutionStats, action: str
) -> Iterator[Any]:
    """`blocks`, the execution recorded from the first block asked for to the last."""
    with recording(plan, stats, action):
        stats.rows_out = 0
        for block in blocks:
            stats.rows_out += block.num_rows
            yield block
