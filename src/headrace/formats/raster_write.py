"""Write the composite: blocked copy into a tiled GeoTIFF, overviews, then the final layout.

With ``cog=True`` the bands are first copied, block by block, into an uncompressed striped
staging GeoTIFF (in memory for small composites, a hidden file next to the destination for big
ones); overviews and statistics are added there, and GDAL's COG driver (or, on GDALs without it,
``GTiff`` with ``COPY_SRC_OVERVIEWS``) rewrites it compressed with the overviews ahead of the
full-resolution data. Without ``cog`` the compressed GeoTIFF is written directly and the
overviews are appended after the data.

Memory stays bounded: at most one window of one band is held by Python at a time (a window is
``block_size`` rows by at most ``_WINDOW_PIXELS // block_size`` columns), and GDAL's own block
cache is capped at 128 MB while compositing (unless ``GDAL_CACHEMAX`` is set).
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.env
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.windows import Window

from .raster_sources import RasterError, Source, gdal_message
from .raster_stats import BandStatistics, accumulator

# Pixels per window: 2 Mi pixels is 16 MiB as float64/intp, the widest temporary (statistics).
_WINDOW_PIXELS = 2 << 20
# Staging bytes (all bands, uncompressed) up to which staging happens in GDAL's /vsimem.
_IN_MEMORY_STAGING = 64 << 20
COMPRESSIONS = ("deflate", "lzw", "zstd", "lzma", "packbits", "none")
# GDAL's block cache defaults to 5% of RAM and fills up with dirty blocks on big writes (1 GB
# RSS for an 8000x8000x3 composite here); workers with memory limits need a smaller one.
_BLOCK_CACHE = 128 << 20


@dataclass(frozen=True)
class Layout:
    """What the composite looks like on disk."""

    width: int
    height: int
    dtype: str
    crs: Any
    transform: Any
    nodata: float | None
    block_size: int
    compress: str
    overviews: tuple[int, ...]
    resampling: str
    cog: bool


@functools.cache
def has_cog_driver() -> bool:
    with rasterio.Env() as env:
        return "COG" in env.drivers()


@contextlib.contextmanager
def bounded_block_cache() -> Iterator[None]:
    """Cap GDAL's block cache while compositing, unless the user chose a size (GDAL_CACHEMAX)."""
    chosen = "GDAL_CACHEMAX" in os.environ or (
        rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()
    )
    previous = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    if chosen or (isinstance(previous, int) and previous <= _BLOCK_CACHE):
        yield
        return
    # the cache size is process-wide, not part of rasterio's per-Env state: restore it by hand
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", _BLOCK_CACHE)
    try:
        yield
    finally:
        # unset (None) means GDAL's default again
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", previous)


def temporary_name(dst: Path, suffix: str) -> Path:
    # hidden, and not *.tif: a reader globbing the folder never picks up a partial file
    return dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.{suffix}")


def remove_quietly(path: str | os.PathLike[str]) -> None:
    # GDAL may leave sidecars next to a dataset (.aux.xml for metadata, .ovr for overviews)
    for candidate in (os.fspath(path), *(f"{os.fspath(path)}{s}" for s in (".aux.xml", ".ovr"))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)


def write_composite(
    sources: Sequence[Source], layout: Layout, temporary: Path, statistics: bool
) -> list[BandStatistics]:
    """Write the composite to ``temporary`` (the caller renames it); return band statistics."""
    if not layout.cog:
        with rasterio.open(temporary, "w", **_profile(layout, len(sources), final=True)) as dst:
            return _fill(sources, dst, layout, statistics)
    staging_bytes = layout.width * layout.height * len(sources) * np.dtype(layout.dtype).itemsize
    if staging_bytes <= _IN_MEMORY_STAGING:
        with MemoryFile() as memory:
            return _stage_and_copy(sources, layout, memory.name, temporary, statistics)
    staging = temporary.with_name(temporary.name + ".stage")
    try:
        return _stage_and_copy(sources, layout, str(staging), temporary, statistics)
    finally:
        remove_quietly(staging)


def _stage_and_copy(
    sources: Sequence[Source], layout: Layout, staging: str, temporary: Path, statistics: bool
) -> list[BandStatistics]:
    with rasterio.open(staging, "w", **_profile(layout, len(sources), final=False)) as dst:
        stats = _fill(sources, dst, layout, statistics)
    options = _creation_options(layout)
    if has_cog_driver():
        # keep the staging file's overviews (built with the chosen resampling) as they are
        options.update(OVERVIEWS="FORCE_USE_EXISTING" if layout.overviews else "NONE")
        driver = "COG"
    else:
        options.update(TILED="YES", COPY_SRC_OVERVIEWS="YES", INTERLEAVE="PIXEL")
        options.update(BLOCKXSIZE=layout.block_size, BLOCKYSIZE=layout.block_size)
        driver = "GTiff"
    rasterio.shutil.copy(staging, str(temporary), driver=driver, **options)
    return stats


def _creation_options(layout: Layout) -> dict[str, Any]:
    options: dict[str, Any] = {"BIGTIFF": "IF_SAFER", "COMPRESS": layout.compress.upper()}
    if layout.cog:
        options["BLOCKSIZE"] = layout.block_size
    if layout.compress in ("deflate", "lzw", "zstd", "lzma"):
        # horizontal differencing: smooth imagery compresses far better, for little CPU
        options["PREDICTOR"] = 3 if np.dtype(layout.dtype).kind == "f" else 2
    return options


def _profile(layout: Layout, count: int, final: bool) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": layout.width,
        "height": layout.height,
        "count": count,
        "dtype": layout.dtype,
        "crs": layout.crs,
        "transform": layout.transform,
        "nodata": layout.nodata,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if final:
        options = _creation_options(layout)
        options.pop("BLOCKSIZE", None)
        profile.update({k.lower(): v for k, v in options.items()})
        profile.update(tiled=True, blockxsize=layout.block_size, blockysize=layout.block_size)
    else:
        # staging is read once by the final copy, which retiles: uncompressed strips are the
        # cheapest to write and to build overviews from (4x faster than 512-pixel tiles here)
        profile["compress"] = "none"
    return profile


def _windows(layout: Layout) -> Iterator[Window]:
    rows = layout.block_size
    columns = max(rows, (_WINDOW_PIXELS // rows) // rows * rows)
    for row in range(0, layout.height, rows):
        for col in range(0, layout.width, columns):
            yield Window(col, row, min(columns, layout.width - col), min(rows, layout.height - row))


def _read(source: Source, window: Window) -> np.ndarray:
    try:
        return source.dataset.read(source.band, window=window)
    except RasterioError as exc:
        raise RasterError(
            source.path,
            f"band {source.band} could not be read at rows {window.row_off}.."
            f"{window.row_off + window.height} ({gdal_message(exc)})",
            "the file is probably truncated or damaged: fetch or write it again",
        ) from exc


def _fill(
    sources: Sequence[Source], dst: Any, layout: Layout, statistics: bool
) -> list[BandStatistics]:
    accumulators = [accumulator(layout.dtype, layout.nodata) for _ in sources]
    for window in _windows(layout):
        # one band's window at a time: memory does not grow with the number of bands
        for index, source in enumerate(sources, start=1):
            block = _read(source, window)
            dst.write(block, index, window=window)
            if statistics:
                accumulators[index - 1].add(block)
            del block
    area_or_point = sources[0].dataset.tags().get("AREA_OR_POINT")
    if area_or_point:  # pixel-is-point vs pixel-is-area: part of the georeferencing
        dst.update_tags(AREA_OR_POINT=area_or_point)
    stats: list[BandStatistics] = []
    for index, source in enumerate(sources, start=1):
        dst.set_band_description(index, source.name)
        if statistics:
            stats.append(accumulators[index - 1].result(index, source.name))
            dst.update_tags(index, **stats[-1].gdal_tags())
    if layout.overviews:
        dst.build_overviews(list(layout.overviews), Resampling[layout.resampling])
    return stats
