"""Band composites on rasters generated here with rasterio (tests/generated_data.py): the checks
test_formats_raster.py makes on the real Landsat 8 and rasterio files in ../shared/data, on
uint16 GeoTIFF and lossless JPEG 2000 bands and a three-band uint8 GeoTIFF with nodata. They run
on a fresh clone. Every check reads the written file back with rasterio and compares with numpy.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from headrace.formats.raster import RasterError, composite  # noqa: E402
from tests.generated_data import BAND_CRS, BAND_SHAPE  # noqa: E402
from tests.test_formats_raster import FACTORS, _assert_cog_layout, _leftovers  # noqa: E402

ROWS, COLUMNS = BAND_SHAPE


@pytest.fixture(scope="module")
def written(generated_bands, tmp_path_factory):
    dst = tmp_path_factory.mktemp("generated_composite") / "rgb.tif"
    return dst, composite(generated_bands.geotiff, dst)


def test_composite_keeps_pixels_georeferencing_and_dtype(generated_bands, written):
    dst, report = written
    with rasterio.open(dst) as out:
        assert (out.count, out.driver, out.dtypes) == (3, "GTiff", ("uint16",) * 3)
        np.testing.assert_array_equal(out.read(), np.stack(generated_bands.arrays))
        assert out.crs.to_string() == BAND_CRS
        assert out.transform == generated_bands.profile["transform"]
        assert out.nodata is None
        assert out.descriptions == ("B2", "B3", "B4")
    assert (report.width, report.height, report.count) == (COLUMNS, ROWS, 3)
    assert (report.dtype, report.crs, report.nodata) == ("uint16", BAND_CRS, None)
    assert report.bytes_out == dst.stat().st_size > 0


def test_statistics_equal_numpy_and_are_stored_as_gdal_metadata(generated_bands, written):
    dst, report = written
    with rasterio.open(dst) as out:
        tags = [out.tags(band) for band in (1, 2, 3)]
    for index, array in enumerate(generated_bands.arrays):
        stats = report.statistics[index]
        assert (stats.band, stats.min, stats.max) == (index + 1, array.min(), array.max())
        assert stats.mean == pytest.approx(array.mean(), rel=1e-12)
        assert stats.std == pytest.approx(array.std(), rel=1e-6)
        assert stats.valid_count == array.size and stats.valid_percent == 100.0
        assert float(tags[index]["STATISTICS_MINIMUM"]) == array.min()
        assert float(tags[index]["STATISTICS_MAXIMUM"]) == array.max()
        assert float(tags[index]["STATISTICS_MEAN"]) == pytest.approx(array.mean(), rel=1e-12)


def test_overviews_and_cloud_optimized_layout(written):
    dst, report = written
    assert report.overviews == FACTORS
    with rasterio.open(dst) as out:
        assert out.profile["tiled"] is True
        assert (out.profile["blockxsize"], out.profile["blockysize"]) == (512, 512)
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        full = out.read(1).astype(np.float64)
    for level, factor in enumerate(FACTORS):
        with rasterio.open(dst, overview_level=level) as overview:
            assert (overview.width, overview.height) == (
                math.ceil(COLUMNS / factor),
                math.ceil(ROWS / factor),
            )
            if factor == 2:  # average resampling: close to 2x2 means, not to picked pixels
                got = overview.read(1)[:40, :40].astype(np.float64)
                means = full[:80, :80].reshape(40, 2, 40, 2).mean(axis=(1, 3))
                picked = full[:80:2, :80:2]
                assert np.abs(got - means).mean() < 0.5 * np.abs(got - picked).mean()
    _assert_cog_layout(dst, COLUMNS, len(FACTORS))


def test_jpeg2000_sources_composite_losslessly(generated_bands, tmp_path):
    with rasterio.open(generated_bands.jp2[0]) as src:
        assert src.driver == "JP2OpenJPEG"
    report = composite(generated_bands.jp2, tmp_path / "from_jp2.tif")
    assert report.crs == BAND_CRS
    with rasterio.open(tmp_path / "from_jp2.tif") as out:
        assert out.transform == generated_bands.profile["transform"]
        np.testing.assert_array_equal(out.read(), np.stack(generated_bands.arrays))


def test_geotiff_named_jp2_is_opened_by_content(generated_bands, tmp_path):
    disguised = tmp_path / "B2.jp2"
    shutil.copyfile(generated_bands.geotiff[0], disguised)
    with rasterio.open(disguised) as src:
        assert src.driver == "GTiff"
    report = composite([disguised, *generated_bands.jp2[1:]], tmp_path / "out.tif", overviews=(2,))
    assert report.band_names[0] == "B2"
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), generated_bands.arrays[0])


def test_nodata_propagates_and_statistics_exclude_it(generated_bands, tmp_path):
    source = generated_bands.rgb_with_nodata
    with pytest.raises(RasterError, match="3 bands"):
        composite([source], tmp_path / "refused.tif")
    report = composite([source] * 3, tmp_path / "rgb.tif", band=[1, 2, 3])
    assert (report.nodata, report.dtype) == (0, "uint8")
    with rasterio.open(tmp_path / "rgb.tif") as out, rasterio.open(source) as original:
        assert out.nodata == 0
        bands = original.read()
        np.testing.assert_array_equal(out.read(), bands)
        tags = out.tags(1)
    for index, stats in enumerate(report.statistics):
        valid = bands[index][bands[index] != 0]
        assert stats.valid_count == valid.size < bands[index].size
        assert stats.min == valid.min() > 0 and stats.max == valid.max()
        assert stats.mean == pytest.approx(valid.mean(), rel=1e-12)
        assert stats.std == pytest.approx(valid.std(), rel=1e-6)
    zeros = float((bands[0] == 0).mean())
    assert 100 - float(tags["STATISTICS_VALID_PERCENT"]) == pytest.approx(100 * zeros)


@pytest.mark.parametrize("what", ["shape", "CRS", "transform", "dtype"])
def test_mismatched_band_is_refused_naming_the_file(generated_bands, tmp_path, what):
    array, profile = generated_bands.arrays[1], dict(generated_bands.profile)
    if what == "shape":
        array = array[:-1, :]
        profile.update(height=array.shape[0])
    elif what == "CRS":
        profile.update(crs="EPSG:32617")
    elif what == "transform":
        profile.update(transform=profile["transform"] @ rasterio.Affine.translation(1, 0))
    else:
        array = array.astype(np.int32)
        profile.update(dtype="int32")
    odd = tmp_path / f"{what}.tif"
    with rasterio.open(odd, "w", **profile) as dst:
        dst.write(array, 1)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    first, _, third = generated_bands.geotiff
    with pytest.raises(RasterError) as info:
        composite([first, odd, third], out_folder / "rgb.tif")
    assert info.value.subject == str(odd)
    assert what in info.value.reason and str(first) in info.value.reason
    assert _leftovers(out_folder) == []


def test_truncated_band_fails_and_keeps_the_previous_composite(generated_bands, tmp_path):
    profile = {**generated_bands.profile, "tiled": True, "blockxsize": 128, "blockysize": 128}
    damaged = tmp_path / "damaged.tif"
    with rasterio.open(damaged, "w", **profile, compress="deflate") as dst:
        dst.write(generated_bands.arrays[1], 1)
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    dst = out_folder / "rgb.tif"
    dst.write_bytes(b"previous composite")
    first, _, third = generated_bands.geotiff
    with pytest.raises(RasterError) as info:
        composite([first, damaged, third], dst)
    assert info.value.subject == str(damaged)
    assert dst.read_bytes() == b"previous composite"
    assert _leftovers(out_folder) == ["rgb.tif"]


def test_plain_tiled_geotiff_names_and_no_statistics(generated_bands, tmp_path):
    plain = composite(
        generated_bands.geotiff,
        tmp_path / "plain.tif",
        cog=False,
        overviews=(2, 4),
        compress="lzw",
        block_size=256,
    )
    assert plain.overviews == (2, 4)
    with rasterio.open(tmp_path / "plain.tif") as out:
        assert (out.profile["tiled"], out.profile["blockxsize"]) == (True, 256)
        assert out.profile["compress"] == "lzw"
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        np.testing.assert_array_equal(out.read(2), generated_bands.arrays[1])
    bare = composite(
        generated_bands.geotiff,
        tmp_path / "named.tif",
        names=["blue", "green", "red"],
        statistics=False,
        overviews=(),
    )
    assert (bare.statistics, bare.overviews) == ((), ())
    with rasterio.open(tmp_path / "named.tif") as out:
        assert out.descriptions == ("blue", "green", "red")
        assert out.overviews(1) == []
        assert not any(k.startswith("STATISTICS_") for k in out.tags(1))


def test_float_bands_with_nan_and_nodata(generated_bands, tmp_path):
    reflectance = (generated_bands.arrays[0].astype(np.float32) * 2e-5 - 0.1).astype(np.float32)
    reflectance[:40, :50] = np.nan
    reflectance[100:110, :] = -9999.0
    path = tmp_path / "reflectance.tif"
    profile = {**generated_bands.profile, "dtype": "float32", "nodata": -9999.0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(reflectance, 1)
    report = composite([path], tmp_path / "out.tif", block_size=256)
    valid = reflectance[~np.isnan(reflectance) & (reflectance != -9999.0)].astype(np.float64)
    stats = report.statistics[0]
    assert stats.valid_count == valid.size
    assert stats.min == valid.min() and stats.max == valid.max()
    assert stats.mean == pytest.approx(valid.mean(), rel=1e-9)
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), reflectance)  # NaN equal NaN here


def test_bad_options_and_paths_are_refused(generated_bands, tmp_path):
    bands = generated_bands.geotiff
    for kwargs, subject in (
        ({"block_size": 500}, "block_size"),
        ({"compress": "jpeg2000"}, "compress"),
        ({"overviews": (1, 2)}, "overviews"),
        ({"resampling": "smooth"}, "resampling"),
        ({"nodata": -1}, "nodata"),
    ):
        with pytest.raises(RasterError) as info:
            composite(bands, tmp_path / "out.tif", **kwargs)
        assert info.value.subject.startswith(subject)
    missing = tmp_path / "nope" / "B9.tif"
    with pytest.raises(RasterError) as info:
        composite([bands[0], missing], tmp_path / "out.tif")
    assert info.value.subject == str(missing) and "does not exist" in info.value.reason
    text = tmp_path / "MTL.tif"
    text.write_text("GROUP = L1_METADATA_FILE\n")
    with pytest.raises(RasterError, match="not a raster"):
        composite([text], tmp_path / "out.tif")
    assert _leftovers(tmp_path) == ["MTL.tif"]


def test_gtiff_fallback_without_the_cog_driver_gives_the_same_layout(
    generated_bands, tmp_path, monkeypatch
):
    from headrace.formats import raster_write

    monkeypatch.setattr(raster_write, "has_cog_driver", lambda: False)
    report = composite(generated_bands.geotiff, tmp_path / "fallback.tif")
    assert report.overviews == FACTORS
    _assert_cog_layout(tmp_path / "fallback.tif", COLUMNS, len(FACTORS))
    with rasterio.open(tmp_path / "fallback.tif") as out:
        np.testing.assert_array_equal(out.read(3), generated_bands.arrays[2])
