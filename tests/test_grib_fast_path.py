"""The GRIB fast path: one guard (the ecCodes it was verified against, by fingerprint), the pin
that installs that ecCodes, and an off path that gives the same tables.

Runs on files generated with ecCodes (the example's sample writer) and, when ../shared/data is
there, on every real GRIB file as well.
"""

from __future__ import annotations

import importlib.util
import logging
import tomllib
from pathlib import Path

import eccodes
import pytest
from prometheus_client import REGISTRY

from headrace.errors import UnsupportedGrib
from headrace.formats import grib_concept_cache, grib_fast_path, grib_read
from headrace.formats.grib import read_grib

REPO = Path(__file__).resolve().parents[1]
SHARED_GRIB = REPO.parent / "shared" / "data" / "grib"


def _samples(folder: Path) -> list[Path]:
    path = REPO / "examples" / "grib_to_parquet" / "samples.py"
    spec = importlib.util.spec_from_file_location("grib_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_sample_gribs(folder, count=2)


def _clear_caches() -> None:
    for cache in (grib_read._LAYOUTS, grib_read._TIMINGS):
        cache.clear()
    grib_concept_cache.clear_concept_cache()


@pytest.fixture
def fast_path_switch(monkeypatch):
    """Turn the fast path off (and back on at the end) in this process."""

    def switch(on: bool) -> None:
        if on:
            monkeypatch.delenv(grib_fast_path.SWITCH, raising=False)
        else:
            monkeypatch.setenv(grib_fast_path.SWITCH, "0")
        grib_fast_path.reset()
        _clear_caches()

    yield switch
    monkeypatch.delenv(grib_fast_path.SWITCH, raising=False)
    grib_fast_path.reset()
    _clear_caches()


def _off_count(reason: str) -> float:
    value = REGISTRY.get_sample_value("headrace_grib_fast_path_off_total", {"reason": reason})
    return value or 0.0


def test_the_grib_extra_pins_the_verified_eccodes():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    grib = extras["optional-dependencies"]["grib"]
    assert f"eccodeslib=={grib_fast_path.VERIFIED_ECCODES}.*" in grib
    assert eccodes.codes_get_api_version() == grib_fast_path.VERIFIED_ECCODES
    assert grib_fast_path.fingerprint() == grib_fast_path.VERIFIED_FINGERPRINT
    assert grib_fast_path.fast_path_enabled()


def test_another_eccodes_turns_the_fast_path_off(monkeypatch, caplog):
    monkeypatch.setattr(grib_fast_path.eccodes, "codes_get_api_version", lambda: "2.51.0")
    grib_fast_path.reset()
    try:
        with caplog.at_level(logging.WARNING, logger=grib_fast_path.__name__):
            assert not grib_fast_path.fast_path_enabled()
            assert not grib_fast_path.fast_path_enabled()
        warnings = [r for r in caplog.records if "fast path off" in r.getMessage()]
        assert len(warnings) == 1, "logged once per process"
        assert "2.51.0" in warnings[0].getMessage()
    finally:
        monkeypatch.undo()
        grib_fast_path.reset()
    assert grib_fast_path.fast_path_enabled()


def test_other_definitions_turn_the_fast_path_off(monkeypatch):
    real = grib_fast_path.read_definition

    def edited(path: str) -> str | None:
        text = real(path)
        return text + "\n# edited\n" if path == "grib2/section.4.def" and text else text

    monkeypatch.setattr(grib_fast_path, "read_definition", edited)
    grib_fast_path.reset()
    try:
        assert not grib_fast_path.fast_path_enabled()
    finally:
        monkeypatch.undo()
        grib_fast_path.reset()


def _convertible(folder: Path) -> list[Path]:
    paths = _samples(folder)
    if SHARED_GRIB.is_dir():
        paths += sorted(p for p in SHARED_GRIB.iterdir() if p.name not in ("SHA256SUMS",))
    return paths


def _tables(paths: list[Path], layout: str) -> dict[str, object]:
    tables = {}
    for path in paths:
        try:
            tables[path.name] = read_grib(path, layout=layout)
        except UnsupportedGrib as exc:  # spectral fields: the same error either way
            tables[path.name] = str(exc)
    return tables


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_off_path_gives_identical_tables(layout, tmp_path, fast_path_switch, caplog):
    paths = _convertible(tmp_path)
    fast_path_switch(True)
    fast = _tables(paths, layout)
    assert len(grib_read._TIMINGS) > 0, "the on run used the field classes"
    fast_path_switch(False)
    before = _off_count("switched_off")
    with caplog.at_level(logging.WARNING, logger=grib_fast_path.__name__):
        slow = _tables(paths, layout)
    assert len(grib_read._TIMINGS) == len(grib_read._LAYOUTS) == 0, "nothing cached when off"
    converted = sum(not isinstance(t, str) for t in slow.values())
    assert _off_count("switched_off") == before + converted
    assert len([r for r in caplog.records if "fast path off" in r.getMessage()]) == 1
    assert fast.keys() == slow.keys()
    for name, table in fast.items():
        if isinstance(table, str):
            assert table == slow[name]
        else:
            assert table.equals(slow[name], check_metadata=True), name
