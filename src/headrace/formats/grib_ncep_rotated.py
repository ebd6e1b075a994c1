"""Lat/lon of NCEP's GRIB2 grid template 3.32769, which ecCodes decodes but cannot locate.

Template 3.32769 ("Rotated Latitude/Longitude (Arakawa Non-E Staggered grid)", NCEP's local
table, https://www.nco.ncep.noaa.gov/pmb/docs/grib2/grib2_doc/grib2_temp3-32769.shtml) is written
by NCEP's regional models (NAM/NMMB, RRFS/FV3-LAM) on native levels. ecCodes reads its keys
(gridType ``ncep_32769``) but has no geometry for it. Its octets, in ecCodes' key names:

* 47-54 ``latitudeOfFirstGridPoint``/``longitudeOfFirstGridPoint``: the first grid point,
  geographic;
* 56-63 ``latitudeOfLastGridPoint``/``longitudeOfLastGridPoint`` (NCEP: "La2/Lo2, center
  latitude/longitude"): the geographic point that is the origin (0, 0) of the rotated grid,
  i.e. where the rotated equator crosses the rotated prime meridian;
* 64-71 ``Di``/``Dj``: the increments in rotated degrees;
* 72 ``scanningMode``, with the Arakawa stagger in bits 5-7 (odd rows, even rows, j offset by
  half a grid length);
* 73-80 ``latitudeOfGridPoints``/``longitudeOfGridPoints``: the last grid point, geographic.

Angles are in units of basicAngle/subdivisions degrees (micro-degrees when those are 0 or
missing). The computation is that of NCEP's own interpolation library (NCEPLIBS-ip,
``ip_rot_equid_cylind_grid_mod``, the wgrib2/ncep_post-compatible reading of 3.32769): the
first and last points are rotated into grid coordinates, the grid spans them evenly (the
offset bits move the first row/column by half a step), and every point is rotated back. The
increments ``Di``/``Dj`` must agree with that span: a header where they do not is damaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from headrace.errors import CorruptGrib, UnsupportedGrib

from .grib_keys import KeyReader

GRID_TYPE = "ncep_32769"
METHOD = (
    "headrace: NCEP GRIB2 template 3.32769 (rotated lat/lon, Arakawa non-E stagger), rotated "
    "back from the template's first/last grid points and centre as NCEPLIBS-ip does "
    "(ecCodes has no geometry for this template)"
)
# a missing 4-byte value (all bits set) as ecCodes returns it (GRIB_MISSING_LONG), and raw
_MISSING = frozenset({2147483647, 0xFFFFFFFF})
# Di/Dj against the span of the first and last points: both are rounded to the template's
# unit, so allow that rounding spread over the grid, plus a little.
_INCREMENT_TOLERANCE = 1e-3  # relative


def ncep_32769_latlon(keys: KeyReader, points: int, subject: str) -> tuple[np.ndarray, ...]:
    """(lat, lon) in degrees, lon in [0, 360), in the order of the field's values."""
    ni, nj = keys.long("Ni"), keys.long("Nj")
    if ni * nj != points:
        raise CorruptGrib(
            subject,
            f"the grid is {ni} x {nj} points but the message holds {points}",
            "re-download or regenerate the file",
        )
    mode = keys.long("scanningMode")
    if mode & 0x10:
        raise UnsupportedGrib(
            subject,
            "template 3.32769 with alternating row scanning (scanningMode bit 4)",
            "regrid the file (e.g. with wgrib2 -new_grid) to a grid ecCodes supports",
        )
    odd, even = bool(mode & 0x08), bool(mode & 0x04)
    if odd != even:
        raise UnsupportedGrib(
            subject,
            "template 3.32769 with an E-grid stagger (odd and even rows offset differently)",
            "regrid the file (e.g. with wgrib2 -new_grid) to a grid ecCodes supports",
        )
    unit = _unit(keys)
    first = (
        keys.long("latitudeOfFirstGridPoint") * unit,
        keys.long("longitudeOfFirstGridPoint") * unit,
    )
    centre = (
        keys.long("latitudeOfLastGridPoint") * unit,
        keys.long("longitudeOfLastGridPoint") * unit,
    )
    last = (keys.long("latitudeOfGridPoints") * unit, keys.long("longitudeOfGridPoints") * unit)
    for name, (lat, _) in (
        ("first grid point", first),
        ("centre", centre),
        ("last grid point", last),
    ):
        if not -90 <= lat <= 90:
            raise CorruptGrib(
                subject,
                f"the {name}'s latitude {lat} is not between -90 and 90",
                "re-download or regenerate the file",
            )
    west, south = _to_rotated(*first, *centre)
    east, north = _to_rotated(*last, *centre)
    d_lon = (east - west) / (ni - 1) if ni > 1 else _increment(keys, "Di", unit)
    d_lat = (north - south) / (nj - 1) if nj > 1 else _increment(keys, "Dj", unit)
    _check_increment(keys, "Di", unit, d_lon, subject)
    _check_increment(keys, "Dj", unit, d_lat, subject)
    if odd:
        west += 0.5 * d_lon
    if mode & 0x02:
        south += 0.5 * d_lat
    rotated_lon = west + d_lon * np.arange(ni)
    rotated_lat = south + d_lat * np.arange(nj)
    if mode & 0x20:  # j points consecutive: columns, not rows, are contiguous
        grid_lon, grid_lat = np.meshgrid(rotated_lon, rotated_lat, indexing="ij")
    else:
        grid_lon, grid_lat = np.meshgrid(rotated_lon, rotated_lat, indexing="xy")
    return _to_geographic(grid_lat.ravel(), grid_lon.ravel(), *centre)


def description(keys: KeyReader) -> dict[str, Any]:
    """What the grid description of the metadata shows for this template."""
    unit = _unit(keys)
    return {
        "latlonComputedBy": METHOD,
        "centreLatitudeInDegrees": keys.long("latitudeOfLastGridPoint") * unit,
        "centreLongitudeInDegrees": keys.long("longitudeOfLastGridPoint") * unit,
        "latitudeOfLastGridPointInDegrees": keys.long("latitudeOfGridPoints") * unit,
        "longitudeOfLastGridPointInDegrees": keys.long("longitudeOfGridPoints") * unit,
    }


def _unit(keys: KeyReader) -> float:
    basic = keys.long("basicAngleOfTheInitialProductionDomain")
    subdivisions = keys.long("subdivisionsOfBasicAngle")
    if basic == 0 or subdivisions == 0 or {basic, subdivisions} & _MISSING:
        return 1e-6
    return basic / subdivisions


def _increment(keys: KeyReader, key: str, unit: float) -> float:
    value = keys.long(key)
    return 0.0 if value in _MISSING else value * unit


def _check_increment(keys: KeyReader, key: str, unit: float, spanned: float, subject: str) -> None:
    given = _increment(keys, key, unit)
    if given == 0.0 or spanned == 0.0:
        return
    if abs(abs(spanned) - given) > _INCREMENT_TOLERANCE * given:
        raise CorruptGrib(
            subject,
            f"{key} is {given:g} degrees but the first and last grid points are "
            f"{abs(spanned):.6g} degrees apart per step (the grid header is inconsistent)",
            "re-download or regenerate the file",
        )


def _to_rotated(lat: float, lon: float, lat0: float, lon0: float) -> tuple[float, float]:
    """Geographic -> rotated degrees (longitude, latitude), the centre going to (0, 0)."""
    r = np.radians
    slat0, clat0 = np.sin(r(lat0)), np.cos(r(lat0))
    slat, clat, clon = np.sin(r(lat)), np.cos(r(lat)), np.cos(r(lon - lon0))
    side = 1.0 if ((lon - lon0 + 180 + 3600) % 360) - 180 >= 0 else -1.0
    slatr = np.clip(clat0 * slat - slat0 * clat * clon, -1.0, 1.0)
    clatr = np.sqrt(1 - slatr * slatr)
    clonr = 1.0 if clatr == 0 else np.clip((clat0 * clat * clon + slat0 * slat) / clatr, -1, 1)
    return float(side * np.degrees(np.arccos(clonr))), float(np.degrees(np.arcsin(slatr)))


def _to_geographic(
    rotated_lat: np.ndarray, rotated_lon: np.ndarray, lat0: float, lon0: float
) -> tuple[np.ndarray, np.ndarray]:
    slat0, clat0 = np.sin(np.radians(lat0)), np.cos(np.radians(lat0))
    slatr, clatr = np.sin(np.radians(rotated_lat)), np.cos(np.radians(rotated_lat))
    clonr = np.cos(np.radians(rotated_lon))
    slat = np.clip(clat0 * slatr + slat0 * clatr * clonr, -1.0, 1.0)
    clat = np.sqrt(1 - slat * slat)
    with np.errstate(divide="ignore", invalid="ignore"):
        clon = np.clip((clat0 * clatr * clonr - slat0 * slatr) / clat, -1.0, 1.0)
    clon = np.where(clat == 0, 1.0, clon)  # at a pole the longitude is arbitrary
    side = np.where(rotated_lon <= 0, -1.0, 1.0)
    lon = np.mod(lon0 + side * np.degrees(np.arccos(clon)) + 3600, 360.0)
    return np.degrees(np.arcsin(slat)), lon
