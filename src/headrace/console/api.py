"""The console's JSON API: what each page reads and the actions it takes.

Lists are paged on the server (`limit`, and `cursor` from the previous page's `next`), so a
page costs the same with a hundred rows in the ledger as with a million.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from headrace.config import setting_origins
from headrace.console.data_api import DataApi
from headrace.console.http import HttpError, Request, Router
from headrace.console.paging import cursor as _cursor
from headrace.console.paging import limit as _limit
from headrace.console.paging import page as _page
from headrace.errors import HeadraceError, LedgerError
from headrace.ledger import browse, checkpoints, dataset_runs
from headrace.ledger import executions as execution_store
from headrace.workflows import api as workflows
from headrace.workflows.graph import StatusFold, graph_model, scope_prefix

log = logging.getLogger("headrace.console")

#: Log text one attempt may return; the rest is cut with a note (the file keeps it all).
MAX_LOG_BYTES = 256 * 1024

#: Histories up to this many events are folded within the request; longer ones, the first
#: time, in the background while the page draws the graph unpainted.
FOLD_INLINE = 2000

#: Events a background fold reads at a time; the graph is painted as far as it got after each.
FOLD_CHUNK = 2000

#: How long "errors of the last hour" looks back, in seconds.
ERROR_WINDOW = 3600.0


#: What `status` filters on: the ledger's invocation and execution states.
INVOCATION_STATUSES = ("pending", "running", "succeeded", "dead")
EXECUTION_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")

#: Windows with late records `GET /api/streams` lists, the latest first.
LATE_WINDOWS = 200

#: The widest window of stream statistics (`minutes`) the API reads: a year.
MAX_MINUTES = 366 * 24 * 60


class _Folds:
    """The state statuses of executions, folded as their histories grow: a 10,000-item Map is
    folded once, and a live update of a running one folds only the events it has not seen. The
    fold reads each event's outline (`browse.history_outline`), never the states' inputs and
    outputs. A long history seen for the first time is folded in the background, `FOLD_CHUNK`
    events at a time, and can be painted as far as it has been folded meanwhile."""

    def __init__(self, size: int = 16) -> None:
        self._lock = threading.Lock()
        # execution -> (events folded, the fold, whether it is still catching up)
        self._cache: dict[str, tuple[int, StatusFold, bool]] = {}
        self._warming: set[str] = set()
        # execution -> (events folded, its graph then): what a look paints while a background
        # fold goes on, without waiting for the fold's guard (which that fold keeps retaking)
        self._painted: dict[str, tuple[int, Any]] = {}
        self._guards: dict[str, threading.Lock] = {}
        self._size = size

    def _guard(self, execution_id: str) -> threading.Lock:
        with self._lock:
            return self._guards.setdefault(execution_id, threading.Lock())

    def _fold(self, ledger: Any, execution_id: str, definition: Any, limit: int | None) -> bool:
        """Fold the next events (`limit` of them, or all); True when none is left. Called
        holding the execution's guard."""
        with self._lock:
            cached = self._cache.get(execution_id)
        seen, fold, _ = cached or (0, StatusFold(definition), True)
        with ledger.reader.connect() as conn:
            more = browse.history_outline(conn, execution_id, seen, limit)
        if more and more[0][0] != seen + 1:  # not what follows the folded events: start over
            seen, fold = 0, StatusFold(definition)
            with ledger.reader.connect() as conn:
                more = browse.history_outline(conn, execution_id, 0, limit)
        if more:
            fold.feed({"type": t, "scope": sc, "details": d} for _, t, sc, d in more)
            seen = more[-1][0]
        done = limit is None or len(more) < limit
        if not done:  # a background fold: keep the graph as far as it got, in plain data
            painted = graph_model(definition, fold.statuses())
            with self._lock:
                self._painted[execution_id] = (seen, painted)
        with self._lock:
            self._cache.pop(execution_id, None)
            while len(self._cache) >= self._size:
                gone = next(iter(self._cache))
                self._cache.pop(gone)
                self._guards.pop(gone, None)
            self._cache[execution_id] = (seen, fold, not done)
        return done

    def statuses(self, ledger: Any, execution_id: str, definition: Any) -> Any:
        """Every state's status, after folding whatever the fold has not seen."""
        with self._guard(execution_id):  # one fold per execution at a time; others reuse it
            self._fold(ledger, execution_id, definition, None)
            with self._lock:
                return self._cache[execution_id][1].statuses()

    def progress(self, execution_id: str) -> tuple[int, Any] | None:
        """(events folded, the graph painted that far) of a fold still catching up in the
        background, or None when it has folded nothing yet."""
        with self._lock:
            return self._painted.get(execution_id)

    def cached(self, execution_id: str) -> bool:
        """Folded up to the last look (only the events since remain)."""
        with self._lock:
            found = self._cache.get(execution_id)
            return found is not None and not found[2]

    def warm(self, ledger: Any, execution_id: str, definition: Any) -> None:
        """Fold in the background (a first look at a long history), a chunk at a time and once
        at a time per execution; the page asks again and paints what is folded so far."""
        with self._lock:
            if execution_id in self._warming:
                return
            self._warming.add(execution_id)

        def run() -> None:
            try:
                done = False
                while not done:
                    with self._guard(execution_id):
                        done = self._fold(ledger, execution_id, definition, FOLD_CHUNK)
            except Exception:
                log.exception("folding the history of %s", execution_id)
            finally:
                with self._lock:
                    self._warming.discard(execution_id)
                    self._painted.pop(execution_id, None)

        threading.Thread(target=run, name="headrace-console-fold", daemon=True).start()


class Api:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.folds = _Folds()
        self.router = Router()
        r = self.router.add
        r("GET", "/api/overview", self.overview)
        r("GET", "/api/functions", self.functions)
        r("GET", "/api/invocations", self.invocations)
        r("GET", "/api/invocations/{id}", self.invocation)
        r("GET", "/api/dead-letters", self.dead_letters)
        r("POST", "/api/dead-letters/redrive", self.redrive_dead_letters)
        r("GET", "/api/executions", self.executions)
        r("GET", "/api/executions/{id:path}/history", self.history)
        r("GET", "/api/executions/{id:path}/state", self.state_io)
        r("POST", "/api/executions/{id:path}/stop", self.stop)
        r("POST", "/api/executions/{id:path}/redrive", self.redrive)
        r("GET", "/api/executions/{id:path}", self.execution)
        r("GET", "/api/map-runs/{id:path}", self.map_run)
        r("GET", "/api/streams", self.streams)
        r("GET", "/api/streams/{name}/records", self.stream_records)
        DataApi(ctx, self.router)

    # -- overview -------------------------------------------------------------------------

    def overview(self, request: Request) -> Any:
        ctx = self.ctx
        app = ctx.app
        now = time.time()
        with ctx.ledger.reader.connect() as conn:
            health = checkpoints.list_health(conn)
            errors = browse.failed_attempts(conn, now - ERROR_WINDOW, limit=50)
            counts = browse.function_counts(conn)
            dead = browse.count_dead_letters(conn)
            checks = checkpoints.list_checkpoints(conn)
        dataset_runs.ensure_tables(ctx.ledger.engine)
        with ctx.ledger.reader.connect() as conn:
            dataset_errors = dataset_runs.failed_since(conn, now - ERROR_WINDOW)
        coordinators = ctx.ledger.live_coordinators(stale_after=3 * ctx.settings.lease_seconds)
        for c in coordinators:
            c["info"] = json.loads(c["info"]) if c.get("info") else {}
            c["me"] = c["id"] == ctx.coordinator_id()
        rules = [
            {
                "name": rule.name,
                "buckets": list(rule.buckets),
                "pattern": _patterns(rule.pattern),
                "target": str(rule.target),
            }
            for rule in app.rules
        ]
        buckets = [
            {"name": b, "triggers": [r for r in rules if b in r["buckets"]]} for b in app.buckets
        ]
        by_component = {h["component"]: h for h in health}
        sources = [
            {
                "name": name,
                "kind": type(spec.source).__name__,
                "health": by_component.get(f"source:{name}"),
            }
            for name, spec in app.sources.items()
        ]
        pipelines = []
        for name, pipe in app.pipelines.items():
            parts = [c for c in checks if c["pipeline"] == name]
            failing = [c for c in parts if c.get("failures")]
            pipelines.append(
                {
                    "name": name,
                    "stream": pipe.stream,
                    "partitions": len(parts),
                    "records": sum(c["records"] or 0 for c in parts),
                    "lag": sum(max(0, (c["log_end"] or 0) - c["offset"]) for c in parts),
                    "state": "failing" if failing else ("running" if parts else "not started"),
                    "last_error": failing[0]["last_error"] if failing else None,
                }
            )
        stream_errors = [
            {"component": h["component"], "error": h["last_error"], "since": h["since"]}
            for h in health
            if h["status"] != "ok"
        ]
        return {
            "now": now,
            "app": app.name,
            "dead_letters": dead,
            "coordinators": coordinators,
            "settings": setting_origins(ctx.settings),
            "buckets": buckets,
            "rules": rules,
            "functions": sorted(n for n in app.functions if not n.startswith("_")),
            "state_machines": sorted(app.state_machines),
            "sources": sources,
            "pipelines": pipelines,
            "health": health,
            "invocation_counts": counts,
            "errors": errors,
            "stream_errors": stream_errors,
            "dataset_errors": dataset_errors,
        }

    # -- functions and invocations --------------------------------------------------------

    def functions(self, request: Request) -> Any:
        with self.ctx.ledger.reader.connect() as conn:
            if request.arg("counts"):
                counts = browse.function_counts(conn)
                known = set(counts)
            else:  # names only (the filters): no count over every invocation
                counts, known = {}, set(browse.function_names(conn))
        # the built-in functions (`_`-named: Batch, DynamoDB, SNS tasks, compaction) only once
        # they ran: a filter of three unused `__batch__`-like names puzzles a new user
        declared = {n for n in self.ctx.app.functions if not n.startswith("_")}
        names = sorted(declared | known)
        out = []
        for name in names:
            spec = self.ctx.app.functions.get(name)
            out.append(
                {
                    "name": name,
                    "counts": counts.get(name, {}),
                    "timeout": getattr(spec, "timeout", None),
                    "retries": getattr(spec, "retries", None),
                    "declared": spec is not None,
                }
            )
        return {"items": out}

    def invocations(self, request: Request) -> Any:
        limit = _limit(request)
        status = request.choice("status", INVOCATION_STATUSES)
        with self.ctx.ledger.reader.connect() as conn:
            rows = browse.page_invocations(
                conn,
                function=request.arg("function"),
                status=status,
                since=request.number("since"),
                until=request.number("until"),
                cursor=_cursor(request),
                limit=limit,
            )
        return _page(rows, limit, "created_at")

    def invocation(self, request: Request) -> Any:
        row = self.ctx.ledger.get_invocation(request.params["id"])
        if row is None:
            raise HttpError(404, f"no invocation {request.params['id']!r}")
        for key in ("payload", "result"):
            if row.get(key) is not None:
                with contextlib.suppress(ValueError):  # a handler's str result, kept as text
                    row[key] = json.loads(row[key])
        attempts = self.ctx.ledger.list_attempts(invocation_id=row["id"], limit=1000)
        for a in attempts:
            a["log"] = _read_log(a.pop("log_path", None))
        event = None
        if row.get("event_id"):
            with self.ctx.ledger.reader.connect() as conn:
                event = browse.event_of(conn, row["event_id"])
        return {"invocation": row, "attempts": attempts, "event": event}

    def dead_letters(self, request: Request) -> Any:
        limit = _limit(request)
        cursor = request.integer("cursor", low=0)
        with self.ctx.ledger.reader.connect() as conn:
            rows = browse.page_dead_letters(
                conn,
                function=request.arg("function"),
                cursor=cursor,
                limit=limit,
            )
        return {"items": rows, "next": str(rows[-1]["id"]) if len(rows) == limit else None}

    def redrive_dead_letters(self, request: Request) -> Any:
        body = request.json()
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise HttpError(400, 'send {"ids": ["<invocation id>", …]}: the ids to redrive')
        done = self.ctx.ledger.redrive(ids=ids)
        missing = sorted(set(ids) - set(done))
        if not done:
            raise HttpError(404, f"none of {ids} is in the dead-letter list")
        self.ctx.wake()
        return {"redriven": done, "not_found": missing}

    # -- executions -----------------------------------------------------------------------

    def executions(self, request: Request) -> Any:
        limit = _limit(request)
        status = request.choice("status", EXECUTION_STATUSES)
        with self.ctx.ledger.reader.connect() as conn:
            rows = browse.page_executions(
                conn,
                state_machine=request.arg("state_machine"),
                status=status,
                search=request.arg("q"),
                cursor=_cursor(request),
                limit=limit,
            )
            counts = browse.execution_counts(conn) if request.arg("counts") else None
        page = _page(rows, limit, "started_at")
        if counts is not None:
            page["counts"] = counts
        return page

    def _find(self, name_or_arn: str) -> dict[str, Any]:
        with self.ctx.ledger.reader.connect() as conn:
            try:
                row = execution_store.find(conn, name_or_arn)
            except LedgerError as e:  # a name several state machines used
                raise HttpError(409, str(e)) from None
        if row is None:
            raise HttpError(404, f"no execution {name_or_arn!r}")
        return row

    def execution(self, request: Request) -> Any:
        row = self._find(request.params["id"])
        definition = json.loads(row.pop("definition"))
        for key in ("input", "output"):
            if row.get(key) is not None:
                row[key] = json.loads(row[key])
        with self.ctx.ledger.reader.connect() as conn:
            length = execution_store.history_length(conn, row["id"])
            row["history_length"] = length
            row.update(workflows.map_run_links(conn, row["id"]))
            runs = workflows.map_runs_of(conn, row["id"])
        painting, folded = False, length
        if self.folds.cached(row["id"]) or length <= FOLD_INLINE:
            statuses = self.folds.statuses(self.ctx.ledger, row["id"], definition)
            graph = graph_model(definition, statuses)
        else:  # a long history seen for the first time: draw now, paint as it is folded
            self.folds.warm(self.ctx.ledger, row["id"], definition)
            painting = True
            progress = self.folds.progress(row["id"])
            folded, painted = progress if progress is not None else (0, None)
            graph = painted or graph_model(definition, None)
        return {
            "execution": row,
            "definition": definition,
            "graph": graph,
            "painting": painting,
            "folded": folded,
            "map_runs": runs,
        }

    def map_run(self, request: Request) -> Any:
        """A Map Run (DescribeMapRun) and its child executions by item index (at most
        `limit`, from `after`)."""
        limit = _limit(request, 100)
        after = request.integer("after", -1, low=-1)
        assert after is not None
        try:
            run = workflows.describe_map_run(self.ctx.ledger, request.params["id"])
            children = workflows.map_run_executions(
                self.ctx.ledger, run["mapRunArn"], request.arg("status"), after=after, limit=limit
            )
        except workflows.ExecutionError as e:
            raise HttpError(404, str(e)) from None
        page = [
            {k: c[k] for k in ("idx", "id", "name", "status", "error", "started_at", "stopped_at")}
            for c in children
        ]
        return {
            "map_run": run,
            "items": page,
            "next": page[-1]["idx"] if len(page) == limit else None,
        }

    def history(self, request: Request) -> Any:
        row = self._find(request.params["id"])
        limit = _limit(request, 100)
        after = request.integer("after", 0, low=0)
        assert after is not None
        with self.ctx.ledger.reader.connect() as conn:
            events = browse.history_page(conn, row["id"], after=after, limit=limit)
        return {"items": events, "next": events[-1]["id"] if len(events) == limit else None}

    def state_io(self, request: Request) -> Any:
        """The input and output of a state (by its path, `Fan[*]/Record` inside a Map) in its
        latest run, or in the run of one Map item (`index`)."""
        row = self._find(request.params["id"])
        path = request.arg("path")
        if not path:
            raise HttpError(400, "query parameter 'path' names the state, e.g. Fan[*]/Record")
        definition = json.loads(row["definition"])
        # the state's name is the path after one of its "/" (names may hold "/" themselves)
        names = [path] + [path[i + 1 :] for i, c in enumerate(path) if c == "/"]
        index = request.integer("index", low=0)
        suffix = None if index is None else f"[{index}]"
        with self.ctx.ledger.reader.connect() as conn:
            found = browse.state_runs(conn, row["id"], names, suffix)
        prefixes: dict[str, str | None] = {}
        runs: list[list[Any]] = []  # [scope, entered, entered details, exited, exited details]
        for _, kind, ts, scope, name, details in found:
            if scope not in prefixes:
                prefixes[scope] = scope_prefix(definition, scope)
            prefix = prefixes[scope]
            if prefix is None or prefix + name != path:
                continue
            if kind.endswith("StateEntered"):
                runs.append([scope, ts, details, None, None])
            elif kind.endswith("StateExited") and runs and runs[-1][0] == scope:
                runs[-1][3:] = [ts, details]
        last = None
        if runs:  # only the shown run's input and output are parsed
            scope, entered, given, exited, taken = runs[-1]
            last = {"scope": scope, "entered": entered, "input": json.loads(given).get("input")}
            if exited is not None:
                last.update(exited=exited, output=json.loads(taken).get("output"))
        return {"path": path, "runs": len(runs), "last": last}

    def _act(self, request: Request, action: Any) -> Any:
        row = self._find(request.params["id"])
        try:
            described = action(self.ctx.ledger, row["id"])
        except HeadraceError as exc:
            raise HttpError(409, str(exc)) from None
        self.ctx.wake()
        return {"execution": described}

    def stop(self, request: Request) -> Any:
        row = self._find(request.params["id"])
        if row["status"] != "RUNNING":
            raise HttpError(409, f"execution {row['name']!r} is {row['status']}, not running")
        return self._act(
            request,
            lambda ledger, arn: workflows.stop_execution(
                ledger, arn, error="Console.Stopped", cause="stopped from the console"
            ),
        )

    def redrive(self, request: Request) -> Any:
        return self._act(request, workflows.redrive_execution)

    # -- streams --------------------------------------------------------------------------

    def streams(self, request: Request) -> Any:
        minutes = request.integer("minutes", 60, low=1, high=MAX_MINUTES)
        assert minutes is not None
        since = int(time.time() // 60) - minutes
        with self.ctx.ledger.reader.connect() as conn:
            stats = checkpoints.read_stats(conn, since_minute=since)
            checks = checkpoints.list_checkpoints(conn)
            health = checkpoints.list_health(conn)
            late_windows = checkpoints.read_late_windows(conn, limit=LATE_WINDOWS)
        return {
            "since_minute": since,
            "stats": stats,
            "checkpoints": checks,
            "health": health,
            "late_windows": late_windows,
            "pipelines": sorted(self.ctx.app.pipelines),
            "streams": sorted(self.ctx.app.streams),
            "late_streams": sorted(
                {late for pipe in self.ctx.app.pipelines.values() for late in pipe.late_streams}
            ),
        }

    def stream_records(self, request: Request) -> Any:
        """Records of a stream (the late stream of a window, say), newest page by default:
        `partition`, `offset` (the first to show) and `limit`."""
        from headrace.streams.log import open_log
        from headrace.streams.rows import python_rows

        name = request.params["name"]
        spec = self.ctx.app.streams.get(name)
        if spec is None:
            raise HttpError(404, f"no stream {name!r} in this app")
        limit = _limit(request)
        partition = request.integer("partition", 0, low=0, high=spec.partitions)
        assert partition is not None
        if not 0 <= partition < spec.partitions:
            raise HttpError(400, f"stream {name!r} has partitions 0 to {spec.partitions - 1}")
        log = open_log(self.ctx.settings.streams_url, name)
        try:
            start, end = log.start_offset(partition), log.end_offset(partition)
            offset = request.integer("offset", low=0)
            first = max(start, end - limit) if offset is None else max(start, int(offset))
            table = log.read(partition, first, limit) if first < end else None
        finally:
            log.close()
        rows = python_rows(table) if table is not None else []
        return {
            "stream": name,
            "partition": partition,
            "start": start,
            "end": end,
            "offset": first,
            "items": _plain(rows),
        }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _patterns(matcher: Any) -> list[Any]:
    """The EventBridge patterns a rule's matcher requires (all of them)."""
    if hasattr(matcher, "pattern"):
        return [matcher.pattern]
    return [p for part in getattr(matcher, "patterns", ()) for p in _patterns(part)]


def _read_log(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_LOG_BYTES + 1)
    except OSError:
        return None
    text = data[:MAX_LOG_BYTES].decode(errors="replace")
    if len(data) > MAX_LOG_BYTES:
        text += f"\n[cut at {MAX_LOG_BYTES} bytes: the whole log is {path}]\n"
    return text
