"""Grid geometry of GRIB fields: lat/lon arrays, a per-process cache, a JSON description.

Computing lat/lon of a projected grid (Lambert, polar stereographic) costs about as much as
decoding the values, and every file of one model shares the grid, so the arrays are cached per
grid in a small LRU (bounded by entries and bytes). The key is the grid section (GRIB2 section
3, GRIB1 section 2) plus edition, gridType and point count: the grid section holds everything
the geo iterator reads (shape of the earth, scanning mode, pl array of reduced grids). Its
bytes key the cache when the reader has them, else ecCodes' ``md5GridSection`` of the same bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import eccodes
import numpy as np

from headrace.errors import CorruptGrib, UnsupportedGrib

from . import grib_ncep_rotated
from .grib_keys import KeyReader

SPECTRAL_GRID_TYPES = frozenset({"sh", "rotated_sh", "stretched_sh", "stretched_rotated_sh"})
ECCODES_METHOD = "ecCodes (latitudes/longitudes keys)"
# ecCodes' answers when it has no geometry for a grid (no geoiterator): the grid is unsupported.
# Any other failure, on a grid type it does locate, means the grid header is inconsistent.
_NO_GEOMETRY_ERRORS = (
    eccodes.KeyValueNotFoundError,
    eccodes.FunctionNotImplementedError,
)

CACHE_MAX_GRIDS = 16
CACHE_MAX_BYTES = 512 * 1024 * 1024

# Keys that describe a grid for humans; only those defined and not missing are kept.
_DESCRIPTION_LONG_KEYS = ("Ni", "Nj", "N", "scanningMode", "shapeOfTheEarth")
_DESCRIPTION_DOUBLE_KEYS = (
    "latitudeOfFirstGridPointInDegrees",
    "longitudeOfFirstGridPointInDegrees",
    "latitudeOfLastGridPointInDegrees",
    "longitudeOfLastGridPointInDegrees",
    "iDirectionIncrementInDegrees",
    "jDirectionIncrementInDegrees",
    "DxInMetres",
    "DyInMetres",
    "LaDInDegrees",
    "LoVInDegrees",
    "Latin1InDegrees",
    "Latin2InDegrees",
    "latitudeOfSouthernPoleInDegrees",
    "longitudeOfSouthernPoleInDegrees",
)


@dataclass(frozen=True, slots=True, eq=False)
class Grid:
    """Lat/lon of every point, in the order ecCodes returns the values (scanning mode applied)."""

    key: tuple[Any, ...] | None
    lat: np.ndarray
    lon: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return int(self.lat.size)

    def same_points(self, other: Grid) -> bool:
        """Two grids with different keys (e.g. GRIB1 and GRIB2 encodings) may be identical."""
        if self is other or (self.key is not None and self.key == other.key):
            return True
        return np.array_equal(self.lat, other.lat) and np.array_equal(self.lon, other.lon)


class _GridCache:
    """LRU of Grid objects, bounded by count and bytes; safe to share between threads."""

    def __init__(self, max_grids: int, max_bytes: int) -> None:
        self.max_grids = max_grids
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], Grid] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> Grid | None:
        with self._lock:
            grid = self._items.get(key)
            if grid is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return grid

    def put(self, grid: Grid) -> None:
        size = grid.lat.nbytes + grid.lon.nbytes
        if grid.key is None or size > self.max_bytes:
            return
        with self._lock:
            if grid.key in self._items:
                return
            self._items[grid.key] = grid
            self._bytes += size
            while len(self._items) > self.max_grids or self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.lat.nbytes + old.lon.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0


GRID_CACHE = _GridCache(CACHE_MAX_GRIDS, CACHE_MAX_BYTES)


def clear_grid_cache() -> None:
    """Drop cached lat/lon arrays (tests, or a worker that switches to another model)."""
    GRID_CACHE.clear()


def grid_of(
    handle: int,
    keys: KeyReader,
    grid_type: str,
    edition: int,
    points: int,
    subject: str,
    section: bytes | memoryview | None = None,
) -> Grid:
    """Lat/lon of the field behind ``handle``, from the cache when the grid was seen before.

    ``section`` is the field's grid section (GRIB2 section 3, GRIB1 section 2) when the caller
    has the message bytes: the very bytes ``md5GridSection`` hashes, so they key the cache as
    exactly, without asking ecCodes for the digest.
    """
    if grid_type in SPECTRAL_GRID_TYPES:
        raise UnsupportedGrib(
            subject,
            f"gridType {grid_type!r} holds spherical-harmonic coefficients, not grid points, "
            "so there are no lat/lon to write",
            "transform the field to a grid first (e.g. `mir --grid=1/1` or `cdo sp2gp`), "
            "then convert the result",
        )
    if section is not None:
        key: tuple[Any, ...] | None = (edition, grid_type, points, "section", bytes(section))
    else:
        key = _grid_key(keys, grid_type, edition, points)
    if key is not None:
        cached = GRID_CACHE.get(key)
        if cached is not None:
            return cached
    description = _describe(handle, keys, grid_type, edition, points)
    if grid_type == grib_ncep_rotated.GRID_TYPE:
        lat, lon = grib_ncep_rotated.ncep_32769_latlon(keys, points, subject)
        description.update(grib_ncep_rotated.description(keys))
    else:
        lat = _coordinate(handle, "latitudes", grid_type, points, subject)
        lon = _coordinate(handle, "longitudes", grid_type, points, subject)
        description["latlonComputedBy"] = ECCODES_METHOD
    _check_latitudes(lat, grid_type, subject)
    grid = Grid(key=key, lat=_readonly(lat), lon=_readonly(lon), description=description)
    GRID_CACHE.put(grid)
    return grid


def _grid_key(keys: KeyReader, grid_type: str, edition: int, points: int) -> tuple[Any, ...] | None:
    md5 = _md5(keys)
    if md5 is None:
        return None  # e.g. GRIB1 with a predefined grid and no grid section: never cached
    return (edition, grid_type, points, md5)


def _md5(keys: KeyReader) -> str | None:
    try:
        return keys.string("md5GridSection")
    except eccodes.CodesInternalError:
        return None


def _coordinate(handle: int, key: str, grid_type: str, points: int, subject: str) -> np.ndarray:
    try:
        array = eccodes.codes_get_double_array(handle, key)
    except _NO_GEOMETRY_ERRORS as exc:
        raise UnsupportedGrib(
            subject,
            f"ecCodes cannot compute {key} for gridType {grid_type!r} ({exc})",
            "regrid the file to a grid ecCodes supports (e.g. regular_ll with `cdo` or `mir`), "
            "or upgrade ecCodes if a newer version supports this grid template",
        ) from exc
    except eccodes.CodesInternalError as exc:
        raise CorruptGrib(
            subject,
            f"the file is damaged: ecCodes cannot compute {key} for gridType {grid_type!r} "
            f"because the grid header is inconsistent ({exc})",
            "re-download or regenerate the file",
        ) from exc
    if array.size != points:
        raise CorruptGrib(
            subject,
            f"the file is damaged: its grid header gives {array.size} {key} for the "
            f"{points} points of the message (gridType {grid_type!r})",
            "re-download or regenerate the file",
        )
    return array


def _check_latitudes(lat: np.ndarray, grid_type: str, subject: str) -> None:
    """ecCodes computes whatever a damaged header says, e.g. a first latitude of 2141 degrees."""
    if lat.size and not (lat.min() >= -90.000001 and lat.max() <= 90.000001):  # NaN fails too
        raise CorruptGrib(
            subject,
            f"the file is damaged: its grid header (gridType {grid_type!r}) puts points at "
            f"latitudes from {lat.min():g} to {lat.max():g}, outside -90..90",
            "re-download or regenerate the file",
        )


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared by every table built from the cache
    return array


def _describe(
    handle: int, keys: KeyReader, grid_type: str, edition: int, points: int
) -> dict[str, Any]:
    description: dict[str, Any] = {
        "gridType": grid_type,
        "edition": edition,
        "numberOfPoints": points,
        "md5GridSection": _md5(keys),
    }
    for name in _DESCRIPTION_LONG_KEYS:
        value = _defined(handle, name, eccodes.codes_get_long)
        if value is not None:
            description[name] = value
    for name in _DESCRIPTION_DOUBLE_KEYS:
        value = _defined(handle, name, eccodes.codes_get_double)
        if value is not None:
            description[name] = value
    ni, nj = description.get("Ni"), description.get("Nj")
    description["shape"] = [nj, ni] if ni and nj and ni * nj == points else None
    return description


def _defined(handle: int, name: str, getter: Any) -> Any:
    try:
        if not eccodes.codes_is_defined(handle, name) or eccodes.codes_is_missing(handle, name):
            return None
        return getter(handle, name)
    except eccodes.CodesInternalError:
        return None
