"""`headrace streams …`, `headrace query` and `headrace features …`: streams and the store."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headrace import cli_common
from headrace.cli_common import Json, group_project
from headrace.jsontext import JsonInputError, parse_json

streams_app = typer.Typer(
    help="Stream logs and pipelines: list, stats, read, flush, reset.", no_args_is_help=True
)
features_app = typer.Typer(help="Feature groups: online reads, compaction.", no_args_is_help=True)
console = Console()
streams_app.callback()(group_project)
features_app.callback()(group_project)


def _context():  # type: ignore[no-untyped-def]
    from headrace.app import load_app

    settings = cli_common.settings()
    application = load_app(settings)
    application.check_streams()
    return settings, application, cli_common.ledger(settings)


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def health_table(rows: list[Any]) -> Table:
    """Sources and stream threads: ok or failing, restarts, records sent to error streams.
    `rows` are dicts (from the ledger) or objects with the same attributes."""
    table = Table(title="stream sources and threads", expand=False)
    for col in ("component", "status", "failures", "restarts", "rejected", "last error"):
        table.add_column(
            col, justify="left" if col in ("component", "status", "last error") else "right"
        )
    for row in rows:
        get = row.get if isinstance(row, dict) else lambda key, r=row: getattr(r, key)
        ok = get("status") == "ok"
        rejected = get("rejected") or 0
        table.add_row(
            escape(get("component")),
            "[green]ok[/]" if ok else "[red]failing[/]",
            str(get("failures") or 0),
            str(get("restarts") or 0),
            f"[yellow]{rejected:,}[/]" if rejected else "0",
            escape((get("last_error") or "")[:200]),
        )
    return table


# -- streams ----------------------------------------------------------------------------------


@streams_app.command("list")
def list_streams(as_json: Json = False) -> None:
    """Declared streams: partitions, retained offsets and consumer positions."""
    from headrace.ledger.checkpoints import list_checkpoints

    settings, application, ledger = _context()
    with ledger.reader.connect() as conn:
        checkpoints = list_checkpoints(conn)
    rows = []
    for name, spec in sorted(application.streams.items()):
        stream = spec.open(settings.streams_url)
        try:
            for p in range(spec.partitions):
                readers = {
                    c["pipeline"]: c["offset"]
                    for c in checkpoints
                    if c["partition"] == p
                    and application.pipelines.get(c["pipeline"]) is not None
                    and application.pipelines[c["pipeline"]].stream == name
                }
                rows.append(
                    {
                        "stream": name,
                        "partition": p,
                        "start": stream.start_offset(p),
                        "end": stream.end_offset(p),
                        "pipelines": readers,
                    }
                )
        finally:
            stream.close()
    if as_json:
        _print_json(rows)
        return
    table = cli_common.table(
        "stream",
        "partition",
        "start",
        "end",
        "pipelines (next offset)",
        wrap=("pipelines (next offset)",),
    )
    for r in rows:
        readers = ", ".join(f"{k}@{v}" for k, v in r["pipelines"].items()) or "-"
        table.add_row(
            escape(r["stream"]),
            str(r["partition"]),
            str(r["start"]),
            str(r["end"]),
            escape(readers),
        )
    console.print(table)


def _log_ends(settings: Any, application: Any, pipelines: set[str]) -> dict[tuple[str, int], int]:
    """(pipeline, partition) -> the end offset of the partition of the stream it reads."""
    ends: dict[tuple[str, int], int] = {}
    for name in pipelines:
        pipe = application.pipelines.get(name)
        if pipe is None or pipe.stream not in application.streams:
            continue  # a pipeline no longer declared: its checkpoint's own end stands
        try:
            stream = application.streams[pipe.stream].open(settings.streams_url)
        except Exception:  # an unreachable log: the checkpoint's end is the best known
            continue
        try:
            for partition in range(stream.partitions):
                ends[(name, partition)] = stream.end_offset(partition)
        finally:
            stream.close()
    return ends


@streams_app.command()
def stats(
    pipeline: Annotated[str | None, typer.Argument(help="One pipeline (default: all).")] = None,
    minutes: Annotated[int, typer.Option(help="How many recent minutes to show.")] = 10,
    as_json: Json = False,
) -> None:
    """Records and bytes in/out of every stage per minute, lag, watermark and late records;
    which sources and stream threads are failing, and records sent to error streams."""
    from headrace.ledger.checkpoints import list_checkpoints, list_health, read_stats

    settings, application, ledger = _context()
    since = int(time.time() // 60) - minutes + 1
    with ledger.reader.connect() as conn:
        per_minute = read_stats(conn, pipeline, since)
        checkpoints = list_checkpoints(conn, pipeline)
        health = list_health(conn) if pipeline is None else []
    ends = _log_ends(settings, application, {c["pipeline"] for c in checkpoints})
    positions = [
        {
            "pipeline": c["pipeline"],
            "partition": c["partition"],
            "offset": c["offset"],
            # the log's end now: a pipeline failing every batch commits no newer end of its own
            "lag": max(
                0, ends.get((c["pipeline"], c["partition"]), c["log_end"] or 0) - c["offset"]
            ),
            "watermark": c["watermark"],
            "records": c["records"],
            "late": c["late"],
            "batches": c["seq"],
            "updated_at": c["updated_at"],
            "failures": c["failures"],
            "last_error": c["last_error"],
        }
        for c in checkpoints
    ]
    if as_json:
        _print_json({"positions": positions, "per_minute": per_minute, "health": health})
        return
    if health:
        console.print(health_table(health))
    table = cli_common.table(
        "pipeline", "part.", "offset", "lag", "watermark", "records", "late", "batches"
    )
    for p in positions:
        table.add_row(
            escape(p["pipeline"]),
            str(p["partition"]),
            str(p["offset"]),
            str(p["lag"]),
            cli_common.when(p["watermark"]),
            f"{p['records']:,}",
            f"{p['late']:,}",
            str(p["batches"]),
        )
    console.print(table)
    for p in positions:
        if p["last_error"]:
            console.print(
                f"[red]{escape(p['pipeline'])}[{p['partition']}] failing "
                f"({p['failures']} tries), "
                f"retried from offset {p['offset']}:[/] {escape(p['last_error'])}"
            )
    flow = cli_common.table(
        "minute", "pipeline", "stage", "records in", "records out", "bytes in", "bytes out", "late"
    )
    for r in per_minute:
        flow.add_row(
            cli_common.when(r["minute"] * 60)[:-3],
            escape(r["pipeline"]),
            escape(r["stage"]),
            f"{r['records_in']:,}",
            f"{r['records_out']:,}",
            f"{r['bytes_in']:,}",
            f"{r['bytes_out']:,}",
            f"{r['late']:,}",
        )
    console.print(flow)


@streams_app.command()
def read(
    stream: Annotated[str, typer.Argument(help="Stream name, e.g. a pipeline's NAME-late.")],
    partition: Annotated[int, typer.Option(help="Partition.")] = 0,
    offset: Annotated[
        int | None, typer.Option(help="First offset (default: last --limit).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many records.")] = 20,
    as_json: Json = False,
) -> None:
    """Print records of a stream (late records of a window live in PIPELINE-late)."""

    from headrace.streams.rows import python_rows  # pyarrow: only when records are printed

    settings, application, _ = _context()
    spec = application.streams.get(stream)
    if spec is None:
        known = ", ".join(sorted(application.streams)) or "none"
        raise typer.BadParameter(f"stream {stream!r} is not declared (known: {known})")
    log = spec.open(settings.streams_url)
    try:
        end = log.end_offset(partition)
        start = max(log.start_offset(partition), end - limit if offset is None else offset)
        records = python_rows(log.read(partition, start, limit)) if end > start else []
    finally:
        log.close()
    if as_json:
        _print_json(records)
        return
    for record in records:
        console.print(escape(json.dumps(record, default=str)))
    console.print(f"[dim]{len(records)} records from offset {start} (end {end})[/]")


@streams_app.command()
def flush(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for a running coordinator's flush.")
    ] = 600.0,
    as_json: Json = False,
) -> None:
    """End of input: process every record the pipeline's stream holds, then close its open
    windows (a backfill's final answer). A running coordinator does it between two of its
    batches; without one it runs here. Records that arrive later for a closed window are late."""
    from headrace.app import load_app
    from headrace.server.pipeline_flush import flush_pipeline

    settings = cli_common.settings()
    application = load_app(settings)
    if pipeline not in application.pipelines:
        known = ", ".join(sorted(application.pipelines)) or "none"
        raise typer.BadParameter(f"pipeline {pipeline!r} is not defined (known: {known})")
    with console.status(escape(f"flushing {pipeline}")):
        result = flush_pipeline(pipeline, app=application, settings=settings, timeout=timeout)
    if as_json:
        _print_json(result)
        return
    offsets = ", ".join(f"{p['partition']}@{p['offset']}" for p in result["partitions"])
    console.print(
        f"pipeline {pipeline} flushed by {result['by']}: read {result['records']:,} records "
        f"(now at {offsets or '-'}), closed {result['windows']:,} windows, "
        f"{result['late']:,} late",
        markup=False,
        soft_wrap=True,  # one line, whatever the terminal's width
    )


@streams_app.command()
def reset(pipeline: Annotated[str, typer.Argument(help="Pipeline name.")]) -> None:
    """Forget a pipeline's offsets and state: it starts over at the log's retention start.
    Refused while a coordinator (or a flush) runs the pipeline: stop it first."""
    from headrace.errors import StreamError
    from headrace.ledger.checkpoints import reset_pipeline
    from headrace.ledger.pipeline_leases import acquire, ensure_tables, new_owner, release

    _, application, ledger = _context()
    if pipeline not in application.pipelines:
        raise typer.BadParameter(f"pipeline {pipeline!r} is not defined")
    ensure_tables(ledger)
    owner = new_owner()
    with ledger.begin() as conn:  # under the pipeline's lease: no runner of it is running
        running = acquire(conn, pipeline, owner, ttl=60.0, purpose="reset")
        if running is not None:
            raise StreamError(
                f"pipeline {pipeline!r}",
                f"is being run by {running.describe()}",
                "stop it first (a reset under a running pipeline would be overwritten)",
            )
        reset_pipeline(conn, pipeline)
        release(conn, [pipeline], owner)
    console.print(f"pipeline {pipeline} reset", markup=False)


# -- features and SQL --------------------------------------------------------------------------


def _store(settings: Any, application: Any) -> Any:
    from headrace.features.store import open_app_store

    return open_app_store(settings, application)


@features_app.command("get")
def features_get(
    group: Annotated[str, typer.Argument(help="Feature group.")],
    keys: Annotated[list[str], typer.Argument(help="Entity key values (JSON or text).")],
) -> None:
    """Online read: the newest features of each entity."""
    parsed = []
    for key in keys:
        try:
            parsed.append(parse_json(key))
        except JsonInputError as exc:
            if exc.syntax is None:  # JSON, but past a limit: not meant as text either
                shown = key if len(key) <= 40 else key[:40] + "…"
                raise typer.BadParameter(f"entity key {shown!r} {exc}") from None
            parsed.append(key)
    settings, application, _ = _context()
    store = _store(settings, application)
    _print_json(store.get_online(group, parsed))


@features_app.command("compact")
def features_compact(group: Annotated[str, typer.Argument(help="Feature group.")]) -> None:
    """Compact the group's offline table now and vacuum old files."""
    settings, application, _ = _context()
    with console.status(escape(f"compacting {group}")):
        report = _store(settings, application).compact(group)
    _print_json(report if isinstance(report, dict) else getattr(report, "__dict__", str(report)))


def query(
    sql: Annotated[str, typer.Argument(help="SQL over feature groups and archives (DuckDB).")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to print at most.")] = 50,
    as_json: Json = False,
) -> None:
    """SQL over the offline feature tables (a view per group) and stream archives."""
    from headrace.streams.rows import python_rows

    settings, application, _ = _context()
    result = _store(settings, application).query(sql)
    rows = python_rows(result.slice(0, limit))
    if as_json:
        _print_json(rows)
        return
    table = Table(*(escape(name) for name in result.column_names))
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    console.print(table)
    console.print(f"[dim]{cli_common.count(result.num_rows, 'row')}[/]")
