"""The runner interface, and which runner a definition's `runner` name selects.

A runner starts one attempt of a job and reports on it; `Jobs` owns everything else (ledger
records, retries, timeouts, idempotency). To add a runner, implement `JobRunner` and return it
from `get_runner`:

* `RayJobsRunner` (`runner="ray"`): `start` calls
  `ray.job_submission.JobSubmissionClient(address).submit_job(entrypoint=shlex.join(command),
  submission_id=f"{job_id}-{attempt}", runtime_env={"env_vars": env, "working_dir": ...},
  entrypoint_num_cpus=vcpus, entrypoint_memory=memory * 2**20)`; `poll` maps
  `get_job_status` (PENDING/RUNNING/SUCCEEDED/FAILED/STOPPED) to a `Poll`, with the exit code
  parsed from `get_job_info(...).message` when Ray reports one; `stop` is `stop_job`; `logs` is
  `get_job_logs` (also written to the attempt's log file so `Jobs.logs` keeps working when the
  Ray cluster is gone). The submission id makes a re-dispatched start find the job Ray already has.
* `SparkSubmitRunner` (`runner="spark-submit"`): the command is spark-submit's arguments; it
  can reuse `SubprocessRunner` with `["spark-submit", "--master", master,
  "--driver-memory", f"{memory}m", "--driver-cores", str(ceil(vcpus)), *command]`, reading the
  driver's exit code (client deploy mode) or polling `spark-submit --status` (cluster mode).

Until they exist, selecting either raises `RunnerNotAvailable` at submit time rather than
pretending to run.
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
    if name in ("ray", "spark-submit"):
        raise RunnerNotAvailable(
            f"job runner {name!r}",
            "is not available yet in this version of headrace",
            'use runner="subprocess" (see headrace.jobs.runners for the planned design)',
        )
    raise RunnerNotAvailable(f"job runner {name!r}", "is unknown", "use runner='subprocess'")
