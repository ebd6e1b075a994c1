"""NCEP's GRIB2 grid template 3.32769 (rotated lat/lon, Arakawa non-E stagger) converts.

The files are generated with ecCodes (its GRIB2 sample, switched to template 3.32769 and
filled in as NCEP's regional models write it); lat/lon are checked against an independent
computation: PROJ's rotated-pole projection (``ob_tran``) through pyproj, applied to the rotated
grid the file was built from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

eccodes = pytest.importorskip("eccodes")
pyproj = pytest.importorskip("pyproj")

from headrace.errors import CorruptGrib, UnsupportedGrib  # noqa: E402
from headrace.formats.grib import read_grib  # noqa: E402
from headrace.formats.grib_grid import clear_grid_cache  # noqa: E402

META = b"headrace.grib"
RADIUS = 6371229.0  # shapeOfTheEarth 6
# NAM-like: centre 54N 106W; the rotated grid spans -30..30 x -20..20 degrees
CENTRE = (54.0, 254.0)
WEST, SOUTH, STEP_LON, STEP_LAT = -30.0, -20.0, 0.5, 0.4
NI, NJ = 121, 101


def _rotated_to_geographic(rotated_lon, rotated_lat):
    lat0, lon0 = CENTRE
    rotated = pyproj.CRS.from_proj4(
        f"+proj=ob_tran +o_proj=longlat +o_lat_p={90 - lat0} +o_lon_p=0 +lon_0={lon0} "
        f"+R={RADIUS} +no_defs"
    )
    earth = pyproj.CRS.from_proj4(f"+proj=longlat +R={RADIUS} +no_defs")
    lon, lat = pyproj.Transformer.from_crs(rotated, earth, always_xy=True).transform(
        rotated_lon, rotated_lat
    )
    return np.asarray(lat), np.mod(np.asarray(lon), 360.0)


def _micro(degrees: float) -> int:
    return round(degrees * 1e6)


def _write(path, scanning_mode=64, di=STEP_LON, values=None):
    """A 3.32769 message whose grid is WEST/SOUTH + steps in rotated degrees."""
    east, north = WEST + (NI - 1) * STEP_LON, SOUTH + (NJ - 1) * STEP_LAT
    (first_lat, last_lat), (first_lon, last_lon) = _rotated_to_geographic(
        np.array([WEST, east]), np.array([SOUTH, north])
    )
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        eccodes.codes_set_long(handle, "centre", 7)
        eccodes.codes_set_long(handle, "gridDefinitionTemplateNumber", 32769)
        for key, value in {
            "shapeOfTheEarth": 6,
            "Ni": NI,
            "Nj": NJ,
            "basicAngleOfTheInitialProductionDomain": 0,
            "latitudeOfFirstGridPoint": _micro(first_lat),
            "longitudeOfFirstGridPoint": _micro(first_lon),
            "latitudeOfLastGridPoint": _micro(CENTRE[0]),  # octets 56-59: centre (La2)
            "longitudeOfLastGridPoint": _micro(CENTRE[1]),
            "Di": _micro(di),
            "Dj": _micro(STEP_LAT),
            "scanningMode": scanning_mode,
            "latitudeOfGridPoints": _micro(last_lat),  # octets 73-80: last grid point
            "longitudeOfGridPoints": _micro(last_lon),
        }.items():
            eccodes.codes_set_long(handle, key, value)
        eccodes.codes_set_string(handle, "packingType", "grid_ieee")  # values stored exactly
        if values is None:
            # float32 numbers: grid_ieee stores them exactly
            values = (250.0 + np.random.default_rng(0).random(NI * NJ) * 50.0).astype(np.float32)
            values = values.astype(np.float64)
        eccodes.codes_set_values(handle, values)
        assert eccodes.codes_get_string(handle, "gridType") == "ncep_32769"
        path.write_bytes(eccodes.codes_get_message(handle))
    finally:
        eccodes.codes_release(handle)
    return values


def _expected(scanning_mode: int):
    rotated_lon = WEST + STEP_LON * np.arange(NI)
    rotated_lat = SOUTH + STEP_LAT * np.arange(NJ)
    if scanning_mode & 0x08:
        rotated_lon = rotated_lon + STEP_LON / 2
    if scanning_mode & 0x02:
        rotated_lat = rotated_lat + STEP_LAT / 2
    order = "ij" if scanning_mode & 0x20 else "xy"
    grid_lon, grid_lat = np.meshgrid(rotated_lon, rotated_lat, indexing=order)
    return _rotated_to_geographic(grid_lon.ravel(), grid_lat.ravel())


@pytest.fixture(autouse=True)
def _fresh_grid_cache():
    clear_grid_cache()
    yield
    clear_grid_cache()


@pytest.mark.parametrize(
    "scanning_mode",
    [64, 64 | 8 | 4 | 2, 64 | 32],
    ids=["mass points", "staggered (offset rows and columns)", "j consecutive"],
)
def test_values_exact_and_latlon_equal_pyproj_rotated_pole(scanning_mode, tmp_path):
    path = tmp_path / "rrfs_native.grib2"
    values = _write(path, scanning_mode)
    table = read_grib(path)
    assert table.num_rows == NI * NJ
    column = [c for c in table.column_names if c not in ("lat", "lon")]
    assert len(column) == 1
    np.testing.assert_array_equal(table.column(column[0]).to_numpy(), values)
    lat, lon = _expected(scanning_mode)
    # the template stores the corner points in micro-degrees: that rounding (amplified a little
    # through the rotation) is all that differs, about 0.1 m here; a grid step is 0.4 degrees
    got_lat, got_lon = table.column("lat").to_numpy(), table.column("lon").to_numpy()
    assert np.abs(got_lat - lat).max() < 1e-5
    assert np.abs((got_lon - lon + 180) % 360 - 180).max() < 1e-5
    assert got_lon.min() >= 0 and got_lon.max() < 360


def test_metadata_says_how_latlon_were_computed(tmp_path):
    path = tmp_path / "rrfs_native.grib2"
    _write(path)
    for layout in ("wide", "long"):
        table = read_grib(path, layout=layout)
        for name in ("lat", "lon"):
            how = json.loads(table.schema.field(name).metadata[META])["computedBy"]
            assert "3.32769" in how and "ecCodes has no geometry" in how
        grid = json.loads(table.schema.metadata[META])["grids"][0]
        assert grid["gridType"] == "ncep_32769"
        assert "3.32769" in grid["latlonComputedBy"]
        assert grid["centreLatitudeInDegrees"] == CENTRE[0]


def test_ecodes_grids_say_ecodes_computed_them(tmp_path):
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        path = tmp_path / "ll.grib2"
        path.write_bytes(eccodes.codes_get_message(handle))
    finally:
        eccodes.codes_release(handle)
    table = read_grib(path)
    assert json.loads(table.schema.field("lat").metadata[META])["computedBy"].startswith("ecCodes")


def test_increment_disagreeing_with_the_corner_points_is_corrupt(tmp_path):
    path = tmp_path / "damaged.grib2"
    _write(path, di=STEP_LON * 3)
    with pytest.raises(CorruptGrib, match=r"Di is 1\.5 degrees"):
        read_grib(path)


def test_e_grid_stagger_is_unsupported(tmp_path):
    path = tmp_path / "egrid.grib2"
    _write(path, scanning_mode=64 | 8)  # odd rows offset, even rows not: an E grid
    with pytest.raises(UnsupportedGrib, match="E-grid"):
        read_grib(path)
