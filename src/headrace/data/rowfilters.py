"""Recognising pandas row filters in a function's bytecode, and running them on Arrow.

`lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")]` keeps or drops each
row by that row's own values: the function is row-local. Proven so from its bytecode (nothing
but column subscripts, constants, comparisons and `& | ~` between them, then `df[mask]`), it
commutes with a sort and does not depend on where batches are cut, so the optimizer may run it
before a sort (sorting fewer rows); and, on the default batch format, the mask is computed
with Arrow kernels instead of converting the batch to pandas. A function that does anything
else is not recognised and runs as written, where written.
"""

from __future__ import annotations

import dis
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_COMPARE = {
    "<": pc.less,
    "<=": pc.less_equal,
    "==": pc.equal,
    "!=": pc.not_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}
_LOGICAL = {"&": pc.and_kleene, "|": pc.or_kleene}
_CONSTANT_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Constant:
    value: Any


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Logical:
    op: str  # "&", "|" or "~"
    left: Any
    right: Any = None


class _Batch:
    """The function's argument on the symbolic stack."""


def row_filter(fn: Any) -> Any:
    """The mask expression of a recognised row filter, or None."""
    if not inspect.isfunction(fn) or fn.__closure__:
        return None
    code = fn.__code__
    if code.co_argcount != 1 or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    param = code.co_varnames[0]
    stack: list[Any] = []
    try:
        for ins in dis.get_instructions(code):
            name = ins.opname
            if name in ("RESUME", "NOP", "CACHE"):
                continue
            if name == "LOAD_FAST" and ins.argval == param:
                stack.append(_Batch())
            elif name == "LOAD_CONST":
                if not isinstance(ins.argval, _CONSTANT_TYPES):
                    return None
                stack.append(Constant(ins.argval))
            elif name == "BINARY_SUBSCR":
                key, target = stack.pop(), stack.pop()
                if not isinstance(target, _Batch):
                    return None
                if isinstance(key, Constant) and isinstance(key.value, str):
                    stack.append(Column(key.value))
                elif isinstance(key, Compare | Logical):
                    stack.append(("rows", key))
                else:
                    return None
            elif name == "COMPARE_OP" and ins.argval in _COMPARE:
                right, left = stack.pop(), stack.pop()
                if not _operand(left) or not _operand(right):
                    return None
                if isinstance(left, Constant) and isinstance(right, Constant):
                    return None
                stack.append(Compare(ins.argval, left, right))
            elif name == "BINARY_OP" and ins.argrepr in _LOGICAL:
                right, left = stack.pop(), stack.pop()
                if not (_boolean(left) and _boolean(right)):
                    return None
                stack.append(Logical(ins.argrepr, left, right))
            elif name == "UNARY_INVERT":
                operand = stack.pop()
                if not _boolean(operand):
                    return None
                stack.append(Logical("~", operand))
            elif name == "RETURN_VALUE":
                result = stack.pop()
                if stack or not (isinstance(result, tuple) and result[0] == "rows"):
                    return None
                return result[1]
            else:
                return None
    except IndexError:
        return None
    return None


_ARITHMETIC = {"+", "-", "*", "/", "//", "%", "**"}


def elementwise(fn: Any) -> bool:
    """Whether a function of a batch only combines its columns element by element: column
    subscripts, constants, arithmetic, comparisons and `& | ~` (each output row depends on that
    input row alone), such as `lambda df: df["helpful_votes"] / df["total_votes"]`."""
    if not inspect.isfunction(fn) or fn.__closure__:
        return False
    code = fn.__code__
    if code.co_argcount != 1 or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return False
    param = code.co_varnames[0]
    stack: list[str] = []  # "batch", "const", "column"
    try:
        for ins in dis.get_instructions(code):
            name = ins.opname
            if name in ("RESUME", "NOP", "CACHE"):
                continue
            if name == "LOAD_FAST" and ins.argval == param:
                stack.append("batch")
            elif name == "LOAD_CONST" and isinstance(ins.argval, _CONSTANT_TYPES):
                stack.append("const")
            elif name == "BINARY_SUBSCR":
                key, target = stack.pop(), stack.pop()
                if target != "batch" or key != "const":
                    return False
                stack.append("column")
            elif (name == "BINARY_OP" and ins.argrepr in _ARITHMETIC | set(_LOGICAL)) or (
                name == "COMPARE_OP" and ins.argval in _COMPARE
            ):
                right, left = stack.pop(), stack.pop()
                if "batch" in (left, right):
                    return False
                stack.append("column" if "column" in (left, right) else "const")
            elif name in ("UNARY_INVERT", "UNARY_NEGATIVE"):
                if stack[-1] == "batch":
                    return False
            elif name == "RETURN_VALUE":
                return stack == ["column"]
            else:
                return False
    except IndexError:
        return False
    return False


def to_polars(expr: Any) -> Any:
    import polars as pl

    if isinstance(expr, Column):
        return pl.col(expr.name)
    if isinstance(expr, Constant):
        return pl.lit(expr.value)
    if isinstance(expr, Compare):
        left, right = to_polars(expr.left), to_polars(expr.right)
        return {
            "<": left.__lt__,
            "<=": left.__le__,
            "==": left.__eq__,
            "!=": left.__ne__,
            ">": left.__gt__,
            ">=": left.__ge__,
        }[expr.op](right)
    if expr.op == "~":
        return ~to_polars(expr.left)
    left, right = to_polars(expr.left), to_polars(expr.right)
    return left & right if expr.op == "&" else left | right


def _operand(value: Any) -> bool:
    return isinstance(value, Column | Constant)


def _boolean(value: Any) -> bool:
    return isinstance(value, Compare | Logical)


def _evaluate(expr: Any, table: pa.Table) -> Any:
    if isinstance(expr, Column):
        return table.column(expr.name)
    if isinstance(expr, Constant):
        return pa.scalar(expr.value)
    if isinstance(expr, Compare):
        return _compare(expr, table)
    if expr.op == "~":
        return pc.invert(_evaluate(expr.left, table))
    return _LOGICAL[expr.op](_evaluate(expr.left, table), _evaluate(expr.right, table))


class _PandasMustRun(Exception):
    """The comparison is one whose pandas result Arrow would not reproduce."""


def _constant_for(value: Any, column: pa.ChunkedArray) -> pa.Scalar:
    """The constant as numpy compares it with the column: a Python scalar is weak, it takes
    the column's type (0.3 against float32 is float32(0.3)); one out of the type's range, or a
    bool against numbers, is left to pandas."""
    kind = column.type
    if isinstance(value, bool):
        if pa.types.is_boolean(kind):
            return pa.scalar(value)
        raise _PandasMustRun
    if pa.types.is_floating(kind) and isinstance(value, int | float):
        return pa.scalar(float(value), kind)
    if pa.types.is_integer(kind) and isinstance(value, int):
        limits = np.iinfo(kind.to_pandas_dtype())
        if not limits.min <= value <= limits.max:
            raise _PandasMustRun
        return pa.scalar(value, kind)
    return pa.scalar(value)


def _side(expr: Any, other: Any, table: pa.Table) -> Any:
    if isinstance(expr, Constant) and isinstance(other, Column):
        return _constant_for(expr.value, table.column(other.name))
    return _evaluate(expr, table)


def _compare(expr: Compare, table: pa.Table) -> Any:
    left = _side(expr.left, expr.right, table)
    right = _side(expr.right, expr.left, table)
    result = _COMPARE[expr.op](left, right)
    if not result.null_count:
        return result
    # pandas compares a missing string or float as NaN: unequal to everything, ordered before
    # nothing (`!=` True, every other comparison False); elsewhere (dates as Python objects)
    # a missing value may raise in pandas, so pandas runs.
    for side in (left, right):
        if isinstance(side, pa.ChunkedArray) and side.null_count:
            kind = side.type
            if not (
                pa.types.is_string(kind)
                or pa.types.is_large_string(kind)
                or pa.types.is_floating(kind)
            ):
                raise _PandasMustRun
    return pc.fill_null(result, expr.op == "!=")


def columns_of(expr: Any) -> set[str]:
    if isinstance(expr, Column):
        return {expr.name}
    if isinstance(expr, Compare | Logical):
        return columns_of(expr.left) | (columns_of(expr.right) if expr.right is not None else set())
    return set()


def _round_trips_unchanged(table: pa.Table) -> bool:
    """Whether a pandas round trip (the default batch) would return these columns as they are:
    no integer or boolean column with nulls (pandas makes them float or object), no float NaN
    (pandas makes it null), only types it maps back one to one."""
    for column in table.columns:
        kind = column.type
        if pa.types.is_floating(kind):
            if pc.any(pc.is_nan(column)).as_py():
                return False
        elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            if column.null_count:
                return False
        elif not (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_date32(kind)
        ):
            return False
    return True


def apply_filter(expr: Any, table: pa.Table) -> pa.Table | None:
    """The rows the filter keeps, computed with Arrow; None when the pandas path must run
    (a column whose pandas round trip changes it, or types Arrow does not compare)."""
    return apply_filters([expr], table)


def apply_filters(exprs: list[Any], table: pa.Table) -> pa.Table | None:
    """The rows that each filter in turn keeps: as they are row-local, the rows all masks
    keep, filtered once."""
    needed = set().union(*(columns_of(e) for e in exprs))
    if not needed <= set(table.column_names) or not _round_trips_unchanged(table):
        return None
    try:
        masks = [_evaluate(e, table) for e in exprs]
    except Exception:  # _PandasMustRun, types Arrow does not compare, anything unforeseen:
        return None  # the function runs in pandas as written, its own errors reported as such
    mask = masks[0]
    for other in masks[1:]:
        if other.null_count:
            return None
        mask = pc.and_(mask, other)
    if mask.null_count:
        return None  # pandas would refuse a mask with missing values: let it say so
    if pc.all(mask).as_py():
        return table
    return table.filter(mask)
