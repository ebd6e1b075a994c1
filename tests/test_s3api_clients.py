"""The S3 endpoint with the real clients users have: boto3, the aws CLI, s3fs with pandas,
pyarrow's S3FileSystem, DuckDB's httpfs. Each talks to a real `serve s3` over a temp folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def test_pyarrow_writes_with_the_sdks_default_checksums(endpoint, root, monkeypatch):
    """Set up as the docs' "Try it" does (endpoint, keys, region only): pyarrow's SDK then
    sends its uploads chunked with trailing checksums and no Content-Length, which rclone
    alone refuses (411); the front reads such a body whole and sends it on with its length."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    env = endpoint.client_environment()
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, env[name])
    for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        monkeypatch.delenv(name, raising=False)
    s3_helpers.boto3_client(endpoint).create_bucket(Bucket="raw")
    direct = fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"])
    small = pa.table({"a": list(range(3))})
    pq.write_table(small, "raw/t0.parquet", filesystem=direct)
    assert pq.read_table(root / "raw" / "t0.parquet").equals(small)
    # incompressible and larger than the front keeps in memory: parts go through a temp file
    noise = np.random.default_rng(7).integers(0, 2**63, size=3_000_000, dtype=np.int64)
    big = pa.table({"n": noise})
    pq.write_table(big, "raw/big.parquet", filesystem=direct, compression="none")
    assert (root / "raw" / "big.parquet").stat().st_size > 20_000_000
    assert pq.read_table(root / "raw" / "big.parquet").equals(big)
    with direct.open_output_stream("raw/blob.bin") as out:
        out.write(b"x" * 12_000_000)
    assert (root / "raw" / "blob.bin").read_bytes() == b"x" * 12_000_000
    # as the stranger wrote it (pyarrow's or s3fs's writer, whichever pandas picks)
    pd.DataFrame({"a": range(3)}).to_parquet("s3://raw/t1.parquet")
    assert pd.read_parquet(root / "raw" / "t1.parquet")["a"].tolist() == [0, 1, 2]


def test_folder_markers_keep_their_slash_and_uploads_under_them_work(endpoint, root, tmp_path):
    from botocore.exceptions import ClientError

    s3 = s3_helpers.boto3_client(endpoint)
    s3.create_bucket(Bucket="curated")
    empty_md5 = '"' + hashlib.md5(b"").hexdigest() + '"'
    # what the AWS console's "Create folder" sends; rclone alone made a file `newdir`
    assert s3.put_object(Bucket="curated", Key="newdir/", Body=b"")["ETag"] == empty_md5
    assert (root / "curated" / "newdir").is_dir()
    s3.put_object(Bucket="curated", Key="newdir/child.txt", Body=b"hello")
    s3.put_object(Bucket="curated", Key="top.txt", Body=b"t")
    listed = s3.list_objects_v2(Bucket="curated")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [
        ("newdir/", 0, empty_md5),
        ("newdir/child.txt", 5, '"' + hashlib.md5(b"hello").hexdigest() + '"'),
        ("top.txt", 1, '"' + hashlib.md5(b"t").hexdigest() + '"'),
    ]
    v1 = s3.list_objects(Bucket="curated")["Contents"]
    assert [o["Key"] for o in v1] == ["newdir/", "newdir/child.txt", "top.txt"]
    top = s3.list_objects_v2(Bucket="curated", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["newdir/"]
    inside = s3.list_objects_v2(Bucket="curated", Prefix="newdir/", Delimiter="/")
    assert [o["Key"] for o in inside["Contents"]] == ["newdir/", "newdir/child.txt"]
    head = s3.head_object(Bucket="curated", Key="newdir/")
    assert (head["ContentLength"], head["ETag"]) == (0, empty_md5)
    assert s3.get_object(Bucket="curated", Key="newdir/")["Body"].read() == b""
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket="curated", Key="nothere/")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")

    # a `/` key with data cannot be a folder and a file: 400 naming the key and the reason
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="curated", Key="data/", Body=b"x")
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "InvalidArgument" and "'data/'" in error["Message"]
    assert not (root / "curated" / "data").exists()
    with pytest.raises(ClientError) as clash:
        s3.put_object(Bucket="curated", Key="top.txt/", Body=b"")
    assert "'top.txt'" in clash.value.response["Error"]["Message"]
    assert (root / "curated" / "top.txt").read_bytes() == b"t"
    # the front checks the signatures of the requests it answers itself
    forged = s3_helpers.boto3_client(endpoint, secret="not-the-secret-0123456789")
    with pytest.raises(ClientError) as denied:
        forged.put_object(Bucket="curated", Key="forged/", Body=b"")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert not (root / "curated" / "forged").exists()
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "curated", "Key": "signed/"}, ExpiresIn=60
    )
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="PUT")) as r:
        assert r.status == 200
    assert (root / "curated" / "signed").is_dir()
    expired = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "curated", "Key": "late/"}, ExpiresIn=1
    )
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as late:
        urllib.request.urlopen(urllib.request.Request(expired, data=b"", method="PUT"))
    assert late.value.code == 403 and not (root / "curated" / "late").exists()

    # the marker outlives its last child (rclone removes folders left empty), and deleting
    # it removes the folder once empty
    s3.delete_object(Bucket="curated", Key="newdir/child.txt")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="curated")["Contents"]] == [
        "newdir/",
        "signed/",
        "top.txt",
    ]
    s3.delete_object(Bucket="curated", Key="newdir/")
    assert not (root / "curated" / "newdir").exists()
    s3.delete_object(Bucket="curated", Key="newdir/")  # deleting what is not there: 204
    # the aws CLI, as the stranger ran it
    if shutil.which("aws") or (Path(sys.executable).parent / "aws").exists():
        aws = shutil.which("aws") or str(Path(sys.executable).parent / "aws")
        env = dict(os.environ) | endpoint.client_environment()
        subprocess.run(
            [aws, "s3api", "put-object", "--bucket", "curated", "--key", "clidir/"],
            env=env,
            check=True,
            capture_output=True,
        )
        src = tmp_path / "sales.csv"
        src.write_text("a,b\n1,2\n")
        subprocess.run(
            [aws, "s3", "cp", str(src), "s3://curated/clidir/sales.csv"],
            env=env,
            check=True,
            capture_output=True,
        )
        assert (root / "curated" / "clidir" / "sales.csv").read_text() == "a,b\n1,2\n"


def test_pyarrow_create_dir_and_delete_file_keep_folders(endpoint, root, monkeypatch):
    """pyarrow makes folder markers itself: `create_dir`, and after `delete_file` of a
    folder's last file, a marker so the folder stays."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    for name, value in endpoint.client_environment().items():
        monkeypatch.setenv(name, value)
    s3_helpers.boto3_client(endpoint).create_bucket(Bucket="arrow")
    s3 = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    s3.create_dir("arrow/ds/part=1")
    assert s3.get_file_info("arrow/ds/part=1").type == fs.FileType.Directory
    table = pa.table({"x": [1, 2, 3]})
    pq.write_table(table, "arrow/ds/part=1/a.parquet", filesystem=s3)
    s3.delete_file("arrow/ds/part=1/a.parquet")
    assert s3.get_file_info("arrow/ds/part=1").type == fs.FileType.Directory
    pq.write_table(table, "arrow/ds/part=1/b.parquet", filesystem=s3)
    assert pq.read_table("arrow/ds/part=1/b.parquet", filesystem=s3).equals(table)
    s3.delete_dir("arrow/ds")
    assert not (root / "arrow" / "ds").exists()


def _crc(algorithm: str, data: bytes) -> bytes:
    """The checksum S3 names `algorithm`, as its headers carry it (base64)."""
    import base64
    import zlib

    from awscrt import checksums

    value = {
        "crc32": lambda: zlib.crc32(data).to_bytes(4, "big"),
        "crc32c": lambda: checksums.crc32c(data).to_bytes(4, "big"),
        "crc64nvme": lambda: checksums.crc64nvme(data).to_bytes(8, "big"),
    }[algorithm]()
    return base64.b64encode(value)


def _holds_only(folder: Path, names: list[str]) -> None:
    """`folder` holds these files and, once rclone has noticed an upload cut short and
    removed its hidden temp file (a moment after the refusal was answered), nothing else."""
    deadline = time.monotonic() + 10
    while (found := sorted(p.name for p in folder.iterdir())) != names:
        if time.monotonic() > deadline or not set(names) <= set(found):
            break
        time.sleep(0.05)
    assert found == names


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
@pytest.mark.parametrize("length", ["Content-Length", "chunked"])
def test_an_aws_chunked_upload_with_a_wrong_trailing_checksum_is_refused(
    tmp_path, algorithm, length
):
    """An aws-chunked body, its checksum in a trailer, sent with its length (as boto3 sends
    it) or without (as pyarrow's SDK does): stored when the trailer matches, refused with
    BadDigest when it does not, and nothing stored (rclone alone stores both)."""
    import http.client
    import urllib.parse

    ep = s3_helpers.start(tmp_path, keys=False)
    try:
        s3_helpers.boto3_client(ep).create_bucket(Bucket="sums")
        where = urllib.parse.urlparse(ep.url)
        data = b"hello world " * 100_000
        answers = {}
        for name, sent in (("good", _crc(algorithm, data)), ("bad", _crc(algorithm, b"x"))):
            trailer = f"x-amz-checksum-{algorithm}"
            body = b"%x\r\n%s\r\n0\r\n%s:%s\r\n\r\n" % (
                len(data),
                data,
                trailer.encode(),
                sent,
            )
            conn = http.client.HTTPConnection(where.hostname, where.port)
            conn.putrequest("PUT", f"/sums/{name}.txt")
            headers = {
                "Content-Encoding": "aws-chunked",
                "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                "x-amz-decoded-content-length": str(len(data)),
                "x-amz-trailer": trailer,
                "Authorization": "AWS4-HMAC-SHA256 Credential=headrace/20261207/us-east-1/s3/"
                "aws4_request, SignedHeaders=host, Signature=00",
            }
            if length == "chunked":
                headers["Transfer-Encoding"] = "chunked"
            else:
                headers["Content-Length"] = str(len(body))
            for header, value in headers.items():
                conn.putheader(header, value)
            conn.endheaders()
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if length == "chunked" else piece)
            if length == "chunked":
                conn.send(b"0\r\n\r\n")
            answer = conn.getresponse()
            answers[name] = (answer.status, answer.read(), answer.getheader(trailer))
            conn.close()
        assert answers["good"][0] == 200
        assert answers["good"][2] == _crc(algorithm, data).decode()  # answered, as S3 does
        assert (tmp_path / "buckets" / "sums" / "good.txt").read_bytes() == data
        assert answers["bad"][0] == 400 and b"<Code>BadDigest</Code>" in answers["bad"][1]
        assert trailer.encode() in answers["bad"][1]
        _holds_only(tmp_path / "buckets" / "sums", ["good.txt"])
    finally:
        ep.stop()


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_boto3_crc32c_and_crc64nvme_checksums_are_verified_and_answered(endpoint, root, algorithm):
    """The checksums users choose in boto3 (ChecksumAlgorithm=...), on PutObject and on
    UploadPart: answered as S3 answers them, and a wrong one refused with BadDigest, nothing
    stored."""
    from botocore.exceptions import ClientError

    s3 = s3_helpers.boto3_client(
        endpoint,
        request_checksum_calculation="when_supported",  # the SDKs' default since 2025
        response_checksum_validation="when_supported",
    )
    s3.create_bucket(Bucket="sums")
    field = f"Checksum{algorithm}"
    data = os.urandom(5 * 1024 * 1024 + 11)
    right = _crc(algorithm.lower(), data).decode()
    wrong = _crc(algorithm.lower(), b"not the data").decode()

    put = s3.put_object(Bucket="sums", Key="whole", Body=data, ChecksumAlgorithm=algorithm)
    assert put[field] == right
    got = s3.get_object(Bucket="sums", Key="whole", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got[field] == right  # botocore checked it too
    assert s3.put_object(Bucket="sums", Key="given", Body=data, **{field: right})[field] == right

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="sums", Key="wrong", Body=data, **{field: wrong})
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert "wrong" in refused.value.response["Error"]["Message"]

    upload = s3.create_multipart_upload(Bucket="sums", Key="parts", ChecksumAlgorithm=algorithm)
    ids = {"Bucket": "sums", "Key": "parts", "UploadId": upload["UploadId"]}
    part = s3.upload_part(**ids, PartNumber=1, Body=data, ChecksumAlgorithm=algorithm)
    assert part[field] == right
    with pytest.raises(ClientError) as refused:
        s3.upload_part(**ids, PartNumber=2, Body=data, **{field: wrong})
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    listed = s3.list_parts(**ids)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1]
    s3.complete_multipart_upload(
        **ids, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"], field: right}]}
    )
    assert (root / "sums" / "parts").read_bytes() == data
    _holds_only(root / "sums", ["given", "parts", "whole"])


def test_a_ranged_get_of_a_checksummed_object_passes_the_sdks_response_validation(endpoint):
    """rclone returns the whole object's checksum with a range of it; boto3 (validating
    responses by default since 1.36) then rejected every ranged GET of such an object."""
    s3 = s3_helpers.boto3_client(
        endpoint,
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    )
    s3.create_bucket(Bucket="ranges")
    data = bytes(range(256)) * 40
    for algorithm in ("CRC32", "CRC32C"):
        s3.put_object(Bucket="ranges", Key=algorithm, Body=data, ChecksumAlgorithm=algorithm)
        for mode in ({}, {"ChecksumMode": "ENABLED"}):
            got = s3.get_object(Bucket="ranges", Key=algorithm, Range="bytes=10-109", **mode)
            assert got["Body"].read() == data[10:110]
            assert f"Checksum{algorithm}" not in got
        whole = s3.get_object(Bucket="ranges", Key=algorithm, ChecksumMode="ENABLED")
        assert whole["Body"].read() == data and whole[f"Checksum{algorithm}"]
