"""The runner interface, and which runner a definition's `runner` name selects.

A runner starts one attempt of a job and reports on it; `Jobs` owns everything else (ledger
records, retries, timeouts, cancellation, idempotency). Each runner lives in a module of its
own and is imported only when a definition selects it:

* `subprocess` (`subprocess_runner.SubprocessRunner`, the `local` engine): a local process group.
* `ray` (`ray_runner.RayJobsRunner`): Ray's job submission API, on a cluster at an address or
  on a Ray head started for the attempt (`ray_head.LocalRayHead`).
* `spark-submit` (`spark_runner.SparkSubmitRunner`, the `spark` engine): `spark-submit` with
  `local[*]` or a standalone master, its driver run as a local process group.

Every runner writes the attempt's output to `Attempt.log_path`, so logs can be followed and
read the same way whatever ran the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from headrace.jobs.definition import JobDefinition
from headrace.jobs.errors import RunnerNotAvailable


@dataclass(frozen=True)
class Attempt:
    """One attempt to run: what the runner needs to start it."""

    job_id: str
    job_name: str
    queue: str
    number: int  # 1-based, as AWS_BATCH_JOB_ATTEMPT
    definition: JobDefinition  # the effective one: overrides and parameters applied
    log_path: Path

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """`base` (the worker's environment), then the definition's, then the job's ids."""
        return {
            **base,
            **self.definition.environment,
            "HEADRACE_JOB_ID": self.job_id,
            "AWS_BATCH_JOB_ID": self.job_id,
            "AWS_BATCH_JOB_ATTEMPT": str(self.number),
            "AWS_BATCH_JQ_NAME": self.queue,
        }


@dataclass(frozen=True)
class Poll:
    """Where an attempt is: still running, or exited with `exit_code` (and why, if not plain)."""

    running: bool
    exit_code: int | None = None
    reason: str | None = None


@runtime_checkable
class JobRunner(Protocol):
    name: str

    def start(self, attempt: Attempt) -> Any:
        """Start the attempt and return a handle for `poll` and `stop`. Must not block on it."""
        ...

    def poll(self, handle: Any) -> Poll:
        """Non-blocking: is it still running; if not, its exit code."""
        ...

    def stop(self, handle: Any, reason: str) -> Poll:
        """Stop it (gracefully, then by force) and return how it ended."""
        ...

    def logs(self, attempt: Attempt) -> str:
        """The attempt's output so far."""
        ...

    def pid(self, handle: Any) -> int | None:
        """The local process id, when there is one (recorded so a takeover can clean up)."""
        ...


def get_runner(name: str, **options: Any) -> JobRunner:
    if name == "subprocess":
        from headrace.jobs.subprocess_runner import SubprocessRunner

        return SubprocessRunner(**options)
    if name == "ray":
        from headrace.jobs.ray_runner import RayJobsRunner

        return RayJobsRunner(**options)
    if name == "spark-submit":
        from headrace.jobs.spark_runner import SparkSubmitRunner

        return SparkSubmitRunner(**options)
    raise RunnerNotAvailable(
        f"job runner {name!r}", "is unknown", "use subprocess, ray or spark-submit"
    )
