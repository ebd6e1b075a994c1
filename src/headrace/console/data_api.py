"""The console's data pages: item tables, feature groups, jobs with their logs, dataset runs,
buckets."""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from headrace.console import paging
from headrace.console.http import HttpError, Request, Router
from headrace.errors import HeadraceError
from headrace.ledger import dataset_runs

#: Objects one bucket listing returns (the page asks for a narrower prefix beyond it).
MAX_OBJECTS = 1000

#: Bytes of a job's log the page shows: the end of it, where a failure is.
MAX_JOB_LOG = 256 * 1024


def _json_arg(request: Request, name: str) -> Any:
    raw = request.arg(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name!r} is not JSON: {exc}") from None


class DataApi:
    def __init__(self, ctx: Any, router: Router) -> None:
        self.ctx = ctx
        self._features: Any = None
        self._registry: Any = None
        self._lock = threading.Lock()
        r = router.add
        r("GET", "/api/tables", self.tables)
        r("GET", "/api/tables/{name}", self.table)
        r("GET", "/api/features", self.feature_groups)
        r("GET", "/api/features/{name}", self.feature_group)
        r("GET", "/api/features/{name}/online", self.online)
        r("GET", "/api/jobs", self.jobs)
        r("GET", "/api/jobs/{id}", self.job)
        r("GET", "/api/datasets", self.datasets)
        r("GET", "/api/datasets/{id}", self.dataset)
        r("GET", "/api/serving", self.serving)
        r("GET", "/api/models", self.models)
        r("GET", "/api/models/{name}", self.model)
        r("GET", "/api/buckets", self.buckets)
        r("GET", "/api/buckets/{name}", self.objects)
        r("GET", "/api/buckets/{name}/object", self.download)

    # -- item tables ----------------------------------------------------------------------

    def _tables(self) -> Any:
        from headrace.tables import Tables

        return Tables(self.ctx.ledger)

    def tables(self, request: Request) -> Any:
        tables = self._tables()
        out = []
        for name in tables.list_tables():
            d = tables.describe_table(name).get("Table", {})
            out.append(
                {
                    "name": name,
                    "keys": d.get("KeySchema"),
                    "items": d.get("ItemCount"),
                    "created": d.get("CreationDateTime"),
                }
            )
        return {"items": out}

    def table(self, request: Request) -> Any:
        """A page of items in key order; `filter` is a DynamoDB FilterExpression with
        `values` (JSON: {":v": 1}) and `names` (JSON: {"#n": "name"})."""
        limit = request.integer("limit", 50, low=1, high=500)
        assert limit is not None
        try:
            page = self._tables().scan(
                request.params["name"],
                filter=request.arg("filter"),
                values=_json_arg(request, "values"),
                names=_json_arg(request, "names"),
                limit=limit,
                exclusive_start_key=_json_arg(request, "start"),
            )
        except HeadraceError as exc:
            raise HttpError(400, str(exc)) from None
        return {
            "items": page["Items"],
            "count": page["Count"],
            "scanned": page["ScannedCount"],
            "next": page.get("LastEvaluatedKey"),
        }

    # -- feature groups -------------------------------------------------------------------

    def _store(self) -> Any:
        with self._lock:
            if self._features is None:
                from headrace.features.store import open_app_store

                self._features = open_app_store(self.ctx.settings, self.ctx.app, self.ctx.store)
            return self._features

    def feature_groups(self, request: Request) -> Any:
        return {
            "items": [
                {
                    "name": g.name,
                    "entity_keys": list(g.entity_keys),
                    "event_time": g.event_time,
                    "description": getattr(g, "description", ""),
                }
                for g in self.ctx.app.feature_groups.values()
            ]
        }

    def feature_group(self, request: Request) -> Any:
        name = request.params["name"]
        group = self.ctx.app.feature_groups.get(name)
        if group is None:
            raise HttpError(404, f"no feature group {name!r}")
        store = self._store()
        counts = store.row_counts(name)
        history = store.history(name, limit=20) if group.offline else []
        schema = [{"name": f.name, "type": str(f.type)} for f in group.schema]
        return {
            "name": name,
            "entity_keys": list(group.entity_keys),
            "event_time": group.event_time,
            "description": getattr(group, "description", ""),
            "online": group.online,
            "offline": group.offline,
            "schema": schema,
            "counts": counts,
            "freshness": _freshness(history),
            "history": _plain(history),
        }

    def online(self, request: Request) -> Any:
        name = request.params["name"]
        group = self.ctx.app.feature_groups.get(name)
        if group is None:
            raise HttpError(404, f"no feature group {name!r}")
        key = {k: request.arg(k) for k in group.entity_keys}
        missing = [k for k, v in key.items() if v is None]
        if missing:
            raise HttpError(400, f"give the entity key {', '.join(missing)} as query parameters")
        try:
            (row,) = self._store().get_online(name, [key])
        except HeadraceError as exc:
            raise HttpError(400, str(exc)) from None
        return {"key": key, "row": _plain(row)}

    # -- jobs -----------------------------------------------------------------------------

    def _jobs(self) -> Any:
        from headrace.jobs.service import Jobs

        return Jobs(self.ctx.ledger, self.ctx.settings.home)

    def jobs(self, request: Request) -> Any:
        limit = request.integer("limit", 100, low=1, high=500)
        assert limit is not None
        try:
            runs = self._jobs().list(request.arg("status"), limit=limit)
        except HeadraceError as exc:
            raise HttpError(400, str(exc)) from None
        return {
            "items": [
                {
                    "id": j.id,
                    "name": j.name,
                    "definition": j.definition,
                    "queue": j.queue,
                    "status": j.status,
                    "attempts": j.attempts,
                    "exit_code": j.exit_code,
                    "reason": j.status_reason,
                    "created_at": j.created_at,
                    "started_at": j.started_at,
                    "stopped_at": j.stopped_at,
                    "runner": j.spec.runner,
                }
                for j in runs
            ]
        }

    def job(self, request: Request) -> Any:
        jobs = self._jobs()
        try:
            described = jobs.describe(request.params["id"])
            log = jobs.logs(request.params["id"])
        except HeadraceError as exc:
            raise HttpError(404, str(exc)) from None
        if len(log) > MAX_JOB_LOG:
            cut = len(log) - MAX_JOB_LOG
            log = f"[… the first {cut} characters left out]\n" + log[-MAX_JOB_LOG:]
        return {"job": described, "log": log}

    # -- dataset runs ---------------------------------------------------------------------

    def datasets(self, request: Request) -> Any:
        """Dataset runs newest first, without their stages; `q` matches the start of the
        script's name or a job id."""
        limit = paging.limit(request)
        status = request.choice("status", dataset_runs.STATUSES)
        dataset_runs.ensure_tables(self.ctx.ledger.engine)
        with self.ctx.ledger.reader.connect() as conn:
            rows = dataset_runs.page(
                conn,
                status=status,
                search=request.arg("q"),
                cursor=paging.cursor(request),
                limit=limit,
            )
        for row in rows:
            del row["stages"]
        return paging.page(rows, limit, "started_at")

    def dataset(self, request: Request) -> Any:
        dataset_runs.ensure_tables(self.ctx.ledger.engine)
        with self.ctx.ledger.reader.connect() as conn:
            run = dataset_runs.get(conn, request.params["id"])
        if run is None:
            raise HttpError(404, f"no dataset run {request.params['id']!r}")
        return {"run": run}

    # -- serving and models ---------------------------------------------------------------

    def serving(self, request: Request) -> Any:
        """The app's HTTP routes as the coordinator serves them: endpoint, replicas, requests
        and latency per route, the model version the replicas run."""
        server = self.ctx.routes()
        if server is not None:
            return {"serving": True, **server.describe()}
        routes = [
            {"key": r.key, "method": r.method, "path": r.path, "function": r.function,
             "model": r.model, "max_batch_size": r.max_batch_size, "requests": {},
             "errors": 0, "latency": None}
            for r in getattr(self.ctx.app, "routes", [])
        ]  # fmt: skip
        return {"serving": False, "url": None, "routes": routes, "replicas": [], "model": None}

    def _models(self) -> Any:
        with self._lock:
            if self._registry is None:
                from headrace.models import ModelRegistry

                # the coordinator's own ledger and store
                self._registry = ModelRegistry(
                    self.ctx.ledger,
                    self.ctx.store,
                    cache_dir=self.ctx.settings.home / "cache" / "models",
                )
            return self._registry

    def models(self, request: Request) -> Any:
        return {"items": [_plain(asdict(m)) for m in self._models().models()]}

    def model(self, request: Request) -> Any:
        name = request.params["name"]
        registry = self._models()
        try:
            versions = registry.versions(name)
            moves = registry.alias_history(name)
        except HeadraceError as exc:
            raise HttpError(404, str(exc)) from None
        return {
            "name": name,
            "versions": [_plain(asdict(v)) for v in reversed(versions)],
            "alias_moves": [_plain(asdict(m)) for m in reversed(moves)],
        }

    # -- buckets --------------------------------------------------------------------------

    def buckets(self, request: Request) -> Any:
        return {"items": sorted(self.ctx.store.list_buckets())}

    def _bucket(self, name: str) -> Any:
        try:
            return self.ctx.store.bucket(name, create=False)
        except HeadraceError as exc:
            raise HttpError(404, str(exc)) from None

    def objects(self, request: Request) -> Any:
        prefix = request.arg("prefix", "") or ""
        try:
            found = self._bucket(request.params["name"]).list(prefix)
        except HeadraceError as exc:
            raise HttpError(400, str(exc)) from None
        return {
            "items": [
                {"key": o.key, "size": o.size, "etag": o.etag, "last_modified": o.last_modified}
                for o in found[:MAX_OBJECTS]
            ],
            "truncated": len(found) > MAX_OBJECTS,
        }

    def download(self, request: Request) -> Any:
        key = request.arg("key")
        if not key:
            raise HttpError(400, "query parameter 'key' names the object")
        bucket = self._bucket(request.params["name"])
        try:
            info = bucket.head(key)
            handle = bucket.open(key)
        except HeadraceError as exc:
            raise HttpError(404, str(exc)) from None
        kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return Download(handle, info.size, kind, key.rsplit("/", 1)[-1])


class Download:
    """An object streamed to the browser as an attachment, 1 MiB at a time."""

    def __init__(self, handle: Any, size: int, kind: str, filename: str) -> None:
        self.handle, self.size, self.kind, self.filename = handle, size, kind, filename

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.kind),
            ("Content-Length", str(self.size)),
            ("Content-Disposition", content_disposition(self.filename)),
            ("X-Content-Type-Options", "nosniff"),
        ]

    def body(self) -> Iterable[bytes]:
        try:
            while chunk := self.handle.read(1 << 20):
                yield chunk
        finally:
            self.handle.close()


def content_disposition(filename: str) -> str:
    """An attachment header for any object name (RFC 6266 with RFC 5987's `filename*`).

    WSGI headers are Latin-1, so the name itself travels percent-encoded UTF-8; `filename` is an
    ASCII stand-in for clients that ignore `filename*`.
    """
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"


def _freshness(history: list[dict[str, Any]]) -> float | None:
    """When the offline table was last written (epoch seconds), from its newest commit."""
    for commit in history:
        ts = commit.get("timestamp")
        if isinstance(ts, int | float):
            return ts / 1000 if ts > 1e11 else ts
    return None


def _plain(value: Any) -> Any:
    """JSON-safe: Arrow timestamps and the like as text."""
    return json.loads(json.dumps(value, default=str))
