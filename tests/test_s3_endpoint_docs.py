"""docs/s3-endpoint.md runs as written: its headrace.toml and pipeline.py in a fresh project,
`headrace up`, then its shell commands (the port swapped for a free one)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e_helpers import Up, headrace

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
pytest.importorskip("s3fs")


def test_s3_endpoint_page_runs(tmp_path):
    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    if aws is None:
        pytest.skip("the aws CLI (awscli, in the dev extra) is not installed")
    text = (ROOT / "docs" / "s3-endpoint.md").read_text()
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (source,) = re.findall(r"```python\n(.*?)```", text, re.S)
    (shell,) = re.findall(r"```sh\n(.*?)```", text, re.S)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "headrace.toml").write_text(toml.replace("9000", port))
    (proj / "pipeline.py").write_text(source)
    (proj / "sales.csv").write_text("region,amount\nnorth,10\nsouth,32\n")
    lines = [line.replace("9000", port) for line in shell.strip().splitlines()]
    assert lines[:2] == ["headrace up", "headrace status"]
    env = {"HEADRACE_HOME": str(proj / ".headrace"), "HEADRACE_POLL_INTERVAL": "0.2"}
    up = Up(proj, env, tmp_path / "up.log").start()
    try:
        status = headrace("status", project=proj, env={**env, "COLUMNS": "200"})
        assert f"http://127.0.0.1:{port}" in status.stdout, status.stdout + status.stderr
        exports = dict(item.split("=", 1) for item in shlex.split(lines[2])[1:])
        client_env = {**os.environ, **exports, "AWS_CONFIG_FILE": os.devnull}
        outputs = []
        for line in lines[3:]:
            args = shlex.split(line)
            assert args[0] == "aws"
            if args[1:3] == ["s3", "ls"]:
                deadline = time.time() + 60
                while not (proj / ".headrace/buckets/curated/sales.parquet").exists():
                    assert time.time() < deadline, up.output()
                    time.sleep(0.2)
            done = subprocess.run(
                [aws, *args[1:]], cwd=proj, env=client_env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        assert "sales.parquet" in outputs[-1]
        import pandas as pd

        df = pd.read_parquet(proj / ".headrace/buckets/curated/sales.parquet")
        assert df.to_dict("records") == [
            {"region": "north", "amount": 10},
            {"region": "south", "amount": 32},
        ]
    finally:
        assert up.terminate() == 0, up.output()
