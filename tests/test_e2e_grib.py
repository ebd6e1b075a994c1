"""System 1 end to end: `headrace up` as a subprocess over every shared GRIB file, copied into
the landing bucket by a plain file copy, plus damaged files that must end as clear errors."""

import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from headrace.events import object_created_event
from headrace.ledger import Ledger, NewInvocation
from tests.e2e_helpers import Up, headrace

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grib_to_parquet"
BAD = {
    "truncated.grib": "CorruptGrib",
    "mutated.grib2": "CorruptGrib",
    "empty.grib": "CorruptGrib",
    "not grib.grib2": "CorruptGrib",
    "spherical_harmonics.grib": "UnsupportedGrib",
}


def s3_event(bucket: str, key: str) -> dict:
    return object_created_event(
        bucket=bucket, key=key, size=1, etag="0", sequencer="1", event_time=time.time()
    )


def make_bad_files(src: Path, dst: Path) -> None:
    data = (src / "era5-levels-members.grib").read_bytes()
    (dst / "truncated.grib").write_bytes(data[: len(data) // 2 + 1234])
    msl = bytearray((src / "regular_ll_msl.grib").read_bytes())
    msl[-4:] = b"XXXX"  # the end-of-message marker
    (dst / "mutated.grib2").write_bytes(bytes(msl))
    (dst / "empty.grib").write_bytes(b"")
    (dst / "not grib.grib2").write_text("a text file with a GRIB name\n" * 20)


def test_every_shared_grib_file_lands_as_parquet(shared_data, tmp_path):
    grib_dir = shared_data / "grib"
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.3"}
    up = Up(EXAMPLE, env, tmp_path / "up.log").start()
    try:
        landing = home / "buckets" / "landing"
        staging = tmp_path / "staging"
        staging.mkdir()
        make_bad_files(grib_dir, staging)
        sources = sorted(grib_dir.iterdir()) + sorted(staging.iterdir())
        sources = [p for p in sources if p.suffix in (".grib", ".grib2", ".grb", ".bin")]
        for path in sources:
            shutil.copy(path, landing / path.name)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        # events that name keys outside the bucket, or are not S3 events at all
        bad_events = {
            "dotdot": s3_event("landing", "../../etc/passwd"),
            "absolute": s3_event("landing", "/etc/passwd"),
            "malformed": {"detail": "not an S3 event"},
        }
        invoked = dict(
            zip(
                bad_events,
                ledger.enqueue(
                    NewInvocation("grib_to_parquet", e, max_attempts=1, source="invoke")
                    for e in bad_events.values()
                ),
                strict=True,
            )
        )
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
        good = [p for p in sources if p.name not in BAD]
        assert len(good) == 13
        for path in good:
            row = by_key[path.name]
            assert row["status"] == "succeeded", (path.name, row["error"])
            result = json.loads(row["result"])["converted"][0]
            table = pq.read_table(curated / f"{path.name}.parquet")
            assert table.num_rows == result["rows"] > 0
            assert table.num_columns >= 3
        for name, error in BAD.items():
            row = by_key[name]
            assert row["status"] == "dead" and row["error"].startswith(error), (name, row)
            assert "fix:" in row["error"]
            # the object the user put, not the handler's deleted scratch copy
            assert row["error"].startswith(f"{error}: s3://landing/{name}"), row["error"]
            assert ".headrace" not in row["error"] and "/tmp/" not in row["error"], row["error"]
            assert not (curated / f"{name}.parquet").exists()
        # no partial or temporary output is ever left in the curated bucket
        assert sorted(p.name for p in curated.iterdir()) == sorted(
            f"{p.name}.parquet" for p in good
        )
        for name, error in (
            ("dotdot", "InvalidKey"),
            ("absolute", "InvalidKey"),
            ("malformed", "MalformedEvent"),
        ):
            row = ledger.get_invocation(invoked[name])
            assert row["status"] == "dead" and row["error"].startswith(error), row
            assert "fix:" in row["error"]
        dlq = json.loads(headrace("dlq", "list", "--json", project=EXAMPLE, env=env).stdout)
        assert sorted(d["invocation_id"] for d in dlq) == sorted(
            [by_key[n]["id"] for n in BAD] + list(invoked.values())
        )
        logs = headrace("logs", "grib_to_parquet", "--limit", "200", project=EXAMPLE, env=env)
        assert "converted landing/gfs.t12z.pgrbf120.2p5deg.grib2" in logs.stdout
        # per-invocation scratch space is gone
        assert not any((home / "tmp").iterdir())
        ledger.close()
        assert up.terminate() == 0
    finally:
        if up.alive():
            up.kill9()
