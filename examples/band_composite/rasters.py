"""Generate realistic single-band satellite tiles with rasterio, so the demo runs on a fresh clone.

Each cell is one tile of a Landsat-8-like scene (30 m pixels, WGS 84 / UTM zone 16N, raw uint16
DN values) with one GeoTIFF per band: blue, green and red. The scene is one smooth synthetic
surface (fields, a river valley, a few bright clouds) computed in scene coordinates, so cell
``c001`` continues exactly where ``c000`` ends: the cells are laid out west to east, each one's
left edge on the previous one's right edge. Pixel noise (sensor-like, seeded per cell) is added
on top, so files are reproducible and compress like real imagery, not like gradients.

Usage: ``python examples/band_composite/rasters.py [folder] [cells] [size]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32616"
PIXEL = 30.0
ORIGIN = (452475.0, 3408645.0)  # upper-left corner of cell c000 (x, y in metres)
DATE = "2015-08-04"
# DN = offset + gain * surface reflectance (roughly Landsat 8 OLI L1 over vegetated land)
BANDS = {"blue": (7600.0, 9000.0), "green": (6700.0, 11000.0), "red": (5900.0, 13000.0)}


def write_sample_cells(
    folder: str | Path, cells: int = 4, size: tuple[int, int] = (512, 512)
) -> list[dict]:
    """Write ``cells`` cells of ``size`` (rows, columns) pixels under ``folder``; describe them.

    Returns one descriptor per cell, west to east::

        {"cell": "c000", "bands": {"blue": path, "green": path, "red": path},
         "date": "2015-08-04"}
    """
    folder = Path(folder)
    rows, columns = size
    out = []
    for index in range(cells):
        cell = f"c{index:03d}"
        (folder / cell).mkdir(parents=True, exist_ok=True)
        transform = from_origin(ORIGIN[0] + index * columns * PIXEL, ORIGIN[1], PIXEL, PIXEL)
        reflectance = _surface(rows, columns, column_offset=index * columns)
        rng = np.random.default_rng(index)
        bands = {}
        for number, (band, (offset, gain)) in enumerate(BANDS.items()):
            # bands differ in brightness and respond differently to vegetation (red absorbs)
            response = reflectance[number]
            noise = rng.normal(0.0, 35.0, size=response.shape)
            dn = np.clip(offset + gain * response + noise, 1, 65535).astype(np.uint16)
            path = folder / cell / f"{band}.tif"
            profile = {
                "driver": "GTiff",
                "width": columns,
                "height": rows,
                "count": 1,
                "dtype": "uint16",
                "crs": CRS,
                "transform": transform,
                "tiled": True,
                "blockxsize": 256,
                "blockysize": 256,
                "compress": "deflate",
                "predictor": 2,
            }
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(dn, 1)
                dst.set_band_description(1, band)
                dst.update_tags(ACQUISITION_DATE=DATE, CELL=cell)
            bands[band] = str(path)
        out.append({"cell": cell, "bands": bands, "date": DATE})
    return out


def _surface(rows: int, columns: int, column_offset: int) -> np.ndarray:
    """Reflectance-like values (3, rows, columns) in scene pixel coordinates (about 0..1)."""
    y, x = np.mgrid[0:rows, column_offset : column_offset + columns].astype(np.float64)
    # large-scale relief and field patterns: periodic in scene coordinates, so seamless
    fields = 0.5 + 0.18 * np.sin(x / 97.0) * np.cos(y / 61.0) + 0.08 * np.sin((x + 2 * y) / 23.0)
    valley = np.exp(-(((y - 0.55 * rows - 40 * np.sin(x / 150.0)) / 18.0) ** 2))
    vegetation = np.clip(fields - 0.35 * valley, 0.0, 1.0)
    clouds = np.zeros_like(x)
    for cx, cy, r in ((180.0, 120.0, 45.0), (700.0, 380.0, 70.0), (1450.0, 200.0, 55.0)):
        clouds += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    clouds = np.clip(clouds, 0.0, 1.0)
    blue = 0.25 + 0.15 * vegetation - 0.1 * valley
    green = 0.20 + 0.30 * vegetation - 0.1 * valley
    red = 0.35 - 0.25 * vegetation - 0.1 * valley
    # clouds are bright in every band
    return np.stack([np.maximum(b, 0.0) * (1 - clouds) + 1.1 * clouds for b in (blue, green, red)])


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sample_cells"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    side = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    for descriptor in write_sample_cells(target, count, (side, side)):
        print(descriptor)
