"""Errors of the item tables, each carrying the name DynamoDB gives the same failure.

`error_name` is what a workflow's `Catch`/`Retry` matches
(`DynamoDB.ConditionalCheckFailedException`), so a state machine written against AWS catches the
same errors here. It is a class attribute, so it survives pickling across worker processes.
"""

from __future__ import annotations

from typing import Any

from headrace.errors import HeadraceError


class TableError(HeadraceError):
    """Base of the item-table errors."""

    error_name = "DynamoDB.AmazonDynamoDBException"


class TableValidationError(TableError):
    """The request is malformed: bad key, bad item, bad expression."""

    error_name = "DynamoDB.ValidationException"


class UnsupportedExpression(TableValidationError):
    """The expression is valid DynamoDB but outside the subset headrace implements."""


class TableNotFound(TableError):
    """The table does not exist."""

    error_name = "DynamoDB.ResourceNotFoundException"


class TableExists(TableError):
    """A table of that name exists with another key schema."""

    error_name = "DynamoDB.ResourceInUseException"


class ConditionalCheckFailed(TableError):
    """A conditional write found the item in a state its condition rejects."""

    error_name = "DynamoDB.ConditionalCheckFailedException"

    def __init__(
        self, subject: str, reason: str, fix: str | None = None, *, item: Any = None
    ) -> None:
        super().__init__(subject, reason, fix)
        # the item as it was when the check failed (DynamoDB's ReturnValuesOnConditionCheckFailure)
        self.item = item
