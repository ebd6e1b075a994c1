"""`JobRun`, a job as recorded in the ledger, and its AWS Batch `DescribeJobs` shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from headrace.jobs.definition import JobDefinition

ARN_PREFIX = "arn:aws:batch:local:000000000000"


def job_arn(job_id: str) -> str:
    return f"{ARN_PREFIX}:job/{job_id}"


@dataclass(frozen=True)
class JobRun:
    id: str
    name: str
    definition: str
    queue: str
    status: str
    attempts: int
    exit_code: int | None
    status_reason: str | None
    command: list[str]
    environment: dict[str, str]  # the submission's overrides only
    spec: JobDefinition  # the effective definition
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    stopped_at: float | None = None
    idempotency_key: str | None = None
    owner: str | None = None
    heartbeat_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED")

    @classmethod
    def from_row(cls, row: Any) -> JobRun:
        r = dict(row)
        return cls(
            id=r["id"],
            name=r["name"],
            definition=r["definition"],
            queue=r["queue"],
            status=r["status"],
            attempts=r["attempts"],
            exit_code=r["exit_code"],
            status_reason=r["status_reason"],
            command=json.loads(r["command"]),
            environment=json.loads(r["environment"]),
            spec=JobDefinition.from_dict(json.loads(r["spec"])),
            attempt_log=json.loads(r["attempt_log"]),
            log_paths=json.loads(r["log_paths"]),
            created_at=r["created_at"],
            started_at=r["started_at"],
            stopped_at=r["stopped_at"],
            idempotency_key=r["idempotency_key"],
            owner=r["owner"],
            heartbeat_at=r["heartbeat_at"],
        )

    def describe(self) -> dict[str, Any]:
        """The job as AWS Batch `DescribeJobs` returns it (times in epoch milliseconds)."""
        last = self.attempt_log[-1] if self.attempt_log else {}
        spec = self.spec
        container: dict[str, Any] = {
            "command": list(self.command),
            "environment": [{"name": k, "value": v} for k, v in spec.environment.items()],
            "vcpus": spec.vcpus,
            "memory": spec.memory,
            "resourceRequirements": [
                {"type": "VCPU", "value": f"{spec.vcpus:g}"},
                {"type": "MEMORY", "value": str(spec.memory)},
            ],
            "exitCode": self.exit_code,
            "logStreamName": last.get("log_path"),
        }
        if spec.image:
            container["image"] = spec.image
        if last.get("reason"):
            container["reason"] = last["reason"]
        out: dict[str, Any] = {
            "jobId": self.id,
            "jobName": self.name,
            "jobArn": job_arn(self.id),
            "jobQueue": self.queue,
            "jobDefinition": f"{ARN_PREFIX}:job-definition/{self.definition}:1",
            "status": self.status,
            "statusReason": self.status_reason,
            "attempts": [_attempt(a) for a in self.attempt_log if a.get("stopped_at")],
            "container": container,
            "parameters": dict(spec.parameters),
            "retryStrategy": {"attempts": spec.retry_attempts},
            "createdAt": _ms(self.created_at),
            "startedAt": _ms(self.started_at),
            "stoppedAt": _ms(self.stopped_at),
        }
        if spec.timeout is not None:
            out["timeout"] = {"attemptDurationSeconds": spec.timeout}
        return out


def _attempt(a: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = {"exitCode": a.get("exit_code"), "logStreamName": a["log_path"]}
    if a.get("reason"):
        container["reason"] = a["reason"]
    return {
        "container": container,
        "startedAt": _ms(a.get("started_at")),
        "stoppedAt": _ms(a.get("stopped_at")),
        "statusReason": a.get("reason") or "Essential container in task exited",
    }


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)
