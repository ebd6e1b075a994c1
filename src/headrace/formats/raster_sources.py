"""Open and check the single-band sources of a composite.

Sources are opened by content (GDAL picks the driver), so a GeoTIFF named ``.jp2`` works. Every
source must match the first one in shape, CRS, transform and dtype: a composite whose bands are
not pixel-aligned would be silently wrong, so a mismatch is an error naming the offending file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import HeadraceError

try:
    import rasterio
    from rasterio.errors import RasterioIOError
except ModuleNotFoundError as exc:  # the geo extra is optional
    raise ModuleNotFoundError(
        "headrace.formats.raster needs rasterio: pip install 'headrace[geo]'"
    ) from exc

PathLike = str | os.PathLike[str]


class RasterError(HeadraceError):
    """A raster cannot be read, or the rasters of one composite do not fit together."""


@dataclass(frozen=True)
class Source:
    """One band of the composite: an open dataset and which of its bands to use."""

    path: str
    dataset: Any  # rasterio.DatasetReader
    band: int
    name: str

    @property
    def nodata(self) -> float | None:
        return self.dataset.nodatavals[self.band - 1]


def open_sources(
    paths: Sequence[PathLike],
    band: int | Sequence[int] | None,
    names: Sequence[str] | None,
) -> list[Source]:
    """Open every path, pick its band and check they all match; close them all on error."""
    if isinstance(paths, str | os.PathLike):
        raise RasterError(
            "band_paths", "is a single path, not a list of paths", "pass [path1, path2, ...]"
        )
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise RasterError("band_paths", "is empty", "pass at least one single-band raster")
    bands = _per_source("band", band, len(paths))
    labels = _per_source("names", names, len(paths))
    sources: list[Source] = []
    try:
        for i, path in enumerate(paths):
            dataset = _open(path)
            try:
                index = _pick_band(path, dataset, bands[i])
            except BaseException:
                dataset.close()
                raise
            sources.append(Source(path, dataset, index, labels[i] or Path(path).stem))
        _check_aligned(sources)
    except BaseException:
        close_sources(sources)
        raise
    return sources


def close_sources(sources: Sequence[Source]) -> None:
    for source in sources:
        source.dataset.close()


def gdal_message(exc: BaseException) -> str:
    """GDAL's own words for an error: rasterio chains them as causes behind a generic message
    ("Read failed. See previous exception for details.")."""
    messages = []
    seen = exc
    while seen is not None and len(messages) < 4:
        text = str(seen).strip()
        if text and "See previous exception" not in text and text not in messages:
            messages.append(text)
        seen = seen.__cause__
    return "; ".join(reversed(messages)) or type(exc).__name__


def _per_source(what: str, value: Any, count: int) -> list[Any]:
    if value is None or isinstance(value, int | str):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise RasterError(
            f"{what}={values!r}",
            f"has {len(values)} entries for {count} band paths",
            f"give one {what} entry per path",
        )
    return values


def _open(path: str) -> Any:
    if not os.path.exists(path):
        raise RasterError(path, "file does not exist", "check the path and that the file is there")
    if os.path.isdir(path):
        raise RasterError(path, "is a folder, not a raster file", "pass the path of a band file")
    if not os.access(path, os.R_OK):
        raise RasterError(path, "is not readable (permission denied)", "fix the file permissions")
    try:
        # no driver given: GDAL identifies the format from the bytes, not the file name
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(
            path,
            f"is not a raster GDAL can read ({exc})",
            "pass a GeoTIFF or JPEG2000 band file; a damaged or truncated file must be fetched "
            "again",
        ) from exc


def _pick_band(path: str, dataset: Any, band: int | None) -> int:
    if band is None:
        if dataset.count != 1:
            raise RasterError(
                path,
                f"has {dataset.count} bands; a composite takes single-band rasters",
                "split the bands first, or pass band=<1-based index> to pick one",
            )
        return 1
    if not isinstance(band, int) or isinstance(band, bool) or not 1 <= band <= dataset.count:
        raise RasterError(
            path,
            f"has no band {band!r} (it has {dataset.count})",
            f"pass band= between 1 and {dataset.count}",
        )
    return band


def _check_aligned(sources: Sequence[Source]) -> None:
    first = sources[0]
    ref = first.dataset
    for source in sources:
        ds = source.dataset
        if np.dtype(ds.dtypes[source.band - 1]).kind == "c":
            raise RasterError(
                source.path,
                f"has complex pixels ({ds.dtypes[source.band - 1]})",
                "composite real-valued bands (take the amplitude first)",
            )
    for source in sources[1:]:
        ds = source.dataset
        mismatch = None
        if (ds.height, ds.width) != (ref.height, ref.width):
            mismatch = ("shape", f"{ds.height}x{ds.width}", f"{ref.height}x{ref.width}")
        elif ds.crs != ref.crs:
            mismatch = ("CRS", _crs_text(ds.crs), _crs_text(ref.crs))
        elif not _same_transform(ds.transform, ref.transform):
            mismatch = ("transform", _tuple(ds.transform), _tuple(ref.transform))
        elif ds.dtypes[source.band - 1] != ref.dtypes[first.band - 1]:
            mismatch = ("dtype", ds.dtypes[source.band - 1], ref.dtypes[first.band - 1])
        if mismatch:
            what, got, want = mismatch
            raise RasterError(
                source.path,
                f"{what} {got} differs from {want} of the first band {first.path}",
                "reproject/resample or cast the bands onto one grid and dtype before compositing",
            )


def _same_transform(a: Any, b: Any) -> bool:
    # a millionth of a pixel: float noise from different writers, never a real offset
    tolerance = 1e-6 * max(min(abs(a.a), abs(a.e)), 1e-12)
    return all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=tolerance) for x, y in zip(a, b, strict=True)
    )


def _tuple(transform: Any) -> str:
    return str(tuple(round(v, 6) for v in transform[:6]))


def _crs_text(crs: Any) -> str:
    return crs.to_string() if crs else "none"


def resolve_nodata(sources: Sequence[Source], nodata: float | None, dtype: str) -> float | None:
    """The composite's single nodata value: the argument, else the sources' (they must agree)."""
    if nodata is None:
        found = {}
        for source in sources:
            value = source.nodata
            if value is not None and not any(_same_value(value, v) for v in found):
                found[value] = source.path
        if len(found) > 1:
            listed = ", ".join(f"{v} in {p}" for v, p in found.items())
            raise RasterError(
                sources[0].path,
                f"the bands have different nodata values ({listed}); a GeoTIFF holds one",
                "pass nodata=<value> to use one value for every band",
            )
        nodata = next(iter(found), None)
    if nodata is None:
        return None
    _check_representable(nodata, dtype)
    return float(nodata)


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _check_representable(nodata: float, dtype: str) -> None:
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return
    if math.isnan(nodata) or nodata != int(nodata):
        ok = False
    else:
        info = np.iinfo(kind)
        ok = info.min <= nodata <= info.max
    if not ok:
        raise RasterError(
            f"nodata={nodata!r}",
            f"cannot be stored in the bands' dtype {dtype}",
            "pass a nodata value inside the dtype's range",
        )
