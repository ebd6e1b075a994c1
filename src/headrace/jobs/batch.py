"""`handle_batch_task`: what the workflow engine calls for a `batch:submitJob.sync` Task state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.jobs.definition import JobDefinition
from headrace.jobs.errors import InvalidJobDefinition, JobFailed

_SUBMIT_KEYS = {
    "JobName",
    "JobQueue",
    "JobDefinition",
    "ContainerOverrides",
    "Parameters",
    "RetryStrategy",
    "Timeout",
}
# accepted for compatibility and ignored: they change nothing about how the job runs here
_IGNORED_KEYS = {"Tags", "PropagateTags", "ShareIdentifier", "SchedulingPriorityOverride"}
_CONTEXT_KEYS = {"ledger_url", "home", "definitions", "idempotency_key"}
LOG_TAIL_LINES = 20  # how much of a failed job's output its error carries


def handle_batch_task(
    payload: Mapping[str, Any],
    *,
    ledger_url: str | None = None,
    home: str | None = None,
    definitions: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Submit and run the job a Task state describes; return its DescribeJobs shape.

    `payload` holds SubmitJob's fields (`JobName`, `JobQueue`, `JobDefinition`,
    `ContainerOverrides`, and optionally `Parameters`, `RetryStrategy.Attempts`,
    `Timeout.AttemptDurationSeconds`); `ledger_url`, `home`, `definitions` (name → the dict of a
    `JobDefinition`) and `idempotency_key` come as keywords or as keys of `payload`. With the same
    idempotency key a re-dispatched task finds the job already submitted, and waits for it or
    returns its recorded outcome instead of running it again.

    A FAILED job raises `JobFailed` (error name `States.TaskFailed`, as Step Functions reports
    a failed `.sync` Batch job), carrying the job's description and the last lines of its log.
    """
    from headrace.jobs.service import Jobs
    from headrace.ledger import Ledger

    given = dict(payload)
    unknown = set(given) - _SUBMIT_KEYS - _CONTEXT_KEYS - _IGNORED_KEYS
    if unknown:
        raise InvalidJobDefinition(
            "batch:submitJob parameters",
            f"unsupported fields {sorted(unknown)}",
            f"use {', '.join(sorted(_SUBMIT_KEYS))} (DependsOn, array and multi-node jobs are "
            "not supported)",
        )
    ledger_url = ledger_url or given.get("ledger_url")
    home = home or given.get("home")
    definitions = definitions if definitions is not None else given.get("definitions") or {}
    idempotency_key = idempotency_key or given.get("idempotency_key")
    for name in ("JobName", "JobDefinition"):
        if not given.get(name):
            raise InvalidJobDefinition("batch:submitJob parameters", f"{name} is missing", "")
    if not ledger_url or not home:
        raise InvalidJobDefinition(
            "batch:submitJob task", "ledger_url and home are required", "pass the settings'"
        )
    retry = given.get("RetryStrategy") or {}
    timeout = given.get("Timeout") or {}
    ledger = Ledger(ledger_url)
    try:
        jobs = Jobs(
            ledger,
            home,
            {name: JobDefinition.from_dict(d) for name, d in definitions.items()},
        )
        job = jobs.run_sync(
            given["JobDefinition"],
            job_name=given["JobName"],
            job_queue=given.get("JobQueue") or "default",
            container_overrides=given.get("ContainerOverrides"),
            parameters=given.get("Parameters"),
            retry_attempts=retry.get("Attempts"),
            timeout=timeout.get("AttemptDurationSeconds"),
            idempotency_key=idempotency_key,
        )
        described = job.describe()
        if job.status != "SUCCEEDED":
            lines = jobs.logs(job.id, job.attempt_log[-1]["number"] if job.attempt_log else None)
            raise JobFailed({**described, "logTail": lines.splitlines()[-LOG_TAIL_LINES:]})
    finally:
        ledger.close()
    return described
