"""GRIB edition 1 and 2 to Parquet (or an Arrow table) with ecCodes.

Every field is kept (multi-field GRIB2 messages included), values equal ecCodes' decoded values
exactly, and missing points (bitmap, grid_complex missing-value management, entirely missing
fields) become nulls, never sentinel numbers.

Layouts:

* ``wide`` (default): one row per grid point, columns ``lat``, ``lon`` and one column per field.
  All fields must be on the same grid (same points in the same order; a GRIB1 and a GRIB2
  encoding of one grid count as the same); otherwise ``UnsupportedGrib`` says to use ``long``.
* ``long``: one row per (field, point) with columns ``field`` (the wide column name),
  ``shortName``, ``typeOfLevel``, ``level``, ``level_label``, ``step``, ``number``,
  ``reference_time``, ``valid_time``, ``lat``, ``lon``, ``value``; works for any mix of grids.
* ``auto``: ``wide`` when all fields share one grid, else ``long``; the report says which.

Column names (wide) and ``field`` labels (long) are the shortName plus the keys that vary
within the file, in this order::

    {shortName}[_{typeOfLevel}_{level}][_step_{step}][_number_{number}]

e.g. ``t_isobaricInhPa_500``, ``2t_step_6``, ``t_isobaricInhPa_850_number_3``. Levels of layers
are ``top-bottom``; steps are in hours, with an ``m``/``s`` suffix when not whole hours, and
``start-end`` for ranges. Names still shared get ``_{stepType}``, ``_ref_{time}``,
``_valid_{time}``, ``_param_{paramId}``, ``_edition_{edition}`` (each only where it differs
within the group), then ``_2``, ``_3``... in file order. See ``headrace.formats.grib_naming``.

Metadata: each wide column carries its GRIB keys (name, shortName, units, paramId, typeOfLevel,
level, step, stepRange, stepUnits, stepType, number, dataDate/Time, referenceTime, validity
Date/Time, validTime (ISO, UTC), edition, centre, gridType, numberOfPoints, packingType, message
and field number) as JSON in the field metadata ``headrace.grib``; the schema metadata
``headrace.grib`` holds the source, counts and grid description(s) and, for ``long``, the same
per-field records under ``field_metadata``. Coordinates are always float64; ``dtype`` applies to
values only.

NCEP's rotated lat/lon template 3.32769 (gridType ``ncep_32769``), which ecCodes cannot locate,
gets lat/lon computed by ``headrace.formats.grib_ncep_rotated``; the grid description says how
(``latlonComputedBy``) and so do the ``lat``/``lon`` columns' field metadata.

Spectral fields (gridType ``sh``) and grids whose lat/lon ecCodes cannot compute raise
``UnsupportedGrib``; truncated, damaged, empty or non-GRIB files (including a grid header
ecCodes cannot make sense of on a grid type it supports) raise ``CorruptGrib``. In both cases
no output file appears: Parquet is written to a hidden temporary name and renamed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from .grib_grid import clear_grid_cache
from .grib_io import PathLike, local_source, write_atomically
from .grib_read import GribContents, read_grib_file
from .grib_table import VALUE_TYPES, distinct_grids, long_table, wide_table

Layout = Literal["wide", "long", "auto"]
DType = Literal["float64", "float32"]

__all__ = ["GribReport", "clear_grid_cache", "grib_to_parquet", "read_grib"]


@dataclass(frozen=True, slots=True)
class GribReport:
    """What one conversion did; ``bytes_in / seconds`` is the throughput users care about."""

    fields: int
    messages: int
    rows: int
    columns: int
    bytes_in: int
    bytes_out: int
    seconds: float
    layout: str
    dst: str


def read_grib(
    src: PathLike,
    *,
    layout: Layout = "wide",
    dtype: DType = "float64",
    source_name: str | None = None,
) -> pa.Table:
    """Decode a GRIB file (local path or fsspec URL) into an Arrow table with GRIB metadata.

    ``source_name`` is what errors and the ``source`` metadata call the file (default: ``src``);
    pass the object's name (``s3://bucket/key``) when ``src`` is a scratch copy of it.
    """
    _check_options(layout, dtype)
    return _table(_read(src, source_name), layout, dtype)


def grib_to_parquet(
    src: PathLike,
    dst: PathLike,
    *,
    layout: Layout = "wide",
    dtype: DType = "float64",
    compression: str = "lz4_raw",
    byte_stream_split: bool = True,
    source_name: str | None = None,
) -> GribReport:
    """Convert one GRIB file to one Parquet file; ``dst`` appears only once complete.

    ``compression`` is any Parquet codec pyarrow writes: the default ``lz4_raw`` is the
    fastest to write and read, ``zstd`` makes files about 14% smaller for about 25% more
    writing time (see ``_parquet_writer``). ``byte_stream_split`` encodes float columns with
    Parquet's BYTE_STREAM_SPLIT (smaller and faster with either codec); pass False, and
    ``compression="snappy"``, for readers older than Parquet format 2.9. ``source_name`` is
    what errors and metadata call the input (default: ``src``): a handler converting a scratch
    copy of an object passes the object's name, e.g. ``s3://bucket/key``.
    """
    _check_options(layout, dtype)
    started = time.perf_counter()
    contents = _read(src, source_name)
    table = _table(contents, layout, dtype)
    written, bytes_out = write_atomically(
        dst, _parquet_writer(table, compression, byte_stream_split)
    )
    return GribReport(
        fields=len(contents.fields),
        messages=contents.messages,
        rows=table.num_rows,
        columns=table.num_columns,
        bytes_in=contents.bytes,
        bytes_out=bytes_out,
        seconds=time.perf_counter() - started,
        layout=_chosen_layout(contents, layout),
        dst=written,
    )


def _check_options(layout: str, dtype: str) -> None:
    if layout not in ("wide", "long", "auto"):
        raise ValueError(f"layout={layout!r} is not supported: use 'wide', 'long' or 'auto'")
    if dtype not in VALUE_TYPES:
        raise ValueError(f"dtype={dtype!r} is not supported: use 'float64' or 'float32'")


def _read(src: PathLike, source_name: str | None) -> GribContents:
    with local_source(src) as path:
        return read_grib_file(path, source_name or str(src))


def _chosen_layout(contents: GribContents, layout: str) -> str:
    if layout != "auto":
        return layout
    return "wide" if len(distinct_grids(contents.fields)) == 1 else "long"


def _table(contents: GribContents, layout: str, dtype: str) -> pa.Table:
    if _chosen_layout(contents, layout) == "wide":
        return wide_table(contents, dtype)
    return long_table(contents, dtype)


# values per write batch; pages still close at the default 1 MiB data page size
_WRITE_BATCH = 64 * 1024


def _parquet_writer(
    table: pa.Table, compression: str, byte_stream_split: bool
) -> Callable[[IO[bytes] | str], None]:
    """Dictionary-encode only the repeated label columns of ``long``; split float bytes.

    Decoded GRIB values rarely repeat enough for dictionaries to pay off: without them the
    files are smaller (about 5% on the shared test data) and written about 20% faster.
    BYTE_STREAM_SPLIT groups the exponent bytes of neighbouring floats, which the codec then
    finds cheaply. Writing the 13 shared grid files (8.6 MB of GRIB, 75 MB of float64 columns
    uncompressed; CPU for write, rename and delete, pyarrow 26):

    ==================  ========  =======
    codec               seconds   MB
    ==================  ========  =======
    lz4_raw + split     0.134     31.8
    zstd(1) + split     0.177     27.5
    zstd(1)             0.243     25.2
    snappy + split      0.134     34.8
    snappy              0.156     33.9
    none                0.090     75.2
    ==================  ========  =======

    ``lz4_raw`` with the split is the default: a quarter less time than zstd, on a step that
    is about a fifth of a conversion, for files 16% larger that are still smaller than
    snappy's (the pygrib/pandas default). LZ4_RAW and BYTE_STREAM_SPLIT need Parquet format
    2.9 readers (pyarrow 7+, DuckDB, polars, Spark 3.4+). pyarrow writes one file on the
    calling thread (no thread pool), so the conversion uses one core.

    Pages are written as data page V2 (levels stored apart from the compressed values, so
    readers skip decompressing them) from batches of 64 Ki values rather than 1 Ki: the same
    bytes, about 11% less writing time on the files above (0.123 against 0.138 CPU-s), and
    faster to read back.
    """
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    dictionary_columns = [f.name for f in table.schema if f.name not in floats]
    if "level" in floats:  # long: the level repeats for every point of a field
        dictionary_columns.append("level")
        floats.remove("level")

    def write(out: IO[bytes] | str) -> None:
        pq.write_table(
            table,
            out,
            compression=compression,
            use_dictionary=dictionary_columns,
            use_byte_stream_split=floats if byte_stream_split else False,
            data_page_version="2.0",
            write_batch_size=_WRITE_BATCH,
            # the writer's page buffers from the C heap, where the decoded values were: Arrow's
            # default pool (mimalloc) grows its own arenas for them (5 MiB more peak RSS per
            # process on the benchmark files, no measurable speed difference)
            memory_pool=pa.system_memory_pool(),
        )

    return write
