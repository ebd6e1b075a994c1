"""Step Functions error names, the error raised inside an execution, and Retry/Catch matching.

Matching follows AWS's "Handling errors in Step Functions workflows":

* ``States.ALL`` matches every error name except the terminal ``States.DataLimitExceeded`` and
  ``States.Runtime``.
* ``States.TaskFailed`` matches every error name except ``States.Timeout`` (and, like
  ``States.ALL``, not the two terminal errors).
* ``States.Runtime`` "isn't retriable, and will always cause the execution to fail", and
  ``States.DataLimitExceeded`` is a terminal error. AWS does not say what happens when a retrier
  or catcher names them explicitly; we follow the "always fail" wording, so nothing matches them.

``find_retrier`` returns the *first* retrier whose ErrorEquals matches, even if its attempts are
used up: per the ASL spec, once that retrier is exhausted the state goes to its catchers; later
retriers are not consulted. Callers check :func:`retry_allowed` with that retrier's own count.

Retry timing: the n-th retry (``attempt`` counted from 1) waits
``IntervalSeconds * BackoffRate ** (attempt - 1)``, capped at ``MaxDelaySeconds`` when present;
with ``JitterStrategy: FULL`` the wait is drawn uniformly from ``[0, delay)`` by scaling with the
caller-provided random number, so replays of an execution history stay deterministic.
"""

from __future__ import annotations

from typing import Any

from headrace.retry import exponential, full_jitter

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
RUNTIME = "States.Runtime"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
BRANCH_FAILED = "States.BranchFailed"
PERMISSIONS = "States.Permissions"
EXCEEDED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"
ITEM_READER_FAILURE = "States.ItemReaderFailed"
RESULT_WRITER_FAILED = "States.ResultWriterFailed"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"

#: Errors no retrier or catcher can handle: they always fail the execution.
TERMINAL_ERRORS = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})

#: Every predefined name, used by validation to flag typos such as "States.Al".
KNOWN_ERRORS = frozenset(
    {
        ALL,
        TASK_FAILED,
        TIMEOUT,
        HEARTBEAT_TIMEOUT,
        RUNTIME,
        NO_CHOICE_MATCHED,
        INTRINSIC_FAILURE,
        PARAMETER_PATH_FAILURE,
        RESULT_PATH_MATCH_FAILURE,
        BRANCH_FAILED,
        PERMISSIONS,
        EXCEEDED_TOLERATED_FAILURE_THRESHOLD,
        ITEM_READER_FAILURE,
        RESULT_WRITER_FAILED,
        DATA_LIMIT_EXCEEDED,
        QUERY_EVALUATION_ERROR,
        "States.Http.Socket",
    }
)

DEFAULT_INTERVAL_SECONDS = 1
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_RATE = 2.0


class StatesError(Exception):
    """An error inside an execution, carrying ASL's ``Error`` name and ``Cause`` text."""

    def __init__(self, error: str, cause: str = "") -> None:
        self.error = error
        self.cause = cause
        super().__init__(f"{error}: {cause}" if cause else error)

    @property
    def error_name(self) -> str:
        """The name workers report for this error (instead of the class name)."""
        return self.error

    def to_output(self) -> dict[str, str]:
        """The ``{"Error", "Cause"}`` object a Catch passes on as the error output."""
        return {"Error": self.error, "Cause": self.cause}

    def __reduce__(self):  # keep both parts when pickled across worker processes
        return (self.__class__, (self.error, self.cause))


def error_matches(error_equals: list[str], error: str) -> bool:
    """Whether a retrier's or catcher's ``ErrorEquals`` handles ``error``."""
    if error in TERMINAL_ERRORS:
        return False
    for name in error_equals:
        if name in (error, ALL):
            return True
        if name == TASK_FAILED and error != TIMEOUT:
            return True
    return False


def _first_matching(entries: Any, error: str) -> tuple[int, dict] | None:
    if not isinstance(entries, list):
        return None
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        names = entry.get("ErrorEquals")
        if isinstance(names, list) and error_matches(names, error):
            return index, entry
    return None


def find_retrier(state: dict, error: str) -> tuple[int, dict] | None:
    """The first retrier of ``state`` whose ``ErrorEquals`` matches, with its index."""
    return _first_matching(state.get("Retry"), error)


def find_catcher(state: dict, error: str) -> dict | None:
    """The first catcher of ``state`` whose ``ErrorEquals`` matches."""
    found = _first_matching(state.get("Catch"), error)
    return found[1] if found else None


def retry_allowed(retrier: dict, attempts_so_far: int) -> bool:
    """Whether another retry is allowed after ``attempts_so_far`` retries by this retrier."""
    return attempts_so_far < retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)


def retry_delay(retrier: dict, attempt: int, rand: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based); ``rand`` is in [0, 1)."""
    interval = retrier.get("IntervalSeconds", DEFAULT_INTERVAL_SECONDS)
    backoff = retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE)
    delay = exponential(attempt, interval, backoff, retrier.get("MaxDelaySeconds"))
    if retrier.get("JitterStrategy", "NONE") == "FULL":
        delay = full_jitter(delay, rand)
    return delay
