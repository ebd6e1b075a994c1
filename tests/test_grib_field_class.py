"""Field classes: what the converter reuses per class equals what ecCodes reads on each field.

Variants of fields generated with ecCodes (tests/generated_data.py: NCEP-like GRIB2) are made
with ecCodes (time, production status, centre, tables version, generating process, statistics,
parameter, level, local section) and read twice: by the
converter's in-memory reader, which reuses the step keys, stepType and concept layout within a
class, and by ecCodes' own multi-field reader path, which reads every key on every field.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import eccodes
import pytest

from headrace.errors import UnsupportedGrib
from headrace.formats import grib_fast_path, grib_field_class, grib_read
from headrace.formats.grib_messages import locate_messages, read_messages
from tests.generated_data import grib2_parameters_levels_steps, grib2_sections

GFS = "gfs.t12z.pgrbf120.2p5deg.grib2"
ECMWF_WITH_LOCAL_SECTION = "regular_gg_ml_g2.grib"
WITH_SECTION_2 = "step_60m.grib"  # centre cnmc: a section 2, no local definition


def _fields(path: Path) -> list[bytes]:
    with open(path, "rb") as file:
        return [
            bytes(data)
            for message in read_messages(file, locate_messages(str(path)))
            for data, _ in message.fields
        ]


@functools.cache
def _first(template: int) -> bytes:
    """The first generated NCEP field (centre kwbc) with this product definition template."""
    for data in grib2_parameters_levels_steps()[0]:
        handle = eccodes.codes_new_from_message(data)
        try:
            if eccodes.codes_get_long(handle, "productDefinitionTemplateNumber") == template:
                return data
        finally:
            eccodes.codes_release(handle)
    raise AssertionError(f"no template {template} field among the generated ones")


def _variant(data: bytes, **keys: int) -> bytes:
    handle = eccodes.codes_new_from_message(data)
    try:
        for key, value in keys.items():  # in order: some keys only exist after others
            eccodes.codes_set_long(handle, key, value)
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


def _variants() -> list[bytes]:
    point, statistics = _first(0), _first(8)
    made = []
    for base, time, status, level in itertools.product(
        (point, statistics),
        ({"forecastTime": 6}, {"forecastTime": 90, "indicatorOfUnitOfTimeRange": 0}, {}),
        (0, 2, 6, 12),
        (500, 850),
    ):
        made.append(_variant(base, **time, productionStatusOfProcessedData=status, level=level))
    for tables, process in itertools.product((30, 34), (96, 161)):
        # ECMWF's MTG2Switch concept tests tables version and generating process
        made.append(
            _variant(point, centre=98, tablesVersion=tables, generatingProcessIdentifier=process)
        )
    for processing, length in itertools.product((0, 1, 2), (6, 12)):
        made.append(
            _variant(statistics, typeOfStatisticalProcessing=processing, lengthOfTimeRange=length)
        )
    for member in (3, 5):  # ensemble templates: number is perturbationNumber
        made.append(_variant(point, productDefinitionTemplateNumber=1, perturbationNumber=member))
        made.append(
            _variant(statistics, productDefinitionTemplateNumber=11, perturbationNumber=member)
        )
    made.append(_variant(point, parameterNumber=2))
    made.append(_variant(point, subCentre=98))
    return made


def _read_both(path: Path) -> tuple[list, list]:
    fast, _ = grib_read._read_in_memory(str(path), str(path))
    slow, _ = grib_read._read_with_multi_field_support(str(path), str(path))
    return fast, slow


def _clear() -> None:
    for cache in (grib_read._LAYOUTS, grib_read._TIMINGS):
        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_caches():
    _clear()  # the caches live for the process: start and leave them empty
    yield
    _clear()


def test_definitions_are_the_analysed_ones():
    assert grib_fast_path.fast_path_enabled()  # ecCodes 2.50 as the grib extra pins


@pytest.mark.parametrize("name", [GFS, WITH_SECTION_2, ECMWF_WITH_LOCAL_SECTION])
def test_shared_files_read_per_class_equal_ecodes_per_field(name, shared_data):
    path = shared_data / "grib" / name
    _clear()
    fast, slow = _read_both(path)
    assert [f.meta for f in fast] == [f.meta for f in slow]
    assert [f.base_name for f in fast] == [f.base_name for f in slow]


def test_classes_are_shared_by_the_fields_of_a_run(shared_data):
    _clear()
    fast, _ = _read_both(shared_data / "grib" / GFS)
    assert len(fast) == 343
    # 303 point-in-time fields and 40 statistics over 4 disciplines: a handful of classes
    assert 0 < len(grib_read._TIMINGS) <= 10
    assert 0 < len(grib_read._LAYOUTS) <= 10


def test_variants_read_per_class_equal_ecodes_per_field(tmp_path):
    path = tmp_path / "variants.grib2"
    path.write_bytes(b"".join(_variants()))
    _clear()
    fast, slow = _read_both(path)
    assert len(fast) == len(slow) == 64
    for mine, theirs in zip(fast, slow, strict=True):
        assert (mine.base_name, mine.meta) == (theirs.base_name, theirs.meta)
    assert len(grib_read._TIMINGS) < len(fast)  # classes were reused, not one per field


def test_a_key_without_the_forecast_time_would_give_wrong_valid_times(tmp_path, monkeypatch):
    """The check above can fail: drop the forecast-time octets from the key and it does."""
    path = tmp_path / "steps.grib2"
    point = _first(0)
    path.write_bytes(b"".join(_variant(point, forecastTime=t) for t in (0, 6, 12)))
    real = grib_field_class.field_class

    def without_forecast_time(field, centre):  # type: ignore[no-untyped-def]
        found = real(field, centre)
        if found is None:
            return None
        *head, section4_middle, tail = found.timing
        return found._replace(timing=(*head, section4_middle[:7], tail))

    monkeypatch.setattr(grib_read, "field_class", without_forecast_time)
    _clear()
    fast, slow = _read_both(path)
    assert [f.meta["validTime"] for f in fast] != [f.meta["validTime"] for f in slow]
    _clear()


@pytest.mark.parametrize(
    ("change", "in_class"),
    [
        ({}, True),
        ({"productionStatusOfProcessedData": 4}, False),  # TIGGE products file
        ({"productionStatusOfProcessedData": 6}, False),  # S2S: re-aliases mars.step
        ({"productionStatusOfProcessedData": 12}, False),  # DestinE post-metadata hook
        ({"productionStatusOfProcessedData": 3}, True),
        ({"centre": 98, "setLocalDefinition": 1}, False),  # ECMWF local section: MARS keys
        ({"productDefinitionTemplateNumber": 15}, False),  # a template not analysed
    ],
)
def test_fields_outside_the_analysed_conditions_are_in_no_class(change, in_class):
    data = _variant(_first(0), **change)
    handle = eccodes.codes_new_from_message(data)
    try:
        centre = eccodes.codes_get_string(handle, "centre")
    finally:
        eccodes.codes_release(handle)
    assert (grib_field_class.field_class(data, centre) is not None) is in_class


def test_ecmwf_fields_with_a_local_section_are_in_no_class(shared_data):
    for data in _fields(shared_data / "grib" / ECMWF_WITH_LOCAL_SECTION):
        assert grib_field_class.field_class(data, "ecmf") is None


def test_section_2_without_a_local_definition_keeps_the_class(shared_data):
    fields = _fields(shared_data / "grib" / WITH_SECTION_2)
    assert all(grib_field_class.field_class(d, "cnmc") is not None for d in fields)


def _with_section_2(data: bytes, content: bytes) -> bytes:
    """The message with a section 2 (local use) of `content` inserted after section 1."""
    sections = grib2_sections(data)
    local = (5 + len(content)).to_bytes(4, "big") + b"\x02" + content
    body = b"".join(s for n, s in sections if n == 1) + local
    body += b"".join(s for n, s in sections if n > 1)
    return data[:8] + (16 + len(body) + 4).to_bytes(8, "big") + body + b"7777"


def test_generated_section_2_without_a_local_definition_keeps_the_class(tmp_path):
    """As step_60m.grib (centre cnmc): a section 2 that no local definition reads."""
    data = _with_section_2(_variant(_first(0), centre=80), b"\x01\x02\x03\x04")
    handle = eccodes.codes_new_from_message(data)
    try:
        assert eccodes.codes_get_long(handle, "section2Length") == 9
        centre = eccodes.codes_get_string(handle, "centre")
    finally:
        eccodes.codes_release(handle)
    assert centre == "cnmc"
    assert grib_field_class.field_class(data, centre) is not None
    path = tmp_path / "section2.grib2"
    path.write_bytes(data + _with_section_2(_variant(_first(8), centre=80), b"\x05\x06"))
    _clear()
    fast, slow = _read_both(path)
    assert [(f.base_name, f.meta) for f in fast] == [(f.base_name, f.meta) for f in slow]


def test_generated_ecmwf_fields_with_a_local_section_are_in_no_class(tmp_path):
    """As regular_gg_ml_g2.grib: ECMWF's local section sets MARS keys the class cannot hold."""
    data = _variant(_first(0), centre=98, setLocalDefinition=1)
    assert grib_field_class.field_class(data, "ecmf") is None
    path = tmp_path / "ecmf.grib2"
    path.write_bytes(data)
    _clear()
    fast, slow = _read_both(path)
    assert [(f.base_name, f.meta) for f in fast] == [(f.base_name, f.meta) for f in slow]


def test_generated_classes_are_shared_by_the_fields_of_a_run(tmp_path):
    """As the GFS file: point-in-time and statistics fields of one run fall into few classes."""
    messages = grib2_parameters_levels_steps()[0]
    path = tmp_path / "run.grib2"
    path.write_bytes(b"".join(messages))
    _clear()
    fast, slow = _read_both(path)
    assert [(f.base_name, f.meta) for f in fast] == [(f.base_name, f.meta) for f in slow]
    assert len(fast) == len(messages)
    # 34 fields: three steps, two accumulation periods, an ensemble template; a class each
    assert 0 < len(grib_read._TIMINGS) <= 8 < len(fast)
    assert 0 < len(grib_read._LAYOUTS) <= 8


def test_other_definitions_disable_the_classes(monkeypatch):
    real = grib_fast_path.read_definition

    def edited(path: str) -> str | None:
        text = real(path)
        if path == "grib2/templates/template.4.point_in_time.def" and text is not None:
            return text + "\nalias step=endStep;\n"
        return text

    monkeypatch.setattr(grib_fast_path, "read_definition", edited)
    grib_fast_path.reset()
    try:
        assert not grib_fast_path.fast_path_enabled()
        assert grib_field_class.field_class(_first(0), "kwbc") is None
    finally:
        monkeypatch.undo()
        grib_fast_path.reset()
    assert grib_field_class.field_class(_first(0), "kwbc") is not None


def _sample(**keys: int) -> bytes:
    handle = eccodes.codes_grib_new_from_samples("GRIB2")  # regular lat/lon, 2007-03-23
    try:
        for key, value in keys.items():
            eccodes.codes_set_long(handle, key, value)
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


def test_a_grid_declaring_its_own_dates_is_in_no_class(tmp_path):
    """Hovmoeller grids (3.1100) declare year..second in section 3, and ecCodes' dataDate reads
    those. Such a file fails later (no lat/lon), after its metadata was read: had it been
    classed, the next file with the same sections 1 and 4 would get its dates."""
    regular = _sample()
    hovmoller = bytearray(_sample(gridDefinitionTemplateNumber=1100))
    handle = eccodes.codes_new_from_message(bytes(hovmoller))
    try:
        offset = eccodes.codes_get_offset(handle, "year")  # section 3's year
    finally:
        eccodes.codes_release(handle)
    hovmoller[offset : offset + 2] = (2020).to_bytes(2, "big")
    assert grib_field_class.field_class(bytes(hovmoller), "consensus") is None
    first, second = tmp_path / "hovmoller.grib2", tmp_path / "regular.grib2"
    first.write_bytes(bytes(hovmoller))
    second.write_bytes(regular)
    with pytest.raises(UnsupportedGrib):
        grib_read._read_in_memory(str(first), str(first))
    fast, slow = _read_both(second)
    assert fast[0].meta == slow[0].meta
    assert fast[0].meta["dataDate"] == 20070323


def test_preferring_local_concepts_is_part_of_the_class(tmp_path, monkeypatch):
    """ecCodes reads ECCODES_GRIB_PREFER_LOCAL_CONCEPTS on every handle: the same DWD field
    then has another paramId (500000 "PS" rather than 134 "sp")."""
    path = tmp_path / "edzw.grib2"
    path.write_bytes(_sample(centre=78, parameterCategory=3, parameterNumber=0))
    monkeypatch.setenv("ECCODES_GRIB_PREFER_LOCAL_CONCEPTS", "0")
    before, _ = grib_read._read_in_memory(str(path), str(path))
    monkeypatch.setenv("ECCODES_GRIB_PREFER_LOCAL_CONCEPTS", "1")
    fast, slow = _read_both(path)
    assert fast[0].meta == slow[0].meta
    assert fast[0].meta["paramId"] != before[0].meta["paramId"]
