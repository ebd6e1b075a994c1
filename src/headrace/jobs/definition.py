"""`JobDefinition` and AWS Batch `ContainerOverrides` applied to it.

The command runs on the worker's host in the definition's runtime (see `headrace.jobs.runtime`):
the project's environment by default, another virtualenv (`venv`), or a container image
(`image`, with docker or podman). It sees the worker's environment (in a container: only the
job's own variables) plus the definition's `environment` and the submission's overrides. vCPUs
are advisory for the subprocess runner (a container engine enforces them); memory is enforced.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from headrace.jobs.errors import InvalidJobDefinition

RUNNERS = ("subprocess", "ray", "spark-submit")
# the engine names `headrace jobs submit --engine` takes, as a definition's runner may be spelled
ENGINES = {"local": "subprocess", "ray": "ray", "spark": "spark-submit"}
MAX_RETRY_ATTEMPTS = 10  # AWS Batch's bound for RetryStrategy.Attempts

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")  # registry/name:tag@digest
_REF = re.compile(r"Ref::([A-Za-z0-9_.-]+)")
_OVERRIDE_KEYS = {"Command", "Environment", "ResourceRequirements", "Vcpus", "Memory"}


def _invalid(subject: str, reason: str, fix: str) -> InvalidJobDefinition:
    return InvalidJobDefinition(subject, reason, fix)


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid(
            f"{what} {name!r}",
            "is not a valid name",
            "use 1-128 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def _check_command(command: Any, subject: str) -> list[str]:
    if (
        not isinstance(command, list | tuple)
        or not command
        or not all(isinstance(a, str) for a in command)
    ):
        raise _invalid(
            subject,
            f"command must be a non-empty list of strings, got {command!r}",
            'write it as an argv list, e.g. ["python", "-m", "mypkg.job"] (no shell)',
        )
    return list(command)


def _check_environment(env: Any, subject: str) -> dict[str, str]:
    if not isinstance(env, dict):
        raise _invalid(subject, f"environment must be a dict, got {type(env).__name__}", "")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise _invalid(subject, f"environment name {key!r} is not valid", "use [A-Za-z_0-9]")
        if key.startswith("AWS_BATCH"):
            raise _invalid(
                subject,
                f"environment name {key!r} is reserved",
                "AWS_BATCH_* variables are set by the runner; pick another name",
            )
        # numbers and booleans are common in hand-written definitions; AWS wants strings
        if isinstance(value, bool | int | float):
            value = str(value)
        if not isinstance(value, str) or "\0" in value:
            raise _invalid(subject, f"environment value of {key!r} must be a string", "")
        out[key] = value
    return out


@dataclass(frozen=True)
class JobDefinition:
    """What to run and with which resources.

    `retry_attempts` counts all attempts, as AWS Batch's `RetryStrategy.Attempts` does: 1 means
    no retry. `timeout` (seconds) applies to each attempt; as on AWS Batch a timed-out attempt is
    not retried. `memory` is in MiB. `parameters` are the defaults for `Ref::name` placeholders
    in the command. `venv` (a Python environment's folder) or `image` (a container image) choose
    where the command runs instead of the project's environment; Python interpreters the
    command names (`python3`, `/usr/bin/python3`, ...) are the chosen environment's.

    `runner` picks the engine: `subprocess` (also spelled `local`), `ray` (Ray's job submission
    API; the command is the entrypoint) or `spark-submit` (also `spark`; the command is
    spark-submit's arguments: options, then the script and its arguments). `cluster` is where
    it runs: a Ray dashboard address (`http://127.0.0.1:8265`; none: a Ray head headrace starts
    for the attempt) or a Spark master (`spark://host:7077`; none: `local[*]`).
    """

    name: str
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    vcpus: float = 1
    memory: int = 2048
    timeout: float | None = None
    retry_attempts: int = 1
    working_dir: str | None = None
    runner: str = "subprocess"
    parameters: dict[str, str] = field(default_factory=dict)
    venv: str | None = None
    image: str | None = None
    cluster: str | None = None

    def __post_init__(self) -> None:
        subject = f"job definition {self.name!r}"
        check_name(self.name, "job definition")
        object.__setattr__(self, "command", _check_command(self.command, subject))
        object.__setattr__(self, "environment", _check_environment(self.environment, subject))
        object.__setattr__(self, "vcpus", _positive(self.vcpus, "vcpus", subject, float))
        object.__setattr__(self, "memory", _positive(self.memory, "memory", subject, int))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _positive(self.timeout, "timeout", subject, float))
        attempts = self.retry_attempts
        if (
            isinstance(attempts, bool)
            or not isinstance(attempts, int)
            or not 1 <= attempts <= MAX_RETRY_ATTEMPTS
        ):
            raise _invalid(
                subject,
                f"retry_attempts must be an integer from 1 to {MAX_RETRY_ATTEMPTS}, "
                f"got {attempts!r}",
                "it counts every attempt, the first one included (AWS Batch semantics)",
            )
        if self.working_dir is not None:
            if not isinstance(self.working_dir, str | Path):
                raise _invalid(subject, "working_dir must be a path", "")
            object.__setattr__(self, "working_dir", str(self.working_dir))
        object.__setattr__(self, "runner", ENGINES.get(self.runner, self.runner))
        if self.runner not in RUNNERS:
            raise _invalid(
                subject,
                f"unknown runner {self.runner!r}",
                f"use one of {', '.join(RUNNERS)} (or the engine names {', '.join(ENGINES)})",
            )
        if self.cluster is not None:
            if self.runner == "subprocess":
                raise _invalid(
                    subject,
                    f"cluster {self.cluster!r} is set but the subprocess runner runs locally",
                    'drop cluster=, or choose runner="ray" or runner="spark-submit"',
                )
            if not isinstance(self.cluster, str) or not self.cluster.strip():
                raise _invalid(subject, f"cluster must be an address, got {self.cluster!r}", "")
        if self.venv is not None and self.image is not None:
            raise _invalid(
                subject,
                "has both venv and image",
                "choose one runtime: a virtualenv, or a container image",
            )
        if self.venv is not None:
            if not isinstance(self.venv, str | Path) or not str(self.venv):
                raise _invalid(subject, f"venv must be a folder path, got {self.venv!r}", "")
            object.__setattr__(self, "venv", str(self.venv))
        if self.image is not None and (
            not isinstance(self.image, str) or not _IMAGE.match(self.image)
        ):
            raise _invalid(
                subject, f"image must be an image reference, got {self.image!r}", "e.g. python:3.11"
            )
        if self.image is not None and self.runner != "subprocess":
            raise _invalid(
                subject,
                f"runs image {self.image!r} on the {self.runner} runner",
                "container images run on the subprocess runner; on Ray or Spark use the "
                "cluster's environment, or venv= for the job's Python",
            )
        params = self.parameters
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise _invalid(subject, "parameters must map strings to strings", "")
        object.__setattr__(self, "parameters", dict(params))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobDefinition:
        if isinstance(data, JobDefinition):
            return data
        if not isinstance(data, dict):
            raise _invalid("job definition", f"expected a dict, got {type(data).__name__}", "")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise _invalid(
                f"job definition {data.get('name')!r}",
                f"unknown fields {sorted(unknown)}",
                f"use {', '.join(sorted(known))}",
            )
        return cls(**data)


def _positive(value: Any, what: str, subject: str, kind: type) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if isinstance(value, float) and kind is int and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise _invalid(subject, f"{what} must be a number, got {value!r}", "") from None
    if not math.isfinite(number) or number <= 0:
        raise _invalid(subject, f"{what} must be positive, got {value!r}", "")
    return number


def definition_name(ref: str) -> str:
    """`name`, `name:revision` or a job-definition ARN → name (headrace keeps no revisions)."""
    if ":job-definition/" in ref:
        ref = ref.split(":job-definition/", 1)[1]
    return ref.split(":", 1)[0]


def queue_name(ref: str) -> str:
    """`name` or a job-queue ARN → name."""
    return ref.split(":job-queue/", 1)[1] if ":job-queue/" in ref else ref


def apply_overrides(
    definition: JobDefinition,
    overrides: dict[str, Any] | None,
    *,
    parameters: dict[str, str] | None = None,
    timeout: float | None = None,
    retry_attempts: int | None = None,
) -> tuple[JobDefinition, dict[str, str]]:
    """The definition a submission runs, and the environment overrides alone (for the record).

    `overrides` is AWS Batch's `ContainerOverrides`: `Command`, `Environment`
    (`[{"Name", "Value"}]`), `ResourceRequirements` (`[{"Type": "VCPU"|"MEMORY", "Value"}]`) and
    the older `Vcpus` / `Memory`.
    """
    subject = f"container overrides for {definition.name!r}"
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise _invalid(subject, "must be an object", "pass a ContainerOverrides dict")
    unknown = set(overrides) - _OVERRIDE_KEYS
    if unknown:
        raise _invalid(
            subject,
            f"unsupported keys {sorted(unknown)}",
            f"use {', '.join(sorted(_OVERRIDE_KEYS))}",
        )
    changes: dict[str, Any] = {}
    if "Command" in overrides:
        changes["command"] = _check_command(overrides["Command"], subject)
    env: dict[str, str] = {}
    for item in overrides.get("Environment") or []:
        if not isinstance(item, dict) or "Name" not in item:
            raise _invalid(subject, f"Environment item {item!r}", 'use {"Name": …, "Value": …}')
        env[item["Name"]] = item.get("Value", "")
    env = _check_environment(env, subject)
    if env:
        changes["environment"] = {**definition.environment, **env}
    if "Vcpus" in overrides:
        changes["vcpus"] = overrides["Vcpus"]
    if "Memory" in overrides:
        changes["memory"] = overrides["Memory"]
    for req in overrides.get("ResourceRequirements") or []:
        kind = req.get("Type") if isinstance(req, dict) else None
        if kind == "VCPU":
            changes["vcpus"] = req.get("Value")
        elif kind == "MEMORY":
            changes["memory"] = req.get("Value")
        else:
            raise _invalid(
                subject, f"resource requirement {req!r} is not supported", "use VCPU or MEMORY"
            )
    if timeout is not None:
        changes["timeout"] = timeout
    if retry_attempts is not None:
        changes["retry_attempts"] = retry_attempts
    merged_params = {**definition.parameters, **(parameters or {})}
    if merged_params:
        changes["parameters"] = merged_params
    effective = replace(definition, **changes)  # __post_init__ validates the result
    command = [_substitute(arg, effective.parameters) for arg in effective.command]
    return replace(effective, command=command), env


def _substitute(arg: str, params: dict[str, str]) -> str:
    # as on AWS Batch, a placeholder without a value stays as written
    return _REF.sub(lambda m: params.get(m.group(1), m.group(0)), arg)


def with_default_cluster(
    definition: JobDefinition, *, ray_address: str = "", spark_master: str = ""
) -> JobDefinition:
    """The definition with the project's Ray address or Spark master when it names none."""
    default = {"ray": ray_address, "spark-submit": spark_master}.get(definition.runner)
    if definition.cluster or not default:
        return definition
    return replace(definition, cluster=default)
