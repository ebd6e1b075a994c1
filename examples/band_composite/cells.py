"""Cells for the band composite example: tiles of the real Landsat 8 scene when ../shared is
beside the checkout, generated rasters otherwise."""

from __future__ import annotations

from pathlib import Path

import rasterio
from rasterio.windows import Window
from rasters import DATE, write_sample_cells

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "raster"
LANDSAT_BANDS = {"blue": "l8_B2.tif", "green": "l8_B3.tif", "red": "l8_B4.tif"}


def landsat_scene() -> Path | None:
    scenes = sorted(SHARED.glob("landsat8_*")) if SHARED.is_dir() else []
    return scenes[0] if scenes else None


def landsat_cells(scene: Path, folder: Path, grid: int = 2) -> list[dict]:
    """Cut the scene's blue, green and red bands into grid x grid cells (windowed reads)."""
    cells = []
    with rasterio.open(scene / LANDSAT_BANDS["blue"]) as src:
        height, width = src.height, src.width
    rows = [round(i * height / grid) for i in range(grid + 1)]
    cols = [round(j * width / grid) for j in range(grid + 1)]
    for i in range(grid):
        for j in range(grid):
            name = f"r{i}c{j}"
            window = Window(cols[j], rows[i], cols[j + 1] - cols[j], rows[i + 1] - rows[i])
            bands = {}
            for band, filename in LANDSAT_BANDS.items():
                with rasterio.open(scene / filename) as src:
                    profile = src.profile | {
                        "width": window.width,
                        "height": window.height,
                        "transform": src.window_transform(window),
                    }
                    out = folder / name / f"{band}.tif"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with rasterio.open(out, "w", **profile) as dst:
                        dst.write(src.read(1, window=window), 1)
                bands[band] = str(out)
            cells.append({"cell": name, "bands": bands, "date": "2015-08-04"})
    return cells


def make_cells(folder: Path) -> tuple[list[dict], str]:
    """(cells, where they came from)."""
    scene = landsat_scene()
    if scene is not None:
        return landsat_cells(scene, folder), f"Landsat 8 scene {scene.name}"
    return write_sample_cells(folder, cells=4), f"generated rasters ({DATE})"
