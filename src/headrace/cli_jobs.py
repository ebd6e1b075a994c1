"""`headrace jobs`: submit, run, list, describe and read the logs of batch jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headrace import cli_common
from headrace.cli_common import Json, group_project

jobs_app = typer.Typer(
    help="Batch jobs: commands run as local processes, recorded in the ledger.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)
_COLOURS = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "RUNNING": "cyan",
    "RUNNABLE": "yellow",
    "SUBMITTED": "yellow",
}


jobs_app.callback()(group_project)


def _jobs(settings=None, *, with_app: bool = False):  # type: ignore[no-untyped-def]
    """A `Jobs` over the project's ledger, with the app's job definitions when asked."""
    from headrace.jobs import Jobs

    settings = settings or cli_common.settings()
    definitions: dict[str, Any] = {}
    if with_app:
        from headrace.app import load_app

        definitions = dict(getattr(load_app(settings), "job_definitions", {}) or {})
    return Jobs(cli_common.ledger(settings), settings.home, definitions)


def _parse_env(pairs: list[str]) -> list[dict[str, str]]:
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--env {pair!r}: write NAME=VALUE")
        out.append({"Name": name, "Value": value})
    return out


def _wait(jobs: Any, job_id: str) -> Any:
    """Run the job here, showing its status, attempt and elapsed time while it runs."""
    start = time.monotonic()
    with err.status(f"job {job_id[:8]}: starting") as status:

        def show(job: Any) -> None:
            colour = _COLOURS.get(job.status, "white")
            status.update(
                f"job {escape(job.name)} ({job.id[:8]}): [{colour}]{job.status}[/] · attempt "
                f"{job.attempts}/{job.spec.retry_attempts} · {time.monotonic() - start:.1f}s"
            )

        job = jobs.run(job_id, on_update=show)
    colour = _COLOURS.get(job.status, "white")
    took = (job.stopped_at or time.time()) - (job.started_at or job.created_at)
    err.print(
        f"job {escape(job.name)} ({job.id}): [{colour}]{job.status}[/] after {job.attempts} "
        f"attempt(s), {took:.2f}s, exit code {job.exit_code}"
        + (f" · {escape(job.status_reason)}" if job.status != "SUCCEEDED" else "")
    )
    err.print(f"logs: headrace jobs logs {job.id}")
    return job


@jobs_app.command()
def submit(
    definition: Annotated[str, typer.Argument(help="Job definition name.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Job name (default: definition).")
    ] = None,
    queue: Annotated[str, typer.Option(help="Job queue.")] = "default",
    command: Annotated[
        str | None, typer.Option("--command", help='Command override as a JSON list: ["a", "b"].')
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE environment override.")
    ] = None,
    vcpus: Annotated[float | None, typer.Option(help="vCPU override.")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory override, MiB.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting the same key again returns the first job.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Run it here and wait for the end.")] = False,
) -> None:
    """Submit a job from one of the app's job definitions; with --wait, run it to the end."""
    overrides: dict[str, Any] = {}
    if command is not None:
        overrides["Command"] = cli_common.json_option(command, "--command")
    if env:
        overrides["Environment"] = _parse_env(env)
    resources = []
    if vcpus is not None:
        resources.append({"Type": "VCPU", "Value": str(vcpus)})
    if memory is not None:
        resources.append({"Type": "MEMORY", "Value": str(memory)})
    if resources:
        overrides["ResourceRequirements"] = resources
    jobs = _jobs(with_app=True)
    job_id = jobs.submit(
        definition,
        job_name=name or definition,
        job_queue=queue,
        container_overrides=overrides or None,
        idempotency_key=idempotency_key,
    )
    if not wait:
        console.print(job_id)
        err.print(f"run it with: headrace jobs run {job_id}")
        return
    job = _wait(jobs, job_id)
    console.print(job.id)
    if job.status != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command()
def run(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """Run a submitted job here, to the end (a finished job is only reported)."""
    jobs = _jobs()
    job = _wait(jobs, jobs.get(job_id).id)
    if job.status != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        str | None, typer.Option(help="SUBMITTED|RUNNABLE|RUNNING|SUCCEEDED|FAILED")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only this job queue.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Json = False,
) -> None:
    """List jobs, newest first."""
    rows = _jobs().list(status.upper() if status else None, queue=queue, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([r.describe() for r in rows], indent=2) + "\n")
        return
    table = Table()
    for col in (
        "id",
        "name",
        "definition",
        "queue",
        "status",
        "attempts",
        "exit",
        "created",
        "took",
    ):
        table.add_column(col)
    for r in rows:
        took = f"{r.stopped_at - r.started_at:.2f}s" if r.stopped_at and r.started_at else "-"
        table.add_row(
            r.id[:8],
            escape(r.name),
            escape(r.definition),
            escape(r.queue),
            f"[{_COLOURS.get(r.status, 'white')}]{r.status}[/]",
            f"{r.attempts}/{r.spec.retry_attempts}",
            "-" if r.exit_code is None else str(r.exit_code),
            cli_common.when(r.created_at),
            took,
        )
    console.print(table)


@jobs_app.command()
def describe(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """The job as AWS Batch DescribeJobs shows it, as JSON."""
    sys.stdout.write(json.dumps(_jobs().describe(job_id), indent=2) + "\n")


@jobs_app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    attempt: Annotated[int | None, typer.Option(help="Only this attempt (1-based).")] = None,
) -> None:
    """Print the job's output (stdout and stderr), attempt by attempt."""
    sys.stdout.write(_jobs().logs(job_id, attempt))
    sys.stdout.flush()


if __name__ == "__main__":  # `python -m headrace.cli_jobs …` until `headrace jobs` exists
    jobs_app()
