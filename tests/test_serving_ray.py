"""`serving = "ray"`: the same handlers as a Ray Serve deployment behind headrace's front —
the same answers, batches of requests per Ray call, a roll-over with no failed request and an
automatic rollback of a broken version."""

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.test_serving_server import APP, Serve, _models, _push

pytest.importorskip("httptools")
pytest.importorskip("sklearn")
pytest.importorskip("ray.serve", exc_type=ImportError)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    shutil.copytree(APP, folder)
    return folder


def _expected(project: Path, version: int, rows: list[list[float]]) -> list[int]:
    code = f"""
import json, sys
import headrace.models as models
model = models.load("digits", {version})
print(json.dumps([int(x) for x in model.predict(json.loads(sys.stdin.read()))]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        input=__import__("json").dumps(rows),
        capture_output=True,
        text=True,
        check=True,
    )
    return __import__("json").loads(out.stdout)


def test_ray_serve_answers_as_local_replicas_and_rolls_over(project):
    from sklearn.datasets import load_digits

    v1 = _push(project, 64)
    _models(project, "promote", "digits", str(v1))
    with open(project / "headrace.toml", "a") as toml:
        toml.write('serving = "ray"\n')  # as docs/serving.md sets it
    s = Serve(
        project,
        "--replicas",
        "2",
        "--no-access-log",
        env={"HEADRACE_APP": "model_svc:app"},
    )
    try:
        s.wait_ready(timeout=180)
        rows = load_digits().data[:40].tolist()
        with httpx.Client(base_url=s.url, timeout=30) as client:
            got = [client.post("/classify", json=row).json() for row in rows]
            assert [g["label"] for g in got] == _expected(project, v1, rows)
            assert {g["model"] for g in got} == {f"digits:{v1}"}
            # a v1 handler's answer without statusCode: 502, as API Gateway (and local replicas)
            malformed = client.get("/which")
            assert malformed.status_code == 502
            assert malformed.json() == {"message": "Internal server error"}
        deadline = time.time() + 30
        while time.time() < deadline and s.metric("headrace_serving_replicas") != 2:
            time.sleep(0.5)
        assert s.metric("headrace_serving_replicas") == 2

        stop = threading.Event()
        seen: list[tuple[int, str | None]] = []

        def load() -> None:
            with httpx.Client(base_url=s.url, timeout=60) as client:
                while not stop.is_set():
                    r = client.post("/classify", json=rows[0])
                    model = r.json().get("model") if r.status_code == 200 else None
                    seen.append((r.status_code, model))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            v2 = _push(project, 64)
            _models(project, "promote", "digits", str(v2))
            deadline = time.time() + 180
            while time.time() < deadline and f"serving digits:{v2}" not in s.text():
                time.sleep(0.5)
            assert f"serving digits:{v2}" in s.text(), s.text()
            mark = len(seen)
            time.sleep(1.0)
            assert {m for _, m in seen[mark:]} == {f"digits:{v2}"}
            assert {c for c, _ in seen} == {200}, "no request failed during the roll-over"
            v3 = _push(project, 3)  # its predict fails on 64 values
            _models(project, "promote", "digits", str(v3))
            deadline = time.time() + 180
            back = f"rolled digits@production back to version {v2}"
            while time.time() < deadline and back not in s.text():
                time.sleep(0.5)
            assert back in s.text(), s.text()
            time.sleep(1.0)
            mark = len(seen)
            time.sleep(1.0)
            assert {(c, m) for c, m in seen[mark:]} == {(200, f"digits:{v2}")}
        finally:
            stop.set()
            for t in threads:
                t.join()
    finally:
        assert s.stop() == 0, s.text()
    assert "stopped" in s.text()
    # the local Ray it started is gone with it
    leftovers = subprocess.run(
        ["pgrep", "-f", f"headrace-serve-{s.proc.pid}-"], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], leftovers


def _serve_applications(head) -> list[str]:
    """The Serve applications running on `head`, asked by a driver of its own."""
    from tests.ray_nodes import run_driver

    out = run_driver(head, "from ray import serve; print(sorted(serve.status().applications))")
    assert out.returncode == 0, out.stderr[-2000:]
    return __import__("ast").literal_eval(out.stdout.strip().splitlines()[-1])


def test_ray_serve_through_a_ray_client_address(project):
    """`serving = "ray://HOST:PORT"`: the front joins a Ray started apart (`ray start --head`)
    through its Ray Client server, answers as local replicas do, and on exit deletes its own
    Serve application and leaves the cluster running."""
    from sklearn.datasets import load_digits

    from headrace.jobs.ray_head import LocalRayHead

    v1 = _push(project, 64)
    _models(project, "promote", "digits", str(v1))
    head = LocalRayHead(num_cpus=2, object_store_mb=128, start_timeout=300)
    head.start()
    try:
        with open(project / "headrace.toml", "a") as toml:
            toml.write(f'serving = "{head.client_address}"\n')
        s = Serve(
            project,
            "--replicas",
            "2",
            "--no-access-log",
            env={"HEADRACE_APP": "model_svc:app", **head.client_env},
        )
        try:
            s.wait_ready(timeout=300)
            rows = load_digits().data[:30].tolist()
            with httpx.Client(base_url=s.url, timeout=60) as client:
                got = [client.post("/classify", json=row).json() for row in rows]
            assert [g["label"] for g in got] == _expected(project, v1, rows)
            assert {g["model"] for g in got} == {f"digits:{v1}"}
            assert any(a.startswith("headrace-serve-") for a in _serve_applications(head))
        finally:
            assert s.stop() == 0, s.text()
        assert "stopped" in s.text()
        # its application is gone; the cluster, not the front's, still runs
        assert not [a for a in _serve_applications(head) if a.startswith("headrace-serve-")]
        assert head.process is not None and head.process.poll() is None
    finally:
        head.stop()
