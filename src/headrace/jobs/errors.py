"""The errors `headrace.jobs` raises; each names the job or definition, the reason and the fix.

`error_name` is what a workflow's `Retry`/`Catch` matches when a `batch:submitJob` task raises
one: AWS Step Functions reports a refused SubmitJob call as `Batch.ClientException` (its cause
the service's message) and a FAILED `.sync` job as `States.TaskFailed` (its cause the job's
description).
"""

from __future__ import annotations

import json
from typing import Any

from headrace.errors import HeadraceError


class JobError(HeadraceError):
    """Base of the job errors."""

    error_name = "Batch.ClientException"


class InvalidJobDefinition(JobError):
    """A job definition or its overrides are malformed."""


class JobDefinitionNotFound(JobError):
    """A job was submitted against a definition nobody registered."""


class JobNotFound(JobError):
    """No job run has that id."""


class RunnerNotAvailable(JobError):
    """The definition selects a runner headrace cannot start (yet, or without its extra)."""


class JobBusy(JobError):
    """Another live worker is running this job right now."""


class RuntimeNotAvailable(JobError):
    """The definition's runtime (a virtualenv, a container engine) is missing on this host."""


class JobFailed(JobError):
    """A job ran and ended FAILED. `description` is the job as DescribeJobs shows it, with the
    last lines of its log under `logTail`; `cause` is that description as JSON."""

    error_name = "States.TaskFailed"

    def __init__(self, description: dict[str, Any]) -> None:
        self.description = description
        self.cause = json.dumps(description)
        reason = description.get("statusReason") or "failed"
        super().__init__(f"job {description.get('jobName')!r} ({description.get('jobId')})", reason)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.__class__, (self.description,))
