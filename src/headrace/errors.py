"""The exceptions headrace users see.

Every error names the object it is about, the reason, and the fix, so a message read in a log
or a dead-letter record is enough to act on. This module is a leaf: any module may import it.
"""

from __future__ import annotations


class HeadraceError(Exception):
    """Base of every error headrace raises on purpose."""

    def __init__(self, subject: str, reason: str, fix: str | None = None) -> None:
        self.subject = subject
        self.reason = reason
        self.fix = fix
        message = f"{subject}: {reason}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)

    def __reduce__(self):  # keep the three parts when pickled across worker processes
        return (self.__class__, (self.subject, self.reason, self.fix))


class ConfigError(HeadraceError):
    """headrace.toml or a HEADRACE_* variable is wrong."""


class AppError(HeadraceError):
    """The app registry is inconsistent: unknown function, duplicate name, bad trigger."""


class InvalidKey(HeadraceError):
    """An object key or bucket name is not allowed."""


class ObjectNotFound(HeadraceError):
    """The object does not exist in the bucket."""


class LedgerError(HeadraceError):
    """The ledger cannot be opened or is in an unexpected state."""


class MalformedEvent(HeadraceError):
    """An event does not have the shape the handler expects."""


class FunctionError(HeadraceError):
    """A function could not be loaded or run."""


class InvocationTimeout(HeadraceError):
    """The function ran past its timeout and its worker was stopped."""


class MemoryLimitExceeded(HeadraceError):
    """The function used more memory than its limit and its worker was stopped."""


class TmpSpaceExceeded(HeadraceError):
    """The function wrote more into its scratch folder than its limit allows."""


class ExecutorError(HeadraceError):
    """An executor cannot start or lost a worker."""


class UnsupportedGrib(HeadraceError):
    """A GRIB message is valid but cannot be converted (for example spectral coefficients)."""


class CorruptGrib(HeadraceError):
    """A GRIB file is truncated or damaged."""


class PatternError(HeadraceError):
    """An event-bus rule pattern is not valid EventBridge pattern syntax."""


class StreamError(HeadraceError):
    """A stream, its log backend, a source, an operator or a sink cannot do what was asked."""


class FeatureStoreError(HeadraceError):
    """A feature group, its online or offline store, or a feature query is wrong."""


#: Errors that another attempt with the same input cannot fix: the event, a key or a definition
#: is wrong. Invocations failing with one go to the dead-letter list at once, not after retries.
#: Names, not classes: an attempt's error reaches the coordinator as "Name: message" text.
NOT_RETRIED = frozenset(
    {"MalformedEvent", "InvalidKey", "DefinitionError", "BuildError", "InvalidExecutionInput"}
)


def is_deterministic(error: str | None) -> bool:
    """Whether an attempt's error line ("Name: message") names an error retries cannot fix."""
    return bool(error) and error.partition(":")[0].strip() in NOT_RETRIED  # type: ignore[union-attr]
