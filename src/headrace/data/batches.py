"""Batches handed to user functions, and what they may return.

`batch_format="default"` (what map_batches uses unless told otherwise) is the pandas DataFrame
`pd.read_parquet` would give (`Table.to_pandas()`: strings as pandas' own `str` dtype, Arrow
backed, whose missing values compare as NaN, so `df[df["s"] != "US"]` keeps the rows whose `s`
is null, as plain pandas does; `pd.ArrowDtype` would make that comparison <NA> and drop them).
It serves both styles of function users bring:

* pandas style, written when Ray's default batch was a DataFrame: `df[df["total_votes"] > 0]`,
  `df["ratio"] = df["a"] / df["b"]`, `df.assign(...)`;
* dict-of-numpy style, today's Ray default: `batch["x"] = batch["a"] * 2; return batch`,
  `{"y": np.sqrt(batch["a"])}`, `for name, column in batch.items()`. A column is a pandas
  Series, which numpy functions accept and return; `np.asarray(batch["a"])` gives the array.

Explicit formats are Ray's: `"pandas"` (`Table.to_pandas()`), `"pyarrow"` (a `pyarrow.Table`),
`"numpy"` (a dict of numpy arrays), `None` (the block as it is: a `pyarrow.Table`).

A function may return a pandas DataFrame, a `pyarrow.Table` or `RecordBatch`, or a dict of
equal-length columns (numpy arrays, lists, pandas Series, Arrow arrays); anything else is an
error that names the operation and the type returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from headrace.data.errors import DatasetError

FORMATS = ("default", "pandas", "pyarrow", "numpy", None)


def check_format(batch_format: str | None, operation: str) -> str | None:
    if batch_format not in FORMATS:
        raise DatasetError(
            operation,
            f"batch_format={batch_format!r} is not a batch format",
            "use 'default', 'pandas', 'pyarrow', 'numpy' or None",
        )
    return batch_format


def to_batch(table: pa.Table, batch_format: str | None) -> Any:
    if batch_format in ("default", "pandas"):
        return table.to_pandas()
    if batch_format == "numpy":
        return {name: _column_to_numpy(table.column(name)) for name in table.column_names}
    return table


def _column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_fixed_size_list(column.type):
        flat = column.combine_chunks()
        return flat.flatten().to_numpy(zero_copy_only=False).reshape(len(flat), -1)
    return column.to_numpy()


def _to_arrow_column(value: Any, name: str, operation: str) -> pa.Array | pa.ChunkedArray:
    if isinstance(value, pa.Array | pa.ChunkedArray):
        return value
    if hasattr(value, "to_numpy") and hasattr(value, "dtype") and hasattr(value, "index"):
        return pa.Array.from_pandas(value)  # a pandas Series: nulls as pandas means them
    array = np.asarray(value)
    if array.ndim == 0:
        raise DatasetError(
            operation,
            f"column {name!r} is one {type(value).__name__} ({value!r}), not a column",
            "return one value per row: a pandas Series such as `df['a'] * 2`, a list, a numpy "
            "array; for one value on every row, `[value] * len(df)` or `np.full(len(df), value)`",
        )
    if array.ndim > 1:
        flat = pa.array(array.reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(array.shape[1:])))
    if array.dtype == object:
        return pa.array(list(array))
    try:
        return pa.array(array)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(
            operation, f"column {name!r} cannot become an Arrow column: {exc}", None
        ) from None


def from_batch(result: Any, operation: str) -> pa.Table:
    """The Arrow table of what a user function returned."""
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    module = type(result).__module__
    if module.startswith("pandas") and type(result).__name__ == "DataFrame":
        if not all(isinstance(c, str) for c in result.columns):
            result = result.rename(columns=str)
        return pa.Table.from_pandas(result, preserve_index=False)
    if isinstance(result, Mapping):
        columns = {str(k): _to_arrow_column(v, str(k), operation) for k, v in result.items()}
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            sizes = {k: len(c) for k, c in columns.items()}
            raise DatasetError(
                operation,
                f"returned columns of different lengths {sizes}",
                "return columns of one length (one value per row)",
            )
        return pa.table(columns)
    raise DatasetError(
        operation,
        f"returned {type(result).__name__}, not a batch",
        "return a pandas DataFrame, a dict of columns (numpy arrays) or a pyarrow Table",
    )


def keep_input_types(result: pa.Table, schema: pa.Schema) -> pa.Table:
    """The result with each all-null column the input had typed as the input typed it: pandas
    holds dates (and other types it has no dtype for) as Python objects, so a batch a filter
    empties comes back with them typed `null`, which no other block's schema matches."""
    for i, field in enumerate(result.schema):
        if pa.types.is_null(field.type) and field.name in schema.names:
            wanted = schema.field(field.name).type
            if not pa.types.is_null(wanted):
                result = result.set_column(i, field.name, result.column(i).cast(wanted))
    return result


def column_from(value: Any, num_rows: int, name: str, operation: str) -> pa.ChunkedArray:
    """The column add_column's function returned, checked for length."""
    column = _to_arrow_column(value, name, operation)
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if len(column) != num_rows:
        raise DatasetError(
            operation,
            f"returned {len(column)} values for a batch of {num_rows} rows",
            "return one value per row of the batch",
        )
    return column


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def table_of_rows(rows: list[Any], operation: str, schema: pa.Schema | None = None) -> pa.Table:
    for row in rows[:1]:
        if not isinstance(row, Mapping):
            raise DatasetError(
                operation,
                f"returned {type(row).__name__}, not a row",
                "return a dict of column name to value",
            )
    if not rows and schema is not None:
        return schema.empty_table()
    return pa.Table.from_pylist(list(rows))
