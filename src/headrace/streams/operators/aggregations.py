"""Aggregations for event-time windows, each as partial state + merge + finish.

A window sees its records over many micro-batches. Each aggregation therefore has three polars
expression sets: `partial` reduces the records of one batch per (key, window) to a few partial
columns, `merge` combines partial rows of the same (key, window) (the open-window state and the
new batch's partials), and `finish` turns the partial columns into the value emitted when the
window closes. Everything runs inside polars group-bys: no Python per record.

Null handling: `count()` counts rows and `count(col)` non-null values; sum/mean/min/max ignore
nulls and give null when a window has no non-null value; `first`/`last` return the value of the
earliest/latest record by event time (ties by arrival order), null if that record's value is
null; `approx_distinct` ignores nulls.

Use them through the module: `from headrace.streams.operators import aggregations as agg`, then
`aggs={"n": agg.count(), "total": agg.sum("x")}` (the names `sum`, `min` and `max` shadow the
builtins here on purpose, to read like SQL).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import polars as pl

from headrace.errors import StreamError
from headrace.streams.operators import hll

TIME = "__t"  # event time, int64 microseconds, in every frame the window operators aggregate
SEQ = "__seq"  # arrival order across the whole stream
_ORDER = [TIME, SEQ]


class Agg(ABC):
    """One aggregation over a column (or over rows, for count)."""

    column: str | None = None

    @abstractmethod
    def partial(self, p: str) -> list[pl.Expr]:
        """Expressions over the records of one group; `p` prefixes the partial columns."""

    @abstractmethod
    def merge(self, p: str) -> list[pl.Expr]:
        """Expressions combining several partial rows of one group into one."""

    @abstractmethod
    def finish(self, p: str) -> pl.Expr:
        """Expression from the partial columns to the emitted value."""

    def describe(self) -> str:
        return repr(self)

    @property
    def inputs(self) -> list[str]:
        return [] if self.column is None else [self.column]


@dataclass(frozen=True)
class Count(Agg):
    column: str | None = None

    def partial(self, p: str) -> list[pl.Expr]:
        n = pl.len() if self.column is None else pl.col(self.column).count()
        return [n.cast(pl.Int64).alias(f"{p}n")]

    def merge(self, p: str) -> list[pl.Expr]:
        return [pl.col(f"{p}n").sum()]

    def finish(self, p: str) -> pl.Expr:
        return pl.col(f"{p}n")


@dataclass(frozen=True)
class Sum(Agg):
    column: str

    def partial(self, p: str) -> list[pl.Expr]:
        values = pl.col(self.column)
        return [values.sum().alias(f"{p}s"), values.count().cast(pl.Int64).alias(f"{p}n")]

    def merge(self, p: str) -> list[pl.Expr]:
        return [pl.col(f"{p}s").sum(), pl.col(f"{p}n").sum()]

    def finish(self, p: str) -> pl.Expr:
        return pl.when(pl.col(f"{p}n") > 0).then(pl.col(f"{p}s"))


@dataclass(frozen=True)
class Mean(Agg):
    column: str

    def partial(self, p: str) -> list[pl.Expr]:
        values = pl.col(self.column)
        return [
            values.cast(pl.Float64).sum().alias(f"{p}s"),
            values.count().cast(pl.Int64).alias(f"{p}n"),
        ]

    def merge(self, p: str) -> list[pl.Expr]:
        return [pl.col(f"{p}s").sum(), pl.col(f"{p}n").sum()]

    def finish(self, p: str) -> pl.Expr:
        return pl.when(pl.col(f"{p}n") > 0).then(pl.col(f"{p}s") / pl.col(f"{p}n"))


@dataclass(frozen=True)
class Min(Agg):
    column: str

    def partial(self, p: str) -> list[pl.Expr]:
        return [pl.col(self.column).min().alias(f"{p}v")]

    def merge(self, p: str) -> list[pl.Expr]:
        return [pl.col(f"{p}v").min()]

    def finish(self, p: str) -> pl.Expr:
        return pl.col(f"{p}v")


@dataclass(frozen=True)
class Max(Agg):
    column: str

    def partial(self, p: str) -> list[pl.Expr]:
        return [pl.col(self.column).max().alias(f"{p}v")]

    def merge(self, p: str) -> list[pl.Expr]:
        return [pl.col(f"{p}v").max()]

    def finish(self, p: str) -> pl.Expr:
        return pl.col(f"{p}v")


@dataclass(frozen=True)
class First(Agg):
    """The value of the record with the smallest (event time, arrival order)."""

    column: str
    _pick = "first"

    def partial(self, p: str) -> list[pl.Expr]:
        return self._pick_row(self.column, TIME, SEQ, p)

    def merge(self, p: str) -> list[pl.Expr]:
        return self._pick_row(f"{p}v", f"{p}t", f"{p}q", p)

    def finish(self, p: str) -> pl.Expr:
        return pl.col(f"{p}v")

    def _pick_row(self, value: str, time: str, seq: str, p: str) -> list[pl.Expr]:
        def pick(column: str) -> pl.Expr:
            ordered = pl.col(column).sort_by([time, seq])
            return ordered.first() if self._pick == "first" else ordered.last()

        return [pick(value).alias(f"{p}v"), pick(time).alias(f"{p}t"), pick(seq).alias(f"{p}q")]


@dataclass(frozen=True)
class Last(First):
    """The value of the record with the largest (event time, arrival order)."""

    _pick = "last"


@dataclass(frozen=True)
class ApproxDistinct(Agg):
    """HyperLogLog estimate of the number of distinct non-null values (see hll.py)."""

    column: str
    precision: int = hll.DEFAULT_PRECISION

    def __post_init__(self) -> None:
        hll.check_precision(self.precision, f"approx_distinct({self.column!r})")

    @property
    def hashed_column(self) -> str:
        """The column of the values' stable hashes, added to a batch before grouping."""
        return f"__hll_{self.column}"

    def partial(self, p: str) -> list[pl.Expr]:
        codes = hll.codes(pl.col(self.hashed_column), self.precision)
        return [hll.reduce_codes(codes).alias(f"{p}r")]

    def merge(self, p: str) -> list[pl.Expr]:
        return [hll.reduce_codes(pl.col(f"{p}r").explode()).alias(f"{p}r")]

    def finish(self, p: str) -> pl.Expr:
        return hll.estimate(pl.col(f"{p}r"), self.precision)


def _column(column: str, what: str) -> str:
    if not isinstance(column, str) or not column:
        raise StreamError(
            f"aggregation {what}",
            f"needs a column name, got {column!r}",
            f'pass the name of the column to aggregate, e.g. {what}("price")',
        )
    return column


def count(column: str | None = None) -> Agg:
    """Number of records (or of non-null values of `column`)."""
    return Count(None if column is None else _column(column, "count"))


def sum(column: str) -> Agg:
    """Sum of the non-null values (null when there are none)."""
    return Sum(_column(column, "sum"))


def mean(column: str) -> Agg:
    """Arithmetic mean of the non-null values, as float64 (null when there are none)."""
    return Mean(_column(column, "mean"))


def min(column: str) -> Agg:
    return Min(_column(column, "min"))


def max(column: str) -> Agg:
    return Max(_column(column, "max"))


def first(column: str) -> Agg:
    return First(_column(column, "first"))


def last(column: str) -> Agg:
    return Last(_column(column, "last"))


def approx_distinct(column: str, precision: int = hll.DEFAULT_PRECISION) -> Agg:
    """Approximate count of distinct values; standard error about 1.04 / sqrt(2**precision)."""
    return ApproxDistinct(_column(column, "approx_distinct"), precision)


__all__ = [
    "Agg",
    "ApproxDistinct",
    "Count",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Sum",
    "approx_distinct",
    "count",
    "first",
    "last",
    "max",
    "mean",
    "min",
    "sum",
]
