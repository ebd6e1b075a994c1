"""`storage = "s3://…"` on a real S3 server (SeaweedFS on 127.0.0.1, see tests/seaweed.py):
the object store, change detection by listing, and the systems end to end under `headrace up`,
with a coordinator killed and restarted midway."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs
from sqlalchemy import func, select

from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.ledger.schema import attempts, invocations, objects
from headrace.storage import ChangeWatcher, ObjectStore
from tests.e2e_helpers import Up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
BASIC = ROOT / "tests" / "apps" / "basic"
WEATHER = ROOT / "examples" / "grib_to_parquet"
COMPOSITE = ROOT / "examples" / "band_composite"


def _names(fs: s3fs.S3FileSystem, path: str) -> list[str]:
    fs.invalidate_cache()
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.find(path))
    except FileNotFoundError:
        return []


def test_object_store_and_listing_on_s3(s3):
    fs, url, _ = s3
    store = ObjectStore(url)
    assert not store.is_local
    bucket = store.bucket("inbox")
    info = bucket.put("a/b.txt", b"hello")
    assert info.size == 5 and bucket.get("a/b.txt") == b"hello"
    assert bucket.head("a/b.txt").etag == info.etag
    assert [i.key for i in bucket.list()] == ["a/b.txt"]
    # a write that fails midway leaves nothing behind, not even its temp object
    with pytest.raises(RuntimeError), bucket.open("a/broken.txt", "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("writer died")
    with pytest.raises(RuntimeError), bucket.open("a/b.txt", "wb") as fh:
        fh.write(b"half of a new version")
        raise RuntimeError("writer died")
    assert bucket.get("a/b.txt") == b"hello"  # the old version stays whole
    # a large object (a multipart upload: past s3fs's 50 MiB blocks) appears once complete
    big = os.urandom(56 * 2**20)
    with bucket.open("big.bin", "wb") as fh:
        for start in range(0, len(big), 8 * 2**20):
            fh.write(big[start : start + 8 * 2**20])
            fs.invalidate_cache()
            assert not fs.exists(f"{url}/inbox/big.bin")
    assert bucket.get("big.bin") == big
    bucket.delete("big.bin")
    assert _names(fs, url.removeprefix("s3://") + "/inbox") == ["b.txt"]
    # change detection by listing: each version reported once, written by any program
    seen = []

    def wait_for(n: int) -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(seen) < n:
            time.sleep(0.1)

    with ChangeWatcher(store, ["inbox"], poll_interval=0.2) as watcher:
        watcher.start(seen.append)
        wait_for(1)  # what was there before it started
        fs.pipe(f"{url}/inbox/c.txt", b"from another program")
        bucket.put("a/b.txt", b"hello again")  # a new version of a key
        wait_for(3)
        time.sleep(1.5)  # more polls: nothing is reported twice
    keys = sorted((i.key, i.size) for i in seen)
    assert keys == [("a/b.txt", 5), ("a/b.txt", 11), ("c.txt", 20)], keys


def test_object_triggers_on_s3_survive_kill_9_without_duplicates(s3, tmp_path):
    fs, url, server = s3
    rng = random.Random(5)
    home = tmp_path / "home"
    env = {
        **server.env,
        "HEADRACE_HOME": str(home),
        "HEADRACE_STORAGE": url,
        "HEADRACE_POLL_INTERVAL": "0.3",
        "HEADRACE_WORKERS": "2",
    }
    expected = {f"obj-{i:03d}.dat": os.urandom(rng.randint(10, 200_000)) for i in range(40)}
    up = Up(BASIC, env, tmp_path / "up.log").start()
    try:
        for n, (name, data) in enumerate(expected.items()):
            fs.pipe(f"{url}/inbox/copy/{name}", data)  # written by another program (s3fs)
            if n in (12, 27):
                up.kill9()
                time.sleep(rng.uniform(0, 0.5))
                up.start()
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        deadline = time.time() + 180
        while time.time() < deadline:
            if ledger.count_by_status("copy") == {"succeeded": len(expected)}:
                break
            time.sleep(0.3)
        assert ledger.count_by_status("copy") == {"succeeded": len(expected)}, up.output()
        assert up.terminate() == 0, up.output()
    finally:
        if up.alive():
            up.kill9()
    out = url + "/outbox/copy"
    # atomic outputs: every one whole, nothing else (no temp objects) in the bucket
    assert _names(fs, out) == sorted(expected)
    assert all(fs.cat(f"{out}/{name}") == data for name, data in expected.items())
    with ledger.engine.connect() as conn:
        n_objects = conn.execute(select(func.count()).select_from(objects)).scalar_one()
        per_event = conn.execute(
            select(invocations.c.event_id, func.count()).group_by(invocations.c.event_id)
        ).all()
        ok = conn.execute(
            select(attempts.c.invocation_id, func.count())
            .where(attempts.c.status == "ok")
            .group_by(attempts.c.invocation_id)
        ).all()
    ledger.close()
    # nothing triggered twice across the restarts
    assert n_objects == len(expected)
    assert len(per_event) == len(expected) and {n for _, n in per_event} == {1}
    assert len(ok) == len(expected) and {n for _, n in ok} == {1}


def test_weather_system_on_s3(s3, tmp_path, shared_data):
    fs, url, server = s3
    home = tmp_path / "home"
    env = {**server.env, "HEADRACE_HOME": str(home), "HEADRACE_STORAGE": url}
    env["HEADRACE_POLL_INTERVAL"] = "0.3"
    files = ["regular_ll_msl.grib", "gfs.t12z.pgrbf120.2p5deg.grib2", "era5-levels-members.grib"]
    up = Up(WEATHER, env, tmp_path / "up.log").start()
    try:
        for name in files:
            fs.put_file(str(shared_data / "grib" / name), f"{url}/landing/{name}")
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        deadline = time.time() + 240
        while time.time() < deadline:
            if ledger.count_by_status("grib_to_parquet") == {"succeeded": len(files)}:
                break
            time.sleep(0.3)
        assert ledger.count_by_status("grib_to_parquet") == {"succeeded": len(files)}, up.output()
        rows = {
            json.loads(r["payload"])["Records"][0]["s3"]["object"]["key"]: json.loads(r["result"])
            for r in ledger.list_invocations(limit=100)
        }
        ledger.close()
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    assert _names(fs, url + "/curated") == sorted(f"{n}.parquet" for n in files)
    for name in files:
        with fs.open(f"{url}/curated/{name}.parquet", "rb") as fh:
            table = pq.read_table(fh)
        assert table.num_rows == rows[name]["converted"][0]["rows"] > 0


def test_band_composite_system_on_s3(s3, tmp_path):
    fs, url, server = s3
    sys.path.insert(0, str(COMPOSITE))
    try:
        from rasters import write_sample_cells

        cells = write_sample_cells(tmp_path / "cells", cells=2, size=(200, 220))
    finally:
        sys.path.remove(str(COMPOSITE))
    home = tmp_path / "home"
    env = {
        **server.env,
        "HEADRACE_HOME": str(home),
        "HEADRACE_STORAGE": url,
        "HEADRACE_POLL_INTERVAL": "0.3",
        "COMPOSITE_NOTICES": str(tmp_path / "notices"),
    }
    from headrace.workflows import api
    from tests.e2e_helpers import headrace

    up = Up(COMPOSITE, env, tmp_path / "up.log").start()
    try:
        started = headrace(
            "start-execution",
            "band-composite",
            "--name",
            "on-s3",
            "--input",
            json.dumps({"cells": cells, "output_bucket": "composites"}),
            project=COMPOSITE,
            env=env,
        )
        assert started.returncode == 0, started.stderr
        ledger = Ledger(load_settings(COMPOSITE, home=str(home)).ledger_url)
        row = api.wait_for(ledger, "on-s3", timeout=300)
        ledger.close()
        assert row["status"] == "SUCCEEDED", (row, up.output())
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
    import rasterio

    names = _names(fs, url + "/composites")
    assert names == sorted(f"{c['cell']}.tif" for c in cells), names
    for cell in cells:
        local = tmp_path / f"{cell['cell']}.tif"
        fs.get_file(f"{url}/composites/2015-08-04/{cell['cell']}.tif", str(local))
        with rasterio.open(local) as src:
            assert src.count == 3 and src.overviews(1)
    shutil.rmtree(tmp_path / "cells", ignore_errors=True)
