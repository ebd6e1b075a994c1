"""Datasets: transform large Parquet, CSV and JSON datasets with Ray Data's API.

`from headrace import data` in place of `from ray import data`: `data.read_parquet(path)`
returns a lazy `Dataset`; `map_batches`, `add_column`, `sort`, `groupby`, ... build a plan;
`count`, `take`, `show`, `write_parquet`, ... run it on the engine (local by default: a
streaming executor with user functions in worker processes). See docs/datasets.md.
"""

from headrace.data.context import DataContext
from headrace.data.dataset import Dataset
from headrace.data.errors import DatasetError, UserFunctionError, WorkerLost
from headrace.data.grouped import Count, GroupedData, Max, Mean, Min, Std, Sum
from headrace.data.read_api import (
    from_arrow,
    from_items,
    from_pandas,
    range,
    read_csv,
    read_json,
    read_parquet,
)
from headrace.data.schema import Schema
from headrace.data.strategy import ActorPoolStrategy, TaskPoolStrategy

__all__ = [
    "ActorPoolStrategy",
    "Count",
    "DataContext",
    "Dataset",
    "DatasetError",
    "GroupedData",
    "Max",
    "Mean",
    "Min",
    "Schema",
    "Std",
    "Sum",
    "TaskPoolStrategy",
    "UserFunctionError",
    "WorkerLost",
    "from_arrow",
    "from_items",
    "from_pandas",
    "range",
    "read_csv",
    "read_json",
    "read_parquet",
]
