"""Running `headrace` as a real subprocess, the way users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def headrace(*args: str, project: Path, env: dict[str, str] | None = None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "headrace.cli", "-C", str(project), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )


class Up:
    """`headrace up` in a subprocess, with its output kept in a file for failure messages."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        self.project, self.env, self.log = project, env, log
        self.proc: subprocess.Popen | None = None
        self.home = Path(env["HEADRACE_HOME"])

    def start(self, timeout: float = 60) -> Up:
        info = self.home / "coordinator.json"
        before = info.stat().st_mtime_ns if info.exists() else None
        self.fh = open(self.log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli", "-C", str(self.project), "up", "--quiet"],
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if info.exists() and info.stat().st_mtime_ns != before:
                data = json.loads(info.read_text())
                if data.get("pid") == self.proc.pid:
                    return self
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError("coordinator did not start:\n" + self.output())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
