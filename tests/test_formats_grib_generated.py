"""GRIB -> Parquet on files generated here with ecCodes (tests/generated_data.py): the checks of
test_formats_grib.py that the real files in ../shared/data make, on GRIB1 and GRIB2 with several
parameters, levels, steps and ensemble members, statistics fields, bitmaps, multi-field messages
(one sharing the previous bitmap), mixed editions and a Lambert grid. They run on a fresh clone.

The reference is plain ecCodes (multi-field support on), as in test_formats_grib.py.
"""

from __future__ import annotations

import hashlib

import eccodes
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.errors import CorruptGrib, UnsupportedGrib
from headrace.formats import grib_read
from headrace.formats.grib import grib_to_parquet, read_grib
from headrace.formats.grib_grid import GRID_CACHE, clear_grid_cache
from headrace.formats.grib_messages import locate_messages, read_messages
from tests.test_formats_grib import (
    _ecodes_multi_field_messages,
    _handle_names,
    _mutations,
    _reference_field,
    field_meta,
    file_meta,
)

NAMES = [
    "levels_members_steps.grib",
    "parameters_levels_steps.grib2",
    "multi_field.grib2",
    "mixed_editions.grib",
    "lambert.grib2",
]


def _reference(path) -> list:
    fields = []
    with open(path, "rb") as file:
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
    return fields


@pytest.fixture(scope="module")
def converted(generated_gribs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated_parquet")
    results = {}
    for name, made in generated_gribs.items():
        report = grib_to_parquet(made.path, folder / f"{name}.parquet")
        results[name] = (report, pq.read_table(report.dst))
    return results


def test_the_generated_files_are_what_they_claim(generated_gribs):
    assert sorted(generated_gribs) == sorted(NAMES)
    for made in generated_gribs.values():
        editions = set()
        for data in _ecodes_multi_field_messages(made.path):
            handle = eccodes.codes_new_from_message(data)
            try:
                editions.add(eccodes.codes_get_long(handle, "edition"))
            finally:
                eccodes.codes_release(handle)
        assert "+".join(map(str, sorted(editions))) == made.edition
        assert len(_ecodes_multi_field_messages(made.path)) == made.fields
    multi = generated_gribs["multi_field.grib2"]
    assert multi.messages < multi.fields  # several fields per message


@pytest.mark.parametrize("name", NAMES)
def test_every_generated_file_converts_with_all_fields(name, generated_gribs, converted):
    made = generated_gribs[name]
    report, table = converted[name]
    assert (report.fields, report.messages) == (made.fields, made.messages)
    assert report.rows == made.points
    assert report.layout == "wide" and report.columns == made.fields + 2
    assert table.column_names[:2] == ["lat", "lon"]
    assert len(set(table.column_names)) == table.num_columns == made.fields + 2
    assert file_meta(table)["fields"] == made.fields


@pytest.mark.parametrize("name", NAMES)
def test_generated_values_and_nulls_equal_eccodes(name, generated_gribs, converted):
    made = generated_gribs[name]
    _, table = converted[name]
    refs = _reference(made.path)
    assert table.num_columns - 2 == len(refs)
    nulls_total = 0
    for column, ref in zip(table.column_names[2:], refs, strict=True):
        array = table.column(column).combine_chunks()
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(nulls, ref.missing, err_msg=column)
        values = array.fill_null(0.0).to_numpy()
        assert np.array_equal(values[~nulls], ref.values[~ref.missing]), column
        nulls_total += int(nulls.sum())
    assert nulls_total == made.missing


@pytest.mark.parametrize("name", NAMES)
def test_generated_metadata_matches_eccodes(name, generated_gribs, converted):
    _, table = converted[name]
    refs = _reference(generated_gribs[name].path)
    for column, ref in zip(table.column_names[2:], refs, strict=True):
        meta = field_meta(table, column)
        for key in ("shortName", "name", "units", "typeOfLevel", "edition", "centre", "gridType"):
            assert meta[key] == ref.keys[key], (column, key)
        assert meta["level"] == pytest.approx(ref.keys["level"])
        assert meta["number"] == ref.keys["number"]
        assert meta["dataDate"] == ref.keys["dataDate"]
        date, time = ref.keys["validityDate"], ref.keys["validityTime"]
        assert meta["validTime"] == (
            f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}"
            f"T{time // 100:02d}:{time % 100:02d}:00Z"
        )


def test_generated_column_names_say_level_step_and_member(converted):
    grib1 = converted["levels_members_steps.grib"][1].column_names
    assert len(grib1) == 2 + 26
    assert "t_isobaricInhPa_850_step_6_number_2" in grib1
    assert "z_isobaricInhPa_500_step_0_number_0" in grib1
    assert grib1[-2:] == ["2t_step_0", "2t_step_6"]  # one level, no members: neither named
    grib2 = converted["parameters_levels_steps.grib2"][1].column_names
    assert grib2[2:4] == ["t_isobaricInhPa_500_step_0", "t_isobaricInhPa_850_step_0"]
    assert {"gh_isobaricInhPa_850_step_12", "tp_step_0-6", "tp_step_6-12"} <= set(grib2)
    assert {"t_isobaricInhPa_500_step_6_number_1", "t_isobaricInhPa_500_step_6"} <= set(grib2)
    assert converted["multi_field.grib2"][1].column_names[2:4] == [
        "u_isobaricInhPa_250",
        "v_isobaricInhPa_250",
    ]
    assert converted["mixed_editions.grib"][1].column_names[2:] == [
        "t_isobaricInhPa_100",
        "t_hybrid_100",
    ]


def test_mixed_editions_share_one_grid(converted):
    _, table = converted["mixed_editions.grib"]
    assert [field_meta(table, c)["edition"] for c in table.column_names[2:]] == [1, 2]
    assert len(file_meta(table)["grids"]) == 1


def test_lambert_grid_gets_eccodes_latlon(generated_gribs, converted):
    _, table = converted["lambert.grib2"]
    with open(generated_gribs["lambert.grib2"].path, "rb") as file:
        handle = eccodes.codes_grib_new_from_file(file)
        try:
            lat = eccodes.codes_get_array(handle, "latitudes")
            lon = eccodes.codes_get_array(handle, "longitudes")
        finally:
            eccodes.codes_release(handle)
    assert np.array_equal(table.column("lat").to_numpy(), lat)
    assert np.array_equal(table.column("lon").to_numpy(), lon)
    assert file_meta(table)["grids"][0]["gridType"] == "lambert"


def test_generated_long_layout_has_a_row_per_field_and_point(generated_gribs):
    made = generated_gribs["parameters_levels_steps.grib2"]
    table = read_grib(made.path, layout="long")
    refs = _reference(made.path)
    assert table.num_rows == made.fields * made.points
    expected = np.concatenate([r.values for r in refs])
    missing = np.concatenate([r.missing for r in refs])
    values = table.column("value").combine_chunks()
    assert np.array_equal(values.is_null().to_numpy(zero_copy_only=False), missing)
    assert np.array_equal(values.fill_null(0.0).to_numpy()[~missing], expected[~missing])


# ----------------------------------------------------------------------------- the fast path
@pytest.mark.parametrize("name", NAMES)
def test_generated_fields_are_cut_byte_for_byte_as_ecodes_multi_field_support(
    name, generated_gribs
):
    path = generated_gribs[name].path
    with open(path, "rb") as file:
        fields = [f for m in read_messages(file, locate_messages(str(path))) for f in m.fields]
    assert [bytes(data) for data, _ in fields] == _ecodes_multi_field_messages(path)
    for data, section in fields:
        handle = eccodes.codes_new_from_message(bytes(data))
        try:
            md5 = eccodes.codes_get_string(handle, "md5GridSection")
        finally:
            eccodes.codes_release(handle)
        assert section is not None and hashlib.md5(bytes(section)).hexdigest() == md5


@pytest.fixture
def _empty_class_caches():
    for cache in (grib_read._LAYOUTS, grib_read._TIMINGS):
        cache.clear()
    yield
    for cache in (grib_read._LAYOUTS, grib_read._TIMINGS):
        cache.clear()


@pytest.mark.parametrize("name", NAMES)
def test_generated_fast_path_equals_ecodes_multi_field_reader(
    name, generated_gribs, _empty_class_caches
):
    path = str(generated_gribs[name].path)
    fast, fast_spans = grib_read._read_in_memory(path, path)
    slow, slow_spans = grib_read._read_with_multi_field_support(path, path)
    assert sorted(fast_spans) == sorted(slow_spans)
    assert len(fast) == len(slow) == generated_gribs[name].fields
    for mine, theirs in zip(fast, slow, strict=True):
        assert (mine.base_name, mine.meta, mine.grid.points) == (
            theirs.base_name,
            theirs.meta,
            theirs.grid.points,
        )
        assert np.array_equal(mine.values, theirs.values, equal_nan=True)


def test_generated_grib2_fields_reuse_field_classes(generated_gribs, _empty_class_caches):
    """The fast path is on for these fields: classes are found and shared, not one per field."""
    made = generated_gribs["parameters_levels_steps.grib2"]
    fast, _ = grib_read._read_in_memory(str(made.path), str(made.path))
    assert len(fast) == made.fields
    assert 0 < len(grib_read._TIMINGS) < made.fields
    assert 0 < len(grib_read._LAYOUTS) < made.fields


@pytest.mark.parametrize("name", NAMES)
def test_generated_names_from_definitions_equal_eccodes(name, generated_gribs):
    from headrace.formats.grib_concepts import parameter_names
    from headrace.formats.grib_keys import KeyReader

    path = generated_gribs[name].path
    expected = _handle_names(path)
    got = []
    with open(path, "rb") as file:
        eccodes.codes_grib_multi_support_on()
        try:
            while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                try:
                    keys = KeyReader(handle)
                    param_id = keys.long("paramId")
                    names = parameter_names(keys, keys.long("edition"), param_id)
                    got.append((param_id, *names) if names else None)
                finally:
                    eccodes.codes_release(handle)
        finally:
            eccodes.codes_grib_multi_support_reset_file(file)
            eccodes.codes_grib_multi_support_off()
    assert all(mine == theirs for mine, theirs in zip(got, expected, strict=True))


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("kind", sorted(_mutations(b"GRIB" * 8 + b"7777")))
@pytest.mark.parametrize("name", ["parameters_levels_steps.grib2", "multi_field.grib2"])
def test_damaged_generated_grib2_raises_corrupt_grib_and_writes_nothing(
    name, kind, generated_gribs, tmp_path
):
    bad = tmp_path / "in" / f"{kind}.grib2"
    bad.parent.mkdir()
    bad.write_bytes(_mutations(generated_gribs[name].path.read_bytes())[kind])
    out = tmp_path / "out"
    with pytest.raises(CorruptGrib) as info:
        grib_to_parquet(bad, out / "x.parquet")
    assert str(bad) in str(info.value) and "fix:" in str(info.value)
    assert not out.exists() or not list(out.iterdir())


def test_damaged_generated_grib1_raises_corrupt_grib(generated_gribs, tmp_path):
    data = generated_gribs["levels_members_steps.grib"].path.read_bytes()
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
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- options and grids
def test_float32_option_casts_eccodes_values(generated_gribs, tmp_path):
    made = generated_gribs["parameters_levels_steps.grib2"]
    report = grib_to_parquet(made.path, tmp_path / "f32.parquet", dtype="float32")
    table = pq.read_table(report.dst)
    assert table.schema.field("lat").type == pa.float64()
    for column, ref in zip(table.column_names[2:], _reference(made.path), strict=True):
        assert table.schema.field(column).type == pa.float32()
        array = table.column(column).combine_chunks()
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        assert np.array_equal(nulls, ref.missing)
        expected = ref.values.astype(np.float32)[~ref.missing]
        assert np.array_equal(array.fill_null(0.0).to_numpy()[~nulls], expected)


def test_fields_on_different_grids_need_long_layout(generated_gribs, tmp_path):
    regular, lambert = generated_gribs["mixed_editions.grib"], generated_gribs["lambert.grib2"]
    mixed = tmp_path / "mixed.grib"
    mixed.write_bytes(regular.path.read_bytes() + lambert.path.read_bytes())
    with pytest.raises(UnsupportedGrib, match="layout='long'"):
        read_grib(mixed)
    report = grib_to_parquet(mixed, tmp_path / "mixed.parquet", layout="auto")
    assert report.layout == "long"
    assert report.rows == regular.fields * regular.points + lambert.points
    assert len(file_meta(pq.read_table(report.dst))["grids"]) == 2


def test_grid_cache_reuses_latlon_of_a_known_grid(generated_gribs):
    made = generated_gribs["parameters_levels_steps.grib2"]
    clear_grid_cache()
    first = read_grib(made.path)
    assert (GRID_CACHE.misses, GRID_CACHE.hits) == (1, made.fields - 1)  # one grid
    second = read_grib(made.path)
    assert (GRID_CACHE.misses, GRID_CACHE.hits) == (1, 2 * made.fields - 1)
    assert second.column("lat").equals(first.column("lat"))


def test_memory_urls_for_source_and_destination(generated_gribs):
    fs = fsspec.filesystem("memory")
    made = generated_gribs["multi_field.grib2"]
    fs.pipe("/generated-in/wind.grib2", made.path.read_bytes())
    report = grib_to_parquet("memory://generated-in/wind.grib2", "memory://generated-out/w.parquet")
    assert report.rows == made.points and report.fields == made.fields
    fs.pipe("/generated-in/bad.grib", b"GRIB" + b"\0" * 40)
    with pytest.raises(CorruptGrib):
        grib_to_parquet("memory://generated-in/bad.grib", "memory://generated-out/bad.parquet")
    assert fs.ls("/generated-out", detail=False) == ["/generated-out/w.parquet"]
