"""The GRIB fast path's disk cache: a fresh process converts without parsing ecCodes' concept
files or asking ecCodes for concept answers an earlier process got, with identical output; a
damaged cache file is ignored and rewritten; a changed definition file is parsed again.

Each conversion runs in a new Python process (what the cache is for), on GRIB files generated
with ecCodes by the example's sample writer, with ``HEADRACE_CACHE_DIR`` in the test's folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("eccodes")


REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys
from headrace.formats import grib_concept_cache, grib_concepts, grib_disk_cache
from headrace.formats.grib import grib_to_parquet

counts = {"parsed": 0, "asked": 0, "edited parsed": 0}
parse = grib_concept_cache.parse_concept
ask = grib_concept_cache._PARAM_ID
read = grib_disk_cache.read_definition
EDIT = "#  added after the cache was written\\n"

def counted_parse(text):
    counts["parsed"] += 1
    counts["edited parsed"] += text.endswith(EDIT)
    return parse(text)

def edited_read(path):
    text = read(path)
    return text + EDIT if text is not None and "/paramId" in path else text

if os.environ.get("EDIT_PARAM_ID"):  # as if ecCodes' paramId.def files had changed
    grib_disk_cache.read_definition = edited_read

def counted_ask(keys):
    counts["asked"] += 1
    return ask(keys)

grib_concept_cache.parse_concept = grib_concepts.parse_concept = counted_parse
grib_concept_cache._PARAM_ID = counted_ask
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    grib_to_parquet(src, dst)
print(json.dumps({**counts, "cache": str(grib_disk_cache.cache_file())}))
"""


def _samples(folder: Path) -> list[Path]:
    path = REPO / "examples" / "grib_to_parquet" / "samples.py"
    spec = importlib.util.spec_from_file_location("grib_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_sample_gribs(folder, count=2)


def _convert_in_new_process(
    sources: list[Path], out: Path, cache: Path, edit: bool = False
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = [str(a) for s in sources for a in (s, out / f"{s.stem}.parquet")]
    env = {**os.environ, "HEADRACE_CACHE_DIR": str(cache)}
    if edit:
        env["EDIT_PARAM_ID"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gribs(tmp_path_factory) -> list[Path]:
    return _samples(tmp_path_factory.mktemp("gribs"))


def _tables(folder: Path) -> dict[str, object]:
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("*.parquet"))}


def test_a_fresh_process_reuses_what_the_first_one_learnt(gribs, tmp_path):
    cache = tmp_path / "cache"
    first = _convert_in_new_process(gribs, tmp_path / "first", cache)
    assert first["parsed"] > 0 and first["asked"] > 0
    assert Path(first["cache"]).parent == cache and Path(first["cache"]).exists()
    second = _convert_in_new_process(gribs, tmp_path / "second", cache)
    assert second == {**second, "parsed": 0, "asked": 0}
    tables, again = _tables(tmp_path / "first"), _tables(tmp_path / "second")
    assert tables.keys() == again.keys() and len(tables) == len(gribs)
    for name, table in tables.items():
        assert table.equals(again[name], check_metadata=True), name
    assert [p.name for p in cache.iterdir()] == [Path(first["cache"]).name], "no temporaries"


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "not a cache", "empty"])
def test_a_damaged_cache_file_is_ignored_and_rewritten(damage, gribs, tmp_path):
    cache = tmp_path / "cache"
    first = _convert_in_new_process(gribs, tmp_path / "first", cache)
    path = Path(first["cache"])
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "flipped byte": data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:],
            "not a cache": b"\x00garbage" * 100,
            "empty": b"",
        }[damage]
    )
    second = _convert_in_new_process(gribs, tmp_path / "second", cache)
    assert second["parsed"] > 0, "the damaged file was not used"
    for name, table in _tables(tmp_path / "first").items():
        assert table.equals(_tables(tmp_path / "second")[name], check_metadata=True)
    third = _convert_in_new_process(gribs, tmp_path / "third", cache)
    assert third["parsed"] == 0 and third["asked"] == 0, "it was rewritten whole"


def test_an_unwritable_cache_folder_is_not_an_error(gribs, tmp_path):
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    done = _convert_in_new_process(gribs[:1], tmp_path / "out", blocker / "cache")
    assert done["parsed"] > 0
    assert len(_tables(tmp_path / "out")) == 1


def test_a_changed_definition_file_is_parsed_again(gribs, tmp_path):
    cache = tmp_path / "cache"
    _convert_in_new_process(gribs, tmp_path / "first", cache)
    edited = _convert_in_new_process(gribs, tmp_path / "second", cache, edit=True)
    assert edited["edited parsed"] > 0, "the changed files were parsed, not taken from the cache"
    assert edited["asked"] > 0, "answers from trees built on the old files are not used"
