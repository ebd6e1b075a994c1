"""`headrace up` with its S3 endpoint: writes through it trigger functions once per object
version and never for a partial upload; handlers reach it with the AWS SDKs unchanged."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from headrace.ledger import Ledger
from tests import s3_helpers
from tests.e2e_helpers import Up, headrace

pytestmark = pytest.mark.slow
pytest.importorskip("boto3")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

_APP = """
import os

import boto3

from headrace import App

app = App("s3-trial")


@app.on_object_created(bucket="landing")
@app.function(retries=0, environment={"GREETING": "hello"})
def seen(event, context):
    record = event["Records"][0]["s3"]
    # a client made the way Lambda code makes one: no endpoint, no keys, no region
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=record["bucket"]["name"], Key=record["object"]["key"])
    return {"key": record["object"]["key"], "size": head["ContentLength"],
            "greeting": os.environ["GREETING"]}


@app.on_object_created(bucket="swallow", output_bucket="out")
@app.function(retries=0)
def swallows(event, context):
    import subprocess

    subprocess.run(["echo", "from a program it ran"], check=True)
    os.write(1, b"written to descriptor 1\\n")
    try:
        raise RuntimeError("the endpoint was unreachable")
    except Exception as e:
        print(f"handled: {e}")


@app.on_object_created(bucket="layered")
@app.function(retries=0, requirements=[WHEEL])
def layered(event, context):
    import headrace_layer_probe  # only in the function's layer, not in the environment

    return headrace_layer_probe.VALUE
"""


def _client(info: dict):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=info["s3"],
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name=info["s3_region"],
        config=Config(request_checksum_calculation="when_required"),
    )


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_writes_through_the_endpoint_trigger_once_per_version_never_for_a_partial(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "headrace.toml").write_text('app = "pipeline:app"\n')
    wheel = s3_helpers.probe_wheel(tmp_path)
    (proj / "pipeline.py").write_text(_APP.replace("WHEEL", repr(str(wheel))))
    home = proj / ".headrace"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.2"}
    up = Up(proj, env, tmp_path / "up.log").start()
    try:
        info = json.loads((home / "coordinator.json").read_text())
        assert info["s3"].startswith("http://127.0.0.1:"), info
        status = headrace("status", "--json", project=proj, env=env)
        assert status.returncode == 0, status.stderr
        assert [c["s3"] for c in json.loads(status.stdout)["coordinators"]] == [info["s3"]]
        s3 = _client(info)
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")

        def runs(function: str, status: str = "succeeded") -> list[dict]:
            return ledger.list_invocations(function=function, status=status, limit=100)

        s3.put_object(Bucket="landing", Key="a.txt", Body=b"one")
        done = _wait(lambda: runs("seen"), what="the first invocation")
        result = json.loads(done[0]["result"])
        assert result == {"key": "a.txt", "size": 3, "greeting": "hello"}

        part = os.urandom(5 * 1024 * 1024)
        mp = s3.create_multipart_upload(Bucket="landing", Key="big.bin")["UploadId"]
        e1 = s3.upload_part(Bucket="landing", Key="big.bin", UploadId=mp, PartNumber=1, Body=part)
        time.sleep(2.0)  # ten watcher polls with a part written and the upload open
        assert len(ledger.list_invocations(function="seen", limit=100)) == 1
        e2 = s3.upload_part(Bucket="landing", Key="big.bin", UploadId=mp, PartNumber=2, Body=b"z")
        s3.complete_multipart_upload(
            Bucket="landing",
            Key="big.bin",
            UploadId=mp,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": 1, "ETag": e1["ETag"]},
                    {"PartNumber": 2, "ETag": e2["ETag"]},
                ]
            },
        )
        _wait(lambda: len(runs("seen")) == 2, what="the multipart object's invocation")
        # a folder marker holds no data and triggers nothing (rclone alone made it a file
        # `notes.txt`, which triggered with that key)
        s3.put_object(Bucket="landing", Key="notes.txt/", Body=b"")
        assert (home / "buckets" / "landing" / "notes.txt").is_dir()
        s3.put_object(Bucket="landing", Key="a.txt", Body=b"two!")  # a new version
        _wait(lambda: len(runs("seen")) == 3, what="the new version's invocation")
        time.sleep(1.5)  # nothing more comes
        rows = ledger.list_invocations(function="seen", limit=100)
        results = sorted(
            (json.loads(r["result"])["key"], json.loads(r["result"])["size"]) for r in rows
        )
        assert results == [("a.txt", 3), ("a.txt", 4), ("big.bin", len(part) + 1)]

        # a handler that swallows its exception succeeds, and its log still shows it
        s3.put_object(Bucket="swallow", Key="x", Body=b"x")
        _wait(lambda: runs("swallows"), what="the swallowing handler")
        logs = headrace("logs", "swallows", project=proj, env=env)
        assert "handled: the endpoint was unreachable" in logs.stdout, logs.stdout + logs.stderr
        assert "from a program it ran" in logs.stdout and "written to descriptor 1" in logs.stdout
        # a requirement missing from the environment was installed for its function alone
        s3.put_object(Bucket="layered", Key="x", Body=b"x")
        (layered,) = _wait(lambda: runs("layered"), what="the function with requirements")
        assert json.loads(layered["result"]) == 42
        assert list((home / "layers").iterdir())
        listed = headrace("invocations", "--check-outputs", "--json", project=proj, env=env)
        flags = {r["function"]: r["wrote_outputs"] for r in json.loads(listed.stdout)}
        # seen and layered declare no output bucket
        assert flags == {"swallows": False, "seen": None, "layered": None}
        wide = {**env, "COLUMNS": "200"}
        table = headrace("invocations", "--check-outputs", project=proj, env=wide).stdout
        assert "succeeded but wrote nothing" in table, table
    finally:
        assert up.terminate() == 0, up.output()
    assert "s3" not in json.dumps(info) or not _listening(info["s3"])


def _listening(url: str) -> bool:
    import httpx

    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


def test_the_weather_handler_with_boto3_and_to_parquet_runs_unchanged(shared_data, tmp_path):
    pytest.importorskip("s3fs")
    pytest.importorskip("pygrib")
    import pandas as pd

    proj = tmp_path / "s3_weather"
    shutil.copytree(EXAMPLES / "s3_weather", proj, ignore=shutil.ignore_patterns(".headrace"))
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_POLL_INTERVAL": "0.3"}
    up = Up(proj, env, tmp_path / "up.log").start()
    try:
        info = json.loads((home / "coordinator.json").read_text())
        s3 = _client(info)
        s3.create_bucket(Bucket="curated")
        src = shared_data / "grib" / "regular_ll_msl.grib"
        s3.upload_file(str(src), "landing", "era5/msl.grib")
        out = home / "buckets" / "curated" / "weather" / "msl.grib.parquet"
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        _wait(
            lambda: ledger.list_invocations(function="weather", status="succeeded"),
            timeout=120,
            what="the weather handler",
        )
        logs = headrace("logs", "weather", project=proj, env=env).stdout
        assert out.is_file(), f"no Parquet written; the handler's log:\n{logs}"
        df = pd.read_parquet(out)
        import pygrib

        with pygrib.open(str(src)) as grbs:
            messages = [(msg.shortName, msg.values.size) for msg in grbs]
        assert len(df) == sum(size for _, size in messages)
        assert set(df["name"]) == {name for name, _ in messages}
        assert "failed on" not in logs
        listed = headrace("invocations", "--check-outputs", "--json", project=proj, env=env)
        assert [r["wrote_outputs"] for r in json.loads(listed.stdout)] == [True]
    finally:
        assert up.terminate() == 0, up.output()
