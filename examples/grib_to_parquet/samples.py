"""Encode small, realistic GRIB2 files with ecCodes so the demo runs on a fresh clone.

Each file is one forecast run over Europe on a regular 0.5 degree lat/lon grid, with the
parameters a typical surface post-processing job writes (2 m temperature, 10 m wind, mean sea
level pressure, total precipitation) at steps 0, 6 and 12 h. The fields are smooth synthetic
weather (no real data is shipped) and 2 m temperature has a bitmap of missing points, so the
converter's naming, metadata and null handling are all exercised.

Usage: ``python examples/grib_to_parquet/samples.py [folder] [count]``.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import eccodes
import numpy as np

# Europe, 0.5 degree: 97 x 77 points, north-to-south rows as most centres write them.
GRID = {
    "Ni": 97,
    "Nj": 77,
    "latitudeOfFirstGridPointInDegrees": 72.0,
    "longitudeOfFirstGridPointInDegrees": -12.0,
    "latitudeOfLastGridPointInDegrees": 34.0,
    "longitudeOfLastGridPointInDegrees": 36.0,
    "iDirectionIncrementInDegrees": 0.5,
    "jDirectionIncrementInDegrees": 0.5,
}
STEPS = (0, 6, 12)
MISSING = 9999.0
FIRST_RUN = date(2024, 1, 15)


def write_sample_gribs(folder: str | Path, count: int = 6) -> list[Path]:
    """Write ``count`` GRIB2 files (one forecast run each) into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lat, lon = _coordinates()
    paths = []
    for run in range(count):
        run_date = FIRST_RUN + timedelta(days=run // 2)
        run_hour = 12 * (run % 2)
        path = folder / f"sample_{run_date:%Y%m%d}_{run_hour:02d}z.grib2"
        with open(path, "wb") as out:
            for step in STEPS:
                for short_name, values in _fields(lat, lon, run, step).items():
                    _write_field(out, short_name, values, run_date, run_hour, step)
        paths.append(path)
    return paths


def _coordinates() -> tuple[np.ndarray, np.ndarray]:
    lats = np.linspace(GRID["latitudeOfFirstGridPointInDegrees"], 34.0, GRID["Nj"])
    lons = np.linspace(GRID["longitudeOfFirstGridPointInDegrees"], 36.0, GRID["Ni"])
    lon, lat = np.meshgrid(lons, lats)  # row-major, west-to-east within north-to-south rows
    return lat.ravel(), lon.ravel()


def _fields(lat: np.ndarray, lon: np.ndarray, run: int, step: int) -> dict[str, np.ndarray]:
    """Smooth, plausible fields; a moving low-pressure system drives wind and rain."""
    phase = run * 0.7 + step / 12.0
    rad_lat, rad_lon = np.radians(lat), np.radians(lon)
    low_lat, low_lon = 55.0 + 3 * np.sin(phase), -5.0 + 4.0 * step / 6 + run
    distance2 = ((lat - low_lat) / 6.0) ** 2 + ((lon - low_lon) / 9.0) ** 2
    msl = 101500.0 - 2500.0 * np.exp(-distance2) + 400.0 * np.cos(rad_lon * 3 + phase)
    gradient_lat, gradient_lon = np.gradient(msl.reshape(GRID["Nj"], GRID["Ni"]))
    t2m = 300.0 - 30.0 * np.sin(rad_lat) ** 2 + 3.0 * np.cos(rad_lon * 2 + phase)
    t2m = np.where(_missing_area(lat, lon, run), MISSING, t2m)
    rain_rate = 0.002 * np.exp(-distance2 * 1.5)  # metres per hour near the low
    return {
        "2t": t2m,
        "10u": -gradient_lat.ravel() / 40.0,
        "10v": gradient_lon.ravel() / 40.0,
        "msl": msl,
        "tp": rain_rate * step,  # accumulated since the start of the run
    }


def _missing_area(lat: np.ndarray, lon: np.ndarray, run: int) -> np.ndarray:
    """A blob of points with no data (as when a regional model leaves out an area)."""
    return ((lat - 40.0) ** 2 + (lon - (20.0 + run)) ** 2) < 9.0


def _write_field(
    out, short_name: str, values: np.ndarray, run_date: date, hour: int, step: int
) -> None:
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        for key, value in GRID.items():
            eccodes.codes_set(handle, key, value)
        eccodes.codes_set_long(handle, "dataDate", int(f"{run_date:%Y%m%d}"))
        eccodes.codes_set_long(handle, "dataTime", hour * 100)
        if short_name == "tp":
            eccodes.codes_set_long(handle, "productDefinitionTemplateNumber", 8)
            eccodes.codes_set_string(handle, "stepType", "accum")
            eccodes.codes_set_long(handle, "startStep", 0)
            eccodes.codes_set_long(handle, "endStep", step)
        else:
            eccodes.codes_set_long(handle, "step", step)
        eccodes.codes_set_string(handle, "shortName", short_name)
        eccodes.codes_set_long(handle, "bitsPerValue", 16)
        if np.any(values == MISSING):
            eccodes.codes_set_long(handle, "bitmapPresent", 1)
            eccodes.codes_set_double(handle, "missingValue", MISSING)
        eccodes.codes_set_values(handle, values)
        eccodes.codes_write(handle, out)
    finally:
        eccodes.codes_release(handle)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sample_gribs"
    how_many = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    for written in write_sample_gribs(target, how_many):
        print(written)
