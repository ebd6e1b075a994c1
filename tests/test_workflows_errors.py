"""Step Functions error names, Retry/Catch matching and retry timing."""

from __future__ import annotations

import pickle

import pytest

from headrace.workflows import errors as E
from headrace.workflows.errors import (
    StatesError,
    error_matches,
    find_catcher,
    find_retrier,
    retry_allowed,
    retry_delay,
)


def test_error_name_constants_are_aws_names() -> None:
    assert E.ALL == "States.ALL"
    assert E.TASK_FAILED == "States.TaskFailed"
    assert E.TIMEOUT == "States.Timeout"
    assert E.HEARTBEAT_TIMEOUT == "States.HeartbeatTimeout"
    assert E.RUNTIME == "States.Runtime"
    assert E.NO_CHOICE_MATCHED == "States.NoChoiceMatched"
    assert E.INTRINSIC_FAILURE == "States.IntrinsicFailure"
    assert E.PARAMETER_PATH_FAILURE == "States.ParameterPathFailure"
    assert E.RESULT_PATH_MATCH_FAILURE == "States.ResultPathMatchFailure"
    assert E.BRANCH_FAILED == "States.BranchFailed"
    assert E.PERMISSIONS == "States.Permissions"
    assert E.EXCEEDED_TOLERATED_FAILURE_THRESHOLD == "States.ExceedToleratedFailureThreshold"
    assert E.ITEM_READER_FAILURE == "States.ItemReaderFailed"
    assert E.RESULT_WRITER_FAILED == "States.ResultWriterFailed"
    assert E.DATA_LIMIT_EXCEEDED == "States.DataLimitExceeded"
    assert E.QUERY_EVALUATION_ERROR == "States.QueryEvaluationError"


def test_states_error_output_and_pickle() -> None:
    err = StatesError("MyError", "it broke")
    assert err.to_output() == {"Error": "MyError", "Cause": "it broke"}
    again = pickle.loads(pickle.dumps(err))
    assert (again.error, again.cause) == ("MyError", "it broke")
    assert StatesError("X").cause == ""


@pytest.mark.parametrize(
    ("equals", "error", "expected"),
    [
        (["States.ALL"], "MyError", True),
        (["States.ALL"], "States.Timeout", True),
        (["States.ALL"], "States.TaskFailed", True),
        # AWS: States.ALL cannot catch the terminal DataLimitExceeded or Runtime errors
        (["States.ALL"], "States.DataLimitExceeded", False),
        (["States.ALL"], "States.Runtime", False),
        (["States.Runtime"], "States.Runtime", False),
        # AWS: TaskFailed matches any known error name except States.Timeout
        (["States.TaskFailed"], "States.Timeout", False),
        (["States.TaskFailed"], "Lambda.ServiceException", True),
        (["States.TaskFailed"], "States.HeartbeatTimeout", True),
        (["States.Timeout"], "States.Timeout", True),
        (["ErrorA", "ErrorB"], "ErrorB", True),
        (["ErrorA"], "errora", False),  # error names are case-sensitive
        ([], "ErrorA", False),
    ],
)
def test_error_matches(equals: list[str], error: str, expected: bool) -> None:
    assert error_matches(equals, error) is expected


STATE = {
    "Type": "Task",
    "Resource": "x",
    "End": True,
    # The retry example from "Handling errors": specific errors first, States.ALL last.
    "Retry": [
        {
            "ErrorEquals": ["ErrorA", "ErrorB"],
            "IntervalSeconds": 1,
            "BackoffRate": 2,
            "MaxAttempts": 2,
        },
        {"ErrorEquals": ["ErrorC"], "IntervalSeconds": 5},
        {"ErrorEquals": ["States.ALL"]},
    ],
    "Catch": [
        {
            "ErrorEquals": ["java.lang.Exception"],
            "ResultPath": "$.error-info",
            "Next": "RecoveryState",
        },
        {"ErrorEquals": ["States.ALL"], "Next": "EndState"},
    ],
}


def test_find_retrier_and_catcher() -> None:
    assert find_retrier(STATE, "ErrorB") == (0, STATE["Retry"][0])
    assert find_retrier(STATE, "ErrorC") == (1, STATE["Retry"][1])
    assert find_retrier(STATE, "Other") == (2, STATE["Retry"][2])
    assert find_retrier(STATE, "States.Runtime") is None
    assert find_retrier({"Type": "Task"}, "X") is None
    assert find_catcher(STATE, "java.lang.Exception")["Next"] == "RecoveryState"
    assert find_catcher(STATE, "Other")["Next"] == "EndState"
    assert find_catcher(STATE, "States.DataLimitExceeded") is None
    assert find_catcher({"Catch": "junk"}, "X") is None


def test_retry_allowed_defaults_and_zero() -> None:
    assert retry_allowed({}, 0) and retry_allowed({}, 2)
    assert not retry_allowed({}, 3)  # MaxAttempts defaults to 3
    assert not retry_allowed({"MaxAttempts": 0}, 0)  # 0 means never retry
    assert retry_allowed({"MaxAttempts": 5}, 4)


def test_retry_delay_backoff_defaults() -> None:
    # IntervalSeconds defaults to 1, BackoffRate to 2.0
    assert [retry_delay({}, n, 0.5) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    r = {"IntervalSeconds": 3, "BackoffRate": 1.5}
    assert retry_delay(r, 1, 0.0) == 3
    assert retry_delay(r, 3, 0.0) == pytest.approx(6.75)


def test_retry_delay_max_delay_and_jitter() -> None:
    r = {"IntervalSeconds": 1, "BackoffRate": 2, "MaxDelaySeconds": 5}
    assert retry_delay(r, 10, 0.9) == 5
    full = {**r, "JitterStrategy": "FULL"}
    assert retry_delay(full, 10, 0.5) == 2.5
    assert retry_delay(full, 1, 0.0) == 0
    assert retry_delay({**r, "JitterStrategy": "NONE"}, 2, 0.1) == 2
    assert retry_delay({"BackoffRate": 10, "MaxDelaySeconds": 7}, 100000, 0.3) == 7
