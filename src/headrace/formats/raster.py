"""Satellite band composites: single-band rasters stacked into one (Cloud Optimized) GeoTIFF.

``composite([blue, green, red], "rgb.tif")`` reads each source (GeoTIFF, JPEG2000 or anything
else GDAL opens; the format is found from the file's content, never its name) and writes one
multi-band GeoTIFF with the sources' CRS, transform and dtype:

* ``cog=True`` (default): a Cloud Optimized GeoTIFF (tiled ``block_size`` x ``block_size``,
  internal overviews stored before the full-resolution data), written by GDAL's COG driver;
* overviews at the given factors, ``average`` resampling unless ``resampling=`` says otherwise
  (use ``nearest`` or ``mode`` for classes and bit masks);
* per-band statistics (min, max, mean, population std) of the valid pixels, stored as GDAL
  ``STATISTICS_*`` band metadata, so ``gdalinfo`` and ``rasterio``'s ``tags(band)`` show them;
* band descriptions from ``names=`` or the file names (``l8_B2.tif`` -> ``l8_B2``);
* one nodata value: ``nodata=`` if given, else the sources' (they must agree), else none.
  Nodata pixels are left out of statistics and overview averages.

Sources must be single-band, unless ``band=`` picks a band (one index for all, or one per
source). Every source must match the first in shape, CRS, transform and dtype; otherwise
``RasterError`` names the offending file, what differs and how to fix it. Missing, unreadable
and non-raster paths raise ``RasterError`` too.

Any GDAL error while reading a source or writing the output raises ``RasterError`` naming the
file: GDAL decodes on the calling thread during a composite (``GDAL_NUM_THREADS=1``), because
errors raised in GDAL's decoder threads only reach stderr and the damaged pixels come back as if
they were good (a truncated JPEG 2000 band composited "successfully" with 46% of its pixels
wrong).

I/O is windowed: memory stays bounded for any tile size (see ``raster_write``). The output is
written under a hidden temporary name in the destination folder and renamed when complete, so a
failure never leaves a partial file at ``dst``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from .raster_sources import (
    PathLike,
    RasterError,
    close_sources,
    gdal_message,
    open_sources,
    resolve_nodata,
)
from .raster_stats import BandStatistics
from .raster_write import (
    COMPRESSIONS,
    Layout,
    bounded_block_cache,
    remove_quietly,
    temporary_name,
    write_composite,
)

__all__ = ["BandStatistics", "CompositeReport", "RasterError", "composite"]


@dataclass(frozen=True)
class CompositeReport:
    """What ``composite`` wrote."""

    dst: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None  # e.g. "EPSG:32616"; None when the sources have no CRS
    nodata: float | None
    band_names: tuple[str, ...]
    overviews: tuple[int, ...]  # decimation factors found in the written file
    statistics: tuple[BandStatistics, ...]  # empty when statistics=False
    cog: bool
    seconds: float
    bytes_out: int
    sources: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["statistics"] = [s.as_dict() for s in self.statistics]
        out["band_names"] = list(self.band_names)
        out["overviews"] = list(self.overviews)
        out["sources"] = list(self.sources)
        return out


def composite(
    band_paths: Sequence[PathLike],
    dst: PathLike,
    *,
    overviews: Sequence[int] = (2, 4, 8, 16, 32),
    statistics: bool = True,
    cog: bool = True,
    nodata: float | None = None,
    block_size: int = 512,
    compress: str = "deflate",
    names: Sequence[str] | None = None,
    band: int | Sequence[int] | None = None,
    resampling: str = "average",
) -> CompositeReport:
    """Stack single-band rasters into one multi-band GeoTIFF at ``dst`` (see the module doc)."""
    started = time.perf_counter()
    factors = _check_options(overviews, block_size, compress, resampling)
    target = Path(os.fspath(dst)).absolute()
    if target.is_dir():
        raise RasterError(str(target), "is a folder", "pass the path of the GeoTIFF to write")
    # GDAL's decoder threads report errors only to stderr: decode on this thread (module doc)
    with rasterio.Env(GDAL_NUM_THREADS="1"):
        sources = open_sources(band_paths, band, names)
        try:
            first = sources[0]
            ref = first.dataset
            layout = Layout(
                width=ref.width,
                height=ref.height,
                dtype=ref.dtypes[first.band - 1],
                crs=ref.crs,
                transform=ref.transform,
                nodata=resolve_nodata(sources, nodata, ref.dtypes[first.band - 1]),
                block_size=block_size,
                compress=compress.lower(),
                overviews=factors,
                resampling=resampling,
                cog=cog,
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            stats = _write(sources, layout, target, statistics)
        finally:
            close_sources(sources)
    # metadata beside the file would shadow what is now inside it
    remove_quietly(f"{target}.aux.xml")
    found = _overview_factors(target, layout.width, layout.height, factors)
    return CompositeReport(
        dst=str(target),
        width=layout.width,
        height=layout.height,
        count=len(sources),
        dtype=layout.dtype,
        crs=layout.crs.to_string() if layout.crs else None,
        nodata=layout.nodata,
        band_names=tuple(s.name for s in sources),
        overviews=found,
        statistics=tuple(stats),
        cog=cog,
        seconds=time.perf_counter() - started,
        bytes_out=target.stat().st_size,
        sources=tuple(s.path for s in sources),
    )


def _write(sources: list, layout: Layout, target: Path, statistics: bool) -> list[BandStatistics]:
    """Write under a temporary name and rename: a failure never leaves a partial ``target``."""
    temporary = temporary_name(target, "tmp")
    try:
        with bounded_block_cache():
            stats = write_composite(sources, layout, temporary, statistics)
        os.replace(temporary, target)
    except RasterioError as exc:  # a failed read is a RasterError naming its source already
        remove_quietly(temporary)
        raise RasterError(
            str(target),
            f"could not be written ({gdal_message(exc)})",
            "check that the destination folder is writable and has free space",
        ) from exc
    except BaseException:
        remove_quietly(temporary)
        raise
    return stats


def _overview_factors(
    path: Path, width: int, height: int, requested: tuple[int, ...]
) -> tuple[int, ...]:
    """Decimation factors of the overviews in ``path``, as requested where the sizes match.

    rasterio derives factors from rounded sizes (factor 32 of 627 pixels reads as 31), so each
    overview's size is matched against the requested factors instead.
    """
    with rasterio.open(path) as written:
        levels = len(written.overviews(1))
    factors = []
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as overview:
            size = (overview.width, overview.height)
        match = [f for f in requested if size == (-(-width // f), -(-height // f))]
        factors.append(match[0] if match else round(width / size[0]))
    return tuple(factors)


def _check_options(
    overviews: Sequence[int], block_size: int, compress: str, resampling: str
) -> tuple[int, ...]:
    factors = tuple(overviews)
    if any(not isinstance(f, int) or isinstance(f, bool) or f < 2 for f in factors):
        raise RasterError(
            f"overviews={factors!r}", "factors must be integers >= 2", "e.g. (2, 4, 8, 16, 32)"
        )
    if not isinstance(block_size, int) or block_size < 16 or block_size % 16:
        raise RasterError(
            f"block_size={block_size!r}",
            "GeoTIFF tiles must be a positive multiple of 16 pixels",
            "use 256 or 512",
        )
    if compress.lower() not in COMPRESSIONS:
        raise RasterError(
            f"compress={compress!r}", "is not supported", f"use one of {', '.join(COMPRESSIONS)}"
        )
    if resampling not in Resampling.__members__:
        raise RasterError(
            f"resampling={resampling!r}",
            "is not a GDAL resampling method",
            "use average (continuous values), nearest or mode (classes)",
        )
    return tuple(sorted(set(factors)))
