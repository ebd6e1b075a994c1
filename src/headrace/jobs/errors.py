"""The errors `headrace.jobs` raises; each names the job or definition, the reason and the fix."""

from __future__ import annotations

from headrace.errors import HeadraceError


class JobError(HeadraceError):
    """Base of the job errors."""


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
