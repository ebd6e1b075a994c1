"""Test data made here with the real libraries, so a fresh clone without ../shared/data still
tests GRIB conversion (and its fast path) and band composites. (Stream tests need nothing from
../shared: they generate their traces with the transactions simulator and hypothesis.)

GRIB files are encoded with ecCodes from its own samples: GRIB1 and GRIB2, several parameters,
levels, steps and ensemble members, statistics (accumulation) fields, bitmaps of missing points,
multi-field GRIB2 messages (one of them reusing the previous bitmap, as NCEP's v winds do), a
mixed-edition file and a Lambert conformal grid. Raster bands are written with rasterio as
GeoTIFF and as lossless JPEG 2000. The values are smooth synthetic fields with a fixed seed: the
files are the same on every run, and every check compares against what the libraries read back,
never against numbers copied from a real file.

The fixtures are session-scoped (each file is made once per run) and registered in conftest.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# -- GRIB ----------------------------------------------------------------------------------------

# A small regular lat/lon grid (5 degrees, north to south): 13 x 7 = 91 points.
GRID = {
    "Ni": 13,
    "Nj": 7,
    "latitudeOfFirstGridPointInDegrees": 60.0,
    "longitudeOfFirstGridPointInDegrees": -20.0,
    "latitudeOfLastGridPointInDegrees": 30.0,
    "longitudeOfLastGridPointInDegrees": 40.0,
    "iDirectionIncrementInDegrees": 5.0,
    "jDirectionIncrementInDegrees": 5.0,
}
POINTS = GRID["Ni"] * GRID["Nj"]
MISSING = 9999.0


@dataclass(frozen=True)
class GeneratedGrib:
    """A generated file and what it holds, as written (not as read back)."""

    path: Path
    edition: str  # "1", "2" or "1+2"
    fields: int
    messages: int
    points: int
    missing: int  # missing points over all fields


def _field_values(seed: int, points: int = POINTS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 250.0 + 40.0 * np.sin(np.linspace(0.0, 3.0, points) + seed)
    return np.round(base + rng.normal(0.0, 2.0, points), 2)


def _encode(
    sample: str, keys: dict, values: np.ndarray, *, grid: dict | None = GRID, bits: int = 16
) -> bytes:
    import eccodes

    handle = eccodes.codes_grib_new_from_samples(sample)
    try:
        for key, value in (grid or {}).items():
            eccodes.codes_set(handle, key, value)
        for key, value in keys.items():  # in order: some keys exist only after others
            if isinstance(value, str):
                eccodes.codes_set_string(handle, key, value)
            elif isinstance(value, float):
                eccodes.codes_set_double(handle, key, value)
            else:
                eccodes.codes_set_long(handle, key, value)
        eccodes.codes_set_long(handle, "bitsPerValue", bits)
        if np.any(values == MISSING):
            eccodes.codes_set_long(handle, "bitmapPresent", 1)
            eccodes.codes_set_double(handle, "missingValue", MISSING)
        eccodes.codes_set_values(handle, values)
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


def _with_hole(values: np.ndarray, start: int, length: int) -> np.ndarray:
    holed = values.copy()
    holed[start : start + length] = MISSING
    return holed


def grib1_levels_members_steps() -> tuple[list[bytes], int]:
    """ERA5-like GRIB1: z and t at 500 and 850 hPa, ensemble members 0..2, steps 0 and 6 (ECMWF
    local definition 1, so `number` is the member), and 2 m temperature with a bitmap."""
    messages, missing, seed = [], 0, 0
    for step in (0, 6):
        for member in (0, 1, 2):
            for param in (129, 130):  # z, t
                for level in (500, 850):
                    seed += 1
                    keys = {
                        "centre": 98,
                        "setLocalDefinition": 1,
                        "localDefinitionNumber": 1,
                        "marsType": "pf" if member else "cf",
                        "number": member,
                        "indicatorOfParameter": param,
                        "indicatorOfTypeOfLevel": 100,
                        "level": level,
                        "dataDate": 20170101,
                        "dataTime": 1200,
                        "stepRange": str(step),
                    }
                    messages.append(_encode("GRIB1", keys, _field_values(seed)))
    for step in (0, 6):  # 2t with missing points (a bitmap in GRIB1)
        keys = {
            "centre": 98,
            "indicatorOfParameter": 167,
            "indicatorOfTypeOfLevel": 1,
            "level": 0,
            "dataDate": 20170101,
            "dataTime": 1200,
            "stepRange": str(step),
        }
        messages.append(_encode("GRIB1", keys, _with_hole(_field_values(100 + step), 10, 7)))
        missing += 7
    return messages, missing


def _grib2_keys(**extra: int | str) -> dict:
    return {"centre": 7, "dataDate": 20110110, "dataTime": 1200, **extra}


def grib2_parameters_levels_steps() -> tuple[list[bytes], int]:
    """GFS-like GRIB2 from NCEP (centre kwbc): t, u, v and gh on isobaric levels at steps 0, 6,
    12; total precipitation accumulated over 0-6 and 6-12 h (template 4.8); two ensemble
    members (template 4.1); 2 m temperature with a bitmap."""
    messages, missing, seed = [], 0, 200
    parameters = {  # (discipline, category, number)
        "t": (0, 0, 0),
        "u": (0, 2, 2),
        "v": (0, 2, 3),
        "gh": (0, 3, 5),
    }
    for step in (0, 6, 12):
        for category, number in [(c, n) for _, c, n in parameters.values()]:
            for level in (500, 850):
                seed += 1
                keys = _grib2_keys(
                    parameterCategory=category,
                    parameterNumber=number,
                    typeOfFirstFixedSurface=100,
                    scaleFactorOfFirstFixedSurface=0,
                    scaledValueOfFirstFixedSurface=level * 100,
                    forecastTime=step,
                )
                messages.append(_encode("GRIB2", keys, _field_values(seed)))
    for start in (0, 6):  # tp: template 4.8, accumulated over six hours
        keys = _grib2_keys(
            productDefinitionTemplateNumber=8,
            parameterCategory=1,
            parameterNumber=8,
            typeOfFirstFixedSurface=1,
            forecastTime=start,
            typeOfStatisticalProcessing=1,
            indicatorOfUnitForTimeRange=1,
            lengthOfTimeRange=6,
        )
        messages.append(_encode("GRIB2", keys, np.abs(_field_values(300 + start) - 250.0)))
    for member in (1, 2):  # ensemble members: template 4.1
        keys = _grib2_keys(
            productDefinitionTemplateNumber=1,
            parameterCategory=0,
            parameterNumber=0,
            typeOfFirstFixedSurface=100,
            scaleFactorOfFirstFixedSurface=0,
            scaledValueOfFirstFixedSurface=50000,
            typeOfEnsembleForecast=3,
            perturbationNumber=member,
            numberOfForecastsInEnsemble=20,
            forecastTime=6,
        )
        messages.append(_encode("GRIB2", keys, _field_values(400 + member)))
    for step in (0, 6):  # 2 m temperature with a bitmap
        keys = _grib2_keys(
            parameterCategory=0,
            parameterNumber=0,
            typeOfFirstFixedSurface=103,
            scaleFactorOfFirstFixedSurface=0,
            scaledValueOfFirstFixedSurface=2,
            forecastTime=step,
        )
        messages.append(_encode("GRIB2", keys, _with_hole(_field_values(500 + step), 20, 9)))
        missing += 9
    return messages, missing


def grib2_sections(message: bytes) -> list[tuple[int, bytes]]:
    """(section number, bytes) of sections 1..7 of one GRIB2 message."""
    assert message[:4] == b"GRIB" and message[7] == 2 and message[-4:] == b"7777"
    sections, at = [], 16
    while at < len(message) - 4:
        length = struct.unpack(">I", message[at : at + 4])[0]
        sections.append((message[at + 4], message[at : at + length]))
        at += length
    return sections


def multi_field_message(first: bytes, *others: bytes, shared_bitmap: bool = False) -> bytes:
    """One GRIB2 message holding the fields of `first` and `others` (same grid): sections 4 to 7
    repeated per field, as NCEP writes. With `shared_bitmap`, the later fields' section 6 says
    "the previously defined bitmap applies" (indicator 254) instead of repeating it."""
    head = [data for number, data in grib2_sections(first) if number in (1, 2, 3)]
    body = [data for number, data in grib2_sections(first) if number >= 4]
    for other in others:
        for number, data in grib2_sections(other):
            if number < 4:
                continue
            if number == 6 and shared_bitmap:
                assert data[5] == 0, "the field has no bitmap of its own to share"
                data = struct.pack(">IBB", 6, 6, 254)
            body.append(data)
    payload = b"".join(head + body)
    total = 16 + len(payload) + 4
    section0 = first[:8] + struct.pack(">Q", total)
    return section0 + payload + b"7777"


def grib2_multi_field() -> tuple[list[bytes], int, int]:
    """Multi-field GRIB2 messages: u and v at three levels in one message each, and two wind
    components with the same missing points sharing one bitmap. Returns (messages, fields,
    missing points)."""
    messages, fields = [], 0
    for level in (250, 500, 850):
        wind = [
            _encode(
                "GRIB2",
                _grib2_keys(
                    parameterCategory=2,
                    parameterNumber=number,
                    typeOfFirstFixedSurface=100,
                    scaleFactorOfFirstFixedSurface=0,
                    scaledValueOfFirstFixedSurface=level * 100,
                    forecastTime=12,
                ),
                _field_values(600 + level + number),
            )
            for number in (2, 3)
        ]
        messages.append(multi_field_message(*wind))
        fields += 2
    gusts = [
        _encode(
            "GRIB2",
            _grib2_keys(
                parameterCategory=2,
                parameterNumber=number,
                typeOfFirstFixedSurface=103,
                scaleFactorOfFirstFixedSurface=0,
                scaledValueOfFirstFixedSurface=10,
                forecastTime=12,
            ),
            _with_hole(_field_values(700 + number), 30, 11),
        )
        for number in (2, 3)
    ]
    messages.append(multi_field_message(*gusts, shared_bitmap=True))
    return messages, fields + 2, 22


def grib2_lambert() -> bytes:
    """One field on a Lambert conformal grid (like NCEP's NAM and NDFD files)."""
    grid = {
        "gridType": "lambert",
        "Nx": 12,
        "Ny": 9,
        "latitudeOfFirstGridPointInDegrees": 30.0,
        "longitudeOfFirstGridPointInDegrees": 250.0,
        "LaDInDegrees": 40.0,
        "LoVInDegrees": 262.0,
        "Latin1InDegrees": 40.0,
        "Latin2InDegrees": 40.0,
        "DxInMetres": 40000,
        "DyInMetres": 40000,
    }
    keys = _grib2_keys(parameterCategory=3, parameterNumber=1, typeOfFirstFixedSurface=101)
    return _encode("GRIB2", keys, _field_values(800, 12 * 9) * 400.0, grid=grid)


def mixed_editions() -> list[bytes]:
    """Temperature at level 100 twice on one grid: GRIB1 on pressure, GRIB2 on hybrid levels
    (like cfgrib's t_on_different_level_types.grib)."""
    grib1 = _encode(
        "GRIB1",
        {"centre": 98, "indicatorOfParameter": 130, "indicatorOfTypeOfLevel": 100, "level": 100,
         "dataDate": 20171018},
        _field_values(900),
    )  # fmt: skip
    grib2 = _encode(
        "GRIB2",
        {"centre": 98, "dataDate": 20171018, "parameterCategory": 0, "parameterNumber": 0,
         "typeOfFirstFixedSurface": 105, "scaleFactorOfFirstFixedSurface": 0,
         "scaledValueOfFirstFixedSurface": 100},
        _field_values(901),
    )  # fmt: skip
    return [grib1, grib2]


def spectral_grib() -> bytes:
    """Spherical-harmonic coefficients (gridType sh): not a grid, so not convertible."""
    import eccodes

    handle = eccodes.codes_grib_new_from_samples("sh_ml_grib2")
    try:
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


def write_generated_gribs(folder: Path) -> dict[str, GeneratedGrib]:
    """Write every generated GRIB file into `folder`; name -> what it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, GeneratedGrib] = {}

    def write(name: str, messages: list[bytes], edition: str, fields: int, missing: int) -> None:
        path = folder / name
        path.write_bytes(b"".join(messages))
        made[name] = GeneratedGrib(path, edition, fields, len(messages), POINTS, missing)

    grib1, missing1 = grib1_levels_members_steps()
    write("levels_members_steps.grib", grib1, "1", len(grib1), missing1)
    grib2, missing2 = grib2_parameters_levels_steps()
    write("parameters_levels_steps.grib2", grib2, "2", len(grib2), missing2)
    multi, multi_fields, multi_missing = grib2_multi_field()
    write("multi_field.grib2", multi, "2", multi_fields, multi_missing)
    write("mixed_editions.grib", mixed_editions(), "1+2", 2, 0)
    lambert = folder / "lambert.grib2"
    lambert.write_bytes(grib2_lambert())
    made["lambert.grib2"] = GeneratedGrib(lambert, "2", 1, 1, 12 * 9, 0)
    return made


@pytest.fixture(scope="session")
def generated_gribs(tmp_path_factory) -> dict[str, GeneratedGrib]:
    """GRIB files written with ecCodes (GRIB1 and GRIB2): name -> GeneratedGrib."""
    pytest.importorskip("eccodes")
    return write_generated_gribs(tmp_path_factory.mktemp("generated_grib"))


# -- raster bands --------------------------------------------------------------------------------

BAND_SHAPE = (611, 645)  # rows, columns: two 512-pixel tiles each way, the last ones partial
BAND_CRS = "EPSG:32616"
BAND_ORIGIN = (399_960.0, 3_600_000.0)  # upper-left corner, metres


@dataclass(frozen=True)
class GeneratedBands:
    """Three single-band uint16 rasters of one grid, as GeoTIFF and as lossless JPEG 2000, and
    a three-band uint8 GeoTIFF whose zeros are nodata."""

    geotiff: list[Path]
    jp2: list[Path]
    rgb_with_nodata: Path
    arrays: list[np.ndarray]
    profile: dict


def _band(seed: int) -> np.ndarray:
    rows, columns = BAND_SHAPE
    y, x = np.mgrid[0:rows, 0:columns]
    rng = np.random.default_rng(seed)
    surface = 9000 + 3000 * np.sin(x / 37.0 + seed) * np.cos(y / 23.0) + 500 * (seed % 3)
    return (surface + rng.integers(0, 400, BAND_SHAPE)).astype(np.uint16)


def write_generated_bands(folder: Path) -> GeneratedBands:
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    rows, columns = BAND_SHAPE
    profile = {
        "driver": "GTiff",
        "width": columns,
        "height": rows,
        "count": 1,
        "dtype": "uint16",
        "crs": BAND_CRS,
        "transform": rasterio.Affine(30.0, 0.0, BAND_ORIGIN[0], 0.0, -30.0, BAND_ORIGIN[1]),
    }
    arrays, geotiff, jp2 = [], [], []
    for number in (2, 3, 4):
        array = _band(number)
        arrays.append(array)
        path = folder / f"B{number}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
        geotiff.append(path)
        lossless = folder / f"B{number}.jp2"
        jp2_profile = {**profile, "driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES"}
        with rasterio.open(lossless, "w", **jp2_profile) as dst:
            dst.write(array, 1)
        jp2.append(lossless)
    rgb = np.stack([(a // 64).astype(np.uint8) for a in arrays])
    rgb[:, :40, :] = 0  # a collar of nodata, as in a reprojected scene
    rgb[:, :, -25:] = 0
    rgb[rgb == 0] = 0
    rgb_path = folder / "RGB.tif"
    rgb_profile = {**profile, "count": 3, "dtype": "uint8", "nodata": 0}
    with rasterio.open(rgb_path, "w", **rgb_profile) as dst:
        dst.write(rgb)
    return GeneratedBands(geotiff, jp2, rgb_path, arrays, profile)


@pytest.fixture(scope="session")
def generated_bands(tmp_path_factory) -> GeneratedBands:
    """uint16 bands written with rasterio (GeoTIFF and lossless JP2) and an RGB with nodata."""
    pytest.importorskip("rasterio")
    return write_generated_bands(tmp_path_factory.mktemp("generated_bands"))
