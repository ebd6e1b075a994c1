"""Creating datasets: `read_parquet`, `read_csv`, `read_json`, `from_pandas`, `from_arrow`,
`from_items`, `range` — Ray Data's functions and arguments."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from headrace.data.dataset import Dataset
from headrace.data.errors import DatasetError
from headrace.data.paths import list_files
from headrace.data.plan import Read
from headrace.data.sources import ParquetSource, TablesSource, TextSource

Paths = str | os.PathLike[str] | list[str | os.PathLike[str]]


def _extensions(given: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if given is None:
        return default
    return tuple("." + e.lstrip(".").lower() for e in given)


def read_parquet(
    paths: Paths,
    *,
    filesystem: Any = None,
    columns: list[str] | None = None,
    partitioning: str | None = "hive",
    file_extensions: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    **ray_args: Any,
) -> Dataset:
    """A dataset of the Parquet files at `paths` (files, folders, globs; hive partitions
    become string columns). Only the footers are read here."""
    fs, files = list_files(
        paths,
        extensions=_extensions(file_extensions, (".parquet", ".parq")),
        filesystem=filesystem,
        storage_options=storage_options,
        partitioning=partitioning,
    )
    ds = Dataset(Read(ParquetSource(fs, files)))
    return ds.select_columns(columns) if columns else ds


def _text(kind: str, paths: Paths, options: dict[str, Any], **kw: Any) -> Dataset:
    default = (".csv",) if kind == "csv" else (".json", ".jsonl")
    fs, files = list_files(
        paths,
        extensions=_extensions(kw.get("file_extensions"), default),
        filesystem=kw.get("filesystem"),
        storage_options=kw.get("storage_options"),
        partitioning=kw.get("partitioning", "hive"),
    )
    return Dataset(Read(TextSource(fs, files, kind, options)))


def read_csv(
    paths: Paths,
    *,
    filesystem: Any = None,
    partitioning: str | None = "hive",
    file_extensions: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    **arrow_csv_args: Any,
) -> Dataset:
    """A dataset of CSV files; `parse_options`, `read_options` and `convert_options` go to
    pyarrow's CSV reader, as in Ray."""
    options = {
        k: v
        for k, v in arrow_csv_args.items()
        if k in ("parse_options", "read_options", "convert_options")
    }
    return _text(
        "csv",
        paths,
        options,
        filesystem=filesystem,
        partitioning=partitioning,
        file_extensions=file_extensions,
        storage_options=storage_options,
    )


def read_json(
    paths: Paths,
    *,
    filesystem: Any = None,
    partitioning: str | None = "hive",
    file_extensions: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    **arrow_json_args: Any,
) -> Dataset:
    """A dataset of JSON files: one object per line, or one array of objects per file."""
    options = {k: v for k, v in arrow_json_args.items() if k in ("parse_options", "read_options")}
    return _text(
        "json",
        paths,
        options,
        filesystem=filesystem,
        partitioning=partitioning,
        file_extensions=file_extensions,
        storage_options=storage_options,
    )


def from_arrow(tables: pa.Table | list[pa.Table]) -> Dataset:
    if isinstance(tables, pa.Table | pa.RecordBatch):
        tables = [tables]
    converted = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    for t in converted:
        if not isinstance(t, pa.Table):
            raise DatasetError("from_arrow", f"got {type(t).__name__}", "pass pyarrow Tables")
    return Dataset(Read(TablesSource(converted, "FromArrow")))


def from_pandas(dfs: Any) -> Dataset:
    frames = dfs if isinstance(dfs, list) else [dfs]
    tables = []
    for df in frames:
        if type(df).__name__ != "DataFrame":
            raise DatasetError("from_pandas", f"got {type(df).__name__}", "pass DataFrames")
        tables.append(pa.Table.from_pandas(df, preserve_index=False))
    return Dataset(Read(TablesSource(tables, "FromPandas")))


def from_items(items: list[Any]) -> Dataset:
    """Rows from Python values: dicts become rows; any other value becomes `{"item": value}`."""
    rows = [i if isinstance(i, dict) else {"item": i} for i in items]
    return Dataset(Read(TablesSource([pa.Table.from_pylist(rows)], "FromItems")))


def range(n: int) -> Dataset:
    """Rows `{"id": 0}` ... `{"id": n - 1}`."""
    import numpy as np

    table = pa.table({"id": pa.array(np.arange(n, dtype=np.int64))})
    return Dataset(Read(TablesSource([table], "Range")))


__all__ = [
    "from_arrow",
    "from_items",
    "from_pandas",
    "range",
    "read_csv",
    "read_json",
    "read_parquet",
]
