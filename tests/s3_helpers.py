"""An S3 endpoint over a temporary bucket root, and clients for it, for the s3api tests."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from headrace.config import load_settings
from headrace.s3api.rclone import S3Endpoint, start_endpoint

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"
REGION = "us-east-1"


def start(tmp_path: Path, *, keys: bool = True, root: Path | None = None) -> S3Endpoint:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    options = {"home": str(tmp_path / "home"), "s3": "127.0.0.1:0", "s3_region": REGION}
    if keys:
        options |= {"s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY}
    settings = load_settings(project, **options)
    return start_endpoint(root or tmp_path / "buckets", settings)


def boto3_client(endpoint: S3Endpoint, secret: str | None = None, **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.keys.access_key_id,
        aws_secret_access_key=secret or endpoint.keys.secret_access_key,
        region_name=endpoint.region,
        # as the endpoint's client environment sets it for workers (s3api.credentials)
        config=Config(
            retries={"max_attempts": 1},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ).merge(Config(**config)),
    )


def probe_wheel(folder: Path) -> Path:
    """A one-module wheel built by hand, so the install needs no network."""
    name = "headrace_layer_probe"
    files = {
        f"{name}.py": b"VALUE = 42\n",
        f"{name}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
        ),
        f"{name}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-1.0.dist-info/RECORD,,")
    files[f"{name}-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
