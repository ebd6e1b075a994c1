"""`LocalRayHead`: a one-node Ray cluster on 127.0.0.1, for Ray jobs that name no cluster.

It is Ray's own `ray start --head --block`, with every server bound to the loopback interface
(`--node-ip-address`, `--dashboard-host`, and Ray's switch for loopback-only nodes), ports
chosen free so that several heads can run side by side, and its state in a temporary folder
of its own. `--block` keeps `ray start` in the foreground as the owner of the cluster: on
SIGTERM it shuts every Ray process down. That is what ties the cluster to whoever started it:

* `stop()` sends it SIGTERM, waits, then kills whatever Ray process is left (its agents can
  otherwise linger for a minute) and removes the folder;
* it requires a token of its own (Ray's token authentication, `RAY_AUTH_MODE=token`) from
  every client, its job API included (`headers`): other users of the machine cannot submit
  to it, and a token in `~/.ray` (which turns token mode on) does not lock us out;
* `ray start` gets `PR_SET_PDEATHSIG(SIGTERM)` on Linux, so if the process that started it dies
  (a coordinator's worker killed with the coordinator), the cluster goes with it. The kernel
  ties this to the starting *thread*, as for job processes (see `subprocess_runner`).

Starting takes a few seconds (about 6 s on a 2-core machine): share one cluster between jobs
by starting it once (`headrace jobs submit --engine ray --cluster http://127.0.0.1:8265`, or
the `ray_address` setting) when that matters.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from headrace.jobs.errors import RunnerNotAvailable

LOOPBACK = "127.0.0.1"
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_PR_SET_PDEATHSIG = 1
_LIBC = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None, use_errno=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("ray")
    if found is None:
        raise RunnerNotAvailable(
            "the ray job runner",
            "needs Ray, which is not installed in this environment",
            "pip install 'headrace[ray]'",
        )
    return found


class LocalRayHead:
    """A Ray head on 127.0.0.1 with `num_cpus` CPUs; `address` is its job API (dashboard) URL.

    `env` adds variables to every Ray process (headrace puts the job's id there, so a worker
    taking over a dead worker's job finds and stops the cluster too)."""

    def __init__(
        self,
        *,
        num_cpus: int = 2,
        object_store_mb: int = 256,
        env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.address: str | None = None
        self.gcs_address: str | None = None  # host:port that `ray start --address` joins
        self.client_address: str | None = None  # ray://host:port of its Ray Client server
        self.token = secrets.token_hex(32)
        self.process: subprocess.Popen | None = None
        self.folder: str | None = None

    def __enter__(self) -> LocalRayHead:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> str:
        """Start the cluster and wait until its job API answers; return that address."""
        ray = ray_executable()
        # short: Ray puts unix sockets in it, whose paths are limited to 107 bytes
        self.folder = tempfile.mkdtemp(prefix="hr-ray-", dir="/tmp")
        dashboard = _free_port()
        self.gcs_address = f"{LOOPBACK}:{_free_port()}"
        client_port = _free_port()
        self.client_address = f"ray://{LOOPBACK}:{client_port}"
        argv = [
            ray,
            "start",
            "--head",
            "--block",
            f"--num-cpus={self.num_cpus}",
            f"--node-ip-address={LOOPBACK}",
            f"--port={self.gcs_address.rsplit(':', 1)[1]}",
            "--include-dashboard=true",
            f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client_port}",
            f"--dashboard-agent-listen-port={_free_port()}",
            # given, not left to Ray: with a port of its choosing the Ray Client server is told
            # port 0 and cannot start a client's session (its runtime environment)
            f"--runtime-env-agent-port={_free_port()}",
            f"--object-store-memory={self.object_store_mb * 2**20}",
            f"--temp-dir={self.folder}",
            "--disable-usage-stats",
        ]
        env = {
            **os.environ,
            **self.env,
            RAY_LOOPBACK_ENV: "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        log = open(Path(self.folder, "ray-start.log"), "wb")  # noqa: SIM115 (the child owns it)
        with log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        self.address = f"http://{LOOPBACK}:{dashboard}"
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.address

    def _wait_ready(self) -> None:
        from ray.job_submission import JobSubmissionClient

        assert self.process is not None and self.address is not None
        deadline = time.monotonic() + self.start_timeout
        problem = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RunnerNotAvailable(
                    "the local Ray head",
                    f"`ray start` exited with code {self.process.returncode}: {self.log_tail()}",
                    "read the log above; free memory or ports and try again",
                )
            try:
                JobSubmissionClient(self.address, headers=self.headers).list_jobs()
                return
            except Exception as exc:  # not up yet: connection refused, 503 while it loads
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            time.sleep(0.2)
        raise RunnerNotAvailable(
            "the local Ray head",
            f"did not answer at {self.address} within {self.start_timeout:.0f}s ({problem})",
            f"check the machine's load; `ray start` logged: {self.log_tail()}",
        )

    @property
    def client_env(self) -> dict[str, str]:
        """What a process joining the cluster needs (a driver's `ray.init(gcs_address)`, a
        worker node's `ray start --address`): its token, and loopback-only mode."""
        return {RAY_LOOPBACK_ENV: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to be let in (`JobSubmissionClient(address, headers=...)`)."""
        return {"Authorization": f"Bearer {self.token}"}

    def log_tail(self, lines: int = 5) -> str:
        if self.folder is None:
            return ""
        with contextlib.suppress(OSError):
            text = Path(self.folder, "ray-start.log").read_text(errors="replace")
            return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:])
        return ""

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, grace: float = 30.0) -> None:
        """Shut the cluster down and leave no Ray process or folder of it behind."""
        process, self.process = self.process, None
        if process is not None:
            try:
                family = psutil.Process(process.pid).children(recursive=True)
            except psutil.Error:
                family = []
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            family += self._strays()
            _, alive = psutil.wait_procs(family, timeout=2)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _strays(self) -> list[psutil.Process]:
        """Ray processes of this cluster that left the process tree (daemonised agents)."""
        if self.folder is None:
            return []
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if any(self.folder in arg for arg in proc.info["cmdline"] or ()):
                    found.append(proc)
        return found


def _die_with_parent(parent_pid: int):  # type: ignore[no-untyped-def]
    libc = _LIBC

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent_pid:
                os._exit(143)

    return setup
