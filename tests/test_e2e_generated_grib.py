"""System 1 end to end on GRIB files generated with ecCodes (tests/generated_data.py), so a
fresh clone without ../shared runs it: `headrace up` as a subprocess, the files copied into the
landing bucket by a plain file copy, damaged and unsupported files ending as clear errors."""

import json
import shutil
import time

import pyarrow.parquet as pq
import pytest

from headrace.ledger import Ledger
from tests.e2e_helpers import Up, headrace
from tests.generated_data import spectral_grib
from tests.test_e2e_grib import EXAMPLE

pytestmark = pytest.mark.slow

BAD = {
    "truncated.grib": "CorruptGrib",
    "end marker damaged.grib2": "CorruptGrib",
    "empty.grib": "CorruptGrib",
    "not grib.grib2": "CorruptGrib",
    "spectral.grib2": "UnsupportedGrib",
}


def test_generated_grib_files_land_as_parquet(generated_gribs, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    grib1 = generated_gribs["levels_members_steps.grib"].path.read_bytes()
    (staging / "truncated.grib").write_bytes(grib1[: len(grib1) // 2 + 123])
    grib2 = bytearray(generated_gribs["multi_field.grib2"].path.read_bytes())
    grib2[-4:] = b"XXXX"
    (staging / "end marker damaged.grib2").write_bytes(bytes(grib2))
    (staging / "empty.grib").write_bytes(b"")
    (staging / "not grib.grib2").write_text("a text file with a GRIB name\n" * 20)
    (staging / "spectral.grib2").write_bytes(spectral_grib())
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.3"}
    up = Up(EXAMPLE, env, tmp_path / "up.log").start()
    try:
        landing = home / "buckets" / "landing"
        sources = [m.path for m in generated_gribs.values()] + sorted(staging.iterdir())
        for path in sources:
            shutil.copy(path, landing / path.name)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        deadline = time.time() + 240
        while time.time() < deadline:
            rows = [r for r in ledger.list_invocations(limit=1000) if r["source"] == "object"]
            if len(rows) == len(sources) and all(
                r["status"] in ("succeeded", "dead") for r in rows
            ):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"not finished: {ledger.count_by_status()}\n{up.output()}")
        assert up.alive(), up.output()
        by_key = {}
        for row in rows:
            key = json.loads(row["payload"])["Records"][0]["s3"]["object"]["key"]
            by_key[key.replace("+", " ")] = row
        curated = home / "buckets" / "curated"
        for name, made in generated_gribs.items():
            row = by_key[name]
            assert row["status"] == "succeeded", (name, row["error"])
            table = pq.read_table(curated / f"{name}.parquet")
            assert table.num_rows == made.points
            assert table.num_columns == made.fields + 2
        for name, error in BAD.items():
            row = by_key[name]
            assert row["status"] == "dead" and row["error"].startswith(error), (name, row)
            assert "fix:" in row["error"]
        # no partial or temporary output is ever left in the curated bucket
        assert sorted(p.name for p in curated.iterdir()) == sorted(
            f"{name}.parquet" for name in generated_gribs
        )
        dlq = json.loads(headrace("dlq", "list", "--json", project=EXAMPLE, env=env).stdout)
        assert sorted(d["invocation_id"] for d in dlq) == sorted(by_key[n]["id"] for n in BAD)
        logs = headrace("logs", "grib_to_parquet", "--limit", "200", project=EXAMPLE, env=env)
        assert "converted landing/multi_field.grib2" in logs.stdout
        assert not any((home / "tmp").iterdir())  # per-invocation scratch space is gone
        ledger.close()
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
