"""Band composites on the real Landsat 8 and rasterio rasters in ../shared/data/raster.

No mocks: every check reads the written GeoTIFF back with rasterio (and its raw TIFF IFDs for
the COG layout) and compares against numpy on the source arrays.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from headrace.errors import HeadraceError  # noqa: E402
from headrace.formats.raster import CompositeReport, RasterError, composite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "raster"
LANDSAT = DATA / "landsat8_LC80200392015216LGN00"
RGB_BYTE = DATA / "rasterio" / "RGB.byte.tif"
FACTORS = (2, 4, 8, 16, 32)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real raster test data not found at {path} (needs the ../shared/data checkout)"
        )
    return path


@pytest.fixture(scope="module")
def landsat() -> list[Path]:
    return [_need(LANDSAT / f"l8_B{n}.tif") for n in (2, 3, 4)]


@pytest.fixture(scope="module")
def landsat_composite(landsat, tmp_path_factory) -> tuple[Path, CompositeReport]:
    dst = tmp_path_factory.mktemp("composite") / "l8_rgb.tif"
    return dst, composite(landsat, dst)


def _read(path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


def _leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ----------------------------------------------------------------------------- TIFF layout
def _tiff_ifds(path: Path) -> list[tuple[int, dict[int, tuple[int, ...]]]]:
    """(offset, tags) of every IFD in file order; integer-valued tags only."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    word, word_size = ("Q", 8) if big else ("I", 4)
    offset = struct.unpack(order + word, data[8:16] if big else data[4:8])[0]
    formats = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
    ifds = []
    while offset:
        count_fmt, count_size, entry_size = ("Q", 8, 20) if big else ("H", 2, 12)
        entries = struct.unpack(order + count_fmt, data[offset : offset + count_size])[0]
        position = offset + count_size
        tags = {}
        for i in range(entries):
            entry = data[position + i * entry_size : position + (i + 1) * entry_size]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            n = struct.unpack(order + word, entry[4 : 4 + word_size])[0]
            field = entry[4 + word_size :]
            if kind not in formats:
                continue
            fmt, size = formats[kind]
            if n * size <= len(field):
                raw = field[: n * size]
            else:
                at = struct.unpack(order + word, field[:word_size])[0]
                raw = data[at : at + n * size]
            tags[tag] = struct.unpack(order + fmt * n, raw)
        ifds.append((offset, tags))
        after = position + entries * entry_size
        offset = struct.unpack(order + word, data[after : after + word_size])[0]
    return ifds


def _assert_cog_layout(path: Path, width: int, levels: int) -> None:
    """What GDAL's validate_cloud_optimized_geotiff checks: tiled, IFDs first, overviews'
    data before the full-resolution data (smallest overview first)."""
    ifds = _tiff_ifds(path)
    assert len(ifds) == levels + 1, "one IFD per resolution (no mask expected)"
    assert ifds[0][1][256][0] == width, "the first IFD is the full-resolution image"
    widths = [tags[256][0] for _, tags in ifds]
    assert widths == sorted(widths, reverse=True)
    for _, tags in ifds:
        assert 322 in tags and 324 in tags, "every IFD is tiled (TileWidth, TileOffsets)"
    first_data = min(o for _, tags in ifds for o in tags[324] if o)
    assert all(offset < first_data for offset, _ in ifds), "all IFDs precede the image data"
    for (_, larger), (_, smaller) in itertools.pairwise(ifds):
        assert max(o for o in smaller[324] if o) < min(o for o in larger[324] if o), (
            "lower-resolution data is stored before higher-resolution data"
        )


# ----------------------------------------------------------------------------- Landsat
def test_landsat_composite_keeps_pixels_georeferencing_and_dtype(landsat, landsat_composite):
    dst, report = landsat_composite
    with rasterio.open(dst) as out:
        assert out.count == 3
        assert out.driver == "GTiff"
        stacked = out.read()
        out_profile = out.profile
        descriptions = out.descriptions
        crs, transform = out.crs, out.transform
        area_or_point = out.tags().get("AREA_OR_POINT")
    for index, path in enumerate(landsat):
        array, profile = _read(path)
        assert stacked[index].dtype == array.dtype == np.uint16
        assert stacked[index].shape == array.shape == (603, 627)
        np.testing.assert_array_equal(stacked[index], array)
        assert crs == profile["crs"]
        assert transform == profile["transform"]
    assert area_or_point == "Point"  # the sources are pixel-is-point
    assert out_profile["nodata"] is None  # Landsat L1 DN bands carry no nodata tag
    assert descriptions == ("l8_B2", "l8_B3", "l8_B4")
    assert report.dst == str(dst)
    assert (report.width, report.height, report.count) == (627, 603, 3)
    assert report.dtype == "uint16"
    assert report.crs == "EPSG:32616"
    assert report.nodata is None
    assert report.bytes_out == dst.stat().st_size > 0
    assert report.seconds > 0
    assert report.band_names == descriptions
    json.dumps(report.as_dict())  # the report travels as JSON (ledger, workflow results)


def test_landsat_statistics_equal_numpy_and_are_stored_as_gdal_metadata(landsat, landsat_composite):
    dst, report = landsat_composite
    assert len(report.statistics) == 3
    with rasterio.open(dst) as out:
        tags = [out.tags(band) for band in (1, 2, 3)]
    for index, path in enumerate(landsat):
        array, _ = _read(path)
        stats = report.statistics[index]
        assert stats.band == index + 1
        assert stats.min == array.min()
        assert stats.max == array.max()
        assert stats.mean == pytest.approx(array.mean(), rel=1e-12)
        assert stats.std == pytest.approx(array.std(), rel=1e-6)
        assert stats.valid_count == array.size
        assert stats.valid_percent == 100.0
        stored = tags[index]
        assert float(stored["STATISTICS_MINIMUM"]) == array.min()
        assert float(stored["STATISTICS_MAXIMUM"]) == array.max()
        assert float(stored["STATISTICS_MEAN"]) == pytest.approx(array.mean(), rel=1e-12)
        assert float(stored["STATISTICS_STDDEV"]) == pytest.approx(array.std(), rel=1e-6)
    # the README's verified ranges
    assert [(s.min, s.max) for s in report.statistics] == [
        (7522, 19966),
        (6629, 21924),
        (5941, 23082),
    ]


def test_landsat_overviews_and_cloud_optimized_layout(landsat_composite):
    dst, report = landsat_composite
    assert report.overviews == FACTORS
    with rasterio.open(dst) as out:
        profile = out.profile
        rasterio_factors = out.overviews(1)
        structure = out.tags(ns="IMAGE_STRUCTURE")
        full = out.read(1).astype(np.float64)
    assert profile["tiled"] is True
    assert (profile["blockxsize"], profile["blockysize"]) == (512, 512)
    assert profile["compress"] == "deflate"
    assert structure.get("LAYOUT") == "COG"
    # rasterio rounds factors from sizes (627 / ceil(627 / 32) = 31.35 -> 31): check the sizes
    assert len(rasterio_factors) == len(FACTORS)
    for level, factor in enumerate(FACTORS):
        with rasterio.open(dst, overview_level=level) as overview:
            assert (overview.width, overview.height) == (
                math.ceil(627 / factor),
                math.ceil(603 / factor),
            )
            if factor == 2:  # average resampling: close to 2x2 means, not to picked pixels
                # (top-left corner only: 627 -> 314 is a ratio of 1.997, windows drift)
                got = overview.read(1)[:40, :40].astype(np.float64)
                means = full[:80, :80].reshape(40, 2, 40, 2).mean(axis=(1, 3))
                picked = full[:80:2, :80:2]
                assert np.abs(got - means).mean() < 0.5 * np.abs(got - picked).mean()
    _assert_cog_layout(dst, 627, len(FACTORS))


def test_plain_tiled_geotiff_when_cog_is_off(landsat, tmp_path):
    dst = tmp_path / "plain.tif"
    report = composite(landsat, dst, cog=False, overviews=(2, 4), compress="lzw", block_size=256)
    assert report.overviews == (2, 4)
    with rasterio.open(dst) as out:
        assert out.profile["tiled"] is True
        assert out.profile["blockxsize"] == 256
        assert out.profile["compress"] == "lzw"
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        np.testing.assert_array_equal(out.read(2), _read(landsat[1])[0])
        assert "STATISTICS_MEAN" in out.tags(2)


def test_names_and_no_statistics_or_overviews(landsat, tmp_path):
    dst = tmp_path / "named.tif"
    report = composite(landsat, dst, names=["blue", "green", "red"], statistics=False, overviews=())
    assert report.statistics == ()
    assert report.overviews == ()
    with rasterio.open(dst) as out:
        assert out.descriptions == ("blue", "green", "red")
        assert out.overviews(1) == []
        assert not any(k.startswith("STATISTICS_") for k in out.tags(1))


def test_nodata_argument_is_written_and_excluded_from_statistics(landsat, tmp_path):
    array, _ = _read(landsat[0])
    value = int(np.median(array))
    report = composite(landsat[:1], tmp_path / "b2.tif", nodata=value, overviews=())
    valid = array[array != value]
    stats = report.statistics[0]
    assert report.nodata == value
    assert stats.valid_count == valid.size < array.size
    assert stats.mean == pytest.approx(valid.mean(), rel=1e-12)
    assert stats.std == pytest.approx(valid.std(), rel=1e-6)
    with rasterio.open(tmp_path / "b2.tif") as out:
        assert out.nodata == value


# ----------------------------------------------------------------------------- nodata (RGB.byte)
@pytest.fixture(scope="module")
def rgb_bands(tmp_path_factory) -> list[Path]:
    """RGB.byte.tif split into single-band GeoTIFFs, each keeping nodata 0."""
    source = _need(RGB_BYTE)
    folder = tmp_path_factory.mktemp("rgb")
    paths = []
    with rasterio.open(source) as src:
        profile = src.profile
        profile.update(count=1)
        for band, name in zip((1, 2, 3), ("red", "green", "blue"), strict=True):
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(band), 1)
            paths.append(path)
    return paths


def test_nodata_propagates_and_statistics_exclude_it(rgb_bands, tmp_path):
    dst = tmp_path / "rgb.tif"
    report = composite(rgb_bands, dst)
    assert report.nodata == 0
    assert report.dtype == "uint8"
    with rasterio.open(dst) as out, rasterio.open(RGB_BYTE) as original:
        assert out.nodata == 0
        assert out.crs == original.crs
        assert out.transform == original.transform
        np.testing.assert_array_equal(out.read(), original.read())
        tags = out.tags(1)
    for index, stats in enumerate(report.statistics):
        with rasterio.open(RGB_BYTE) as original:
            band = original.read(index + 1)
        valid = band[band != 0]
        assert stats.valid_count == valid.size
        assert stats.min == valid.min() > 0
        assert stats.max == valid.max()
        assert stats.mean == pytest.approx(valid.mean(), rel=1e-12)
        assert stats.std == pytest.approx(valid.std(), rel=1e-6)
        assert stats.valid_percent == pytest.approx(100.0 * valid.size / band.size)
    assert float(tags["STATISTICS_MINIMUM"]) > 0  # zeros are nodata, not the minimum
    with rasterio.open(RGB_BYTE) as original:
        zeros = float((original.read(1) == 0).mean())
    assert 100 - float(tags["STATISTICS_VALID_PERCENT"]) == pytest.approx(100 * zeros)


def test_band_selection_reads_multi_band_sources(rgb_bands, tmp_path):
    source = _need(RGB_BYTE)
    picked = composite([source] * 3, tmp_path / "picked.tif", band=[1, 2, 3], overviews=())
    split = composite(rgb_bands, tmp_path / "split.tif", overviews=())
    assert picked.statistics == tuple(
        type(s)(**{**s.as_dict(), "name": "RGB.byte"}) for s in split.statistics
    )
    with rasterio.open(tmp_path / "picked.tif") as a, rasterio.open(tmp_path / "split.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_multi_band_source_without_band_is_refused(tmp_path):
    source = _need(RGB_BYTE)
    with pytest.raises(RasterError) as info:
        composite([source], tmp_path / "out.tif")
    assert str(source) in str(info.value)
    assert "3 bands" in info.value.reason
    assert "band=" in info.value.fix
    assert _leftovers(tmp_path) == []


def test_float_bands_with_nan_and_nodata(landsat, tmp_path):
    array, profile = _read(landsat[0])
    reflectance = (array.astype(np.float32) * 2e-5 - 0.1).astype(np.float32)
    reflectance[:40, :50] = np.nan
    reflectance[100:110, :] = -9999.0
    profile.update(dtype="float32", nodata=-9999.0)
    path = tmp_path / "reflectance.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(reflectance, 1)
    report = composite([path], tmp_path / "out.tif", block_size=256)
    valid = reflectance[~np.isnan(reflectance) & (reflectance != -9999.0)].astype(np.float64)
    stats = report.statistics[0]
    assert stats.valid_count == valid.size
    assert stats.min == valid.min() and stats.max == valid.max()
    assert stats.mean == pytest.approx(valid.mean(), rel=1e-9)
    assert stats.std == pytest.approx(valid.std(), rel=1e-6)
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), reflectance)  # NaN equal NaN here


# ----------------------------------------------------------------------------- formats by content
def test_geotiff_named_jp2_is_opened_by_content(landsat, tmp_path):
    disguised = tmp_path / "l8_B2.jp2"
    shutil.copyfile(landsat[0], disguised)
    with rasterio.open(disguised) as src:
        assert src.driver == "GTiff"
    report = composite([disguised, *landsat[1:]], tmp_path / "out.tif", overviews=(2,))
    assert report.band_names[0] == "l8_B2"
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), _read(landsat[0])[0])


def test_real_jpeg2000_sources_composite(landsat, tmp_path):
    paths = []
    for path in landsat:
        array, profile = _read(path)
        jp2 = tmp_path / f"{path.stem}.jp2"
        with rasterio.open(
            jp2,
            "w",
            driver="JP2OpenJPEG",
            width=profile["width"],
            height=profile["height"],
            count=1,
            dtype="uint16",
            crs=profile["crs"],
            transform=profile["transform"],
            QUALITY=100,
            REVERSIBLE="YES",  # lossless, so pixels can be compared exactly
        ) as dst:
            dst.write(array, 1)
        paths.append(jp2)
    with rasterio.open(paths[0]) as src:
        assert src.driver == "JP2OpenJPEG"
    report = composite(paths, tmp_path / "from_jp2.tif")
    assert report.crs == "EPSG:32616"
    with rasterio.open(tmp_path / "from_jp2.tif") as out:
        assert out.transform == _read(landsat[0])[1]["transform"]
        for index, path in enumerate(landsat):
            np.testing.assert_array_equal(out.read(index + 1), _read(path)[0])


# ----------------------------------------------------------------------------- mismatches
def _variant(source: Path, folder: Path, what: str) -> Path:
    array, profile = _read(source)
    path = folder / f"{what}_variant.tif"
    if what == "shape":
        array = array[:-1, :]
        profile.update(height=array.shape[0])
    elif what == "CRS":
        profile.update(crs="EPSG:32617")
    elif what == "transform":
        profile.update(transform=profile["transform"] @ rasterio.Affine.translation(1, 0))
    elif what == "dtype":
        array = array.astype(np.int32)
        profile.update(dtype="int32")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


@pytest.mark.parametrize("what", ["shape", "CRS", "transform", "dtype"])
def test_mismatched_band_is_refused_naming_the_file(landsat, tmp_path, what):
    odd = _variant(landsat[1], tmp_path, what)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    with pytest.raises(RasterError) as info:
        composite([landsat[0], odd, landsat[2]], out_folder / "rgb.tif")
    assert info.value.subject == str(odd)
    assert what in info.value.reason
    assert str(landsat[0]) in info.value.reason
    assert info.value.fix
    assert _leftovers(out_folder) == []


def test_missing_unreadable_and_non_raster_paths(landsat, tmp_path):
    missing = tmp_path / "nope" / "l8_B9.tif"
    with pytest.raises(RasterError) as info:
        composite([landsat[0], missing], tmp_path / "out.tif")
    assert info.value.subject == str(missing)
    assert "does not exist" in info.value.reason
    text = tmp_path / "l8_MTL.tif"
    text.write_text('GROUP = L1_METADATA_FILE\n  ORIGIN = "Image courtesy of the USGS"\n')
    with pytest.raises(RasterError) as info:
        composite([text], tmp_path / "out.tif")
    assert info.value.subject == str(text)
    assert "not a raster" in info.value.reason
    with pytest.raises(RasterError, match="folder"):
        composite([tmp_path], tmp_path / "out.tif")
    assert isinstance(info.value, HeadraceError)
    assert _leftovers(tmp_path) == ["l8_MTL.tif"]


def test_bad_options_are_refused(landsat, tmp_path):
    for kwargs, subject in (
        ({"block_size": 500}, "block_size"),
        ({"compress": "jpeg2000"}, "compress"),
        ({"overviews": (1, 2)}, "overviews"),
        ({"resampling": "smooth"}, "resampling"),
        ({"nodata": -1}, "nodata"),
    ):
        with pytest.raises(RasterError) as info:
            composite(landsat, tmp_path / "out.tif", **kwargs)
        assert info.value.subject.startswith(subject)
    with pytest.raises(RasterError):
        composite(str(landsat[0]), tmp_path / "out.tif")
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_leaves_no_partial_file_and_keeps_the_old_one(landsat, tmp_path):
    array, profile = _read(landsat[1])
    profile.update(tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    damaged = tmp_path / "damaged.tif"
    with rasterio.open(damaged, "w", **profile) as dst:
        dst.write(array, 1)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.truncate(size // 2)  # header intact, the last tiles gone: fails while writing
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    dst = out_folder / "rgb.tif"
    dst.write_bytes(b"previous composite")
    with pytest.raises(RasterError) as info:
        composite([landsat[0], damaged, landsat[2]], dst)
    assert info.value.subject == str(damaged)
    assert "truncated" in info.value.fix
    assert dst.read_bytes() == b"previous composite"
    assert _leftovers(out_folder) == ["rgb.tif"]


def test_error_survives_pickling_to_a_worker_process(tmp_path):
    import pickle

    error = RasterError("a.tif", "file does not exist", "check the path")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, RasterError)
    assert (again.subject, again.reason, again.fix) == (
        "a.tif",
        "file does not exist",
        "check the path",
    )


# ----------------------------------------------------------------------------- bounded memory
_MEMORY_PROBE = r"""
import json, sys, tracemalloc
import rasterio.env
from headrace.formats.raster import composite
band, dst = sys.argv[1], sys.argv[2]
cache = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
tracemalloc.start()
report = composite([band, band, band], dst, names=["a", "b", "c"])
peak = tracemalloc.get_traced_memory()[1]
# VmHWM, not ru_maxrss: ru_maxrss carries the forked copy of the (large) pytest process
# over the exec, VmHWM belongs to this program's own address space
rss = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak": peak, "rss": rss, "count": report.count, "overviews": report.overviews,
                  "cache_restored": rasterio.env.get_gdal_config("GDAL_CACHEMAX") == cache}))
"""


def test_memory_stays_bounded_on_a_large_raster(tmp_path):
    side = 8000
    band = tmp_path / "large.tif"
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32616",
        "transform": rasterio.transform.from_origin(300000, 3500000, 10, 10),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    columns = np.arange(side, dtype=np.uint32)
    with rasterio.open(band, "w", **profile) as dst:
        for row in range(0, side, 500):
            rows = np.arange(row, row + 500, dtype=np.uint32)[:, None]
            dst.write(
                ((rows * 7 + columns) % 4096 + 1000).astype(np.uint16),
                1,
                window=rasterio.windows.Window(0, row, side, 500),
            )
    one_band = side * side * 2  # 128 MB; three bands are 384 MB
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}  # the default cap
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(band), str(tmp_path / "out.tif")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["count"] == 3
    assert probe["overviews"] == list(FACTORS)
    assert probe["cache_restored"]  # the cap is lifted afterwards
    assert probe["peak"] < one_band / 4, f"Python held {probe['peak'] / 2**20:.0f} MiB at once"
    # interpreter + rasterio/numpy (~70 MB) + GDAL's block cache, capped at 128 MB while
    # compositing, + one window; holding the bands would take 384 MB more (768 MB stacked)
    assert probe["rss"] < 2.5 * one_band, f"peak RSS {probe['rss'] / 2**20:.0f} MiB"
    assert _leftovers(tmp_path, {"large.tif"}) == ["out.tif"]


# ----------------------------------------------------------------------------- sample cells
def _load_rasters_example():
    path = REPO / "examples" / "band_composite" / "rasters.py"
    spec = importlib.util.spec_from_file_location("band_composite_rasters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_cells_are_adjacent_and_composite(tmp_path):
    cells = _load_rasters_example().write_sample_cells(tmp_path / "cells", cells=2, size=(200, 300))
    assert [c["cell"] for c in cells] == ["c000", "c001"]
    assert all(c["date"] == "2015-08-04" for c in cells)
    assert all(list(c["bands"]) == ["blue", "green", "red"] for c in cells)
    with (
        rasterio.open(cells[0]["bands"]["red"]) as west,
        rasterio.open(cells[1]["bands"]["red"]) as east,
    ):
        assert west.crs.to_epsg() == 32616 and west.dtypes[0] == "uint16"
        assert (west.height, west.width) == (200, 300)
        assert west.bounds.right == east.bounds.left
        assert west.bounds.top == east.bounds.top
        seam = west.read(1)[:, -1].astype(float) - east.read(1)[:, 0].astype(float)
        assert np.abs(seam).mean() < 200  # a continuous scene, not two unrelated tiles
    for cell in cells:
        report = composite(list(cell["bands"].values()), tmp_path / f"{cell['cell']}.tif")
        assert report.count == 3
        assert report.band_names == ("blue", "green", "red")
        blue, _, red = report.statistics
        assert 5000 < red.min < red.mean < red.max < 30000
        assert blue.std > 100  # texture, not a flat image


def test_gtiff_fallback_without_the_cog_driver_gives_the_same_layout(
    landsat, tmp_path, monkeypatch
):
    # GDAL < 3.1 has no COG driver: the fallback copies with COPY_SRC_OVERVIEWS instead
    from headrace.formats import raster_write

    monkeypatch.setattr(raster_write, "has_cog_driver", lambda: False)
    report = composite(landsat, tmp_path / "fallback.tif")
    assert report.overviews == FACTORS
    _assert_cog_layout(tmp_path / "fallback.tif", 627, len(FACTORS))
    with rasterio.open(tmp_path / "fallback.tif") as out:
        assert out.profile["blockxsize"] == 512
        np.testing.assert_array_equal(out.read(3), _read(landsat[2])[0])
        assert float(out.tags(3)["STATISTICS_MAXIMUM"]) == 23082
