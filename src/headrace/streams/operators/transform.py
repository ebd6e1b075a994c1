"""Map and Filter: stateless operators around a user function applied to each whole batch.

The function sees the batch as a pyarrow Table or, when its first parameter is annotated as a
polars DataFrame (or `input="polars"` is given), as a polars DataFrame. Whatever the function
does wrong (raises, returns the wrong type or a mask of the wrong length) becomes a StreamError
naming the operator and the function, so the pipeline can report it against the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from headrace.errors import StreamError
from headrace.streams.operators.base import Emit, as_table, subject

Input = Literal["arrow", "polars"]


def _function_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _wants_polars(fn: Callable[..., Any]) -> bool:
    """True when the function's first parameter is annotated as a polars DataFrame."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    if not params:
        return False
    hint = params[0].annotation
    if hint is pl.DataFrame:
        return True
    if isinstance(hint, str):  # `from __future__ import annotations` keeps hints as text
        return hint.replace("polars.", "pl.") in ("pl.DataFrame", "DataFrame")
    return False


class _Stateless:
    """Shared by Map and Filter: no state, no watermark, nothing to flush."""

    def __init__(self, fn: Any, name: str | None, input: Input | None, kind: str) -> None:
        if input not in (None, "arrow", "polars"):
            raise StreamError(
                subject(name or kind), f"input must be 'arrow' or 'polars', not {input!r}",
                "leave input out to detect it from the function's annotation",
            )  # fmt: skip
        self.fn = fn
        self.name = name or f"{kind}:{_function_name(fn)}"
        self.polars = input == "polars" if input is not None else _wants_polars(fn)
        self._schema: pa.Schema | None = None

    @property
    def watermark(self) -> datetime | None:
        return None

    def flush(self) -> Emit:
        return Emit((self._schema or pa.schema([])).empty_table())

    def snapshot(self) -> dict[str, pa.Table]:
        return {}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if state:
            raise StreamError(
                subject(self.name),
                f"it keeps no state, but was asked to restore {sorted(state)}",
                "check that the checkpoint belongs to this pipeline's stages",
            )

    def _call(self, table: pa.Table) -> Any:
        argument = pl.from_arrow(table) if self.polars else table
        try:
            return self.fn(argument)
        except Exception as exc:
            raise StreamError(
                subject(self.name),
                f"the function {_function_name(self.fn)} raised {type(exc).__name__}: {exc}",
                "fix the function or the records it cannot handle",
            ) from exc


class Map(_Stateless):
    """Replace each batch by `fn(batch)`: a pyarrow Table or a polars DataFrame."""

    def __init__(
        self,
        fn: Callable[[Any], pa.Table | pl.DataFrame],
        *,
        name: str | None = None,
        input: Input | None = None,
    ) -> None:
        super().__init__(fn, name, input, "map")

    def process(self, batch: pa.Table) -> Emit:
        result = self._call(as_table(batch, self.name))
        if isinstance(result, pl.DataFrame):
            result = result.to_arrow()
        elif isinstance(result, pa.RecordBatch):
            result = pa.Table.from_batches([result])
        if not isinstance(result, pa.Table):
            raise StreamError(
                subject(self.name),
                f"the function {_function_name(self.fn)} returned a {type(result).__name__}",
                "return a pyarrow Table or a polars DataFrame",
            )
        self._schema = result.schema
        return Emit(result)


class Filter(_Stateless):
    """Keep the records for which `predicate` is true.

    `predicate` is a polars expression (`pl.col("x") > 0`) or a function of the batch returning
    one boolean per record (pyarrow array, polars Series, numpy array or list). A null in the
    mask drops the record, as in SQL's WHERE.
    """

    def __init__(
        self,
        predicate: Callable[[Any], Any] | pl.Expr,
        *,
        name: str | None = None,
        input: Input | None = None,
    ) -> None:
        if isinstance(predicate, pl.Expr):
            expr = predicate
            predicate = lambda frame: frame.select(expr).to_series()  # noqa: E731
            predicate.__qualname__ = f"expression {expr}"
            input = "polars"
        super().__init__(predicate, name, input, "filter")

    def process(self, batch: pa.Table) -> Emit:
        table = as_table(batch, self.name)
        self._schema = table.schema
        mask = self._mask(self._call(table), table.num_rows)
        return Emit(table.filter(mask, null_selection_behavior="drop"))

    def _mask(self, result: Any, rows: int) -> pa.Array | pa.ChunkedArray:
        try:
            if isinstance(result, pl.Series):
                result = result.to_arrow()
            elif isinstance(result, np.ndarray | list):
                result = pa.array(result)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise self._bad_mask(f"a mask that is not booleans ({exc})") from exc
        if not isinstance(result, pa.Array | pa.ChunkedArray):
            raise self._bad_mask(f"a {type(result).__name__}")
        if not pa.types.is_boolean(result.type):
            raise self._bad_mask(f"a mask of type {result.type}")
        if len(result) != rows:
            raise self._bad_mask(f"{len(result)} values for a batch of {rows} records")
        return result

    def _bad_mask(self, what: str) -> StreamError:
        return StreamError(
            subject(self.name),
            f"the predicate {_function_name(self.fn)} returned {what}",
            "return one boolean per record (pyarrow array, polars Series, numpy array or list)",
        )
