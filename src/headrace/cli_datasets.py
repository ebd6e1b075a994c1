"""`headrace datasets`: the dataset runs of the project's scripts and jobs, and one run's
stages."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from headrace import cli_common
from headrace.cli_common import Json

#: A stage that ends in a write (its rows out are the files it wrote).
WRITE_STAGE = re.compile(r"Write(Parquet|CSV|Json)$")

console = Console()
err = Console(stderr=True)


def _progress(run: dict[str, Any]) -> str:
    total = run["tasks_total"]
    blocks = f"{run['tasks_done']}/{total}" if total is not None else str(run["tasks_done"])
    return f"{blocks} blocks, {cli_common.count(run['rows_out'], 'row')}"


def _stage_rows(stage: dict[str, Any]) -> str:
    """A write stage's output is one row per file it wrote."""
    if WRITE_STAGE.search(stage["name"]):
        return cli_common.count(stage["rows"], "file")
    return f"{stage['rows']:,}"


def _took(run: dict[str, Any]) -> str:
    return f"{run['finished_at'] - run['started_at']:.2f}s" if run["finished_at"] else "-"


def datasets(
    run_id: Annotated[
        str | None,
        typer.Argument(help="One run's id (or a unique prefix): its steps and stages."),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: RUNNING, SUCCEEDED, FAILED, STOPPED or LOST."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Most recent runs to show.")] = 50,
    as_json: Json = False,
) -> None:
    """List dataset runs (headrace.data) of the project's scripts and jobs, newest first."""
    from headrace.ledger import dataset_runs

    if status is not None and status not in dataset_runs.STATUSES:
        raise typer.BadParameter(
            f"{status!r} is not a status: use one of {', '.join(dataset_runs.STATUSES)}",
            param_hint="--status",
        )
    ledger = cli_common.ledger()
    dataset_runs.ensure_tables(ledger.engine)
    with ledger.reader.connect() as conn:
        if run_id is not None:
            run = dataset_runs.get(conn, run_id)
            rows = [] if run is None else [run]
        else:
            rows = dataset_runs.page(conn, status=status, limit=limit)
    if run_id is not None and not rows:
        err.print(f"no dataset run {escape(run_id)!r} (`headrace datasets` lists them)")
        raise typer.Exit(1)
    if as_json:
        out: Any = rows[0] if run_id is not None else rows
        sys.stdout.write(json.dumps(out, default=str, indent=2) + "\n")
        return
    if run_id is not None:
        _describe(rows[0])
        return
    table = cli_common.table(
        "id", "run", "status", "progress", "started", "took", "error",
        wrap=("run", "progress", "error"),
    )  # fmt: skip
    for r in rows:
        job = f" (job {r['job_id'][:8]})" if r["job_id"] else ""
        table.add_row(
            r["id"][:8],
            f"{escape(r['name'])} {r['action']}{job}",
            r["status"],
            _progress(r),
            cli_common.when(r["started_at"]),
            _took(r),
            escape((r["error"] or "").split("\n")[0]),
        )
    console.print(table)


def _describe(run: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(run['name'])}[/bold] {run['action']} · {run['status']}")
    console.print(" → ".join(escape(s) for s in run["steps"]), highlight=False)
    console.print(
        f"id {run['id']} · engine {run['engine']} · job {run['job_id'] or '-'} · "
        f"started {cli_common.when(run['started_at'])} · took {_took(run)}",
        highlight=False,
    )
    console.print(f"progress: {_progress(run)}; output: {escape(run['output'] or '-')}")
    table = cli_common.table("stage", "tasks", "rows out", "seconds", wrap=("stage",))
    for s in run["stages"]:
        tasks = f"{s['tasks']}/{s['total']}" if s["total"] is not None else str(s["tasks"])
        name = s["name"] or "(in the caller)"
        table.add_row(escape(name), tasks, _stage_rows(s), str(s["seconds"]))
    console.print(table)
    if run["error"]:
        console.print(escape(run["error"]), style="red", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("datasets")(datasets)
