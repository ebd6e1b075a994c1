"""DynamoDB-style item tables stored in the ledger (the task logs of workflows live here).

tables = Tables(ledger)
tables.create_table("tasks")  # pk (HASH, S) + sk (RANGE, S) unless told otherwise
tables.put_item("tasks", {"pk": "job#1", "sk": "band#3", "status": "RUNNING"},
                condition="attribute_not_exists(pk)")
tables.update_item("tasks", {"pk": "job#1", "sk": "band#3"},
                   expression="SET #s = :done ADD tries :one",
                   names={"#s": "status"}, values={":done": "DONE", ":one": 1})
"""

from headrace.tables.errors import (
    ConditionalCheckFailed,
    TableError,
    TableExists,
    TableNotFound,
    TableValidationError,
    UnsupportedExpression,
)
from headrace.tables.store import Tables
from headrace.tables.types import from_attribute_values, to_attribute_values

__all__ = [
    "ConditionalCheckFailed",
    "TableError",
    "TableExists",
    "TableNotFound",
    "TableValidationError",
    "Tables",
    "UnsupportedExpression",
    "from_attribute_values",
    "to_attribute_values",
]
