"""The reviews benchmark's fast generator writes exactly the anchor's files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"


def _cache_module():
    spec = importlib.util.spec_from_file_location(
        "_reviews_cache", ROOT / "benchmarks" / "_reviews_cache.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fast_generator_writes_the_anchors_rows(tmp_path):
    if not (ANCHORS / "reviews_data.py").exists():
        pytest.skip(f"no anchor generator at {ANCHORS} (../shared/anchors)")
    cache = _cache_module()
    anchor, fast = cache.anchor_generator(ANCHORS), cache.fast_generator(ANCHORS)
    anchor.make_file(3, 3_000, str(tmp_path / "anchor.parquet"), 9_000)
    fast.make_file(3, 3_000, str(tmp_path / "fast.parquet"), 9_000)
    expected, got = (
        pq.read_table(tmp_path / "anchor.parquet"),
        pq.read_table(tmp_path / "fast.parquet"),
    )
    assert got.num_rows == 3_000
    assert got.equals(expected)


def test_cached_folder_is_reused_and_keyed_by_size(tmp_path, monkeypatch):
    if not (ANCHORS / "reviews_data.py").exists():
        pytest.skip(f"no anchor generator at {ANCHORS} (../shared/anchors)")
    cache = _cache_module()
    monkeypatch.setattr(cache, "CACHE", tmp_path)
    folder = Path(cache.reviews(1_600, 4, ANCHORS))
    files = sorted(folder.glob("*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [400] * 4
    stamp = files[0].stat().st_mtime_ns
    assert Path(cache.reviews(1_600, 4, ANCHORS)) == folder  # not generated again
    assert files[0].stat().st_mtime_ns == stamp
    assert Path(cache.reviews(800, 4, ANCHORS)) != folder
