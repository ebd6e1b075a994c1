"""The `headrace` command line."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from headrace import cli_common, cli_streams
from headrace.cli_common import Json, Project
from headrace.cli_datasets import register as register_datasets
from headrace.cli_jobs import jobs_app
from headrace.cli_models import models_app
from headrace.cli_serve import register as register_serving
from headrace.cli_status import register as register_status
from headrace.cli_storage import register as register_storage
from headrace.errors import HeadraceError

app = typer.Typer(help="headrace: event-driven data and ML pipelines.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter list: invocations that failed every attempt.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(jobs_app, name="jobs", help="Batch jobs: submit, run, list, describe, logs.")
app.add_typer(models_app, name="models", help="The model registry: push, list, show, alias.")
app.add_typer(cli_streams.streams_app, name="streams", help="Stream logs and pipelines.")
app.add_typer(cli_streams.features_app, name="features", help="Feature groups: get, compact.")
console = Console()
err = Console(stderr=True)
register_datasets(app)
register_serving(app)
register_status(app)
register_storage(app)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"headrace {version('headrace')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    project: Project = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    cli_common.state["project"] = project


# -- init -------------------------------------------------------------------------------------

_TOML = """# headrace project settings; HEADRACE_* environment variables override them.
app = "pipeline:app"
# home = ".headrace"                       # ledger, buckets, logs, scratch
# ledger = "postgresql://127.0.0.1/headrace" # default: SQLite in the home folder
# storage = "s3://my-bucket/headrace"      # default: folders in the home folder
# executor = "local"                       # or "ray", "ray://head:10001"
# workers = 2                              # default: one per core
"""

_PIPELINE = '''"""A headrace app: functions and the events that trigger them."""

from headrace import App
from headrace.events import parse_s3_object

app = App("{name}")


# output_bucket: where it writes (`up` does not warn that nothing watches it)
@app.on_object_created(bucket="landing", suffix=".txt", output_bucket="results")
@app.function(timeout=30, retries=2)
def count_words(event, context):
    """Count the words of every .txt file that lands in the `landing` bucket."""
    obj = parse_s3_object(event)  # bucket and decoded key; a clear error if malformed
    key = obj.key
    text = context.storage.bucket(obj.bucket).get(key).decode()
    words = len(text.split())
    context.storage.bucket("results").put(key + ".json", str(words).encode())
    print(f"{{key}}: {{words}} words")
    return {{"key": key, "words": words}}
'''


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
) -> None:
    """Create a project: headrace.toml and an example pipeline.py."""
    if folder.exists() and not folder.is_dir():
        raise typer.BadParameter(f"{folder} is a file, not a folder: give a new or existing folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, no permission, read-only file system …
        raise typer.BadParameter(f"cannot create the folder {folder}: {exc.strerror}") from None
    for name, text in (
        ("headrace.toml", _TOML),
        ("pipeline.py", _PIPELINE.format(name=folder.resolve().name)),
    ):
        path = folder / name
        if path.exists():
            err.print(f"[yellow]kept[/] {escape(str(path))} (already there)")
            continue
        path.write_text(text)
        console.print(f"[green]created[/] {escape(str(path))}")
    console.print(
        "Next: [bold]headrace up[/] in that folder, then drop a .txt file into "
        "[bold].headrace/buckets/landing/[/]."
    )


# -- up ---------------------------------------------------------------------------------------


class _Summary:
    def __init__(self, coordinator: Any) -> None:
        from headrace.server.triggers import sources_of_streams

        self.c = coordinator
        self._feeds = sources_of_streams(coordinator.app)

    def __rich__(self) -> Table:  # the coordinator's table, and its pipelines' below it
        s = self.c.stats
        table = Table(title=f"headrace coordinator · {self.c.executor.name} executor", expand=False)
        for col in ("up", "objects", "in flight", "succeeded", "retried", "dead-lettered"):
            table.add_column(col, justify="right")
        table.add_row(
            f"{time.time() - s.started_at:.0f}s",
            str(s.objects),
            str(s.in_flight),
            f"[green]{s.succeeded}[/]",
            f"[yellow]{s.retried}[/]",
            f"[red]{s.dead}[/]",
        )
        caption = [escape(f"watching [{', '.join(self.c.app.buckets) or 'none'}]")]
        if self.c.metrics_url:
            caption.append(escape(f"metrics {self.c.metrics_url}"))
        if self.c.serve_url:
            caption.append(escape(f"routes {self.c.serve_url}"))
        if self.c.s3_url:
            caption.append(escape(f"s3 {self.c.s3_url}"))
        if s.last_error:
            caption.append(escape(f"last error: {s.last_error}"))
        table.caption = " · ".join(caption)
        runners = self.c.streams.runners
        health = self.c.streams.health.snapshot()
        if not runners and not health:
            return table
        grid = Table.grid(padding=(0, 0))
        grid.add_row(table)
        if health:
            grid.add_row(cli_streams.health_table(health))
        if not runners:
            return grid
        streams = Table(title="stream pipelines", expand=False)
        for col in ("pipeline", "records", "lag", "late", "watermark", "status"):
            streams.add_column(col, justify="left" if col in ("pipeline", "status") else "right")
        failing = {h.component.removeprefix("source:") for h in health if not h.ok}
        for r in runners:
            st = r.status
            starved = [s for s in self._feeds.get(r.pipeline.stream, []) if s in failing]
            if st.last_error:
                state = f"[red]{escape(st.last_error)}[/]"
            elif starved:  # it works, but what it reads gets nothing new
                state = f"[yellow]ok; source {escape(', '.join(starved))} failing[/]"
            else:
                state = "[green]ok[/]"
            streams.add_row(
                escape(f"{r.pipeline.name}[{r.partition}]"),
                f"{st.records:,}",
                f"{st.lag:,}",
                f"[yellow]{st.late:,}[/]" if st.late else "0",
                cli_common.when(st.watermark),
                state,
            )
        grid.add_row(streams)
        return grid


@app.command()
def up(
    drain_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to let running attempts finish on SIGTERM "
            "(default: the longest function timeout)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live summary.")] = False,
    reload: Annotated[
        bool,
        typer.Option("--reload", help="Restart (workers and app) when the project's code changes."),
    ] = False,
) -> None:
    """Run the coordinator: watch buckets, trigger functions, record results. Ctrl-C drains."""
    # A shell starts `headrace up &` from a script with SIGINT ignored, so that Ctrl-C at the
    # terminal is not for it; Python keeps that, and so does `up`, from start-up to the end:
    # such a coordinator stops on SIGTERM (`kill`), as a daemon does.
    sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if reload:
        from headrace.cli_reload import supervise

        settings = cli_common.settings()
        if not settings.app:
            _refuse_no_app(settings)
        args = ["--quiet"] if quiet else []
        if drain_timeout is not None:
            args += ["--drain-timeout", str(drain_timeout)]
        raise typer.Exit(supervise(settings, args))
    # Ctrl-C while the app loads: nothing runs yet, so stop at once (no traceback, no "Aborted.")
    try:
        import logging

        from rich.logging import RichHandler

        from headrace.app import load_app
        from headrace.server.coordinator import Coordinator

        live = console.is_terminal and not quiet
        # log through the live summary's console, so the two never overwrite each other
        logging.basicConfig(
            level=logging.INFO,
            format="%(name)s: %(message)s",
            handlers=[RichHandler(console=console if live else err)],
        )
        settings = cli_common.settings()
        if not settings.app:
            _refuse_no_app(settings)
        application = load_app(settings)
        coordinator = Coordinator(settings, application)
        from headrace.cli_reload import watch_parent

        watch_parent()
    except KeyboardInterrupt:
        _stopped_during_start_up()
    interrupted_start_up = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and not coordinator.ready.is_set():
            interrupted_start_up.set()
            if not coordinator.stopping:
                err.print("SIGINT during start-up: stopping as soon as it is safe")
                coordinator.stop()
                return
        if signum == signal.SIGINT and coordinator.stopping:
            err.print(
                "SIGINT again: stopping now; running invocations are abandoned and run again "
                "by the next coordinator"
            )
            coordinator.stop(force=True)
            return
        if sigint_ignored:
            then = "SIGKILL stops now"
        elif signum == signal.SIGINT:
            then = "Ctrl-C again to stop now"
        else:
            then = "SIGINT (Ctrl-C) stops now"
        err.print(
            f"{signal.Signals(signum).name}: draining, running invocations finish first ({then})"
        )
        coordinator.stop()

    signal.signal(signal.SIGTERM, _stop)
    if not sigint_ignored:
        signal.signal(signal.SIGINT, _stop)
    if not live:
        threading.Thread(target=_announce, args=(coordinator, settings), daemon=True).start()
    if live:
        with Live(_Summary(coordinator), console=console, refresh_per_second=4):
            coordinator.run(drain_timeout)
    else:
        reporter = threading.Thread(target=_report, args=(coordinator,), daemon=True)
        reporter.start()
        coordinator.run(drain_timeout)
    if interrupted_start_up.is_set():
        _stopped_during_start_up()
    s = coordinator.stats
    objects = cli_common.count(s.objects, "object")
    console.print(
        f"stopped after {time.time() - s.started_at:.0f}s: {objects}, "
        f"{s.succeeded} succeeded, {s.retried} retried, {s.dead} dead-lettered"
    )


def _refuse_no_app(settings: Any) -> NoReturn:
    from headrace.config import CONFIG_FILE
    from headrace.errors import ConfigError

    config = settings.project_dir / CONFIG_FILE
    raise ConfigError(
        str(config) if config.exists() else str(settings.project_dir),
        "sets no app" if config.exists() else f"has no {CONFIG_FILE} and $HEADRACE_APP is not set",
        'set app = "module:app" in headrace.toml; `headrace init` creates a project',
    )


def _stopped_during_start_up() -> NoReturn:
    """Ctrl-C before the coordinator was ready: say so, and exit as an interrupted command
    does (128 + SIGINT), so scripts do not take it for a clean run."""
    err.print("stopped: interrupted during start-up")
    raise typer.Exit(128 + signal.SIGINT)


def _announce(coordinator: Any, settings: Any) -> None:
    coordinator.ready.wait()
    buckets = ", ".join(coordinator.app.buckets) or "none"
    err.print(
        f"headrace up: {_count_functions(coordinator.app)}, watching [{buckets}] in "
        f"{settings.storage_url}; ledger {settings.ledger_url}; metrics {coordinator.metrics_url}"
        + (f"; routes {coordinator.serve_url}" if coordinator.serve_url else "")
        + f"; s3 {coordinator.s3_url or 'off'}",
        markup=False,
        soft_wrap=True,  # one line, whatever the width: scripts and grep read it
    )


def _count_functions(application: Any) -> str:
    """ "2 functions", or "1 function (+3 built-in)": the user's functions, then the built-in
    ones (DynamoDB, SNS, Batch tasks, feature compaction) that register_services adds."""
    from headrace.features.jobs import compact_handler
    from headrace.workflows.services import HANDLERS

    builtin_handlers = {*HANDLERS.values(), compact_handler}
    specs = application.functions.values()
    builtin = sum(1 for spec in specs if spec.handler in builtin_handlers)
    own = len(application.functions) - builtin
    text = f"{own} function{'' if own == 1 else 's'}"
    return f"{text} (+{builtin} built-in)" if builtin else text


def _report(coordinator: Any) -> None:
    last = None
    while True:
        time.sleep(2.0)
        s = coordinator.stats
        failing = [
            f"{h.component} failing: {h.last_error}"
            for h in coordinator.streams.health.snapshot()
            if not h.ok
        ]
        line = (s.objects, s.in_flight, s.succeeded, s.retried, s.dead, *failing)
        if line != last:
            err.print(
                f"objects={s.objects} in_flight={s.in_flight} succeeded={s.succeeded} "
                f"retried={s.retried} dead={s.dead}"
            )
            for text in failing:
                err.print(f"[red]{escape(text)}[/]")
            last = line


# -- put --------------------------------------------------------------------------------------


@app.command()
def put(
    sources: Annotated[list[str], typer.Argument(help="Local files, then BUCKET/KEY last.")],
) -> None:
    """Upload local files atomically: `put FILE BUCKET/KEY` or `put FILE... BUCKET/PREFIX/`."""
    from headrace.storage import ObjectStore

    if len(sources) < 2:
        raise typer.BadParameter("give at least one local file and a BUCKET/KEY destination")
    *names, dest = sources
    files = [Path(n) for n in names]
    bucket_name, _, key = dest.partition("/")
    many = len(files) > 1 or dest.endswith("/") or not key
    for f in files:
        if not f.is_file():
            raise typer.BadParameter(f"{f} is not a file")
    settings = cli_common.settings()
    store = ObjectStore(settings.storage_url)
    bucket = store.bucket(bucket_name, create=True)
    keys = []
    # on a terminal only: elsewhere a transient bar still ends in a blank line on stderr
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("uploading", total=len(files))
        for f in files:
            target = (key.rstrip("/") + "/" + f.name).lstrip("/") if many else key
            info = bucket.put_file(target, f)
            console.print(
                f"{bucket_name}/{info.key}  {info.size} bytes  etag {info.etag}", markup=False
            )
            keys.append(info.key)
            progress.advance(task)
    from headrace.cli_storage import warn_if_nothing_listens

    warn_if_nothing_listens(settings, bucket_name, keys)


# -- invoke -----------------------------------------------------------------------------------


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Function name.")],
    payload: Annotated[str, typer.Option(help="The event, as JSON.")] = "{}",
    event_file: Annotated[
        Path | None,
        typer.Option(
            "--event",
            "-e",
            help="Run once here with the event in this JSON file ('-' for stdin), like "
            "`sam local invoke`: no coordinator, no ledger.",
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--async", help="Queue it, print its id and return.")
    ] = False,
    wait_seconds: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the result before giving up.")
    ] = 600,
) -> None:
    """Invoke a function with a JSON event and print what it returns. Exits 1 if it failed,
    2 if still running after --wait, 3 if no coordinator is running to run it (it stays queued)."""
    from headrace.app import load_app
    from headrace.ledger import NewInvocation

    settings = cli_common.settings()
    if event_file is not None:
        from headrace.cli_serve import invoke_here

        application = load_app(settings)
        invoke_here(application.spec(name), event_file, settings, routes=application.routes)
        return
    event = cli_common.json_option(payload, "--payload")
    spec = load_app(settings).spec(name)
    ledger = cli_common.ledger(settings)
    (inv_id,) = ledger.enqueue(
        [NewInvocation(spec.name, event, max_attempts=spec.max_attempts, source="invoke")]
    )
    if no_wait:
        console.print(inv_id)
        return
    if not ledger.live_coordinators(stale_after=settings.lease_seconds):
        # waiting would be silent until --wait runs out: say so and return at once
        err.print(
            f"queued {inv_id}, but no coordinator is running: it runs once `headrace up` starts "
            f"in {settings.project_dir} (see it with `headrace invocations`)",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
    deadline = time.time() + wait_seconds
    next_check = time.time() + settings.lease_seconds
    with console.status("") as waiting:
        while time.time() < deadline:
            row = ledger.get_invocation(inv_id)
            if row and row["status"] in ("succeeded", "dead"):
                break
            if time.time() >= next_check:  # the coordinator may have stopped meanwhile
                next_check = time.time() + settings.lease_seconds
                if not ledger.live_coordinators(stale_after=settings.lease_seconds):
                    err.print(
                        f"the coordinator stopped: {inv_id} stays queued until `headrace up` "
                        "runs again",
                        markup=False,
                        soft_wrap=True,
                    )
                    raise typer.Exit(3)
            waiting.update(
                escape(f"waiting for {name} ({inv_id}): {deadline - time.time():.0f} s left")
            )
            time.sleep(0.02)
    row = ledger.get_invocation(inv_id) or {}
    if row.get("status") == "succeeded":
        console.print_json(row["result"] or "null")
        return
    if row.get("status") == "dead":
        err.print(
            f"[red]{escape(name)} failed[/] after {cli_common.count(row['attempts'], 'attempt')}: "
            f"{escape(str(row['error']))}",
            soft_wrap=True,  # one line whatever the width, so scripts and grep see it whole
        )
        raise typer.Exit(1)
    err.print(f"still {row.get('status')} after {wait_seconds:g}s: {inv_id}", markup=False)
    raise typer.Exit(2)


# -- invocations, logs ------------------------------------------------------------------------

#: What the ledger records (headrace.ledger.schema): invocations, and executions as AWS names them.
INVOCATION_STATUSES = ("pending", "running", "succeeded", "dead")
EXECUTION_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def _check_status(status: str | None, known: tuple[str, ...]) -> None:
    if status is not None and status not in known:
        raise typer.BadParameter(f"no status {status!r}: use one of {', '.join(known)}")


@app.command()
def invocations(
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only this function's (default: all).")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only this status: one of {', '.join(INVOCATION_STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent invocations to show.")] = 50,
    check_outputs: Annotated[
        bool,
        typer.Option(
            "--check-outputs",
            help="Flag succeeded invocations that wrote nothing to their trigger's output_bucket.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """List recent invocations, newest first."""
    _check_status(status, INVOCATION_STATUSES)
    ledger = cli_common.ledger()
    rows = ledger.list_invocations(function=function, status=status, limit=limit)
    if check_outputs:
        _check_outputs(ledger, rows)
    if as_json:
        for row in rows:
            row["object"] = cli_common.triggered_by(row)
            for k in ("payload", "result"):
                if row.get(k):
                    row[k] = json.loads(row[k])
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    columns = ["id", "function", "status", "attempts", "created", "took", "object", "error"]
    table = cli_common.table(
        *columns, *(["outputs"] if check_outputs else []),
        wrap=("error",),
    )  # fmt: skip
    colour = {"succeeded": "green", "dead": "red", "running": "cyan", "pending": "yellow"}
    shown = {True: "written", False: "[yellow]succeeded but wrote nothing[/]", None: "-"}
    for r in rows:
        # the last attempt's duration: not the time queued, nor spent in the dead-letter list
        ms = r["last_attempt_ms"]
        took = f"{ms / 1000:.2f}s" if r["finished_at"] and ms is not None else "-"
        cells = [
            r["id"][:8],
            escape(r["function"]),
            f"[{colour.get(r['status'], 'white')}]{r['status']}[/]",
            f"{r['attempts']}/{r['max_attempts']}",
            cli_common.when(r["created_at"]),
            took,
            escape(cli_common.triggered_by(r) or "-"),
            escape(r["error"] or ""),
        ]
        if check_outputs:
            cells.append(shown[r.get("wrote_outputs")])
        table.add_row(*cells)
    console.print(table)


def _check_outputs(ledger: Any, rows: list[dict]) -> None:
    """Set `wrote_outputs` on succeeded invocations of functions whose trigger names an output
    bucket: True when an object there was written while an attempt ran, else False (None where
    nothing is declared). By time only: a write by another invocation running at the same
    moment counts too, so a False is certain and a True is likely."""
    from headrace.app import load_app
    from headrace.storage import ObjectStore

    settings = cli_common.settings()
    outputs = load_app(settings).outputs
    store = ObjectStore(settings.storage_url)
    written: dict[str, list[float]] = {}
    for r in rows:
        r["wrote_outputs"] = None
        buckets = outputs.get(r["function"])
        if r["status"] != "succeeded" or not buckets:
            continue
        times = []
        for name in sorted(buckets):
            if name not in written:
                try:
                    found = store.bucket(name, create=False).list()
                except HeadraceError:  # no such bucket yet: nothing was written to it
                    found = []
                written[name] = [o.last_modified for o in found]
            times += written[name]
        spans = [
            (a["started_at"] or r["created_at"], a["finished_at"] or r["finished_at"])
            for a in ledger.list_attempts(invocation_id=r["id"])
        ] or [(r["created_at"], r["finished_at"])]
        # a second of slack: file times and the ledger's clock are read at different moments
        r["wrote_outputs"] = any(
            start - 1.0 <= t <= (end or start) + 1.0 for start, end in spans for t in times
        )


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Function name.")],
    invocation: Annotated[
        str | None,
        typer.Option("--invocation", "-i", help="Only this invocation (its id or id prefix)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent attempts to show.")] = 20,
) -> None:
    """Print the log lines of a function's recent invocations (or of one invocation)."""
    ledger = cli_common.ledger()
    inv_id = None
    if invocation:
        row = ledger.get_invocation(_invocation_id(ledger, invocation))
        if row is None:
            raise typer.BadParameter(f"no invocation {invocation!r}")
        if row["function"] != name:
            raise typer.BadParameter(
                f"invocation {invocation!r} is of function {row['function']!r}, not {name!r}"
            )
        inv_id = row["id"]
    attempts = ledger.list_attempts(invocation_id=inv_id, function=name, limit=limit)
    if not attempts:  # nothing to print: say so, as other commands do for what is not there
        if inv_id is None:
            _check_function(name)
        what = f"invocation {inv_id}" if inv_id else f"function {name}"
        err.print(f"no attempts of {what} yet (see `headrace invocations`)", markup=False)
        raise typer.Exit(1)
    for a in attempts:
        sys.stdout.write(format_attempt_log(a))


def _invocation_id(ledger: Any, given: str, *, dead_lettered: bool = False) -> str:
    """The full id of the one invocation `given` is the id or a prefix of (as `headrace
    invocations` shows 8 characters); `given` itself when none matches (the caller says it is
    missing); a usage error naming the matches when the prefix is ambiguous."""
    found = ledger.match_invocation_ids(given, dead_lettered=dead_lettered)
    if len(found) > 1:
        shown = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
        raise typer.BadParameter(
            f"invocation id prefix {given!r} is ambiguous: it matches {shown}; give more characters"
        )
    return found[0] if found else given


def _check_function(name: str) -> None:
    """A usage error unless `name` is one of the app's functions (which may not have run yet)."""
    from headrace.app import load_app

    functions = load_app(cli_common.settings()).functions
    if name not in functions:
        known = ", ".join(sorted(functions)) or "none"
        raise typer.BadParameter(f"no function {name!r} (known: {known})")


def format_attempt_log(a: dict[str, Any]) -> str:
    """An attempt's log as Lambda prints it: START, the lines, END, REPORT."""
    rid = a["invocation_id"]
    out = [f"START RequestId: {rid} Version: $LATEST Attempt: {a['number']}\n"]
    if a.get("log_path") and Path(a["log_path"]).exists():
        text = Path(a["log_path"]).read_text(errors="replace")
        out.append(text if text.endswith("\n") else text + "\n")
    elif a.get("error"):
        out.append(f"[ERROR] {a['error']}\n")
    out.append(f"END RequestId: {rid}\n")
    duration = a.get("duration_ms") or 0.0
    memory = f"{a['max_rss_mb']:.0f} MB" if a.get("max_rss_mb") else "-"
    out.append(
        f"REPORT RequestId: {rid}\tDuration: {duration:.2f} ms\tMax Memory Used: {memory}\t"
        f"Status: {a['status']}\n"
    )
    return "".join(out)


# -- dlq --------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only this function's (default: all).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Invocations parked after their last attempt, with the error."""
    rows = cli_common.ledger().list_dead_letters(function=function)
    if as_json:
        # the ledger's row number is no use to anyone: `dlq redrive` takes invocation ids
        out = [{"invocation_id": r["invocation_id"], **_without(r, "id")} for r in rows]
        sys.stdout.write(json.dumps(out, default=str, indent=2) + "\n")
        return
    table = cli_common.table("invocation", "function", "attempts", "when", "error", wrap=("error",))
    for r in rows:
        table.add_row(
            r["invocation_id"],
            escape(r["function"]),
            str(r["attempts"]),
            cli_common.when(r["created_at"]),
            escape(r["error"] or ""),
        )
    console.print(table)


def _without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in keys}


@dlq_app.command("redrive")
def dlq_redrive(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Invocation ids or unique prefixes, as `dlq list` or `invocations` show them "
            "(default: all)."
        ),
    ] = None,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only this function's (default: any).")
    ] = None,
) -> None:
    """Send dead-lettered invocations back for new attempts."""
    ledger = cli_common.ledger()
    given = {i: _invocation_id(ledger, i, dead_lettered=True) for i in dict.fromkeys(ids or ())}
    chosen = ledger.redrive(function=function, ids=list(given.values()))
    if chosen:
        console.print(f"redriven: {len(chosen)}")
    for inv_id in chosen:
        console.print(f"  {inv_id}", markup=False)
    missing = [i for i, full in given.items() if full not in chosen]
    if missing:
        err.print(
            f"not in the dead-letter list: {', '.join(missing)} (see `headrace dlq list`)",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if not chosen:
        err.print(
            "nothing to redrive: the dead-letter list is empty"
            + (f" for function {function!r}" if function else ""),
            markup=False,
        )
        raise typer.Exit(1)


# -- workflows --------------------------------------------------------------------------------


@app.command("start-execution")
def start_execution_cmd(
    state_machine: Annotated[str, typer.Argument(help="State machine name.")],
    input: Annotated[
        str, typer.Option("--input", help="Execution input: JSON, or file://PATH of a JSON file.")
    ] = "{}",
    name: Annotated[str | None, typer.Option(help="Execution name (default: a UUID).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until it ends and print its output.")] = False,
) -> None:
    """Start an execution of a registered state machine."""
    from headrace.app import load_app
    from headrace.workflows import api

    data = cli_common.json_input(input, "--input")
    settings = cli_common.settings()
    ledger = cli_common.ledger(settings)
    arn = api.start_execution(ledger, load_app(settings), state_machine, data, name=name)
    if not wait:
        sys.stdout.write(arn + "\n")  # whole, never wrapped at the terminal's width
        return
    with console.status(escape(f"running {arn}")):
        row = api.wait_for(ledger, arn)
    sys.stdout.write(json.dumps(row, default=str, indent=2) + "\n")
    if row["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def executions(
    state_machine: Annotated[
        str | None,
        typer.Option("--state-machine", "-s", help="Only this state machine's (default: all)."),
    ] = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only this status: one of {', '.join(EXECUTION_STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent executions to show.")] = 50,
    map_run: Annotated[
        str | None,
        typer.Option("--map-run", help="A Map Run's child executions instead (its ARN)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """List executions, newest first (a Map Run's children: by item index)."""
    _check_status(status, EXECUTION_STATUSES)
    from headrace.ledger import executions as store
    from headrace.workflows import api

    ledger = cli_common.ledger()
    if map_run is not None:
        rows = api.map_run_executions(ledger, map_run, status, limit=limit)
    else:
        with ledger.reader.connect() as conn:
            rows = store.list_executions(
                conn, state_machine=state_machine, status=status, limit=limit
            )
    for row in rows:
        row.pop("definition", None)
    if as_json:
        for row in rows:  # as describe-execution gives them: JSON values, not JSON text
            for key in ("input", "output"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    table = cli_common.table(
        "name", "state machine", "status", "started", "took", "error",
        wrap=("error",),
    )  # fmt: skip
    for r in rows:
        took = f"{r['stopped_at'] - r['started_at']:.2f}s" if r["stopped_at"] else "-"
        table.add_row(
            escape(r["name"]),
            escape(r["state_machine"]),
            r["status"],
            cli_common.when(r["started_at"]),
            took,
            escape(r["error"] or ""),
        )
    console.print(table)


@app.command("list-map-runs")
def list_map_runs_cmd(
    execution: Annotated[str, typer.Argument(help="Name, STATE_MACHINE:NAME or ARN.")],
    as_json: Json = False,
) -> None:
    """The Map Runs of an execution's Distributed Map states, newest first."""
    from headrace.workflows import api

    runs = api.list_map_runs(cli_common.ledger(), execution)
    if as_json:
        sys.stdout.write(json.dumps(runs, default=str, indent=2) + "\n")
        return
    table = cli_common.table(
        "map run", "state", "type", "status", "succeeded", "failed", "running", "pending",
        "total",
    )  # fmt: skip
    for run in runs:
        c = run["itemCounts"]
        table.add_row(
            escape(run["mapRunArn"]),
            escape(run["stateName"]),
            run["executionType"],
            run["status"],
            str(c["succeeded"]),
            str(c["failed"] + c["timedOut"] + c["aborted"]),
            str(c["running"]),
            str(c["pending"]),
            str(c["total"]),
        )
    console.print(table)


@app.command("describe-map-run")
def describe_map_run_cmd(
    map_run: Annotated[str, typer.Argument(help="The MapRunArn (from list-map-runs).")],
) -> None:
    """A Map Run's configuration and counts per status, as JSON (DescribeMapRun)."""
    from headrace.workflows import api

    run = api.describe_map_run(cli_common.ledger(), map_run)
    sys.stdout.write(json.dumps(run, default=str, indent=2) + "\n")


@app.command("describe-execution")
def describe_execution_cmd(
    execution: Annotated[str, typer.Argument(help="Name, STATE_MACHINE:NAME or ARN.")],
) -> None:
    """Status, input, output and error of one execution, as JSON."""
    from headrace.workflows import api

    row = api.describe_execution(cli_common.ledger(), execution)
    sys.stdout.write(json.dumps(row, default=str, indent=2) + "\n")


@app.command()
def history(
    execution: Annotated[str, typer.Argument(help="Name, STATE_MACHINE:NAME or ARN.")],
    as_json: Json = False,
) -> None:
    """The execution's history events, as GetExecutionHistory lists them."""
    from headrace.workflows import api

    events = api.get_history(cli_common.ledger(), execution)
    if as_json:
        sys.stdout.write(json.dumps(events, default=str, indent=2) + "\n")
        return
    table = cli_common.table("id", "type", "scope", "when", "details", wrap=("details",))
    for e in events:
        table.add_row(
            str(e["id"]),
            e["type"],
            escape(e["scope"] or "-"),
            cli_common.when(e["timestamp"]),
            escape(json.dumps(e["details"], default=str)[:100]),
        )
    console.print(table)


@app.command("stop-execution")
def stop_execution_cmd(
    execution: Annotated[str, typer.Argument(help="Name, STATE_MACHINE:NAME or ARN.")],
    error: Annotated[str, typer.Option(help="Error name recorded on the execution.")] = "",
    cause: Annotated[str, typer.Option(help="Cause recorded on the execution.")] = "",
) -> None:
    """Abort a running execution. Exits 1 if it had already ended."""
    from headrace.workflows import api

    ledger = cli_common.ledger()
    before = api.describe_execution(ledger, execution)
    row = api.stop_execution(ledger, execution, error=error, cause=cause)
    if before["status"] != "RUNNING" or row["status"] != "ABORTED":
        err.print(
            f"execution {row['name']!r} had already ended ({row['status']} at "
            f"{cli_common.when(row['stopped_at'])}): nothing to stop",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print(f"{row['name']}: {row['status']}", markup=False)


@app.command("send-task-success")
def send_task_success_cmd(
    token: Annotated[str, typer.Argument(help="The task token ($$.Task.Token).")],
    output: Annotated[str, typer.Option(help="The task's result, as JSON.")] = "{}",
) -> None:
    """End a waiting `.waitForTaskToken` or activity task with a result."""
    from headrace.workflows import api

    data = cli_common.json_option(output, "--output")
    api.send_task_success(cli_common.ledger(), token, data)


@app.command("send-task-failure")
def send_task_failure_cmd(
    token: Annotated[str, typer.Argument(help="The task token.")],
    error: Annotated[str, typer.Option(help="Error name, for the state's Catch and Retry.")] = "",
    cause: Annotated[str, typer.Option(help="A longer description of the failure.")] = "",
) -> None:
    """Fail a waiting `.waitForTaskToken` or activity task."""
    from headrace.workflows import api

    api.send_task_failure(cli_common.ledger(), token, error, cause)


@app.command("send-task-heartbeat")
def send_task_heartbeat_cmd(token: Annotated[str, typer.Argument(help="The task token.")]) -> None:
    """Keep a waiting task with HeartbeatSeconds alive."""
    from headrace.workflows import api

    api.send_task_heartbeat(cli_common.ledger(), token)


@app.command("validate")
def validate_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            help="A state machine definition (ASL JSON file).", exists=True, dir_okay=False
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print ValidateStateMachineDefinition's response.")
    ] = False,
    severity: Annotated[
        str, typer.Option(help="ERROR (the default, as AWS) or WARNING: warnings too.")
    ] = "ERROR",
    max_results: Annotated[
        int, typer.Option("--max-results", help="Diagnostics listed at most.", min=1)
    ] = 100,
) -> None:
    """Check a state machine definition as Step Functions' ValidateStateMachineDefinition does:
    one line per diagnostic (severity, code, location, message). Exits 1 if it has errors."""
    from headrace.workflows.diagnostics import SEVERITIES, validate_definition

    if severity.upper() not in SEVERITIES:
        raise typer.BadParameter("ERROR or WARNING", param_hint="--severity")
    response = validate_definition(str(file), severity=severity.upper(), max_results=max_results)
    if as_json:
        sys.stdout.write(json.dumps(response, indent=2) + "\n")
    else:
        for d in response["diagnostics"]:
            where = f" at {d['location']}" if d.get("location") else ""
            console.print(
                f"{d['severity']} {d['code']}{where}: {d['message']}", markup=False, soft_wrap=True
            )
        more = " (more not listed: --max-results)" if response["truncated"] else ""
        console.print(f"{response['result']}{more}", markup=False)
    if response["result"] != "OK":
        raise typer.Exit(1)


@app.command("create-activity")
def create_activity_cmd(
    name: Annotated[str, typer.Argument(help="The activity's name (1 to 80 characters).")],
) -> None:
    """Create an activity: Task states with its ARN as Resource wait for workers to take them
    (get-activity-task). Prints its ARN; creating one that exists does nothing."""
    from headrace.workflows import api

    row = api.create_activity(cli_common.ledger(), name)
    console.print(row["activityArn"], markup=False, soft_wrap=True)


@app.command("list-activities")
def list_activities_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The activities, with their ARNs."""
    from headrace.workflows import api

    rows = api.list_activities(cli_common.ledger())
    if as_json:
        sys.stdout.write(json.dumps({"activities": rows}, default=str, indent=2) + "\n")
        return
    for row in rows:
        console.print(
            f"{row['name']}  {row['activityArn']}  {cli_common.when(row['creationDate'])}",
            markup=False,
            soft_wrap=True,
        )


@app.command("delete-activity")
def delete_activity_cmd(
    activity: Annotated[str, typer.Argument(help="The activity's name or ARN.")],
) -> None:
    """Delete an activity. Tasks already handed to workers stay answerable; new ones fail."""
    from headrace.workflows import api

    api.delete_activity(cli_common.ledger(), activity)


@app.command("get-activity-task")
def get_activity_task_cmd(
    activity: Annotated[str, typer.Argument(help="The activity's ARN (or name).")],
    worker_name: Annotated[
        str | None, typer.Option("--worker-name", help="Recorded in ActivityStarted.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a task (AWS waits 60).", min=0)
    ] = 60.0,
) -> None:
    """Take a task waiting on an activity: prints {"taskToken", "input"} as GetActivityTask
    returns it (input is a JSON string), or {} when none came within --timeout seconds."""
    from headrace.workflows import api

    task = api.get_activity_task(cli_common.ledger(), activity, worker_name, timeout=timeout)
    sys.stdout.write(json.dumps(task, indent=2) + "\n")


@app.command()
def redrive(
    execution: Annotated[str, typer.Argument(help="Name, STATE_MACHINE:NAME or ARN.")],
) -> None:
    """Resume a failed, timed-out or aborted execution from where it stopped."""
    from headrace.workflows import api

    row = api.redrive_execution(cli_common.ledger(), execution)
    console.print(f"{row['name']}: {row['status']}", markup=False)


@app.command()
def graph(
    state_machine: Annotated[str, typer.Argument(help="State machine name.")],
    execution: Annotated[
        str | None, typer.Option("--execution", "-e", help="Colour states by this execution.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="mermaid, or dot (Graphviz).")] = "mermaid",
) -> None:
    """The state graph as Mermaid or Graphviz DOT, with each state's status for an execution."""
    from headrace.app import load_app
    from headrace.workflows import api
    from headrace.workflows.graph import to_dot, to_mermaid

    if fmt not in ("mermaid", "dot"):
        raise typer.BadParameter("--format is mermaid or dot")
    settings = cli_common.settings()
    application = load_app(settings)
    if state_machine not in application.state_machines:
        known = ", ".join(sorted(application.state_machines)) or "none"
        raise typer.BadParameter(f"no state machine {state_machine!r} (known: {known})")
    events = None
    if execution:
        ledger = cli_common.ledger(settings)
        row = api.describe_execution(ledger, execution)
        if row["state_machine"] != state_machine:
            raise typer.BadParameter(
                f"execution {execution!r} is of state machine {row['state_machine']!r}, "
                f"not {state_machine!r}"
            )
        events = api.get_history(ledger, execution)
    render = to_mermaid if fmt == "mermaid" else to_dot
    sys.stdout.write(render(application.state_machines[state_machine], events) + "\n")


app.command("query")(cli_streams.query)


def main() -> None:
    try:
        app()
    except HeadraceError as exc:
        # Unwrapped (one line per line of the message, whatever the terminal width, so logs and
        # grep see it whole) and escaped (a value in it such as "[::1]" is not rich markup).
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
