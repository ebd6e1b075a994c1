"""What a dataset reads: Parquet, CSV and JSON files, or tables already in memory.

A source answers `schema`, `num_rows`, `size_bytes` and `input_files` without reading data
where the format allows (Parquet: the footers only), and cuts the input into fragments that
workers read independently: one per Parquet row group, one per CSV/JSON file, one per block
of an in-memory table.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from headrace.data.errors import DatasetError
from headrace.data.paths import InputFile

_IN_MEMORY_BLOCK_ROWS = 1 << 20


@dataclass(frozen=True)
class Fragment:
    """A piece of input that one task reads: rows [first_row, first_row + num_rows) of a
    file (or of an in-memory table)."""

    index: int
    file: int
    row_groups: tuple[int, ...]
    first_row: int
    num_rows: int | None

    def describe(self, source: Source) -> str:
        end = f"{self.first_row + self.num_rows - 1}" if self.num_rows else "end"
        return f"rows {self.first_row}-{end} of {source.describe_file(self.file)}"


class Source:
    """The reading side of a plan; picklable, so workers read fragments themselves."""

    name = "Read"

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def num_rows(self) -> int | None:
        return None

    def size_bytes(self) -> int | None:
        return None

    def input_files(self) -> list[str]:
        return []

    def fragments(self) -> list[Fragment]:
        raise NotImplementedError

    def head(self, n: int, columns: list[str] | None) -> pa.Table | None:
        """The first `n` rows, when the format can read fewer than a fragment; else None."""
        return None

    def read(
        self, fragment: Fragment, columns: list[str] | None, prefilters: tuple = ()
    ) -> pa.Table:
        """The fragment's rows (only `columns`); a source may drop rows `prefilters` (row
        filters) would drop, when it can tell exactly."""
        raise NotImplementedError

    def describe_file(self, file: int) -> str:
        return f"input {file}"


def _with_partitions(
    table: pa.Table, file: InputFile, columns: list[str] | None, num_rows: int | None = None
) -> pa.Table:
    rows = table.num_rows if num_rows is None else num_rows
    for key, value in file.partitions.items():
        if key in table.column_names or (columns is not None and key not in columns):
            continue
        column = pa.repeat(pa.scalar(value, pa.string()), rows)
        if table.num_columns == 0:
            table = pa.table({key: column})
        else:
            table = table.append_column(key, column)
    if columns is not None and table.column_names != columns:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def _partition_fields(files: list[InputFile], base: pa.Schema) -> list[pa.Field]:
    keys: dict[str, None] = {}
    for f in files:
        keys.update(dict.fromkeys(f.partitions))
    return [pa.field(k, pa.string()) for k in keys if k not in base.names]


class ParquetSource(Source):
    name = "ReadParquet"

    def __init__(self, filesystem: pafs.FileSystem, files: list[InputFile]) -> None:
        self.filesystem = filesystem
        self.files = files
        self._meta: list[Any] | None = None
        self._schema: pa.Schema | None = None

    def __getstate__(self) -> dict[str, Any]:
        # workers read footers again as they open files; the driver's cache stays home
        return {**self.__dict__, "_meta": None}

    def describe_file(self, file: int) -> str:
        return self.files[file].display

    def _footer(self, index: int) -> Any:
        import pyarrow.parquet as pq

        file = self.files[index]
        try:
            with self.filesystem.open_input_file(file.path) as handle:
                return pq.ParquetFile(handle).metadata
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(
                file.display,
                f"is not a readable Parquet file: {exc}",
                "remove or replace the file, or read another path",
            ) from None

    def metadata(self) -> list[Any]:
        if self._meta is None:
            workers = min(16, len(self.files)) or 1
            if workers == 1 or isinstance(self.filesystem, pafs.LocalFileSystem):
                self._meta = [self._footer(i) for i in range(len(self.files))]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    self._meta = list(pool.map(self._footer, range(len(self.files))))
        return self._meta

    def schema(self) -> pa.Schema:
        if self._schema is None:
            meta = self.metadata()
            first = meta[0].schema.to_arrow_schema()
            for i, m in enumerate(meta[1:], start=1):
                other = m.schema.to_arrow_schema()
                if not other.equals(first):
                    raise DatasetError(
                        self.files[i].display,
                        f"has another schema than {self.files[0].display}: "
                        f"{_schema_difference(first, other)}",
                        "read the files separately and cast them to one schema, "
                        "or rewrite the odd file",
                    )
            first = first.remove_metadata()
            self._schema = pa.schema([*first, *_partition_fields(self.files, first)])
        return self._schema

    def num_rows(self) -> int:
        self.schema()  # files that cannot be read as one dataset have no count either
        return sum(m.num_rows for m in self.metadata())

    def size_bytes(self) -> int:
        return sum(
            m.row_group(g).total_byte_size for m in self.metadata() for g in range(m.num_row_groups)
        )

    def input_files(self) -> list[str]:
        return [f.display for f in self.files]

    def fragments(self) -> list[Fragment]:
        self.schema()  # a schema that differs between files fails before any work starts
        out = []
        for i, meta in enumerate(self.metadata()):
            first = 0
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                out.append(Fragment(len(out), i, (g,), first, rows))
                first += rows
        return out

    def head(self, n: int, columns: list[str] | None) -> pa.Table | None:
        import pyarrow.parquet as pq

        self.schema()
        pieces, left = [], n
        for i, file in enumerate(self.files):
            wanted = None if columns is None else [c for c in columns if c not in file.partitions]
            if wanted == []:
                return None  # partition columns only: the row count comes from the fragments
            with self.filesystem.open_input_file(file.path) as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=min(left, 65536), columns=wanted):
                    table = pa.Table.from_batches([batch]).slice(0, left)
                    pieces.append(_with_partitions(table, self.files[i], columns, table.num_rows))
                    left -= table.num_rows
                    if left <= 0:
                        break
            if left <= 0:
                break
        return pa.concat_tables(pieces) if pieces else None

    def read(
        self, fragment: Fragment, columns: list[str] | None, prefilters: tuple = ()
    ) -> pa.Table:
        file = self.files[fragment.file]
        wanted = None if columns is None else [c for c in columns if c not in file.partitions]
        if wanted is None and self._schema is not None:  # every column: Polars decodes faster
            wanted = [c for c in self._schema.names if c not in file.partitions]
        if isinstance(self.filesystem, pafs.LocalFileSystem) and wanted and fragment.num_rows:
            usable = tuple(f for f in prefilters if _exact_in_polars(f, file.path, fragment))
            table = _read_with_polars(file.path, fragment, wanted, usable)
            if table is not None:
                return _with_partitions(table, file, columns, table.num_rows)
        return self._read_with_pyarrow(fragment, columns, wanted)

    def _read_with_pyarrow(
        self, fragment: Fragment, columns: list[str] | None, wanted: list[str] | None
    ) -> pa.Table:
        import pyarrow.parquet as pq

        file = self.files[fragment.file]
        try:
            with self.filesystem.open_input_file(file.path) as handle:
                parquet = pq.ParquetFile(handle)
                table = parquet.read_row_groups(
                    list(fragment.row_groups), columns=wanted, use_threads=False
                )
                rows = sum(parquet.metadata.row_group(g).num_rows for g in fragment.row_groups)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(
                file.display, f"could not be read: {exc}", "check the file is complete"
            ) from None
        return _with_partitions(table.replace_schema_metadata(None), file, columns, rows)


_EXACT_TYPES = (
    pa.types.is_integer,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_date32,
    pa.types.is_boolean,
)


def _exact_in_polars(expr: object, path: str, fragment: Fragment) -> bool:
    """Whether Polars keeps exactly the rows pandas would for this row filter: its columns
    are integers, strings, dates or booleans (float NaN compares differently) and the row
    group statistics say they hold no nulls."""
    import pyarrow.parquet as pq

    from headrace.data.rowfilters import columns_of

    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
        for name in columns_of(expr):
            if name not in schema.names:
                return False
            if not any(check(schema.field(name).type) for check in _EXACT_TYPES):
                return False
            index = schema.names.index(name)
            for g in fragment.row_groups:
                stats = meta.row_group(g).column(index).statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    return False
    except Exception:
        return False
    return True


def _read_with_polars(
    path: str, fragment: Fragment, columns: list[str], prefilters: tuple = ()
) -> pa.Table | None:
    """The fragment's rows read by Polars' Parquet decoder (about twice pyarrow's speed on one
    core here; with prefilters, only the other columns of matching rows are decoded), cast back
    to the file's own Arrow types; None when Polars cannot give exactly those (then pyarrow
    reads it)."""
    import pyarrow.parquet as pq

    try:
        import polars as pl

        from headrace.data.rowfilters import to_polars

        scan = pl.scan_parquet(path).slice(fragment.first_row, fragment.num_rows)
        for expr in prefilters:
            scan = scan.filter(to_polars(expr))
        frame = scan.select(columns).collect()
        table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        schema = pq.read_schema(path)
        target = pa.schema([schema.field(c).remove_metadata() for c in columns])
        if table.column_names != columns:
            return None
        if not prefilters and table.num_rows != fragment.num_rows:
            return None
        return table.cast(target)
    except Exception:  # any type Polars maps differently: pyarrow reads the fragment
        return None


def _schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    for field in a:
        if field.name not in b.names:
            return f"column {field.name!r} is missing"
        other = b.field(field.name)
        if other.type != field.type:
            return f"column {field.name!r} is {other.type}, not {field.type}"
    extra = [n for n in b.names if n not in a.names]
    if extra:
        return f"extra column(s) {extra}"
    return f"columns in another order: {b.names}"


class TextSource(Source):
    """CSV or JSON (one object per line, or one array of objects) files; one fragment each."""

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        files: list[InputFile],
        kind: str,
        options: dict[str, Any],
    ) -> None:
        self.filesystem = filesystem
        self.files = files
        self.kind = kind
        self.name = "ReadCSV" if kind == "csv" else "ReadJSON"
        self.options = options
        self._schema: pa.Schema | None = None

    def describe_file(self, file: int) -> str:
        return self.files[file].display

    def input_files(self) -> list[str]:
        return [f.display for f in self.files]

    def size_bytes(self) -> int | None:
        return sum(max(f.size, 0) for f in self.files) or None

    def _read_file(self, index: int) -> pa.Table:
        file = self.files[index]
        try:
            with self.filesystem.open_input_stream(file.path) as stream:
                if self.kind == "csv":
                    import pyarrow.csv as pcsv

                    table = pcsv.read_csv(stream, **self.options)
                else:
                    table = _read_json(stream, self.options)
        except (OSError, pa.ArrowInvalid, ValueError) as exc:
            raise DatasetError(
                file.display,
                f"could not be read as {self.kind.upper()}: {exc}",
                "check the file's format and the read options",
            ) from None
        return table

    def schema(self) -> pa.Schema:
        if self._schema is None:
            first = self._read_file(0).schema
            self._schema = pa.schema([*first, *_partition_fields(self.files, first)])
        return self._schema

    def fragments(self) -> list[Fragment]:
        return [Fragment(i, i, (), 0, None) for i in range(len(self.files))]

    def read(
        self, fragment: Fragment, columns: list[str] | None, prefilters: tuple = ()
    ) -> pa.Table:
        table = self._read_file(fragment.file)
        expected = self.schema()
        own = pa.schema([f for f in expected if f.name in table.column_names])
        if table.column_names != own.names:
            raise DatasetError(
                self.files[fragment.file].display,
                f"has columns {table.column_names}, the first file {own.names}",
                "read the files separately, or make their columns agree",
            )
        if table.schema != own:
            try:
                table = table.cast(own)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DatasetError(
                    self.files[fragment.file].display,
                    f"has another schema than {self.files[0].display}: {exc}",
                    "pass explicit column types (convert_options=) or fix the file",
                ) from None
        return _with_partitions(table, self.files[fragment.file], columns)


def _read_json(stream: Any, options: dict[str, Any]) -> pa.Table:
    data = stream.read()
    if data.lstrip()[:1] == b"[":
        return pa.Table.from_pylist(json.loads(data))
    import pyarrow.json as pjson

    return pjson.read_json(pa.BufferReader(data), **options)


class TablesSource(Source):
    """Tables already in memory (from_pandas, from_arrow, from_items, materialize)."""

    name = "FromArrow"

    def __init__(self, tables: list[pa.Table], name: str = "FromArrow") -> None:
        if not tables:
            tables = [pa.table({})]
        first = tables[0].schema
        unified = []
        for t in tables:
            if t.schema != first:
                try:
                    t = t.cast(first)
                except (pa.ArrowInvalid, ValueError) as exc:
                    raise DatasetError(
                        name,
                        f"the tables have different schemas: {exc}",
                        "give tables with the same columns and types",
                    ) from None
            unified.append(t)
        self.tables = unified
        self.name = name
        self._schema = first

    def schema(self) -> pa.Schema:
        return self._schema

    def num_rows(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def size_bytes(self) -> int:
        return sum(t.nbytes for t in self.tables)

    def describe_file(self, file: int) -> str:
        return f"in-memory block {file}"

    def fragments(self) -> list[Fragment]:
        out = []
        for i, t in enumerate(self.tables):
            for start in range(0, max(t.num_rows, 1), _IN_MEMORY_BLOCK_ROWS):
                rows = min(_IN_MEMORY_BLOCK_ROWS, t.num_rows - start)
                out.append(Fragment(len(out), i, (), start, rows))
        return out

    def read(
        self, fragment: Fragment, columns: list[str] | None, prefilters: tuple = ()
    ) -> pa.Table:
        table = self.tables[fragment.file].slice(fragment.first_row, fragment.num_rows)
        return table if columns is None else table.select(columns)
