"""The S3 endpoint with the real clients users have: boto3, the aws CLI, s3fs with pandas,
pyarrow's S3FileSystem, DuckDB's httpfs. Each talks to a real `serve s3` over a temp folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import s3_helpers

pytest.importorskip("boto3")


@pytest.fixture
def endpoint(tmp_path):
    ep = s3_helpers.start(tmp_path)
    try:
        yield ep
    finally:
        ep.stop()


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "buckets"


def test_boto3_download_file_upload_file_multipart_and_paginated_listing(endpoint, root, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="landing")
    assert (root / "landing").is_dir()
    s3.head_bucket(Bucket="landing")
    assert "landing" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    big = tmp_path / "big.bin"
    data = os.urandom(13 * 1024 * 1024 + 17)
    big.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024**2)
    s3.upload_file(str(big), "landing", "in/big.bin", Config=config)
    assert (root / "landing" / "in" / "big.bin").read_bytes() == data
    # only the object: no temp left beside it
    assert sorted(p.name for p in (root / "landing" / "in").iterdir()) == ["big.bin"]

    back = tmp_path / "back.bin"
    s3.download_file("landing", "in/big.bin", str(back), Config=config)
    assert back.read_bytes() == data

    for i in range(25):
        s3.put_object(Bucket="landing", Key=f"many/{i:03d}.txt", Body=f"n{i}".encode())
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="landing", Prefix="many/", PaginationConfig={"PageSize": 10}
    )
    seen = [p.get("KeyCount") for p in pages]
    assert seen == [10, 10, 5]
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="landing", Prefix="many/", PaginationConfig={"PageSize": 10}
        )
        for o in page["Contents"]
    ]
    assert keys == [f"many/{i:03d}.txt" for i in range(25)]
    top = s3.list_objects_v2(Bucket="landing", Delimiter="/")
    assert sorted(p["Prefix"] for p in top["CommonPrefixes"]) == ["in/", "many/"]


def test_boto3_objects_etags_ranges_conditions_checksums_copy_delete(endpoint, root):
    from botocore.exceptions import ClientError

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="bkt")
    body = b"0123456789" * 100
    md5 = hashlib.md5(body).hexdigest()
    put = s3.put_object(Bucket="bkt", Key="k.txt", Body=body)
    assert put["ETag"] == f'"{md5}"'  # a single-part object's ETag is its MD5, as on S3
    head = s3.head_object(Bucket="bkt", Key="k.txt")
    assert head["ContentLength"] == 1000 and head["ETag"] == f'"{md5}"'

    part = s3.get_object(Bucket="bkt", Key="k.txt", Range="bytes=10-19")
    assert part["Body"].read() == b"0123456789"
    assert part["ContentRange"] == "bytes 10-19/1000"
    with pytest.raises(ClientError) as not_modified:
        s3.get_object(Bucket="bkt", Key="k.txt", IfNoneMatch=f'"{md5}"')
    assert not_modified.value.response["Error"]["Code"] in ("304", "NotModified")

    # checksums the SDK computes and sends (a trailer on an aws-chunked body)
    for algorithm in ("CRC32", "SHA256"):
        s3.put_object(Bucket="bkt", Key=f"sum-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
        assert (root / "bkt" / f"sum-{algorithm}").read_bytes() == body
        got = s3.get_object(Bucket="bkt", Key=f"sum-{algorithm}", ChecksumMode="ENABLED")
        assert got["Body"].read() == body  # botocore checked the returned checksum
        assert got[f"Checksum{algorithm}"]
    # a wrong Content-MD5 is refused, and nothing is written
    with pytest.raises(ClientError) as bad_md5:
        s3.put_object(Bucket="bkt", Key="bad", Body=body, ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert bad_md5.value.response["Error"]["Code"] in ("BadDigest", "InvalidDigest")
    assert not (root / "bkt" / "bad").exists()

    s3.copy_object(Bucket="bkt", Key="copy.txt", CopySource={"Bucket": "bkt", "Key": "k.txt"})
    assert (root / "bkt" / "copy.txt").read_bytes() == body
    s3.delete_object(Bucket="bkt", Key="copy.txt")
    assert not (root / "bkt" / "copy.txt").exists()
    gone = s3.delete_objects(
        Bucket="bkt", Delete={"Objects": [{"Key": "sum-CRC32"}, {"Key": "sum-SHA256"}]}
    )
    assert sorted(d["Key"] for d in gone["Deleted"]) == ["sum-CRC32", "sum-SHA256"]
    assert sorted(p.name for p in (root / "bkt").iterdir()) == ["k.txt"]


def test_get_and_head_honour_if_match_if_none_match_and_dates(endpoint):
    """The four conditional headers, alone and in S3's combinations, on GET (ranged too) and
    HEAD. rclone 1.75.2 ignores all but If-None-Match; the endpoint's front evaluates them."""
    import datetime as dt

    from botocore.exceptions import ClientError

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="bkt")
    etag = s3.put_object(Bucket="bkt", Key="k.txt", Body=b"abcdef")["ETag"]
    modified = s3.head_object(Bucket="bkt", Key="k.txt")["LastModified"]
    hour_ago, in_an_hour = modified - dt.timedelta(hours=1), modified + dt.timedelta(hours=1)

    def status(call, **conditions) -> int:
        try:
            return call(Bucket="bkt", Key="k.txt", **conditions)["ResponseMetadata"][
                "HTTPStatusCode"
            ]
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if call is s3.get_object and code not in ("304", "NotModified"):
                assert code == "PreconditionFailed", e.response
            return e.response["ResponseMetadata"]["HTTPStatusCode"]

    for call in (s3.get_object, s3.head_object):
        assert status(call, IfMatch=etag) == 200
        assert status(call, IfMatch='"0000"') == 412
        assert status(call, IfMatch="*") == 200
        assert status(call, IfNoneMatch=etag) == 304
        assert status(call, IfNoneMatch='"0000"') == 200
        assert status(call, IfUnmodifiedSince=hour_ago) == 412
        assert status(call, IfUnmodifiedSince=in_an_hour) == 200
        assert status(call, IfModifiedSince=in_an_hour) == 304
        assert status(call, IfModifiedSince=hour_ago) == 200
        # S3's documented pairs: If-Match true wins over If-Unmodified-Since false ...
        assert status(call, IfMatch=etag, IfUnmodifiedSince=hour_ago) == 200
        # ... and If-None-Match false with If-Modified-Since true is still 304
        assert status(call, IfNoneMatch=etag, IfModifiedSince=hour_ago) == 304
    ranged = s3.get_object(Bucket="bkt", Key="k.txt", Range="bytes=1-2", IfMatch=etag)
    assert ranged["Body"].read() == b"bc"
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket="bkt", Key="k.txt", Range="bytes=1-2", IfMatch='"0000"')
    assert failed.value.response["Error"]["Code"] == "PreconditionFailed"
    # a wrong signature is refused before any condition is looked at
    bad = s3_helpers.boto3_client(endpoint, secret="not-the-secret-key-000")
    with pytest.raises(ClientError) as refused:
        bad.get_object(Bucket="bkt", Key="k.txt", IfMatch='"0000"')
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_multipart_upload_is_invisible_until_complete_and_abort_leaves_nothing(endpoint, root):
    from headrace.storage import ObjectStore

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="bkt")
    store = ObjectStore(root)
    part = os.urandom(5 * 1024 * 1024)
    up = s3.create_multipart_upload(Bucket="bkt", Key="obj.bin")["UploadId"]
    e1 = s3.upload_part(Bucket="bkt", Key="obj.bin", UploadId=up, PartNumber=1, Body=part)["ETag"]
    listed = s3.list_parts(Bucket="bkt", Key="obj.bin", UploadId=up)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1]
    # mid-upload: no object, for S3 clients, for headrace's store, and every name in the
    # folder is hidden (the change watcher skips those: see test_s3api_e2e)
    assert "Contents" not in s3.list_objects_v2(Bucket="bkt")
    assert store.bucket("bkt").list() == []
    assert all(p.name.startswith(".") for p in (root / "bkt").rglob("*"))
    e2 = s3.upload_part(Bucket="bkt", Key="obj.bin", UploadId=up, PartNumber=2, Body=b"end")["ETag"]
    done = s3.complete_multipart_upload(
        Bucket="bkt",
        Key="obj.bin",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert (root / "bkt" / "obj.bin").read_bytes() == part + b"end"
    assert [o.key for o in store.bucket("bkt").list()] == ["obj.bin"]
    # S3's multipart ETag: the MD5 of the parts' binary MD5s, then "-" and the part count,
    # in the completion's answer and in every HEAD, GET and listing after it
    digests = hashlib.md5(hashlib.md5(part).digest() + hashlib.md5(b"end").digest())
    multipart = f'"{digests.hexdigest()}-2"'
    assert done["ETag"] == multipart
    assert s3.head_object(Bucket="bkt", Key="obj.bin")["ETag"] == multipart
    got = s3.get_object(Bucket="bkt", Key="obj.bin", Range="bytes=0-9", IfMatch=multipart)
    assert got["ETag"] == multipart
    assert [o["ETag"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]] == [multipart]
    assert [o["ETag"] for o in s3.list_objects(Bucket="bkt")["Contents"]] == [multipart]
    # replaced by a single PUT: the new object's ETag is its MD5 again
    s3.put_object(Bucket="bkt", Key="obj.bin", Body=b"small")
    small = f'"{hashlib.md5(b"small").hexdigest()}"'
    assert s3.head_object(Bucket="bkt", Key="obj.bin")["ETag"] == small
    assert [o["ETag"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]] == [small]

    up = s3.create_multipart_upload(Bucket="bkt", Key="aborted.bin")["UploadId"]
    s3.upload_part(Bucket="bkt", Key="aborted.bin", UploadId=up, PartNumber=1, Body=part)
    s3.abort_multipart_upload(Bucket="bkt", Key="aborted.bin", UploadId=up)
    assert sorted(p.name for p in (root / "bkt").iterdir()) == ["obj.bin"]


def test_objects_written_beside_the_endpoint_are_served_at_once(endpoint, root):
    """Handlers and `headrace put` write the folders directly; S3 clients see it right away."""
    import time

    from headrace.storage import ObjectStore

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="side")
    s3.put_object(Bucket="side", Key="dir/a.txt", Body=b"via s3")
    assert s3.get_object(Bucket="side", Key="dir/a.txt")["Body"].read() == b"via s3"
    bucket = ObjectStore(root).bucket("side")
    for i in range(20):
        bucket.put(f"dir/b{i}.txt", f"direct {i}".encode())
        bucket.put("dir/a.txt", f"rewritten {i}".encode())
        time.sleep(0.02)
        assert s3.get_object(Bucket="side", Key=f"dir/b{i}.txt")["Body"].read() == (
            f"direct {i}".encode()
        )
        assert s3.get_object(Bucket="side", Key="dir/a.txt")["Body"].read() == (
            f"rewritten {i}".encode()
        )
        listed = s3.list_objects_v2(Bucket="side", Prefix="dir/")["Contents"]
        assert len(listed) == i + 2


def test_a_put_in_progress_is_never_visible(endpoint, root):
    """A slow single PUT: while its body streams in, the folder holds only a hidden name."""
    import threading
    import time

    import httpx

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="slow")
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "slow", "Key": "obj.bin"}, ExpiresIn=60
    )
    chunk, chunks = b"x" * 65536, 20
    half_sent = threading.Event()

    def body():
        for i in range(chunks):
            if i == chunks // 2:
                half_sent.set()
            time.sleep(0.05)
            yield chunk

    result: list[int] = []
    sender = threading.Thread(
        target=lambda: result.append(
            httpx.put(
                url, content=body(), headers={"Content-Length": str(len(chunk) * chunks)}
            ).status_code
        )
    )
    sender.start()
    assert half_sent.wait(10)
    time.sleep(0.1)
    names = [p.name for p in (root / "slow").rglob("*")]
    assert names and all(name.startswith(".rclone_temp_") for name in names), names
    sender.join(30)
    assert result == [200]
    assert [p.name for p in (root / "slow").iterdir()] == ["obj.bin"]
    assert (root / "slow" / "obj.bin").stat().st_size == len(chunk) * chunks


def test_signatures_are_verified_and_presigned_urls_work(endpoint):
    import httpx
    from botocore.exceptions import ClientError

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="secret.txt", Body=b"hidden")
    wrong = s3_helpers.boto3_client(endpoint, secret="not-the-secret-key-000")
    with pytest.raises(ClientError) as denied:
        wrong.get_object(Bucket="bkt", Key="secret.txt")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # unsigned: refused (400 from this server, where S3 says 403)
    assert httpx.get(f"{endpoint.url}/bkt/secret.txt").status_code in (400, 403)

    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "secret.txt"}, ExpiresIn=60
    )
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"hidden"
    assert httpx.get(url.replace("secret.txt", "other.txt")).status_code == 403
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "bkt", "Key": "up.txt"}, ExpiresIn=60
    )
    assert httpx.put(put_url, content=b"via url").status_code == 200
    assert s3.get_object(Bucket="bkt", Key="up.txt")["Body"].read() == b"via url"


def test_aws_cli(endpoint, root, tmp_path):
    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    if aws is None:
        pytest.skip("the aws CLI (awscli, in the dev extra) is not installed")
    env = {**os.environ, **endpoint.client_environment(), "AWS_CONFIG_FILE": os.devnull}
    env.pop("AWS_PROFILE", None)

    def run(*args: str) -> str:
        out = subprocess.run(
            [aws, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    run("s3", "mb", "s3://cli")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # over the CLI's 8 MB multipart threshold
    run("s3", "cp", str(src), "s3://cli/dir/big.bin")
    assert (root / "cli" / "dir" / "big.bin").read_bytes() == src.read_bytes()
    assert "big.bin" in run("s3", "ls", "s3://cli/dir/")
    run("s3", "cp", "s3://cli/dir/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    run("s3api", "head-object", "--bucket", "cli", "--key", "dir/big.bin")
    run("s3", "rm", "s3://cli/dir/big.bin")
    assert not (root / "cli" / "dir" / "big.bin").exists()


def test_s3fs_with_pandas_to_parquet_and_read_parquet(endpoint, root, monkeypatch):
    pytest.importorskip("s3fs")
    import pandas as pd

    for name, value in endpoint.client_environment().items():
        monkeypatch.setenv(name, value)
    s3_helpers.boto3_client(endpoint).create_bucket(Bucket="curated")
    df = pd.DataFrame({"station": ["a", "b", "c"], "t": [1.5, 2.5, -3.0]})
    # no storage_options: the endpoint and keys come from the environment, as in a worker
    df.to_parquet("s3://curated/obs/t.parquet", index=False)
    assert (root / "curated" / "obs" / "t.parquet").is_file()
    back = pd.read_parquet("s3://curated/obs/t.parquet")
    pd.testing.assert_frame_equal(back, df)


def test_pyarrow_s3filesystem(endpoint, root, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    for name, value in endpoint.client_environment().items():
        monkeypatch.setenv(name, value)
    s3_helpers.boto3_client(endpoint).create_bucket(Bucket="arrow")
    # endpoint, region and keys from the environment; S3FileSystem() itself ignores
    # AWS_ENDPOINT_URL in this pyarrow, so built from a URI (as pandas does) or given it
    s3, _ = fs.FileSystem.from_uri("s3://arrow")
    direct = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    table = pa.table({"x": list(range(1000)), "y": [str(i) for i in range(1000)]})
    pq.write_table(table, "arrow/t.parquet", filesystem=s3)
    assert (root / "arrow" / "t.parquet").is_file()
    assert pq.read_table("arrow/t.parquet", filesystem=s3).equals(table)
    assert pq.read_table("arrow/t.parquet", filesystem=direct).equals(table)
    infos = s3.get_file_info(fs.FileSelector("arrow", recursive=True))
    assert [i.path for i in infos] == ["arrow/t.parquet"]


def test_duckdb_httpfs(endpoint, root):
    import duckdb
    import pandas as pd

    con = duckdb.connect()
    try:
        con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        pytest.skip(
            f"DuckDB {duckdb.__version__}'s httpfs extension is not installed: DuckDB downloads "
            "it from its own site, which this machine cannot reach, and PyPI's "
            "duckdb-extension-httpfs has no build for this DuckDB version "
            f"({str(exc).splitlines()[0][:120]})"
        )
    s3_helpers.boto3_client(endpoint).create_bucket(Bucket="duck")
    pd.DataFrame({"v": [1, 2, 3]}).to_parquet(root / "duck" / "v.parquet")
    host = endpoint.url.removeprefix("http://")
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{endpoint.keys.access_key_id}', "
        f"SECRET '{endpoint.keys.secret_access_key}', REGION '{endpoint.region}', "
        f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    assert con.execute("SELECT sum(v) FROM 's3://duck/v.parquet'").fetchone() == (6,)
    con.execute("COPY (SELECT 42 AS answer) TO 's3://duck/answer.parquet'")
    assert pd.read_parquet(root / "duck" / "answer.parquet")["answer"].tolist() == [42]
