"""`StandaloneCluster`: a Spark standalone master and worker on 127.0.0.1, from pyspark's scripts.

pyspark's wheel ships `sbin/spark-daemon.sh` (not `start-master.sh`/`start-worker.sh`, which
only wrap it): this starts `org.apache.spark.deploy.master.Master` and
`org.apache.spark.deploy.worker.Worker` with it, as those scripts do, bound to the loopback
interface, on free ports, with logs, pid files and the worker's folder in a folder of its own.
`stop()` stops both with the same script (and kills them if they linger). For trying the
`spark-submit` runner against a real `spark://` master on one machine: a production cluster
is started by its own tooling.

    with StandaloneCluster(cores=2, memory="1g") as cluster:
        ... JobDefinition(..., runner="spark-submit", cluster=cluster.master) ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from headrace.jobs.errors import RunnerNotAvailable
from headrace.jobs.spark_runner import java_home, spark_home

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class StandaloneCluster:
    def __init__(self, *, cores: int = 2, memory: str = "1g", start_timeout: float = 90.0):
        self.cores = cores
        self.memory = memory
        self.start_timeout = start_timeout
        self.home = spark_home()
        self.folder: str | None = None
        self.port = self.ui_port = 0
        self.master = ""

    def __enter__(self) -> StandaloneCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def ui(self) -> str:
        return f"http://{LOOPBACK}:{self.ui_port}"

    def _env(self) -> dict[str, str]:
        assert self.folder is not None
        java = java_home()
        if java is None:
            raise RunnerNotAvailable("a Spark standalone cluster", "needs Java", "install a JDK")
        return {
            **os.environ,
            "SPARK_HOME": self.home,
            "JAVA_HOME": java,
            "SPARK_LOCAL_IP": LOOPBACK,
            "SPARK_LOG_DIR": f"{self.folder}/logs",
            "SPARK_PID_DIR": f"{self.folder}/pids",
            "SPARK_IDENT_STRING": "headrace",
            # the master's REST submission server would take port 6066 on every cluster
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true",
        }

    def _daemon(self, action: str, cls: str, *args: str) -> None:
        script = Path(self.home, "sbin", "spark-daemon.sh")
        subprocess.run(
            ["bash", str(script), action, cls, "1", *args],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> str:
        """Start the master and one worker; return the master URL once the worker is ALIVE."""
        self.folder = tempfile.mkdtemp(prefix="hr-spark-")
        self.port, self.ui_port = _free_port(), _free_port()
        self.master = f"spark://{LOOPBACK}:{self.port}"
        try:
            self._daemon(
                "start",
                MASTER_CLASS,
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            )
            self._daemon(
                "start",
                WORKER_CLASS,
                "--host",
                LOOPBACK,
                "--webui-port",
                str(_free_port()),
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                f"{self.folder}/work",
                self.master,
            )
            self._wait_alive()
        except BaseException:
            self.stop()
            raise
        return self.master

    def state(self) -> dict[str, Any]:
        """The master's JSON status (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as response:
            return json.loads(response.read())

    def _wait_alive(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if self.state().get("aliveworkers", 0) >= 1:
                    return
            time.sleep(0.5)
        raise RunnerNotAvailable(
            f"Spark standalone master {self.master}",
            f"has no live worker after {self.start_timeout:.0f}s",
            f"read the logs in {self.folder}/logs",
        )

    def daemon_pids(self) -> list[int]:
        if self.folder is None:
            return []
        pids = []
        for path in Path(self.folder, "pids").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(path.read_text().strip()))
        return pids

    def stop(self) -> None:
        if self.folder is None:
            return
        pids = self.daemon_pids()
        for cls in (WORKER_CLASS, MASTER_CLASS):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._daemon("stop", cls)
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                procs += [proc, *proc.children(recursive=True)]
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
