"""`Jobs`: submit job runs to the ledger and run them to completion, with retries.

Every state change is one ledger transaction guarded by the run's `owner`, so two workers never
run the same job at once: `run` claims the job first (compare-and-set), renews a heartbeat while
the attempt runs, and another worker takes the job over only when that heartbeat is stale or the
owner's process is gone from this host. A run that already ended is returned as recorded, and an
idempotency key maps a repeated submission to the first job: together they make a re-dispatched
workflow task wait for, or return, the job instead of running it twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from headrace.errors import HeadraceError
from headrace.jobs import runtime
from headrace.jobs.definition import (
    JobDefinition,
    apply_overrides,
    check_name,
    definition_name,
    queue_name,
)
from headrace.jobs.errors import JobBusy, JobDefinitionNotFound, JobError, JobNotFound
from headrace.jobs.records import JobRun
from headrace.jobs.runners import Attempt, JobRunner, Poll, get_runner
from headrace.jobs.schema import STATUSES, job_cancels, job_runs, metadata
from headrace.ledger.db import create_tables

if TYPE_CHECKING:
    from headrace.ledger import Ledger

__all__ = ["Jobs"]

EXITED_REASON = "Essential container in task exited"
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
INTERRUPTED_REASON = "Host EC2 instance terminated (the worker running the attempt stopped)"
CANCEL_CHECK_SECONDS = 0.5  # how often a running job looks for a TerminateJob request


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Jobs:
    """Job runs in the ledger. `home` holds the logs: `<home>/jobs/<job_id>/<attempt>.log`.

    `runners` replaces the runner a definition names (say, a `SubprocessRunner` with a shorter
    `kill_grace`); `heartbeat_seconds` and `stale_after` set how fast a dead worker's job is
    taken over.
    """

    def __init__(
        self,
        ledger: Ledger,
        home: str | os.PathLike[str],
        definitions: Mapping[str, JobDefinition] | None = None,
        *,
        runners: Mapping[str, JobRunner] | None = None,
        heartbeat_seconds: float = 5.0,
        stale_after: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.home = Path(home)
        self.definitions = dict(definitions or {})
        self._runners: dict[str, JobRunner] = dict(runners or {})
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = stale_after
        create_tables(metadata, ledger.engine)

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        definition: str | JobDefinition,
        *,
        job_name: str,
        job_queue: str = "default",
        container_overrides: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        parameters: dict[str, str] | None = None,
        timeout: float | None = None,
        retry_attempts: int | None = None,
    ) -> str:
        """Record a job run (SUBMITTED) and return its id; nothing runs until `run`.

        With an `idempotency_key` already used, returns that job's id and changes nothing.
        `timeout` and `retry_attempts` override the definition's, as SubmitJob's `Timeout` and
        `RetryStrategy` do.
        """
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key)
            if existing is not None:
                return existing
        base = self._definition(definition)
        check_name(job_name, "job name")
        job_queue = check_name(queue_name(job_queue), "job queue")
        spec, env = apply_overrides(
            base,
            container_overrides,
            parameters=parameters,
            timeout=timeout,
            retry_attempts=retry_attempts,
        )
        self._runner(spec.runner)  # an unavailable runner fails the submission, not the run
        runtime.check(spec, spec.working_dir)  # so does a missing virtualenv or engine
        job_id = str(uuid.uuid4())
        row = {
            "id": job_id,
            "name": job_name,
            "definition": spec.name,
            "queue": job_queue,
            "status": "SUBMITTED",
            "attempts": 0,
            "command": _dumps(spec.command),
            "environment": _dumps(env),
            "spec": _dumps(spec.to_dict()),
            "attempt_log": "[]",
            "log_paths": "[]",
            "created_at": time.time(),
            "idempotency_key": idempotency_key,
        }
        try:
            with self.ledger.begin() as conn:
                conn.execute(insert(job_runs).values(**row))
        except IntegrityError:
            # a concurrent submission with the same key won: it is the job
            existing = self._by_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing
        return job_id

    def run_sync(self, definition: str | JobDefinition, **submit: Any) -> JobRun:
        """`submit` then `run`: the job's final record."""
        return self.run(self.submit(definition, **submit))

    def terminate(self, job_id: str, reason: str = "Terminated by user") -> JobRun:
        """AWS Batch's TerminateJob (and CancelJob): a job that has not started ends FAILED
        now; a running one is stopped by the worker running it (within a second) and ends
        FAILED with `reason`, without retries. A job that already ended is left as it is."""
        job = self.get(job_id)
        if job.done:
            return job
        if not isinstance(reason, str) or not reason.strip():
            raise JobError(f"termination of job {job.id}", "needs a reason", "say why")
        with contextlib.suppress(IntegrityError), self.ledger.begin() as conn:
            conn.execute(
                insert(job_cancels).values(job_id=job.id, reason=reason, requested_at=time.time())
            )
        # not started by anyone: end it here (a worker that claims it meanwhile sees the
        # request before its first attempt)
        with self.ledger.begin() as conn:
            conn.execute(
                update(job_runs)
                .where(
                    job_runs.c.id == job.id,
                    job_runs.c.owner.is_(None),
                    job_runs.c.status.in_(("SUBMITTED", "RUNNABLE")),
                )
                .values(status="FAILED", status_reason=reason, stopped_at=time.time())
            )
        job = self.get(job.id)
        if not job.done and job.owner is not None and self._stale(job):
            return self.run(job.id)  # its worker died: take over, which ends it as FAILED
        return job

    def _cancel_reason(self, job_id: str) -> str | None:
        with self.ledger.reader.connect() as conn:
            return conn.execute(
                select(job_cancels.c.reason).where(job_cancels.c.job_id == job_id)
            ).scalar()

    # -- running ----------------------------------------------------------------------------

    def run(self, job_id: str, *, on_update: Callable[[JobRun], None] | None = None) -> JobRun:
        """Run the job here to SUCCEEDED or FAILED, retrying as its definition allows.

        A job that already ended is returned as recorded. A job another live worker is running
        is waited for; one whose worker died is taken over (its leftover processes on this host
        are killed first, and the interrupted attempt does not use up a retry). `on_update` is
        called with the record after every change (for progress displays).
        """
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        job = self._claim(self.get(job_id), owner)
        if job.done:
            return job
        notify = on_update or (lambda _job: None)
        notify(job)
        while True:
            cancelled = self._cancel_reason(job.id)
            if cancelled is not None:
                return self._save(
                    job,
                    owner,
                    notify,
                    status="FAILED",
                    status_reason=cancelled,
                    stopped_at=time.time(),
                    owner=None,
                )
            used = sum(1 for a in job.attempt_log if a.get("outcome") != "interrupted")
            if used >= job.spec.retry_attempts:
                return self._end(job, owner, notify)
            job = self._attempt(job, owner, notify)
            if job.done:
                return job

    def _attempt(self, job: JobRun, owner: str, notify: Callable[[JobRun], None]) -> JobRun:
        number = len(job.attempt_log) + 1
        log_path = self.home / "jobs" / job.id / f"{number}.log"
        attempt = Attempt(job.id, job.name, job.queue, number, job.spec, log_path)
        runner = self._runner(job.spec.runner)
        try:
            handle = runner.start(attempt)
        except HeadraceError as exc:  # bad working_dir and the like: retrying will not help
            now = time.time()
            entry = _entry(number, log_path, now, None)
            entry.update(stopped_at=now, exit_code=None, reason=str(exc), outcome="failed")
            return self._save(
                job,
                owner,
                notify,
                status="FAILED",
                attempts=number,
                started_at=now,
                attempt_log=[*job.attempt_log, entry],
                status_reason=str(exc),
                stopped_at=now,
                owner=None,
            )
        started = time.time()
        opened = [*job.attempt_log, _entry(number, log_path, started, runner.pid(handle))]
        try:
            job = self._save(
                job,
                owner,
                notify,
                status="RUNNING",
                attempts=number,
                started_at=job.started_at or started,
                attempt_log=opened,
                log_paths=[*job.log_paths, str(log_path)],
            )
            result, ended_early = self._wait(job, owner, runner, handle, started)
        except BaseException:
            # Ctrl-C, a draining worker, a lost claim: stop the attempt and leave the job to be
            # run again; the attempt is recorded but does not use up a retry
            runner.stop(handle, INTERRUPTED_REASON)
            with contextlib.suppress(Exception):
                self._save(
                    job,
                    owner,
                    notify,
                    status="RUNNABLE",
                    owner=None,
                    attempts=number,
                    attempt_log=_close(
                        opened, time.time(), None, INTERRUPTED_REASON, "interrupted"
                    ),
                )
            raise
        succeeded = result.exit_code == 0 and not ended_early and result.reason is None
        reason = result.reason or EXITED_REASON
        stopped = time.time()
        log = _close(
            job.attempt_log,
            stopped,
            result.exit_code,
            result.reason,
            "succeeded" if succeeded else "failed",
        )
        used = sum(1 for a in log if a.get("outcome") != "interrupted")
        if succeeded or ended_early or used >= job.spec.retry_attempts:
            if not succeeded and result.exit_code not in (None, 0):
                reason = f"{reason} (exit code {result.exit_code}, attempt {number})"
            return self._save(
                job,
                owner,
                notify,
                status="SUCCEEDED" if succeeded else "FAILED",
                exit_code=result.exit_code,
                status_reason=reason,
                stopped_at=stopped,
                attempt_log=log,
                owner=None,
            )
        # as AWS Batch does between attempts: back to RUNNABLE, then RUNNING again
        return self._save(
            job,
            owner,
            notify,
            status="RUNNABLE",
            exit_code=result.exit_code,
            status_reason=f"{reason} (exit code {result.exit_code}, attempt {number}); retrying",
            attempt_log=log,
        )

    def _wait(
        self, job: JobRun, owner: str, runner: JobRunner, handle: Any, started: float
    ) -> tuple[Poll, bool]:
        """How the attempt ended, and whether it was ended early (timed out or terminated: as
        on AWS Batch, neither is retried)."""
        timeout = job.spec.timeout
        beat = checked = time.monotonic()
        delay = 0.005
        while True:
            result = runner.poll(handle)
            if not result.running:
                return result, False
            if timeout is not None and time.time() - started >= timeout:
                return runner.stop(handle, TIMEOUT_REASON), True
            if time.monotonic() - checked >= CANCEL_CHECK_SECONDS:
                checked = time.monotonic()
                cancelled = self._cancel_reason(job.id)
                if cancelled is not None:
                    return runner.stop(handle, cancelled), True
            if time.monotonic() - beat >= self.heartbeat_seconds:
                beat = time.monotonic()
                self._heartbeat(job.id, owner)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)  # short jobs end fast; long ones poll five times a second

    def _end(self, job: JobRun, owner: str, notify: Callable[[JobRun], None]) -> JobRun:
        """Budget already used (a takeover after the last attempt was recorded): close as FAILED."""
        last = job.attempt_log[-1] if job.attempt_log else {}
        return self._save(
            job,
            owner,
            notify,
            status="FAILED",
            exit_code=last.get("exit_code"),
            status_reason=job.status_reason or last.get("reason") or EXITED_REASON,
            stopped_at=time.time(),
            owner=None,
        )

    # -- claiming ---------------------------------------------------------------------------

    def _claim(self, job: JobRun, owner: str) -> JobRun:
        while True:
            if job.done:
                return job
            if job.owner is not None and not self._stale(job):
                time.sleep(0.2)  # another worker is on it: wait for its outcome
                job = self.get(job.id)
                continue
            took_over = job.owner is not None
            values: dict[str, Any] = {"owner": owner, "heartbeat_at": time.time()}
            if took_over:
                _sweep(job.id)
                runtime.remove_leftover_containers(job.spec, job.id, len(job.attempt_log))
                values["status"] = "RUNNABLE"
                values["attempt_log"] = _dumps(
                    _close(job.attempt_log, time.time(), None, INTERRUPTED_REASON, "interrupted")
                )
            elif job.status == "SUBMITTED":
                values["status"] = "RUNNABLE"
            stmt = update(job_runs).where(
                job_runs.c.id == job.id,
                job_runs.c.status == job.status,
                job_runs.c.owner.is_(None) if job.owner is None else job_runs.c.owner == job.owner,
            )
            with self.ledger.begin() as conn:
                claimed = conn.execute(stmt.values(**values)).rowcount == 1
            job = self.get(job.id)
            if claimed:
                return job

    def _stale(self, job: JobRun) -> bool:
        host, _, rest = (job.owner or "").partition(":")
        pid = rest.split(":", 1)[0]
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            return True
        return (job.heartbeat_at or 0) < time.time() - self.stale_after

    def _heartbeat(self, job_id: str, owner: str) -> None:
        with self.ledger.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(job_runs.c.id == job_id, job_runs.c.owner == owner)
                .values(heartbeat_at=time.time())
            ).rowcount
        if not done:
            raise JobBusy(f"job {job_id}", "was taken over by another worker", "check its record")

    def _save(
        self, job: JobRun, me: str, notify: Callable[[JobRun], None], **changes: Any
    ) -> JobRun:
        values = dict(changes)
        for key in ("attempt_log", "log_paths"):
            if key in values:
                values[key] = _dumps(values[key])
        if "owner" not in values:
            values["heartbeat_at"] = time.time()
        with self.ledger.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(job_runs.c.id == job.id, job_runs.c.owner == me)
                .values(**values)
            ).rowcount
        if not done:
            raise JobBusy(f"job {job.id}", "was taken over by another worker", "check its record")
        job = self.get(job.id)
        notify(job)
        return job

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRun:
        """The job's record; a unique prefix of its id will do."""
        with self.ledger.reader.connect() as conn:
            row = conn.execute(select(job_runs).where(job_runs.c.id == job_id)).mappings().first()
            if row is None and job_id:
                rows = (
                    conn.execute(select(job_runs).where(job_runs.c.id.like(f"{job_id}%")).limit(2))
                    .mappings()
                    .all()
                )
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise JobNotFound(
                f"job {job_id!r}", "does not exist", "list jobs with `headrace jobs list`"
            )
        return JobRun.from_row(row)

    def describe(self, job_id: str) -> dict[str, Any]:
        """The job as AWS Batch `DescribeJobs` returns it."""
        return self.get(job_id).describe()

    def list(
        self, status: str | None = None, *, queue: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Jobs, newest first."""
        if status is not None and status not in STATUSES:
            raise JobError(
                f"status {status!r}", "is not a job status", f"use {', '.join(STATUSES)}"
            )
        query = select(job_runs).order_by(job_runs.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(job_runs.c.status == status)
        if queue:
            query = query.where(job_runs.c.queue == queue)
        with self.ledger.reader.connect() as conn:
            return [JobRun.from_row(r) for r in conn.execute(query).mappings()]

    def logs(self, job_id: str, attempt: int | None = None) -> str:
        """The output of one attempt, or of all of them (headed by attempt when several)."""
        job = self.get(job_id)
        runner = self._runner(job.spec.runner)
        entries = job.attempt_log
        if attempt is not None:
            entries = [a for a in entries if a["number"] == attempt]
        texts = []
        for a in entries:
            text = runner.logs(
                Attempt(job.id, job.name, job.queue, a["number"], job.spec, Path(a["log_path"]))
            )
            if len(entries) > 1:
                text = f"==> attempt {a['number']} <==\n{text}"
            texts.append(text)
        return "".join(t if t.endswith("\n") or not t else t + "\n" for t in texts)

    # -- plumbing ---------------------------------------------------------------------------

    def _by_key(self, key: str) -> str | None:
        with self.ledger.reader.connect() as conn:
            return conn.execute(
                select(job_runs.c.id).where(job_runs.c.idempotency_key == key)
            ).scalar()

    def _definition(self, ref: str | JobDefinition) -> JobDefinition:
        if isinstance(ref, JobDefinition):
            return ref
        name = definition_name(ref)
        if name not in self.definitions:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise JobDefinitionNotFound(
                f"job definition {ref!r}",
                f"is not registered (known: {known})",
                "register it with app.job_definition(...)",
            )
        return self.definitions[name]

    def _runner(self, name: str) -> JobRunner:
        if name not in self._runners:
            self._runners[name] = get_runner(name)
        return self._runners[name]


def _entry(number: int, log_path: Path, started: float, pid: int | None) -> dict[str, Any]:
    return {
        "number": number,
        "log_path": str(log_path),
        "host": socket.gethostname(),
        "pid": pid,
        "started_at": started,
    }


def _close(
    log: list[dict[str, Any]],
    stopped: float,
    exit_code: int | None,
    reason: str | None,
    outcome: str,
) -> list[dict[str, Any]]:
    """The attempt log with its open (last) attempt ended."""
    if not log or log[-1].get("stopped_at") is not None:
        return list(log)
    last = {
        **log[-1],
        "stopped_at": stopped,
        "exit_code": exit_code,
        "reason": reason,
        "outcome": outcome,
    }
    return [*log[:-1], last]


def _alive(pid: int) -> bool:
    # a killed worker its parent has not reaped yet is a zombie: as dead as it gets
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _sweep(job_id: str) -> None:
    """Kill what a dead worker's attempt left on this host: every process carrying its id.

    The main process died with its worker (PR_SET_PDEATHSIG), but the processes it spawned did
    not; they inherited HEADRACE_JOB_ID, which is how we find them (other users' processes are
    not readable, and not ours to kill)."""
    marker = f"HEADRACE_JOB_ID={job_id}"
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.info["pid"] == me:
            continue
        try:
            with open(f"/proc/{proc.info['pid']}/environ", "rb") as fh:
                found = marker.encode() in fh.read().split(b"\0")
            if found:
                proc.kill()
        except (OSError, psutil.Error):
            continue
