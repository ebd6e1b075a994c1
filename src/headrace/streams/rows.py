"""Arrow rows as Python values, for what prints or sends records (the CLI, function payloads).

Arrow holds instants Python's datetime cannot (a window of year 9999 ends in year 10000); such a
column is given as ISO 8601 text instead of stopping the reader, which would otherwise fail on
every try.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def python_rows(table: pa.Table) -> list[dict[str, Any]]:
    """`table.to_pylist()`, with date and time columns out of Python's range as text."""
    try:
        return table.to_pylist()
    except (OverflowError, ValueError):
        pass
    for i, field in enumerate(table.schema):
        if not _temporal(field.type):
            continue
        column = table.column(i)
        try:
            column.to_pylist()
        except (OverflowError, ValueError):
            table = table.set_column(i, field.name, _iso_text(column, field.type))
    return table.to_pylist()


def _temporal(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


def _iso_text(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_date(kind):
        return pc.strftime(column.cast(pa.timestamp("s")), format="%Y-%m-%d")
    zone = "%z" if kind.tz else ""
    return pc.strftime(column, format=f"%Y-%m-%dT%H:%M:%S{zone}")
