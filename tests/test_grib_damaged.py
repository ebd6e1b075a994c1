"""Damaged GRIB is reported as damaged (CorruptGrib), never as an unsupported grid, and errors
name the object the user knows (source_name), not a scratch copy.

Every file is generated here with ecCodes (its GRIB2 sample) and then damaged byte by byte, so
these run without ../shared.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

eccodes = pytest.importorskip("eccodes")

from headrace.errors import CorruptGrib, UnsupportedGrib  # noqa: E402
from headrace.formats.grib import grib_to_parquet, read_grib  # noqa: E402

NI, NJ = 16, 31  # the GRIB2 sample's regular_ll grid


def _message() -> bytes:
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        eccodes.codes_set_values(handle, np.linspace(250.0, 300.0, NI * NJ))
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


def _sections(message: bytes) -> dict[int, int]:
    """Offset of each GRIB2 section by number."""
    position, found = 16, {}
    while message[position : position + 4] != b"7777":
        found[message[position + 4]] = position
        position += int.from_bytes(message[position : position + 4], "big")
    return found


def _put(message: bytes, offset: int, data: bytes) -> bytes:
    changed = bytearray(message)
    changed[offset : offset + len(data)] = data
    return bytes(changed)


def _damaged() -> dict[str, bytes]:
    message = _message()
    grid, data = _sections(message)[3], _sections(message)[5]
    return {
        # octets of section 3, template 3.0 (1-based in the WMO tables, 0-based here)
        "point count": _put(message, grid + 6, (NI * NJ + 7).to_bytes(4, "big")),
        "Ni": _put(message, grid + 30, (NI + 3).to_bytes(4, "big")),
        "Nj": _put(message, grid + 34, (NJ - 3).to_bytes(4, "big")),
        "first latitude": _put(message, grid + 46, struct.pack(">I", 0x7FA00000)),
        "first latitude past the pole": _put(message, grid + 46, (95_000_000).to_bytes(4, "big")),
        "value count": _put(message, data + 5, (NI * NJ - 5).to_bytes(4, "big")),
        "truncated": message[:-30],
    }


@pytest.mark.parametrize("kind", sorted(_damaged()))
def test_damaged_grid_headers_are_corrupt_not_unsupported(kind, tmp_path):
    path = tmp_path / "damaged.grib2"
    path.write_bytes(_damaged()[kind])
    with pytest.raises(CorruptGrib) as info:
        grib_to_parquet(path, tmp_path / "out.parquet")
    assert not isinstance(info.value, UnsupportedGrib)
    assert str(path) in info.value.subject
    assert info.value.fix and "re-download" in info.value.fix
    assert not (tmp_path / "out.parquet").exists()


def test_grid_header_damage_says_the_file_is_damaged(tmp_path):
    path = tmp_path / "damaged.grib2"
    path.write_bytes(_damaged()["Ni"])
    with pytest.raises(CorruptGrib, match="the file is damaged") as info:
        read_grib(path)
    assert "regular_ll" in info.value.reason


def test_grid_without_geometry_is_still_unsupported(tmp_path):
    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    try:  # template 3.120 (azimuth-range): ecCodes has no geometry for it
        eccodes.codes_set_long(handle, "gridDefinitionTemplateNumber", 120)
        path = tmp_path / "radar.grib2"
        path.write_bytes(eccodes.codes_get_message(handle))
    finally:
        eccodes.codes_release(handle)
    with pytest.raises(UnsupportedGrib, match="azimuth_range"):
        read_grib(path)


def test_source_name_names_the_object_in_errors_and_metadata(tmp_path):
    scratch = tmp_path / ".headrace" / "tmp" / "abc-1" / "model.grib2"
    scratch.parent.mkdir(parents=True)
    scratch.write_bytes(_damaged()["truncated"])
    with pytest.raises(CorruptGrib) as info:
        grib_to_parquet(scratch, tmp_path / "out.parquet", source_name="s3://landing/a/model.grib2")
    assert info.value.subject.startswith("s3://landing/a/model.grib2 ")
    assert ".headrace" not in str(info.value)
    scratch.write_bytes(_message())
    table = read_grib(scratch, source_name="s3://landing/a/model.grib2")
    assert b"s3://landing/a/model.grib2" in table.schema.metadata[b"headrace.grib"]
    assert b".headrace" not in table.schema.metadata[b"headrace.grib"]
