"""Damaged sources: any GDAL error while compositing raises RasterError naming the file.

The rasters are written here with rasterio (JPEG 2000 through GDAL's JP2OpenJPEG driver, tiled
GeoTIFF), then cut short, so the test runs without ../shared; the real Landsat bands are used
too when ../shared/data is there. Regression: GDAL decodes JPEG 2000 in worker threads whose
errors ("Stream too short") went only to stderr, and a truncated band composited
"successfully" with most of its pixels wrong.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")


from headrace.formats.raster import RasterError, composite  # noqa: E402

LANDSAT_B2 = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/raster/landsat8_LC80200392015216LGN00/l8_B2.tif"
)
SIZE = 1830  # a Sentinel-2 60 m band


def _band(seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    smooth = 1000 + 2000 * np.sin(cols / 50) * np.cos(rows / 70)
    noise = np.random.default_rng(seed).integers(0, 300, (SIZE, SIZE))
    return (smooth + noise).astype("uint16")


def _write(path: Path, array: np.ndarray, driver: str, **options) -> Path:
    height, width = array.shape
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=width,
        height=height,
        count=1,
        dtype=array.dtype.name,
        crs="EPSG:32616",
        transform=rasterio.Affine(60, 0, 600000, 0, -60, 5000040),
        **options,
    ) as dst:
        dst.write(array, 1)
    return path


def _truncated(path: Path, fraction: float) -> Path:
    cut = path.with_name(f"cut_{fraction}_{path.name}")
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


FORMATS = {
    # lossy JPEG 2000 as Sentinel-2 delivers it, and lossless
    "jp2": ("JP2OpenJPEG", {"QUALITY": 25}),
    "jp2-lossless": ("JP2OpenJPEG", {"QUALITY": 100, "REVERSIBLE": "YES"}),
    "tif": ("GTiff", {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("damaged")
    array = _band()
    return {
        name: _write(folder / f"band_{name}.{name[:3]}", array, driver, **options)
        for name, (driver, options) in FORMATS.items()
    }


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("kind", list(FORMATS))
def test_truncated_source_raises_naming_the_file(good, tmp_path, kind, fraction):
    reference = good[kind]
    damaged = _truncated(reference, fraction)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RasterError) as info:
        composite([reference, damaged], out / "rgb.tif", overviews=(2,))
    assert info.value.subject == str(damaged)
    # the cut may also take GDAL's georeferencing box (written after the JPEG 2000 codestream)
    assert "could not be read" in info.value.reason or "differs from" in info.value.reason
    assert info.value.fix
    assert list(out.iterdir()) == [], "no output, not even a partial one"


def test_truncated_source_raises_with_gdal_threads_on(good, tmp_path):
    """A user's GDAL_NUM_THREADS must not bring the silent worker-thread errors back."""
    damaged = _truncated(good["jp2"], 0.7)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), pytest.raises(RasterError) as info:
        composite([good["jp2"], damaged], tmp_path / "rgb.tif", overviews=())
    assert info.value.subject == str(damaged)


def test_intact_jpeg2000_still_composites_exactly(good, tmp_path):
    report = composite([good["jp2-lossless"], good["tif"]], tmp_path / "rgb.tif", overviews=(2,))
    assert report.count == 2
    with rasterio.open(tmp_path / "rgb.tif") as out:
        np.testing.assert_array_equal(out.read(1), _band())
        np.testing.assert_array_equal(out.read(2), _band())


def test_truncated_real_landsat_band(tmp_path):
    if not LANDSAT_B2.exists():
        pytest.skip(f"real raster test data not found at {LANDSAT_B2} (needs ../shared/data)")
    with rasterio.open(LANDSAT_B2) as src:
        array = src.read(1)
    jp2 = _write(tmp_path / "l8_B2.jp2", array, "JP2OpenJPEG", QUALITY=25)
    for damaged in (_truncated(jp2, 0.6), _truncated(LANDSAT_B2, 0.6)):
        reference = jp2 if damaged.suffix == ".jp2" else LANDSAT_B2
        with pytest.raises(RasterError) as info:
            composite([reference, damaged], tmp_path / "out.tif", overviews=())
        assert info.value.subject == str(damaged)


WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from headrace.formats.raster import RasterError, composite
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    composite([sys.argv[1]], sys.argv[2], overviews=(), cog=False, compress="none")
except RasterError as exc:
    print("SUBJECT", exc.subject)
    print("REASON", exc.reason)
"""


def test_failed_write_raises_naming_the_destination(good, tmp_path):
    """A write GDAL cannot complete (here: the file size limit, as on a full disk)."""
    dst = tmp_path / "out.tif"
    done = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_A_FILE_SIZE_LIMIT, str(good["tif"]), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"SUBJECT {dst}" in done.stdout, done.stdout + done.stderr
    assert "REASON could not be written" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the partial temporary file is removed"
