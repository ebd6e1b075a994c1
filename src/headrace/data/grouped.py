"""`Dataset.groupby(key)`: counts, sums, means, minimums, maximums and standard deviations per
group, sorted by the key, with Ray's column names (`count()`, `sum(x)`, `mean(x)`, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headrace.data.errors import DatasetError
from headrace.data.plan import Agg, Aggregate, Node, columns_of

if TYPE_CHECKING:
    from headrace.data.dataset import Dataset


class Count(Agg):
    def __init__(self, on: str | None = None, *, alias_name: str | None = None) -> None:
        super().__init__("count", None, alias_name or "count()")


class Sum(Agg):
    def __init__(self, on: str, *, alias_name: str | None = None) -> None:
        super().__init__("sum", on, alias_name)


class Mean(Agg):
    def __init__(self, on: str, *, alias_name: str | None = None) -> None:
        super().__init__("mean", on, alias_name)


class Min(Agg):
    def __init__(self, on: str, *, alias_name: str | None = None) -> None:
        super().__init__("min", on, alias_name)


class Max(Agg):
    def __init__(self, on: str, *, alias_name: str | None = None) -> None:
        super().__init__("max", on, alias_name)


class Std(Agg):
    def __init__(self, on: str, ddof: int = 1, *, alias_name: str | None = None) -> None:
        super().__init__("std", on, alias_name, ddof=ddof)


def _columns(on: str | list[str] | None) -> list[str]:
    if on is None:
        return []
    return [on] if isinstance(on, str) else list(on)


def aggregate_node(plan: Node, keys: tuple[str, ...], aggs: tuple[Agg, ...]) -> Aggregate:
    """The aggregation over `plan`, its column names checked now against all the plan's
    columns when they are known (a run reads only the columns it needs, so its own error
    could list too few)."""
    try:
        present = columns_of(plan)
    except DatasetError:
        raise
    except Exception:  # not known before running: the blocks are checked as they come
        present = None
    if present is not None:
        missing = [c for c in [*keys, *(a.on for a in aggs if a.on)] if c not in present]
        if missing:
            raise DatasetError(
                "groupby/aggregate",
                f"no column(s) {missing} (columns: {present})",
                "check the names",
            )
    return Aggregate(plan, keys, aggs)


class GroupedData:
    def __init__(self, dataset: Dataset, keys: list[str]) -> None:
        self._dataset = dataset
        self._keys = tuple(keys)

    def aggregate(self, *aggs: Agg) -> Dataset:
        return self._dataset._derive(aggregate_node(self._dataset._plan, self._keys, aggs))

    def count(self) -> Dataset:
        return self.aggregate(Count())

    def sum(self, on: str | list[str]) -> Dataset:
        return self.aggregate(*(Sum(c) for c in _columns(on)))

    def mean(self, on: str | list[str]) -> Dataset:
        return self.aggregate(*(Mean(c) for c in _columns(on)))

    def min(self, on: str | list[str]) -> Dataset:
        return self.aggregate(*(Min(c) for c in _columns(on)))

    def max(self, on: str | list[str]) -> Dataset:
        return self.aggregate(*(Max(c) for c in _columns(on)))

    def std(self, on: str | list[str], ddof: int = 1) -> Dataset:
        return self.aggregate(*(Std(c, ddof) for c in _columns(on)))
