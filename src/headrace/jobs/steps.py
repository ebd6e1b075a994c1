"""EMR-style steps: `add-steps`, `list-steps`, `cancel-steps`, each step run as a headrace job.

A *cluster* here is a name for a queue of steps (EMR's cluster id; any job-name-like text).
Steps of one cluster run one at a time, in the order they were added, as on an EMR cluster
with a step concurrency of 1; each runs as a job (`Jobs`), so its run, exit code and logs are
in the ledger like any job's, and the step records which job it was.

* `Type=Spark`: `Args` are spark-submit's arguments (the `spark-submit` runner); `Properties`
  become `--conf` options.
* `Type=CUSTOM_JAR` with `Jar=command-runner.jar`: `Args` is a command; `spark-submit ...` runs
  on the spark-submit runner, anything else on the local runner. Other jars are refused.
* `ActionOnFailure`: `CONTINUE` (the default, as `aws emr add-steps`), `CANCEL_AND_WAIT` (the
  cluster's later pending steps are cancelled) or `TERMINATE_CLUSTER` / `TERMINATE_JOB_FLOW`
  (they are cancelled, and the cluster takes no more steps).

States are EMR's: PENDING, RUNNING, COMPLETED, FAILED, CANCEL_PENDING, CANCELLED.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from headrace.jobs.bucket_paths import resolve_args
from headrace.jobs.definition import JobDefinition, check_name
from headrace.jobs.emr_shorthand import parse
from headrace.jobs.errors import InvalidJobDefinition, JobError
from headrace.jobs.schema import STEP_DONE, STEP_STATES, job_steps, step_clusters
from headrace.jobs.service import Jobs

ACTIONS = {
    "CONTINUE": "CONTINUE",
    "CANCEL_AND_WAIT": "CANCEL_AND_WAIT",
    "TERMINATE_CLUSTER": "TERMINATE_CLUSTER",
    "TERMINATE_JOB_FLOW": "TERMINATE_CLUSTER",  # EMR's older name for the same
}
STEP_KEYS = {"Type", "Name", "ActionOnFailure", "Args", "Jar", "MainClass", "Properties"}
COMMAND_RUNNER = "command-runner.jar"
_ID_CHARS = string.ascii_uppercase + string.digits
_JOB_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class StepConfig:
    """One step as `aws emr add-steps --steps` describes it."""

    name: str
    type: str  # "Spark" or "CUSTOM_JAR"
    args: list[str]
    action_on_failure: str = "CONTINUE"
    jar: str | None = None
    properties: dict[str, str] = field(default_factory=dict)

    def command(self) -> tuple[str, list[str]]:
        """(runner, command) the step runs as."""
        if self.type == "Spark":
            conf = [x for k, v in self.properties.items() for x in ("--conf", f"{k}={v}")]
            return "spark-submit", [*conf, *self.args]
        if self.args[0] == "spark-submit":
            return "spark-submit", self.args[1:]
        return "subprocess", list(self.args)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Type": self.type,
            "Name": self.name,
            "ActionOnFailure": self.action_on_failure,
            "Args": list(self.args),
        }
        if self.jar:
            out["Jar"] = self.jar
        if self.properties:
            out["Properties"] = dict(self.properties)
        return out


def step_from_dict(data: Any, subject: str) -> StepConfig:
    """A step from the shorthand's dict, or from EMR's JSON (`Type`/`Args` or the API's
    `HadoopJarStep: {Jar, Args}`)."""
    if not isinstance(data, dict):
        raise InvalidJobDefinition(subject, f"must be an object, got {data!r}", "")
    data = dict(data)
    hadoop = data.pop("HadoopJarStep", None)
    if isinstance(hadoop, dict):
        data.setdefault("Type", "CUSTOM_JAR")
        data.setdefault("Jar", hadoop.get("Jar"))
        data.setdefault("Args", hadoop.get("Args", []))
    unknown = set(data) - STEP_KEYS
    if unknown:
        raise InvalidJobDefinition(
            subject, f"has unknown keys {sorted(unknown)}", f"use {', '.join(sorted(STEP_KEYS))}"
        )
    kind = str(data.get("Type") or "CUSTOM_JAR")
    kinds = {"spark": "Spark", "custom_jar": "CUSTOM_JAR"}
    if kind.lower() not in kinds:
        raise InvalidJobDefinition(
            subject,
            f"has Type={kind}, which headrace does not run",
            "use Type=Spark, or Type=CUSTOM_JAR with Jar=command-runner.jar (Streaming, Hive "
            "and Pig steps are not supported)",
        )
    kind = kinds[kind.lower()]
    args = data.get("Args", [])
    if isinstance(args, str):
        args = [args]
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidJobDefinition(
            subject, f"Args must be a list of strings, got {args!r}", "write Args=[a,b,c]"
        )
    if not args:
        raise InvalidJobDefinition(
            subject,
            "has no Args",
            "a Spark step's Args are spark-submit's arguments: Args=[script.py,--arg,value]",
        )
    action = str(data.get("ActionOnFailure") or "CONTINUE").upper()
    if action not in ACTIONS:
        raise InvalidJobDefinition(
            subject,
            f"has ActionOnFailure={data['ActionOnFailure']}",
            "use CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER",
        )
    jar = data.get("Jar")
    if kind == "CUSTOM_JAR" and (
        not isinstance(jar, str) or jar.rsplit("/", 1)[-1] != COMMAND_RUNNER
    ):
        raise InvalidJobDefinition(
            subject,
            f"runs the jar {jar!r}; headrace runs commands, not Java main classes",
            "use Jar=command-runner.jar with the command in Args, or Type=Spark",
        )
    properties = data.get("Properties") or {}
    if not isinstance(properties, dict):
        raise InvalidJobDefinition(subject, "Properties must be {key=value,...}", "")
    name = data.get("Name") or ("Spark application" if kind == "Spark" else "Custom JAR")
    if not isinstance(name, str) or len(name) > 256:
        raise InvalidJobDefinition(subject, "Name must be text of at most 256 characters", "")
    return StepConfig(
        name=name,
        type=kind,
        args=list(args),
        action_on_failure=ACTIONS[action],
        jar=jar if isinstance(jar, str) else None,
        properties={str(k): str(v) for k, v in properties.items()},
    )


def parse_steps(values: list[str]) -> list[StepConfig]:
    """`--steps` values: shorthand (one step each), JSON (a step or a list of steps), or
    `file://steps.json`."""
    out: list[StepConfig] = []
    for n, text in enumerate(values, start=1):
        subject = f"step {len(out) + 1} (--steps value {n})"
        source = text
        if text.startswith("file://"):
            path = Path(text.removeprefix("file://"))
            try:
                source = path.read_text()
            except OSError as exc:
                raise InvalidJobDefinition(subject, f"cannot read {path}: {exc}", "") from None
        stripped = source.strip()
        if stripped[:1] in ("[", "{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise InvalidJobDefinition(
                    subject, f"is not valid JSON: {exc}", "fix the JSON, or use the shorthand"
                ) from None
            items = data if isinstance(data, list) else [data]
            for item in items:
                out.append(step_from_dict(item, f"step {len(out) + 1} (--steps value {n})"))
            continue
        out.append(step_from_dict(parse(source, subject), subject))
    if not out:
        raise InvalidJobDefinition("--steps", "names no step", "give at least one step")
    return out


@dataclass(frozen=True)
class StepRecord:
    id: str
    cluster_id: str
    name: str
    config: dict[str, Any]
    definition: JobDefinition
    action_on_failure: str
    status: str
    reason: str | None
    job_id: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> StepRecord:
        r = dict(row)
        return cls(
            id=r["id"],
            cluster_id=r["cluster_id"],
            name=r["name"],
            config=json.loads(r["config"]),
            definition=JobDefinition.from_dict(json.loads(r["definition"])),
            action_on_failure=r["action_on_failure"],
            status=r["status"],
            reason=r["reason"],
            job_id=r["job_id"],
            created_at=r["created_at"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
        )

    @property
    def done(self) -> bool:
        return self.status in STEP_DONE

    def describe(self) -> dict[str, Any]:
        """The step as `aws emr list-steps` shows it (times in epoch seconds)."""
        status: dict[str, Any] = {
            "State": self.status,
            "StateChangeReason": {"Message": self.reason} if self.reason else {},
            "Timeline": {
                k: v
                for k, v in (
                    ("CreationDateTime", self.created_at),
                    ("StartDateTime", self.started_at),
                    ("EndDateTime", self.ended_at),
                )
                if v is not None
            },
        }
        if self.status == "FAILED" and self.reason:
            status["FailureDetails"] = {"Reason": self.reason, "LogFile": self.job_id}
        runner, command = StepConfig(
            self.name,
            self.config["Type"],
            self.config["Args"],
            jar=self.config.get("Jar"),
            properties=self.config.get("Properties") or {},
        ).command()
        return {
            "Id": self.id,
            "Name": self.name,
            "Config": {
                "Jar": self.config.get("Jar") or COMMAND_RUNNER,
                "Properties": self.config.get("Properties") or {},
                "Args": (["spark-submit"] if runner == "spark-submit" else []) + command,
            },
            "ActionOnFailure": self.action_on_failure,
            "Status": status,
            "JobId": self.job_id,
        }


class Steps:
    """Steps in the ledger, run through `jobs`."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.ledger = jobs.ledger

    # -- adding -----------------------------------------------------------------------------

    def add(
        self,
        cluster_id: str,
        steps: list[StepConfig],
        *,
        working_dir: str | None = None,
        environment: dict[str, str] | None = None,
        cluster: dict[str, str] | None = None,
    ) -> list[str]:
        """Record `steps` (PENDING) on `cluster_id` and return their ids; `run` runs them.
        `cluster` maps a runner to where it runs (`{"spark-submit": "spark://h:7077"}`)."""
        check_name(cluster_id, "cluster id")
        now = time.time()
        rows = []
        for i, step in enumerate(steps):
            step_id = "s-" + "".join(secrets.choice(_ID_CHARS) for _ in range(13))
            runner, command = step.command()
            if runner == "subprocess":  # the Ray and Spark runners resolve them as they start
                storage = (environment or {}).get("HEADRACE_STORAGE")
                command = [command[0], *resolve_args(command[1:], storage, runner)]
            definition = JobDefinition(
                name=f"step-{step_id}",
                command=command,
                runner=runner,
                working_dir=working_dir,
                environment=dict(environment or {}),
                cluster=(cluster or {}).get(runner),
            )
            rows.append(
                {
                    "id": step_id,
                    "cluster_id": cluster_id,
                    "position": now + i * 1e-6,
                    "name": step.name,
                    "config": json.dumps(step.to_dict()),
                    "definition": json.dumps(definition.to_dict()),
                    "action_on_failure": step.action_on_failure,
                    "status": "PENDING",
                    "created_at": now,
                }
            )
        with self.ledger.begin() as conn:
            row = (
                conn.execute(select(step_clusters).where(step_clusters.c.id == cluster_id))
                .mappings()
                .first()
            )
            if row is None:
                conn.execute(
                    insert(step_clusters).values(id=cluster_id, status="WAITING", created_at=now)
                )
            elif row["status"] == "TERMINATED":
                raise JobError(
                    f"cluster {cluster_id!r}",
                    f"is terminated ({row['reason']}) and takes no more steps",
                    "add the steps to another cluster id",
                )
            conn.execute(insert(job_steps), rows)
        return [r["id"] for r in rows]

    # -- running ----------------------------------------------------------------------------

    def run(
        self, cluster_id: str, *, on_update: Callable[[StepRecord], None] | None = None
    ) -> list[StepRecord]:
        """Run the cluster's steps in order until none is left pending; return every step.

        Safe to call from several processes: a step's job runs once (the others wait for it,
        or take it over if its worker died), and each step is settled once."""
        notify = on_update or (lambda _step: None)
        while True:
            step = self._next(cluster_id)
            if step is None:
                return self.list(cluster_id)
            if step.status == "PENDING":
                job_id = self.jobs.submit(
                    step.definition,
                    job_name=_job_name(step.name),
                    idempotency_key=f"emr-step:{step.id}",
                )
                if not self._move(
                    step, ("PENDING",), status="RUNNING", job_id=job_id, started_at=time.time()
                ):
                    continue  # another runner took it or it was cancelled: look again
                step = self.get(step.id)
                notify(step)
            assert step.job_id is not None
            job = self.jobs.run(step.job_id)
            if job.status == "SUCCEEDED":
                final, reason = "COMPLETED", None
            else:
                final, reason = "FAILED", job.status_reason
            if step.status == "CANCEL_PENDING" or self.get(step.id).status == "CANCEL_PENDING":
                final, reason = "CANCELLED", self.get(step.id).reason
            if self._move(
                step,
                ("RUNNING", "CANCEL_PENDING"),
                status=final,
                reason=reason,
                ended_at=time.time(),
            ):
                step = self.get(step.id)
                notify(step)
                if final == "FAILED" and step.action_on_failure != "CONTINUE":
                    for cancelled in self._after_failure(step):
                        notify(cancelled)

    def _next(self, cluster_id: str) -> StepRecord | None:
        with self.ledger.reader.connect() as conn:
            row = (
                conn.execute(
                    select(job_steps)
                    .where(
                        job_steps.c.cluster_id == cluster_id, job_steps.c.status.not_in(STEP_DONE)
                    )
                    .order_by(job_steps.c.position)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return StepRecord.from_row(row) if row else None

    def _move(self, step: StepRecord, states: tuple[str, ...], **values: Any) -> bool:
        with self.ledger.begin() as conn:
            return (
                conn.execute(
                    update(job_steps)
                    .where(job_steps.c.id == step.id, job_steps.c.status.in_(states))
                    .values(**values)
                ).rowcount
                == 1
            )

    def _after_failure(self, failed: StepRecord) -> list[StepRecord]:
        reason = (
            f"Cancelled: step {failed.id} ({failed.name}) failed with "
            f"ActionOnFailure={failed.action_on_failure}"
        )
        with self.ledger.begin() as conn:
            ids = (
                conn.execute(
                    select(job_steps.c.id).where(
                        job_steps.c.cluster_id == failed.cluster_id,
                        job_steps.c.status == "PENDING",
                    )
                )
                .scalars()
                .all()
            )
            conn.execute(
                update(job_steps)
                .where(job_steps.c.id.in_(ids), job_steps.c.status == "PENDING")
                .values(status="CANCELLED", reason=reason, ended_at=time.time())
            )
            if failed.action_on_failure == "TERMINATE_CLUSTER":
                conn.execute(
                    update(step_clusters)
                    .where(step_clusters.c.id == failed.cluster_id)
                    .values(
                        status="TERMINATED",
                        reason=f"step {failed.id} failed with ActionOnFailure=TERMINATE_CLUSTER",
                    )
                )
        return [self.get(i) for i in ids]

    # -- cancelling -------------------------------------------------------------------------

    def cancel(
        self, cluster_id: str, step_ids: list[str], reason: str = "Cancelled by user"
    ) -> list[StepRecord]:
        """EMR's cancel-steps: a pending step is cancelled at once; a running one's job is
        terminated (SEND_INTERRUPT) and the step ends CANCELLED."""
        out = []
        for step_id in step_ids:
            step = self.get(step_id)
            if step.cluster_id != cluster_id:
                raise JobError(
                    f"step {step_id}",
                    f"is on cluster {step.cluster_id!r}, not {cluster_id!r}",
                    "check the cluster id",
                )
            if step.status == "PENDING" and self._move(
                step, ("PENDING",), status="CANCELLED", reason=reason, ended_at=time.time()
            ):
                pass
            elif step.status == "RUNNING" and self._move(
                step, ("RUNNING",), status="CANCEL_PENDING", reason=reason
            ):
                assert step.job_id is not None
                self.jobs.terminate(step.job_id, reason)
            out.append(self.get(step_id))
        return out

    # -- reading ----------------------------------------------------------------------------

    def get(self, step_id: str) -> StepRecord:
        with self.ledger.reader.connect() as conn:
            row = (
                conn.execute(select(job_steps).where(job_steps.c.id == step_id)).mappings().first()
            )
        if row is None:
            raise JobError(
                f"step {step_id!r}", "does not exist", "list steps with `headrace jobs list-steps`"
            )
        return StepRecord.from_row(row)

    def list(
        self, cluster_id: str, states: list[str] | None = None, step_ids: list[str] | None = None
    ) -> list[StepRecord]:
        """The cluster's steps, newest first (as `aws emr list-steps` orders them)."""
        for state in states or []:
            if state not in STEP_STATES:
                raise JobError(
                    f"step state {state!r}", "is not a step state", f"use {', '.join(STEP_STATES)}"
                )
        query = (
            select(job_steps)
            .where(job_steps.c.cluster_id == cluster_id)
            .order_by(job_steps.c.position.desc())
        )
        if states:
            query = query.where(job_steps.c.status.in_(states))
        if step_ids:
            query = query.where(job_steps.c.id.in_(step_ids))
        with self.ledger.reader.connect() as conn:
            return [StepRecord.from_row(r) for r in conn.execute(query).mappings()]


def _job_name(step_name: str) -> str:
    name = _JOB_NAME.sub("-", step_name).strip("-_")[:128] or "step"
    return name if name[0].isalnum() else f"s{name}"[:128]


def _main(argv: list[str]) -> None:
    """`python -m headrace.jobs.steps LEDGER_URL HOME CLUSTER_ID`: run the cluster's steps
    (what `headrace jobs add-steps` starts in the background)."""
    from headrace.ledger import Ledger

    ledger_url, home, cluster_id = argv
    ledger = Ledger(ledger_url)
    try:
        Steps(Jobs(ledger, home)).run(cluster_id)
    finally:
        ledger.close()


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
