"""A Ray cluster of two nodes on 127.0.0.1 for the multi-node tests: a head (headrace's
`LocalRayHead`) and a worker node started as a separate `ray start` process with its own
resources, ports and temporary folder; the worker killed as a machine dies (`kill -9` of its
whole process group and of every process it started); the listening sockets of the cluster's
processes, found by their temporary folders (other Ray clusters run on this machine too)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from headrace.jobs.ray_head import RAY_LOOPBACK_ENV, LocalRayHead, ray_executable

FAST_DEATH = {  # the head notices a dead node within seconds, not Ray's default half minute
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}
NICE = {"RAY_worker_niceness": "0"}  # Ray's default 15 starves its workers on a loaded machine


# `ray start` of a worker node with Ray's loopback-only switch on (RAY_LOOPBACK_ENV=0, which
# its raylet and agents inherit), past the CLI's two refusals: joining a cluster at all, and
# keeping 127.0.0.1 as the node's address (it swaps in the host's network address)
LOOPBACK_START = """
import sys
from ray._private import ray_constants, services
from ray.scripts import scripts
ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_name() -> str:
    """A name of this host that resolves to 127.0.0.1 but is not spelled as loopback: a node
    in cluster mode replaces "127.0.0.1" and "localhost" by the host's network address, where
    the head (bound to 127.0.0.1) does not answer."""
    name = socket.gethostname()
    assert socket.gethostbyname(name) == "127.0.0.1", (
        f"this test needs the host name {name!r} to resolve to 127.0.0.1 (as /etc/hosts does "
        "on the test machines)"
    )
    return name


def start_head(num_cpus: int = 1, **env: str) -> LocalRayHead:
    head = LocalRayHead(
        num_cpus=num_cpus,
        object_store_mb=128,
        env={**FAST_DEATH, **NICE, "HEADRACE_TEST_NODE": "head", **env},
        start_timeout=300,
    )
    head.start()
    return head


def run_driver(head: LocalRayHead, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a Ray driver of its own, connected to `head` (`ray` imported)."""
    connect = f"import ray; ray.init(address={head.gcs_address!r}, logging_level='ERROR'); "
    return subprocess.run(
        [sys.executable, "-c", connect + code],
        env={**os.environ, **head.client_env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def alive_nodes(head: LocalRayHead) -> int:
    out = run_driver(head, "print('alive:', sum(1 for n in ray.nodes() if n['Alive']))")
    said = [x for x in out.stdout.splitlines() if x.startswith("alive: ")]
    return int(said[-1].split()[1]) if out.returncode == 0 and said else 0


@dataclass
class WorkerNode:
    """A worker node joined to `head`: `ray start --block` in a process group of its own."""

    head: LocalRayHead
    log_path: Path
    num_cpus: int = 1
    env: dict[str, str] = field(default_factory=dict)
    loopback: bool = True
    process: subprocess.Popen | None = None
    folder: str | None = None
    family: list[psutil.Process] = field(default_factory=list)

    def start(self, timeout: float = 300, tries: int = 3) -> WorkerNode:
        """Join the cluster; `ray start` gives its raylet a fixed 30 s to register, which a
        loaded machine can miss: then it is started again (a fresh folder and ports)."""
        try:
            for attempt in range(tries):
                if self._start_once(timeout) or attempt == tries - 1:
                    break
                self.stop()
        except BaseException:
            self.stop()
            raise
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[
            -3000:
        ]
        return self

    def _start_once(self, timeout: float) -> bool:
        assert self.head.gcs_address is not None
        self.folder = tempfile.mkdtemp(prefix="hr-rayw-", dir="/tmp")
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        with log:
            self.process = subprocess.Popen(
                [
                    *(
                        (sys.executable, "-c", LOOPBACK_START)
                        if self.loopback
                        else (ray_executable(),)
                    ),
                    "start",
                    f"--address={loopback_name()}:{self.head.gcs_address.rsplit(':', 1)[1]}",
                    f"--num-cpus={self.num_cpus}",
                    "--block",
                    "--node-ip-address=127.0.0.1",
                    f"--object-store-memory={128 * 2**20}",
                    f"--temp-dir={self.folder}",
                    "--disable-usage-stats",
                    # a second node on this machine: ports of its own, not Ray's fixed defaults
                    *(
                        f"--{name}={free_port()}"
                        for name in (
                            "node-manager-port",
                            "object-manager-port",
                            "dashboard-agent-listen-port",
                            "dashboard-agent-grpc-port",
                            "metrics-export-port",
                            "runtime-env-agent-port",
                        )
                    ),
                ],
                env={
                    **os.environ,
                    **FAST_DEATH,
                    **NICE,
                    **self.head.client_env,
                    # Ray's switch for loopback-only nodes refuses to join a cluster, so this
                    # node runs in cluster mode (see docs/scale-out.md for what it binds)
                    RAY_LOOPBACK_ENV: "0" if self.loopback else "1",
                    "HEADRACE_TEST_NODE": "worker",
                    **self.env,
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while alive_nodes(self.head) < 2:
            if self.process.poll() is not None:
                return False
            assert time.time() < deadline, "the worker node did not join"
            time.sleep(1)
        return True

    def processes(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        return []

    def kill(self) -> None:
        """The machine dies: every process of the node at once, with no chance to say so."""
        assert self.process is not None
        self.family = self.processes() + _processes_under(self.folder)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in self.family:  # the node's raylet and workers, wherever they moved
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        for proc in self.family + _processes_under(self.folder):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _processes_under(folder: str | None) -> list[psutil.Process]:
    """Processes whose command line names `folder` (Ray's daemonised agents of one node)."""
    if not folder:
        return []
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if any(folder in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


def cluster_processes(head: LocalRayHead, worker: WorkerNode) -> list[psutil.Process]:
    """Every process of this cluster: the two `ray start` trees and whatever names their
    folders (GCS, raylets, agents, the dashboard, workers)."""
    found: dict[int, psutil.Process] = {}
    for root in (head.pid(), worker.process.pid if worker.process else None):
        if root is None:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(root)
            for one in [proc, *proc.children(recursive=True)]:
                found[one.pid] = one
    for folder in (head.folder, worker.folder):
        for proc in _processes_under(folder):
            found[proc.pid] = proc
    return list(found.values())


def _label(proc: psutil.Process) -> str:
    """What a Ray process is: `ray::DashboardAgent`, `raylet`, `gcs_server`, `dashboard.py`."""
    line = proc.cmdline()
    if line and line[0].startswith("ray::"):
        return line[0].split()[0]
    for arg in line[:3]:
        if arg.endswith(".py") or ("/" not in arg and arg):
            return Path(arg).name
    return Path(line[0]).name if line else proc.name()


def listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process, address, port) of every TCP socket these processes listen on."""
    found = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            name = f"{_label(proc)} ({proc.pid})"
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((name, conn.laddr.ip, conn.laddr.port))
    return sorted(set(found), key=lambda x: (x[1], x[0], x[2]))


LOOPBACK_ADDRESSES = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def loopback_only(sockets: list[tuple[str, str, int]]) -> None:
    """Every server of the cluster listens on the loopback interface only."""
    assert sockets, "no listening socket found: the cluster's processes were not found"
    beyond = [s for s in sockets if s[1] not in LOOPBACK_ADDRESSES]
    assert not beyond, f"Ray servers listening beyond 127.0.0.1: {beyond}"
