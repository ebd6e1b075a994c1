"""`headrace status` and `headrace settings`: what runs, with which settings, and what failed.

`project_status` gathers it all as one JSON-able dict, so other views of the project (the web
console) show the same thing as the command.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from headrace import cli_common

console = Console()

#: How far back `status` looks for errors.
ERRORS_SINCE = 3600.0


def project_status(settings: Any, application: Any = None, *, errors: int = 5) -> dict[str, Any]:
    """Coordinators, settings and their origins, buckets and triggers, stream sources and
    their health, and the errors of the last hour, read from the ledger and the store."""
    from headrace.app import load_app
    from headrace.config import describe_settings
    from headrace.ledger import Ledger
    from headrace.ledger import executions as store
    from headrace.ledger.checkpoints import list_health
    from headrace.server.triggers import object_triggers
    from headrace.storage import ObjectStore

    application = application or load_app(settings)
    ledger = Ledger(settings.ledger_url, sync=settings.ledger_sync)
    try:
        coordinators = []
        for c in ledger.live_coordinators(stale_after=settings.lease_seconds):
            info = json.loads(c.get("info") or "{}")
            coordinators.append(
                {
                    "id": c["id"],
                    "host": c["host"],
                    "pid": c["pid"],
                    "started_at": c["started_at"],
                    "heartbeat_at": c["heartbeat_at"],
                    "executor": info.get("executor"),
                    "metrics": info.get("metrics"),
                    "serve": info.get("serve") or None,
                    "s3": info.get("s3"),
                }
            )
        since = time.time() - ERRORS_SINCE
        dead = [
            {
                "invocation_id": r["id"],
                "function": r["function"],
                "at": r["finished_at"] or r["created_at"],
                "error": r["error"],
            }
            for r in ledger.list_invocations(status="dead", limit=errors)
            if (r["finished_at"] or r["created_at"]) >= since
        ]
        with ledger.reader.connect() as conn:
            health = list_health(conn)
            failed = [
                {
                    "execution": r["name"],
                    "state_machine": r["state_machine"],
                    "status": r["status"],
                    "at": r["stopped_at"],
                    "error": " ".join(x for x in (r["error"], r.get("cause")) if x),
                }
                for status in ("FAILED", "TIMED_OUT")
                for r in store.list_executions(conn, status=status, limit=errors)
                if (r["stopped_at"] or 0) >= since
            ]
    finally:
        ledger.close()
    objects = ObjectStore(settings.storage_url)
    watched = set(application.buckets)
    buckets = [
        {"bucket": b, "watched": b in watched}
        for b in sorted(set(objects.list_buckets()) | watched)
    ]
    return {
        "project": str(settings.project_dir),
        "app": settings.app,
        "coordinators": coordinators,
        "settings": describe_settings(settings.project_dir),
        "buckets": buckets,
        "triggers": object_triggers(application),
        "sources": [
            {k: h.get(k) for k in ("component", "status", "failures", "last_error", "updated_at")}
            for h in health
        ],
        "errors": {"invocations": dead, "executions": failed},
    }


def status(as_json: cli_common.Json = False) -> None:
    """Coordinators (with their metrics and S3 endpoints), settings, buckets and triggers,
    sources and their health, recent errors."""
    from headrace.app import App, load_app
    from headrace.errors import ConfigError

    settings = cli_common.settings()
    app_error = None
    try:
        application = load_app(settings)
    except ConfigError as exc:  # the app does not import: show the rest, then the error
        application, app_error = App(), exc
    data = project_status(settings, application)
    if app_error is not None:
        data["app_error"] = str(app_error)
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    else:
        _show(data)
    if app_error is not None:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(app_error))}", soft_wrap=True)
        raise typer.Exit(2)


def _show(data: dict[str, Any]) -> None:
    console.print(f"project {escape(data['project'])} · app {escape(str(data['app']))}")
    if data["coordinators"]:
        table = cli_common.table(
            "coordinator",
            "pid",
            "host",
            "started",
            "executor",
            "metrics",
            "routes",
            "s3",
            title="up",
        )
        for c in data["coordinators"]:
            table.add_row(
                escape(c["id"]),
                str(c["pid"]),
                escape(c["host"]),
                cli_common.when(c["started_at"]),
                escape(str(c["executor"])),
                escape(str(c["metrics"] or "-")),
                escape(str(c["serve"] or "-")),
                escape(str(c.get("s3") or "-")),
            )
        console.print(table)
        if len(data["coordinators"]) > 1:
            console.print(f"[yellow]{len(data['coordinators'])} coordinators share this ledger[/]")
    else:
        console.print("[yellow]no coordinator is running[/] (start one with `headrace up`)")
    table = cli_common.table("setting", "value", "from", title="settings")
    for s in data["settings"]:
        table.add_row(s["name"], escape(s["value"]), escape(s["origin"]))
    console.print(table)
    table = cli_common.table("bucket", "triggers", title="buckets", wrap=("triggers",))
    for b in data["buckets"]:
        targets = [t["target"] for t in data["triggers"] if b["bucket"] in t["buckets"]]
        table.add_row(
            escape(b["bucket"]),
            escape(", ".join(targets)) if targets else "[yellow]none: nothing runs here[/]",
        )
    console.print(table)
    if data["sources"]:
        table = cli_common.table(
            "component", "status", "failures", "last error", title="stream health",
            wrap=("last error",),
        )  # fmt: skip
        for h in data["sources"]:
            ok = h["status"] == "ok"
            table.add_row(
                escape(h["component"]),
                "[green]ok[/]" if ok else "[red]failing[/]",
                str(h["failures"]),
                escape(h["last_error"] or ""),
            )
        console.print(table)
    errors = data["errors"]["invocations"] + data["errors"]["executions"]
    if errors:
        table = cli_common.table(
            "what", "when", "error", title="errors of the last hour", wrap=("error",)
        )
        for e in data["errors"]["invocations"]:
            table.add_row(
                escape(f"{e['function']} {e['invocation_id']}"),
                cli_common.when(e["at"]),
                escape(e["error"] or ""),
            )
        for e in data["errors"]["executions"]:
            table.add_row(
                escape(f"{e['state_machine']} {e['execution']} {e['status']}"),
                cli_common.when(e["at"]),
                escape(e["error"]),
            )
        console.print(table)
    else:
        console.print("no errors in the last hour")


def settings_cmd(as_json: cli_common.Json = False) -> None:
    """Every setting: its environment variable, its value and where the value comes from."""
    from headrace.config import describe_settings

    rows = describe_settings(cli_common.check_project())
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = cli_common.table("setting", "environment variable", "value", "from")
    for r in rows:
        table.add_row(r["name"], r["env"] or "-", escape(r["value"]), escape(r["origin"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command("settings")(settings_cmd)
