"""`headrace jobs`: submit, run, list, describe, cancel and read the logs of batch jobs (local,
on Ray or with spark-submit), and EMR-style steps (`add-steps`, `list-steps`, `cancel-steps`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from headrace import cli_common
from headrace.cli_common import Json, group_project

jobs_app = typer.Typer(
    help="Batch jobs: local processes, Ray jobs or spark-submit, recorded in the ledger.",
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


class _Follower:
    """Copies the job's attempt logs to stdout as they grow (every runner writes its output to
    `<home>/jobs/<job id>/<attempt>.log`)."""

    def __init__(self, home: Path, job_id: str) -> None:
        self.folder = home / "jobs" / job_id
        self.offsets: dict[Path, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Follower:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join()
        self._copy()

    def _loop(self) -> None:
        while not self.done.wait(0.2):
            self._copy()

    def _copy(self) -> None:
        logs = sorted(
            self.folder.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0
        )
        for path in logs:
            offset = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            if data:
                self.offsets[path] = offset + len(data)
                sys.stdout.buffer.write(data)
                sys.stdout.flush()


def _wait(jobs: Any, job_id: str, *, follow: bool = False) -> Any:
    """Run the job here, showing its status, attempt and elapsed time while it runs; with
    `follow`, its output streams to stdout."""
    if follow:
        with _Follower(jobs.home, job_id):
            return _wait(jobs, job_id)
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


ENGINE_HELP = "Run SCRIPT on an engine: local, ray or spark (the positional is then a script)."


@jobs_app.command()
def submit(
    definition: Annotated[
        str, typer.Argument(help="Job definition name, or with --engine the script to run.")
    ],
    args: Annotated[
        list[str] | None, typer.Argument(help="With --engine: the script's arguments, after --.")
    ] = None,
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
    cluster: Annotated[
        str | None,
        typer.Option(help="Ray address (http://host:8265) or Spark master (spark://host:7077)."),
    ] = None,
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
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting the same key again returns the first job.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Run it here, streaming its output, to the end.")
    ] = False,
) -> None:
    """Submit a job: one of the app's job definitions, or with --engine a script
    (`headrace jobs submit --engine spark job.py -- --input s3://raw/x.csv`). With --wait it
    runs here and its output streams to stdout; otherwise a definition's job waits for
    `headrace jobs run`, and a script's job starts in the background."""
    settings = cli_common.settings(new_home=True)
    if engine is None and args:
        raise typer.BadParameter(
            f"unexpected arguments {args}: script arguments need --engine local|ray|spark"
        )
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
    jobs = _jobs(settings, with_app=engine is None)
    target: Any = definition
    if engine is not None:
        target = _script_definition(settings, engine, definition, list(args or []), cluster)
    job_id = jobs.submit(
        target,
        job_name=name or (target.name if engine is not None else definition),
        job_queue=queue,
        container_overrides=overrides or None,
        idempotency_key=idempotency_key,
        timeout=timeout,
    )
    if not wait:
        console.print(job_id)
        if engine is None:
            err.print(f"run it with: headrace jobs run {job_id}")
        else:
            _start_detached([sys.executable, "-m", "headrace.cli_jobs", "run", job_id], settings)
            err.print(f"started; follow it with: headrace jobs logs --follow {job_id}")
        return
    job = _wait(jobs, job_id, follow=True)
    console.print(job.id)
    if job.status != "SUCCEEDED":
        raise typer.Exit(1)


def _script_definition(  # type: ignore[no-untyped-def]
    settings, engine: str, script: str, args: list[str], cluster: str | None
):
    from headrace.jobs.definition import ENGINES, JobDefinition, with_default_cluster

    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine {engine!r}: use {', '.join(ENGINES)}")
    if not script.startswith(("s3://", "s3a://")) and not Path(script).is_file():
        raise typer.BadParameter(f"script {script!r} does not exist (looked in {Path.cwd()})")
    from headrace.jobs.bucket_paths import resolve_args

    runner = ENGINES[engine]
    head = [script] if runner == "spark-submit" else ["python", script]
    if runner == "subprocess":  # the Ray and Spark runners resolve them as they start
        args = resolve_args(args, settings.storage_url, runner)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(script).stem).strip("-_") or "script"
    definition = JobDefinition(
        name=f"{engine}-{stem}"[:128],
        command=[*head, *args],
        runner=runner,
        working_dir=os.getcwd(),
        environment={"HEADRACE_STORAGE": settings.storage_url},
        cluster=cluster,
    )
    return with_default_cluster(
        definition, ray_address=settings.ray_address, spark_master=settings.spark_master
    )


def _start_detached(argv: list[str], settings: Any) -> None:
    """Run `argv` in a session of its own, so it outlives this command (its log is the job's)."""
    subprocess.Popen(
        argv,
        cwd=settings.project_dir,
        env={**os.environ, "HEADRACE_PROJECT": str(settings.project_dir)},
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
        str | None,
        typer.Option(help="Only this status: SUBMITTED, RUNNABLE, RUNNING, SUCCEEDED or FAILED."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only this job queue.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent jobs to show.")] = 50,
    as_json: Json = False,
) -> None:
    """List jobs, newest first."""
    rows = _jobs().list(status.upper() if status else None, queue=queue, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([r.describe() for r in rows], indent=2) + "\n")
        return
    table = cli_common.table(
        "id", "name", "definition", "queue", "status", "attempts", "exit", "created", "took"
    )
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
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
) -> None:
    """Print the job's output (stdout and stderr), attempt by attempt."""
    jobs = _jobs()
    if not follow:
        sys.stdout.write(jobs.logs(job_id, attempt))
        sys.stdout.flush()
        return
    job = jobs.get(job_id)
    with _Follower(jobs.home, job.id):
        while not job.done:
            time.sleep(0.2)
            job = jobs.get(job.id)
    if job.status != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    reason: Annotated[str, typer.Option(help="Why (the job's status reason).")] = (
        "Terminated by user"
    ),
) -> None:
    """Stop a job (AWS Batch TerminateJob): it ends FAILED with the reason, without retries."""
    jobs = _jobs()
    job = jobs.terminate(jobs.get(job_id).id, reason)
    deadline = time.monotonic() + 60
    while not job.done and time.monotonic() < deadline:  # its worker stops it within a second
        time.sleep(0.2)
        job = jobs.get(job.id)
    err.print(
        f"job {escape(job.name)} ({job.id}): {job.status} · {escape(job.status_reason or '')}"
    )


# -- EMR-style steps ---------------------------------------------------------------------------

_STEP_COLOURS = {
    "COMPLETED": "green",
    "FAILED": "red",
    "RUNNING": "cyan",
    "PENDING": "yellow",
    "CANCEL_PENDING": "yellow",
    "CANCELLED": "magenta",
}
ClusterId = Annotated[
    str, typer.Option("--cluster-id", help="The queue of steps (EMR's cluster id).")
]


def _steps(settings: Any = None) -> Any:
    from headrace.jobs.steps import Steps

    return Steps(_jobs(settings))


@jobs_app.command(
    "add-steps", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def add_steps(
    ctx: typer.Context,
    steps: Annotated[
        list[str],
        typer.Option(
            "--steps",
            help="Steps in the AWS CLI shorthand (Type=Spark,Name=...,ActionOnFailure=...,"
            "Args=[...]), as JSON, or file://steps.json; several after one --steps or repeated.",
        ),
    ],
    cluster_id: ClusterId = "local",
    cluster: Annotated[
        str | None, typer.Option(help="Spark master for Spark steps (default: local[*]).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Run the steps here, streaming their output.")
    ] = False,
) -> None:
    """Add steps as `aws emr add-steps` does; they run one at a time, in order, each as a job."""
    from headrace.jobs.steps import parse_steps

    settings = cli_common.settings(new_home=True)
    values = [*steps, *ctx.args]  # `--steps A B`: B arrives as an extra argument
    configs = parse_steps(values)
    runner = _steps(settings)
    where = {"spark-submit": cluster or settings.spark_master, "ray": settings.ray_address}
    ids = runner.add(
        cluster_id,
        configs,
        working_dir=os.getcwd(),
        environment={"HEADRACE_STORAGE": settings.storage_url},
        cluster={k: v for k, v in where.items() if v},
    )
    sys.stdout.write(json.dumps({"StepIds": ids}, indent=2) + "\n")
    sys.stdout.flush()
    if not wait:
        _start_detached(
            [
                sys.executable,
                "-m",
                "headrace.jobs.steps",
                settings.ledger_url,
                str(settings.home),
                cluster_id,
            ],
            settings,
        )
        err.print(f"running; see them with: headrace jobs list-steps --cluster-id {cluster_id}")
        return

    def show(step: Any) -> None:
        colour = _STEP_COLOURS.get(step.status, "white")
        err.print(
            f"step {step.id} {escape(step.name)}: [{colour}]{step.status}[/]"
            + (f" · {escape(step.reason)}" if step.reason else "")
        )
        if step.status == "RUNNING" and step.job_id:
            follower = _Follower(runner.jobs.home, step.job_id)
            followers.append(follower.__enter__())
        elif followers and step.done:
            followers.pop().__exit__(None, None, None)

    followers: list[_Follower] = []
    try:
        final = runner.run(cluster_id, on_update=show)
    finally:
        for follower in followers:
            follower.__exit__(None, None, None)
    mine = [s for s in final if s.id in ids]
    if any(s.status != "COMPLETED" for s in mine):
        raise typer.Exit(1)


@jobs_app.command("list-steps")
def list_steps(
    cluster_id: ClusterId = "local",
    step_states: Annotated[
        list[str] | None,
        typer.Option("--step-states", help="Only steps in these states (PENDING, RUNNING, ...)."),
    ] = None,
    step_ids: Annotated[list[str] | None, typer.Option("--step-ids", help="Only these.")] = None,
    as_json: Json = False,
) -> None:
    """The cluster's steps, newest first, as `aws emr list-steps` shows them."""
    states = [s.upper() for s in step_states or []]
    rows = _steps().list(cluster_id, states or None, step_ids or None)
    if as_json:
        sys.stdout.write(json.dumps({"Steps": [r.describe() for r in rows]}, indent=2) + "\n")
        return
    table = cli_common.table(
        "id", "name", "state", "on failure", "job", "exit", "created", "took", "reason",
        wrap=("reason",),
    )  # fmt: skip
    jobs = _jobs()
    for r in rows:
        exit_code = "-"
        if r.job_id:
            code = jobs.get(r.job_id).exit_code
            exit_code = "-" if code is None else str(code)
        took = f"{r.ended_at - r.started_at:.2f}s" if r.ended_at and r.started_at else "-"
        table.add_row(
            r.id,
            escape(r.name),
            f"[{_STEP_COLOURS.get(r.status, 'white')}]{r.status}[/]",
            r.action_on_failure,
            (r.job_id or "-")[:8],
            exit_code,
            cli_common.when(r.created_at),
            took,
            escape(r.reason or ""),
        )
    console.print(table)


@jobs_app.command("cancel-steps")
def cancel_steps(
    step_ids: Annotated[list[str], typer.Option("--step-ids", help="Steps to cancel.")],
    cluster_id: ClusterId = "local",
) -> None:
    """Cancel pending steps, and interrupt running ones (their jobs are terminated)."""
    out = _steps().cancel(cluster_id, step_ids)
    sys.stdout.write(
        json.dumps(
            {
                "CancelStepsInfoList": [
                    {"StepId": s.id, "Status": "SUBMITTED", "Reason": s.status} for s in out
                ]
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":  # `python -m headrace.cli_jobs …` until `headrace jobs` exists
    jobs_app()
