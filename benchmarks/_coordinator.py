"""Running `headrace up` for a benchmark: a fresh home, a subprocess, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"


class Coordinator:
    def __init__(
        self, home: Path, app_dir: Path = APP_DIR, start_timeout: float = 60, **env: str
    ) -> None:
        self.home = home
        self.start_timeout = start_timeout
        self.app_dir = app_dir
        self.env = {"HEADRACE_HOME": str(home), **env}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Coordinator:
        info = self.home / "coordinator.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli", "-C", str(self.app_dir), "up", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.home.parent / f"{self.home.name}-up.log", "w"),
            env={**os.environ, **self.env},
        )
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if info.exists() and json.loads(info.read_text()).get("pid") == self.proc.pid:
                time.sleep(0.5)  # workers warm
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("headrace up exited; see " + str(self.home) + "-up.log")
            time.sleep(0.05)
        raise RuntimeError("headrace up did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
