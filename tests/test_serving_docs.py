"""docs/serving.md runs as written: its service.py, then its commands, in a fresh project."""

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("httptools")


def _headrace(*args: str, cwd: Path, **kw):
    return subprocess.Popen([sys.executable, "-m", "headrace.cli", *args], cwd=cwd, **kw)


@pytest.mark.slow
def test_serving_page_runs(tmp_path):
    text = (ROOT / "docs" / "serving.md").read_text()
    (service,) = re.findall(r"```python\n(.*?)```", text, re.S)
    shell = re.findall(r"```sh\n(.*?)```", text, re.S)[0].strip().splitlines()
    (tmp_path / "service.py").write_text(service)
    (tmp_path / "headrace.toml").write_text('app = "service:app"\n')
    generate, invoke, serve = (shlex.split(line)[1:] for line in shell)
    assert _headrace(*generate, cwd=tmp_path).wait(60) == 0
    ran = _headrace(*invoke, cwd=tmp_path, stdout=subprocess.PIPE)
    out, _ = ran.communicate(timeout=60)
    result = json.loads(out)
    assert json.loads(result["body"]) == {"item": "7", "tags": ["a", "b"]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve[serve.index("--port") + 1] = str(port)
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = _headrace(*serve, cwd=tmp_path, stderr=err)
        try:
            deadline = time.time() + 60
            while "serving " not in log.read_text() and time.time() < deadline:
                time.sleep(0.1)
            url = f"http://127.0.0.1:{port}"
            r = httpx.get(f"{url}/items/7?tag=a&tag=b")
            assert r.json() == {"item": "7", "tags": ["a", "b"]}
            png = b"\x89PNG\r\n\x1a\nrest"
            r = httpx.post(f"{url}/thumbnail", content=png, headers={"content-type": "image/png"})
            assert r.content == png[:4]
            assert httpx.post(f"{url}/double", json={"value": 21}).json() == {"value": 42}
            # POST /thumbnail has replicas of its own (min_replicas=1), the rest share two
            metrics = httpx.get(f"{url}/_headrace/metrics").text
            assert 'headrace_serving_route_replicas{route="POST /thumbnail"} 1.0' in metrics
            assert 'headrace_serving_route_replicas{route="GET /items/{id}"} 2.0' in metrics
            assert re.search(r"^headrace_serving_replicas 3\.0$", metrics, re.M), metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
