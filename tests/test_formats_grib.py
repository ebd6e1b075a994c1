"""GRIB -> Parquet on the real files in ../shared/data/grib, checked against plain ecCodes.

The reference decode below is deliberately independent of the converter: messages read with
default ecCodes settings, missing points taken from the bitmap (or from ``missingValue`` when
only grid_complex missing-value management is used) and counted against ``numberOfMissing``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import eccodes
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GRIB_DIR = DATA / "grib"

try:
    from headrace.errors import CorruptGrib, UnsupportedGrib
    from headrace.formats.grib import grib_to_parquet, read_grib
    from headrace.formats.grib_grid import GRID_CACHE, clear_grid_cache
except ModuleNotFoundError:  # not installed in the venv: use the source tree
    sys.path.insert(0, str(REPO / "src"))
    from headrace.errors import CorruptGrib, UnsupportedGrib
    from headrace.formats.grib import grib_to_parquet, read_grib
    from headrace.formats.grib_grid import GRID_CACHE, clear_grid_cache

# name -> (fields, messages, points); from ../shared/data/README.md
EXPECTED = {
    "gfs.t12z.pgrbf120.2p5deg.grib2": (343, 307, 10512),
    "ds.maxt.bin": (4, 4, 739297),
    "eta.grb": (181, 154, 6045),
    "regular_gg_ml_g2.grib": (3, 3, 51200),
    "regular_ll_msl.grib": (1, 1, 65160),
    "step_60m.grib": (73, 73, 9),
    "era5-levels-members.grib": (160, 160, 7320),
    "reduced_gg.grib": (1, 1, 13280),
    "fields_with_missing_values.grib": (2, 2, 16380),
    "regular_ll_sfc.grib": (1, 1, 2664),
    "forecast_monthly_ukmo.grib": (168, 168, 66),
    "CMC_reg_WIND_ISBL_300_ps60km_2010052400_P012.grib": (1, 1, 12825),
    "t_on_different_level_types.grib": (2, 2, 2664),
}
# Missing points per file, counted per field. The README's 201542 for the GFS file counts the
# 307 messages; with multi-field support 5 more fields (v winds sharing a bitmap) add 12596.
MISSING = {
    "ds.maxt.bin": 1484156,
    "step_60m.grib": 219,
    "fields_with_missing_values.grib": 21699,
    "gfs.t12z.pgrbf120.2p5deg.grib2": 214138,
}
REPEATED_NAMES = [
    "era5-levels-members.grib",
    "forecast_monthly_ukmo.grib",
    "step_60m.grib",
    "t_on_different_level_types.grib",
    "gfs.t12z.pgrbf120.2p5deg.grib2",
]
META_KEY = b"headrace.grib"


def grib(name: str) -> Path:
    path = GRIB_DIR / name
    if not path.is_file():
        pytest.skip(f"real GRIB test data not found at {path} (needs the ../shared/data checkout)")
    return path


@dataclass
class Reference:
    values: np.ndarray
    missing: np.ndarray
    keys: dict


@cache
def reference(name: str) -> tuple[Reference, ...]:
    """Every field of the file as plain ecCodes decodes it (multi-field support on)."""
    fields = []
    with open(grib(name), "rb") as file:
        eccodes.codes_grib_multi_support_on()
        eccodes.codes_grib_multi_support_reset_file(file)
        try:
            while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                try:
                    fields.append(_reference_field(handle))
                finally:
                    eccodes.codes_release(handle)
        finally:
            eccodes.codes_grib_multi_support_reset_file(file)
            eccodes.codes_grib_multi_support_off()
    return tuple(fields)


def _reference_field(handle: int) -> Reference:
    values = eccodes.codes_get_values(handle)
    expected_missing = eccodes.codes_get_long(handle, "numberOfMissing")
    if eccodes.codes_get_long(handle, "bitmapPresent"):
        missing = eccodes.codes_get_array(handle, "bitmap") == 0
    elif expected_missing:
        missing = values == eccodes.codes_get_double(handle, "missingValue")
    else:
        missing = np.zeros(values.size, dtype=bool)
    assert missing.sum() == expected_missing
    names = ("shortName", "name", "units", "typeOfLevel", "edition", "centre", "gridType")
    keys = {k: eccodes.codes_get(handle, k) for k in names}
    keys["level"] = eccodes.codes_get_double(handle, "level")
    keys["number"] = (
        eccodes.codes_get_long(handle, "number")
        if eccodes.codes_is_defined(handle, "number")
        else None
    )
    keys["validityDate"] = eccodes.codes_get_long(handle, "validityDate")
    keys["validityTime"] = eccodes.codes_get_long(handle, "validityTime")
    keys["dataDate"] = eccodes.codes_get_long(handle, "dataDate")
    return Reference(values, missing, keys)


@cache
def reference_latlon(name: str) -> tuple[np.ndarray, np.ndarray]:
    with open(grib(name), "rb") as file:
        handle = eccodes.codes_grib_new_from_file(file)
        try:
            return (
                eccodes.codes_get_array(handle, "latitudes"),
                eccodes.codes_get_array(handle, "longitudes"),
            )
        finally:
            eccodes.codes_release(handle)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert each file once (wide layout) and read the Parquet back."""
    folder = tmp_path_factory.mktemp("parquet")
    results = {}

    def get(name: str):
        if name not in results:
            report = grib_to_parquet(grib(name), folder / f"{name}.parquet")
            results[name] = (report, pq.read_table(report.dst))
        return results[name]

    return get


def field_meta(table: pa.Table, column: str) -> dict:
    return json.loads(table.schema.field(column).metadata[META_KEY])


def file_meta(table: pa.Table) -> dict:
    return json.loads(table.schema.metadata[META_KEY])


def test_every_shared_grib_file_is_covered():
    present = {p.name for p in grib("eta.grb").parent.iterdir()}
    assert present == set(EXPECTED) | {"spherical_harmonics.grib"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_converts_with_all_fields(name, converted):
    fields, messages, points = EXPECTED[name]
    report, table = converted(name)
    assert (report.fields, report.messages, report.rows) == (fields, messages, points)
    assert report.layout == "wide" and report.columns == fields + 2
    assert report.bytes_in == grib(name).stat().st_size and report.bytes_out > 0
    assert table.num_rows == points and table.column_names[:2] == ["lat", "lon"]
    assert len(set(table.column_names)) == table.num_columns == fields + 2
    info = file_meta(table)
    assert info["fields"] == fields and info["messages"] == messages
    assert info["source"].endswith(name) and info["grids"][0]["numberOfPoints"] == points


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_values_and_nulls_equal_eccodes(name, converted):
    _, table = converted(name)
    refs = reference(name)
    assert table.num_columns - 2 == len(refs)
    for column, ref in zip(table.column_names[2:], refs, strict=True):
        array = table.column(column).combine_chunks()
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(nulls, ref.missing, err_msg=column)
        values = array.fill_null(0.0).to_numpy()
        assert np.array_equal(values[~nulls], ref.values[~ref.missing]), column


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_points_become_nulls(name, converted):
    _, table = converted(name)
    assert sum(table.column(c).null_count for c in table.column_names[2:]) == MISSING[name]
    assert table.column("lat").null_count == 0


def test_real_values_equal_to_the_old_sentinel_stay_values(converted):
    # eta.grb has two real points exactly equal to 9999, ecCodes' default missingValue.
    _, table = converted("eta.grb")
    columns = table.column_names[2:]
    assert sum(table.column(c).null_count for c in columns) == 0
    sentinel_hits = [pc.sum(pc.equal(table.column(c), 9999.0)).as_py() or 0 for c in columns]
    assert sum(sentinel_hits) == 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metadata_matches_eccodes(name, converted):
    _, table = converted(name)
    for column, ref in zip(table.column_names[2:], reference(name), strict=True):
        meta = field_meta(table, column)
        assert meta["column"] == column
        for key in ("shortName", "name", "units", "typeOfLevel", "edition", "centre"):
            assert meta[key] == ref.keys[key], (column, key)
        assert meta["gridType"] == ref.keys["gridType"]
        assert meta["level"] == pytest.approx(ref.keys["level"])
        assert meta["number"] == ref.keys["number"]
        assert meta["dataDate"] == ref.keys["dataDate"]
        date, time = ref.keys["validityDate"], ref.keys["validityTime"]
        assert meta["validTime"] == (
            f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"
            f"T{time // 100:02d}:{time % 100:02d}:00Z"
        )
        for key in ("step", "stepUnits", "dataTime", "referenceTime", "numberOfPoints"):
            assert key in meta


@pytest.mark.parametrize("name", REPEATED_NAMES)
def test_repeated_parameters_get_unique_stable_names(name, converted):
    _, table = converted(name)
    names = table.column_names
    assert len(names) == len(set(names))
    assert read_grib(grib(name)).column_names == names  # deterministic


def test_column_names_follow_the_documented_scheme(converted):
    era5 = converted("era5-levels-members.grib")[1].column_names
    assert "t_isobaricInhPa_850_number_3_ref_20170101T1200" in era5
    assert converted("step_60m.grib")[1].column_names[2:5] == [
        "2t_step_0",
        "2t_step_1",
        "2t_step_2",
    ]
    assert converted("t_on_different_level_types.grib")[1].column_names[2:] == [
        "t_isobaricInhPa_100",
        "t_hybrid_100",
    ]
    gfs = converted("gfs.t12z.pgrbf120.2p5deg.grib2")[1].column_names
    assert {"t_isobaricInhPa_500", "prmsl", "t_depthBelowLandLayer_0.1-0.4"} <= set(gfs)
    assert "2t" in gfs  # one 2 m temperature: no level or step needed
    assert converted("forecast_monthly_ukmo.grib")[1].column_names[2] == "2t_step_744_number_0"


@pytest.mark.parametrize(
    "name",
    [
        "ds.maxt.bin",
        "eta.grb",
        "CMC_reg_WIND_ISBL_300_ps60km_2010052400_P012.grib",
        "reduced_gg.grib",
        "regular_gg_ml_g2.grib",
    ],
)
def test_projected_and_gaussian_grids_get_eccodes_latlon(name, converted):
    _, table = converted(name)
    lat, lon = reference_latlon(name)
    assert np.array_equal(table.column("lat").to_numpy(), lat)
    assert np.array_equal(table.column("lon").to_numpy(), lon)
    assert (
        file_meta(table)["grids"][0]["gridType"]
        == field_meta(table, table.column_names[2])["gridType"]
    )


def test_grid_cache_reuses_latlon_of_a_known_grid():
    clear_grid_cache()
    first = read_grib(grib("eta.grb"))
    misses, hits = GRID_CACHE.misses, GRID_CACHE.hits
    assert misses == 1 and hits == 180  # 181 fields, one Lambert grid
    second = read_grib(grib("eta.grb"))
    assert GRID_CACHE.misses == misses and GRID_CACHE.hits == hits + 181
    assert second.column("lat").equals(first.column("lat"))


def test_grid_without_computable_latlon_is_unsupported(tmp_path):
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:  # template 3.101: unstructured grid whose points live in an external file
        eccodes.codes_set_long(handle, "gridDefinitionTemplateNumber", 101)
        eccodes.codes_set_long(handle, "numberOfDataPoints", 100)
        eccodes.codes_set_values(handle, np.arange(100.0))
        path = tmp_path / "unstructured.grib2"
        with open(path, "wb") as out:
            eccodes.codes_write(handle, out)
    finally:
        eccodes.codes_release(handle)
    with pytest.raises(UnsupportedGrib, match="unstructured_grid") as info:
        grib_to_parquet(path, tmp_path / "u.parquet")
    assert "unstructured.grib2 message 1" in str(info.value) and "fix:" in str(info.value)
    assert not (tmp_path / "u.parquet").exists()


def test_wmo_headers_and_padding_between_messages_are_accepted(converted):
    # ds.maxt.bin has WMO bulletin headers, era5 zero padding between messages.
    assert converted("ds.maxt.bin")[0].fields == 4
    assert converted("era5-levels-members.grib")[0].fields == 160


def test_mixed_edition_file_shares_one_grid(converted):
    _, table = converted("t_on_different_level_types.grib")
    editions = [field_meta(table, c)["edition"] for c in table.column_names[2:]]
    assert editions == [1, 2]


def test_spectral_field_is_unsupported_and_writes_nothing(tmp_path):
    dst = tmp_path / "out" / "sh.parquet"
    with pytest.raises(UnsupportedGrib) as info:
        grib_to_parquet(grib("spherical_harmonics.grib"), dst)
    message = str(info.value)
    assert "spherical_harmonics.grib message 1" in message and "'sh'" in message
    assert "fix:" in message
    assert not dst.exists() and not list(dst.parent.glob("*"))


def test_long_layout_has_a_row_per_field_and_point():
    table = read_grib(grib("gfs.t12z.pgrbf120.2p5deg.grib2"), layout="long")
    refs = reference("gfs.t12z.pgrbf120.2p5deg.grib2")
    assert table.num_rows == 343 * 10512
    assert table.column_names == [
        "field", "shortName", "typeOfLevel", "level", "level_label", "step", "number",
        "reference_time", "valid_time", "lat", "lon", "value",
    ]  # fmt: skip
    assert table.column("value").null_count == MISSING["gfs.t12z.pgrbf120.2p5deg.grib2"]
    expected = np.concatenate([r.values for r in refs])
    missing = np.concatenate([r.missing for r in refs])
    values = table.column("value").combine_chunks()
    assert np.array_equal(values.is_null().to_numpy(zero_copy_only=False), missing)
    assert np.array_equal(values.fill_null(0.0).to_numpy()[~missing], expected[~missing])
    info = file_meta(table)
    assert info["layout"] == "long" and len(info["field_metadata"]) == 343
    wide_names = read_grib(grib("gfs.t12z.pgrbf120.2p5deg.grib2")).column_names[2:]
    assert table.column("field").unique().to_pylist() == wide_names


def test_fields_on_different_grids_need_long_layout(tmp_path):
    mixed = tmp_path / "mixed.grib"
    mixed.write_bytes(
        grib("regular_ll_sfc.grib").read_bytes() + grib("reduced_gg.grib").read_bytes()
    )
    with pytest.raises(UnsupportedGrib, match="layout='long'"):
        read_grib(mixed)
    assert not list(tmp_path.glob("*.parquet"))
    report = grib_to_parquet(mixed, tmp_path / "mixed.parquet", layout="auto")
    assert report.layout == "long" and report.rows == 2664 + 13280
    table = pq.read_table(tmp_path / "mixed.parquet")
    assert table.column("field").unique().to_pylist() == ["skt", "10u"]
    assert len(file_meta(table)["grids"]) == 2


def test_float32_option_casts_ecodes_values(tmp_path):
    name = "fields_with_missing_values.grib"
    report = grib_to_parquet(grib(name), tmp_path / "f32.parquet", dtype="float32")
    table = pq.read_table(report.dst)
    assert table.schema.field("lat").type == pa.float64()
    for column, ref in zip(table.column_names[2:], reference(name), strict=True):
        assert table.schema.field(column).type == pa.float32()
        array = table.column(column).combine_chunks()
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        assert np.array_equal(nulls, ref.missing)
        expected = ref.values.astype(np.float32)[~ref.missing]
        assert np.array_equal(array.fill_null(0.0).to_numpy()[~nulls], expected)


def _mutations(data: bytes) -> dict[str, bytes]:
    second = data.find(b"GRIB", 1)
    header = bytearray(data)
    header[second + 15] ^= 0x40  # last byte of the GRIB2 total length of message 2: off by 64
    return {
        "truncated_in_second_message": data[: second + 100],
        "truncated_last_byte": data[:-1],
        "second_magic_damaged": data[:second] + b"GRIX" + data[second + 4 :],
        "first_end_marker_damaged": data.replace(b"7777", b"7X77", 1),
        "second_length_damaged": bytes(header),
        "second_edition_damaged": data[: second + 7] + b"\x03" + data[second + 8 :],
    }


@pytest.mark.parametrize("kind", sorted(_mutations(b"GRIB" * 8 + b"7777")))
@pytest.mark.parametrize("name", ["gfs.t12z.pgrbf120.2p5deg.grib2", "eta.grb"])
def test_damaged_files_raise_corrupt_grib_and_write_nothing(name, kind, tmp_path):
    bad = tmp_path / "in" / f"{kind}.grib2"
    bad.parent.mkdir()
    bad.write_bytes(_mutations(grib(name).read_bytes())[kind])
    out = tmp_path / "out"
    with pytest.raises(CorruptGrib) as info:
        grib_to_parquet(bad, out / "x.parquet")
    assert str(bad) in str(info.value) and "fix:" in str(info.value)
    assert not out.exists() or not list(out.iterdir())


def test_damaged_era5_grib1_files_raise_corrupt_grib(tmp_path):
    data = grib("era5-levels-members.grib").read_bytes()
    second = data.find(b"GRIB", 1)
    for kind, broken in {
        "truncated": data[: second + 100],
        "magic": data[:second] + b"GRIX" + data[second + 4 :],
        "end": data.replace(b"7777", b"7X77", 1),
    }.items():
        bad = tmp_path / f"{kind}.grib"
        bad.write_bytes(broken)
        with pytest.raises(CorruptGrib):
            grib_to_parquet(bad, tmp_path / f"{kind}.parquet")
        assert not (tmp_path / f"{kind}.parquet").exists()
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "content",
    [b"", b"date,value\n2024-01-01,3\n" * 50, bytes(range(256)) * 64],
    ids=["empty", "csv", "binary"],
)
def test_empty_and_non_grib_files_raise_corrupt_grib(content, tmp_path):
    src = tmp_path / "not.grib"
    src.write_bytes(content)
    with pytest.raises(CorruptGrib, match=r"not\.grib"):
        grib_to_parquet(src, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.grib"]


def test_failed_write_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception, match=r"(?i)compression|codec"):
        grib_to_parquet(grib("regular_ll_sfc.grib"), tmp_path / "x.parquet", compression="nope")
    assert list(tmp_path.iterdir()) == []


def test_memory_urls_for_source_and_destination():
    fs = fsspec.filesystem("memory")
    fs.pipe("/grib-in/sfc.grib", grib("regular_ll_sfc.grib").read_bytes())
    report = grib_to_parquet("memory://grib-in/sfc.grib", "memory://grib-out/run/sfc.parquet")
    assert report.dst == "memory://grib-out/run/sfc.parquet" and report.rows == 2664
    with fs.open("/grib-out/run/sfc.parquet", "rb") as file:
        table = pq.read_table(file)
    assert table.column_names == ["lat", "lon", "skt"]
    assert fs.ls("/grib-out/run", detail=False) == ["/grib-out/run/sfc.parquet"]
    fs.pipe("/grib-in/bad.grib", b"GRIB" + b"\0" * 40)
    with pytest.raises(CorruptGrib):
        grib_to_parquet("memory://grib-in/bad.grib", "memory://grib-out/run/bad.parquet")
    assert fs.ls("/grib-out/run", detail=False) == ["/grib-out/run/sfc.parquet"]


def test_entirely_missing_field_is_all_nulls(tmp_path):
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        eccodes.codes_set_long(handle, "bitmapPresent", 1)
        eccodes.codes_set_double(handle, "missingValue", 9999.0)
        eccodes.codes_set_values(handle, np.full(496, 9999.0))
        path = tmp_path / "all_missing.grib2"
        with open(path, "wb") as out:
            eccodes.codes_write(handle, out)
    finally:
        eccodes.codes_release(handle)
    table = read_grib(path)
    assert table.column_names == ["lat", "lon", "t"]
    assert table.column("t").null_count == 496 == table.num_rows


def _load_samples_module():
    path = REPO / "examples" / "grib_to_parquet" / "samples.py"
    spec = importlib.util.spec_from_file_location("grib_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_gribs_convert_without_shared_data(tmp_path):
    paths = _load_samples_module().write_sample_gribs(tmp_path / "gribs", count=2)
    assert len(paths) == 2 and all(p.suffix == ".grib2" for p in paths)
    for path in paths:
        report = grib_to_parquet(path, tmp_path / f"{path.stem}.parquet")
        table = pq.read_table(report.dst)
        assert report.fields == 15 and report.rows == 97 * 77
        assert {"2t_step_6", "10u_step_0", "msl_step_12", "tp_step_0-12"} <= set(table.column_names)
        assert table.column("2t_step_0").null_count > 0
        assert table.column("msl_step_0").null_count == 0
        meta = field_meta(table, "tp_step_0-12")
        assert (meta["stepType"], meta["units"], meta["edition"]) == ("accum", "m", 2)


# ----------------------------------------------------------------------------- parameter names
def _handle_names(path: Path) -> list[tuple[int, str, str, str]]:
    """paramId, shortName, name, units of every field, evaluated by ecCodes on the field."""
    names = []
    with open(path, "rb") as file:
        eccodes.codes_grib_multi_support_on()
        try:
            while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                try:
                    keys = ("paramId", "shortName", "name", "units")
                    names.append(tuple(eccodes.codes_get(handle, k) for k in keys))
                finally:
                    eccodes.codes_release(handle)
        finally:
            eccodes.codes_grib_multi_support_reset_file(file)
            eccodes.codes_grib_multi_support_off()
    return names


def test_names_from_definitions_are_answered_and_equal_eccodes_on_every_file():
    from headrace.formats.grib_concepts import parameter_names
    from headrace.formats.grib_keys import KeyReader

    answered = 0
    for name in sorted(EXPECTED):
        expected = _handle_names(grib(name))
        got = []
        with open(grib(name), "rb") as file:
            eccodes.codes_grib_multi_support_on()
            try:
                while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                    try:
                        keys = KeyReader(handle)
                        param_id = keys.long("paramId")
                        names = parameter_names(keys, keys.long("edition"), param_id)
                        answered += names is not None
                        got.append((param_id, *names) if names else None)
                    finally:
                        eccodes.codes_release(handle)
            finally:
                eccodes.codes_grib_multi_support_reset_file(file)
                eccodes.codes_grib_multi_support_off()
        for mine, reference_names in zip(got, expected, strict=True):
            assert mine is None or mine == reference_names, name
    # on this ecCodes build every field of the shared files is answered from the definitions
    assert answered == sum(fields for fields, _, _ in EXPECTED.values())


def test_names_fall_back_to_eccodes_on_the_field(monkeypatch):
    from headrace.formats import grib_read

    monkeypatch.setattr(grib_read, "parameter_names", lambda *args: None)
    table = read_grib(grib("t_on_different_level_types.grib"))
    got = [
        tuple(field_meta(table, c)[k] for k in ("paramId", "shortName", "name", "units"))
        for c in table.column_names[2:]
    ]
    assert got == _handle_names(grib("t_on_different_level_types.grib"))


def _concept_file(entries: list[tuple[str, str]]) -> str:
    return "".join(f"#{v}\n'{v}' = {{\n\t {c} ;\n\t}}\n" for v, c in entries)


@pytest.mark.parametrize(
    ("files", "answer"),
    [
        # parallel files, one name per paramId: answered
        ({"a": [("1", "x=1"), ("2", "x=2")], "b": [("1", "x=3")]}, ("s1", "n1", "u1")),
        # paramId 1 named differently in two directories of one field: not answered
        ({"a": [("1", "x=1")], "b": [("1", "x=3")], "rename_b": True}, None),
        # conditions of the name file differ from the paramId file: not answered
        ({"a": [("1", "x=1")], "b": [("1", "x=3")], "skew_b": True}, None),
    ],
)
def test_names_from_definitions_only_when_certain(files, answer, monkeypatch):
    from headrace.formats import grib_concepts, grib_definitions, grib_disk_cache

    texts = {}
    for directory in ("a", "b"):
        entries = files[directory]
        texts[f"{directory}/paramId.def"] = _concept_file(entries)
        for concept in ("shortName", "name", "units"):
            renamed = files.get(f"rename_{directory}")
            skewed = files.get(f"skew_{directory}")
            texts[f"{directory}/{concept}.def"] = _concept_file(
                [
                    (f"{concept[0]}{v}{'r' if renamed else ''}", c + ("9" if skewed else ""))
                    for v, c in entries
                ]
            )
    monkeypatch.setattr(grib_concepts, "_groups", {})
    monkeypatch.setattr(grib_concepts, "_file_sets", {})
    monkeypatch.setattr(grib_disk_cache, "_memo", {})  # these files change between the cases
    monkeypatch.setattr(grib_definitions, "_reader", lambda: texts.get)
    paths = tuple(f"{d}/{c}.def" for d in ("a", "b") for c in grib_concepts._CONCEPTS)
    layout = grib_concepts.ConceptLayout(1, ("a", "b", "a", "b"), ".def", paths)
    assert grib_concepts.parameter_names(None, 1, 1, layout) == answer  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- fast reading
def _ecodes_multi_field_messages(path: Path) -> list[bytes]:
    """The message of every field as ecCodes' multi-field reader builds it."""
    messages = []
    with open(path, "rb") as file:
        eccodes.codes_grib_multi_support_on()
        try:
            while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                try:
                    messages.append(eccodes.codes_get_message(handle))
                finally:
                    eccodes.codes_release(handle)
        finally:
            eccodes.codes_grib_multi_support_reset_file(file)
            eccodes.codes_grib_multi_support_off()
    return messages


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fields_are_cut_byte_for_byte_as_ecodes_multi_field_support(name):
    import hashlib

    from headrace.formats.grib_messages import locate_messages, read_messages

    path = grib(name)
    with open(path, "rb") as file:
        fields = [f for m in read_messages(file, locate_messages(str(path))) for f in m.fields]
    assert [bytes(data) for data, _ in fields] == _ecodes_multi_field_messages(path)
    # the grid section handed to the grid cache is what ecCodes' md5GridSection hashes
    for data, section in fields:
        handle = eccodes.codes_new_from_message(bytes(data))
        try:
            md5 = eccodes.codes_get_string(handle, "md5GridSection")
        finally:
            eccodes.codes_release(handle)
        assert section is not None and hashlib.md5(bytes(section)).hexdigest() == md5


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reading_from_memory_equals_ecodes_multi_field_reader(name):
    from headrace.formats import grib_read

    path = str(grib(name))
    fast, fast_spans = grib_read._read_in_memory(path, path)
    slow, slow_spans = grib_read._read_with_multi_field_support(path, path)
    assert sorted(fast_spans) == sorted(slow_spans)
    assert len(fast) == len(slow)
    for mine, theirs in zip(fast, slow, strict=True):
        assert (mine.base_name, mine.meta, mine.grid.points) == (
            theirs.base_name,
            theirs.meta,
            theirs.grid.points,
        )
        assert np.array_equal(mine.values, theirs.values, equal_nan=True)


def test_irregular_messages_go_to_the_ecodes_reader(tmp_path):
    from headrace.formats.grib_messages import IrregularMessage, locate_messages, read_messages

    data = grib("regular_ll_msl.grib").read_bytes()  # one GRIB2 message
    assert data[7] == 2
    # five bytes of padding after section 7, inside the message: ecCodes would read them as
    # another section; the fast reader refuses and the converter uses ecCodes' reader
    body = data[:-4] + b"\0" * 5 + data[-4:]
    padded = body[:8] + len(body).to_bytes(8, "big") + body[16:]
    path = tmp_path / "padded.grib2"
    path.write_bytes(padded)
    with pytest.raises(IrregularMessage), open(path, "rb") as file:
        list(read_messages(file, locate_messages(str(path))))


# ----------------------------------------------------------------------------- concept caches
def _field_handles(name: str):
    from headrace.formats.grib_messages import locate_messages, read_messages

    path = grib(name)
    with open(path, "rb") as file:
        for message in read_messages(file, locate_messages(str(path))):
            for data, _ in message.fields:
                handle = eccodes.codes_new_from_message(bytes(data))
                try:
                    yield handle
                finally:
                    eccodes.codes_release(handle)


def test_cached_concepts_equal_ecodes_on_every_field(monkeypatch):
    from headrace.formats import grib_concept_cache, grib_concept_dirs, grib_concepts
    from headrace.formats.grib_fast_path import fast_path_enabled
    from headrace.formats.grib_keys import KeyReader

    assert fast_path_enabled()  # the ecCodes the grib extra pins
    # small bounds: trees and caches are dropped and rebuilt while the files are read
    monkeypatch.setattr(grib_concept_cache, "MAX_TREE_SIZE", 40)
    monkeypatch.setattr(grib_concept_dirs, "MAX_ENTRIES", 3)
    grib_concept_cache.clear_concept_cache()
    for _ in range(2):  # the first pass fills the caches, the second answers from them
        for name in sorted(EXPECTED):
            for handle in _field_handles(name):
                expected = KeyReader(handle)
                keys = KeyReader(handle)
                edition = expected.long("edition")
                centre = keys.string("centre")
                layout = grib_concepts.concept_layout(keys, edition, centre)
                assert layout is not None, name
                if edition == 2:
                    assert layout.suffix == expected.string("paramIdFilename")[len("paramId") :]
                    directories = [expected.string(k) for k in ("conceptsDir1", "conceptsDir2")]
                    assert grib_concept_dirs.grib2_directories(
                        KeyReader(handle), centre, lambda d: d
                    )[:2] == tuple(directories)
                assert grib_concept_cache.param_id(keys, layout) == expected.long("paramId")
                assert grib_concept_cache.type_of_level(keys, layout) == expected.string(
                    "typeOfLevel"
                )
                assert grib_concept_cache.step_type(keys, layout) == expected.string("stepType")


def test_concepts_with_expressions_are_never_cached():
    from headrace.formats.grib_concept_cache import file_entries

    # ECMWF's MTG2Switch entries use is_one_of(...): such files get no tree, ecCodes answers
    assert file_entries(("grib2/localConcepts/ecmf/MTG2SwitchConcept.def",)) is None
    assert file_entries(("grib2/MTG2SwitchConcept.def",)) is not None


def test_concept_entries_are_parsed_once_and_shared_between_layouts(monkeypatch):
    import gc
    import tracemalloc

    from headrace.formats import grib_concept_cache

    monkeypatch.setattr(grib_concept_cache, "_file_entries", {})
    monkeypatch.setattr(grib_concept_cache, "_shared", {})
    # the paramId files of two GRIB2 centres: their own local file, then ECMWF's and WMO's
    ncep = (
        "grib2/localConcepts/kwbc/paramId.def",
        "grib2/paramId.def",
        "grib2/localConcepts/ecmf/paramId.def",
        "grib2/paramId.def",
        "grib2/localConcepts/ecmf/paramId.legacy.def",
        "grib2/paramId.legacy.def",
    )
    ndfd = tuple(path.replace("/kwbc/", "/8/") for path in ncep)
    gc.collect()
    tracemalloc.start()
    try:
        first = grib_concept_cache.file_entries(ncep)
        second = grib_concept_cache.file_entries(ndfd)
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    common = grib_concept_cache.file_entries(ncep[1:])
    assert first is not None and second is not None and common is not None
    # the files both layouts read give the same objects, and equal entries are one object
    assert all(a is b for a, b in zip(first[-len(common) :], common, strict=True))
    assert all(a is b for a, b in zip(second[-len(common) :], common, strict=True))
    assert len({id(e) for e in first}) == len(set(first)) < len(first)
    # 21,733 entries: an object each would keep about 15 MiB, shared they keep about 2.3 MiB
    assert len(first) + len(second) > 20_000
    assert retained < 4 << 20


def test_default_codec_is_lz4_raw_with_byte_stream_split(tmp_path, converted):
    import duckdb

    def codecs(path: str) -> set[tuple[str, str]]:
        rows = duckdb.sql(
            f"select compression, encodings from parquet_metadata('{path}') "
            f"where path_in_schema = '{column}'"
        ).fetchall()
        return set(rows)

    report, table = converted("regular_ll_msl.grib")
    column = table.column_names[2]
    assert codecs(report.dst) == {("LZ4_RAW", "RLE, BYTE_STREAM_SPLIT")}  # RLE: validity
    assert duckdb.sql(f"select count(*) from '{report.dst}'").fetchall() == [(table.num_rows,)]
    report = grib_to_parquet(
        grib("regular_ll_msl.grib"), tmp_path / "z.parquet", compression="zstd"
    )
    assert codecs(report.dst) == {("ZSTD", "RLE, BYTE_STREAM_SPLIT")}
