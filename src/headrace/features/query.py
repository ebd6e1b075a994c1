"""SQL over the feature store: DuckDB with every group's offline table as a view under the
group's name, and Parquet archives (a folder, a glob or one file; local or any fsspec URL)
registered under names of their own, read with hive partitioning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.dataset as pads

from headrace.errors import FeatureStoreError
from headrace.features.group import NAME_RE


def parquet_source(glob_or_url: str | os.PathLike[str]) -> tuple[str, str | None]:
    """The path DuckDB reads and the fsspec protocol to register for it (None: local)."""
    source = str(glob_or_url)
    if source.startswith("file://"):
        source = source[len("file://") :]
    if "://" in source:
        protocol = source.split("://", 1)[0]
        if not any(c in source for c in "*?[") and not source.endswith(".parquet"):
            source = source.rstrip("/") + "/**/*.parquet"
        return source, protocol
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path.resolve() / "**" / "*.parquet"), None
    return str(path), None


def check_view_name(name: str, taken: Mapping[str, object]) -> None:
    if not NAME_RE.match(name):
        raise FeatureStoreError(
            f"parquet source {name!r}",
            "the name is not a valid identifier",
            "use letters, digits and underscores, starting with a letter or underscore",
        )
    if name in taken:
        raise FeatureStoreError(
            f"parquet source {name!r}",
            "a feature group already has that name",
            "register the parquet source under another name",
        )


def run_sql(sql: str, groups: Mapping[str, pads.Dataset], parquet: Mapping[str, str]) -> pa.Table:
    """Run `sql` with the groups' datasets and the parquet sources as views."""
    con = duckdb.connect()
    empty: dict[str, str] = {}  # sources with no file yet: no view, so other queries still run
    try:
        for name, dataset in groups.items():
            con.register(name, dataset)
        for name, source in parquet.items():
            path, protocol = parquet_source(source)
            if protocol is not None and not con.filesystem_is_registered(protocol):
                con.register_filesystem(fsspec.filesystem(protocol))
            quoted = path.replace("'", "''")
            try:
                con.execute(
                    f'CREATE VIEW "{name}" AS SELECT * FROM '
                    f"read_parquet('{quoted}', hive_partitioning = true, union_by_name = true)"
                )
            except duckdb.IOException as exc:
                if "No files found" not in str(exc):
                    raise
                empty[name] = path
        relation = con.sql(sql)
        return pa.table({}) if relation is None else relation.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        named = [n for n in empty if f'"{n}"' in first or f" {n} " in f" {first} "]
        if isinstance(exc, duckdb.CatalogException) and named:
            raise FeatureStoreError(
                f"parquet source {named[0]!r}",
                f"has no files yet ({empty[named[0]]} matches nothing)",
                "query it once its first file is written",
            ) from exc
        raise FeatureStoreError(
            "SQL query",
            first,
            f"tables you can query: feature groups {sorted(groups)}, parquet sources "
            f"{sorted(set(parquet) - set(empty))}"
            + (f" (no files yet: {sorted(empty)})" if empty else ""),
        ) from exc
    finally:
        con.close()
