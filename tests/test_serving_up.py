"""`headrace up` serves the app's HTTP routes too: the port in the coordinator's info file,
requests logged to the access log, replicas gone with the coordinator."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e_helpers import Up

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "serving"
pytest.importorskip("httptools")


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return " Z " not in stat.read_text()
    except OSError:
        return False


@pytest.mark.slow
def test_up_serves_the_routes_and_drains_them_on_sigterm(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_SERVE_REPLICAS": "2"}
    env = {**env, "HEADRACE_TOKEN": ""}
    up = Up(project, env, tmp_path / "up.log").start()
    try:
        info = json.loads((home / "coordinator.json").read_text())
        url = info["serve"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), info
        r = httpx.post(f"{url}/items/42?x=1", content=b"hi", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["params"] == {"id": "42"}
        pids = {httpx.post(f"{url}/items/1", timeout=30).headers["x-pid"] for _ in range(20)}
        answers = [httpx.post(f"{url}/plus", json={"n": n}, timeout=30).json() for n in range(3)]
        assert [a["n"] for a in answers] == [1, 2, 3]
        assert httpx.get(f"{url}/malformed", timeout=30).status_code == 502
        assert httpx.get(f"{url}/_headrace/health", timeout=30).json() == {"status": "ok"}
    finally:
        assert up.terminate() == 0, up.output()
    assert "routes" in up.output()
    assert not any(_alive(int(pid)) for pid in pids), pids
    access = (home / "logs" / "access.log").read_text()
    assert '"POST /items/42" 200' in access and '"GET /malformed" 502' in access
    assert not os.path.exists(home / "coordinator.json")  # a stopped coordinator leaves none


def test_serve_setting_off_or_bad(tmp_path, monkeypatch):
    from headrace.app import load_app
    from headrace.config import load_settings
    from headrace.errors import ConfigError
    from headrace.server.http_routes import RouteServer

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADRACE_SERVE", "0.0.0.0:0")
    monkeypatch.delenv("HEADRACE_TOKEN", raising=False)
    settings = load_settings(project)
    with pytest.raises(ConfigError, match="HEADRACE_TOKEN"):
        RouteServer(settings, load_app(settings))


def _route_replicas(url: str, route: str) -> float:
    text = httpx.get(f"{url}/_headrace/metrics", timeout=30).text
    found = re.search(rf'^headrace_serving_route_replicas\{{route="{route}"\}} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


@pytest.mark.slow
def test_up_gives_routes_their_own_replica_counts(tmp_path):
    import concurrent.futures as futures

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    (project / "headrace.toml").write_text('app = "own_replicas_svc:app"\n')
    home = tmp_path / "home"
    env = {"HEADRACE_HOME": str(home), "HEADRACE_SERVE_REPLICAS": "1", "HEADRACE_TOKEN": ""}
    up = Up(project, env, tmp_path / "up.log").start()
    try:
        url = json.loads((home / "coordinator.json").read_text())["serve"]
        counts = {"GET /shared": 1, "GET /solo": 1, "GET /wide": 2, "GET /elastic": 1}
        for route, count in counts.items():
            assert _route_replicas(url, route) == count, route
        assert _route_replicas(url, "GET /wide") == 2

        def pids(path: str, n: int = 24) -> set[str]:
            with futures.ThreadPoolExecutor(8) as pool:
                got = list(pool.map(lambda _: httpx.get(f"{url}{path}", timeout=30), range(n)))
            assert {r.status_code for r in got} == {200}, [r.text for r in got]
            return {r.text for r in got}

        shared, solo, wide = pids("/shared"), pids("/solo"), pids("/wide")
        assert len(shared) == 1 and len(solo) == 1
        assert not (shared & solo) and not (shared & wide) and not (solo & wide)
        # /elastic scales within its own bounds (1..2) on its own in-flight requests
        with futures.ThreadPoolExecutor(12) as pool:
            slow = [pool.submit(httpx.get, f"{url}/elastic?s=0.2", timeout=30) for _ in range(120)]
            deadline = time.time() + 60
            while time.time() < deadline and _route_replicas(url, "GET /elastic") < 2:
                time.sleep(0.2)
            assert _route_replicas(url, "GET /elastic") == 2
            codes = {f.result().status_code for f in slow}
        assert codes == {200}
        assert _route_replicas(url, "GET /elastic") == 2  # never above its max_replicas
        assert _route_replicas(url, "GET /shared") == 1  # the others kept their counts
        assert _route_replicas(url, "GET /wide") == 2
    finally:
        assert up.terminate() == 0, up.output()


def test_route_replica_counts_are_checked_and_planned():
    from headrace.errors import AppError
    from headrace.serving.pool import PoolOptions
    from headrace.serving.pools import plan_pools
    from headrace.serving.routes import RouteSpec

    with pytest.raises(AppError, match="min_replicas=3 is above max_replicas=2"):
        RouteSpec("GET", "/a", "f", min_replicas=3, max_replicas=2)
    with pytest.raises(AppError, match=r"outside min_replicas\.\.max_replicas"):
        RouteSpec("GET", "/a", "f", replicas=5, max_replicas=2)
    with pytest.raises(AppError, match=r"is not 1\.\.256"):
        RouteSpec("GET", "/a", "f", replicas=0)
    routes = [
        RouteSpec("GET", "/shared", "f", model="digits@production"),
        RouteSpec("GET", "/own", "f", replicas=3),
        RouteSpec("GET", "/other", "g"),
        RouteSpec("GET", "/elastic", "f", max_replicas=4, model="digits@production"),
    ]
    plans = plan_pools(routes, PoolOptions(replicas=2, spares=1))
    got = [
        (p.label, p.routes, p.options.replicas, p.options.min_replicas, p.options.max_replicas)
        for p in plans
    ]
    assert got == [
        ("shared", [0, 2], 2, None, None),
        ("GET /own", [1], 3, 3, 3),
        ("GET /elastic", [3], 1, 1, 4),
    ]
    assert [p.binds_model for p in plans] == [True, False, True]
    assert all(p.options.spares == 1 for p in plans)  # the server's other options hold


def test_a_taken_serve_port_names_the_setting(tmp_path, monkeypatch):
    import socket

    from headrace.app import load_app
    from headrace.config import load_settings
    from headrace.errors import HeadraceError
    from headrace.server.http_routes import RouteServer

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("HEADRACE_SERVE", f"127.0.0.1:{port}")
        settings = load_settings(project)
        server = RouteServer(settings, load_app(settings))
        with pytest.raises(HeadraceError) as refused:
            server.start()
    text = str(refused.value)
    assert f"setting 'serve' (127.0.0.1:{port})" in text, text
    assert "HEADRACE_SERVE" in text and 'serve = "127.0.0.1:0"' in text, text
    assert "--port" not in text and "--host" not in text, text


@pytest.mark.parametrize(
    "env",
    [{"HEADRACE_SERVE": "0.0.0.0:0"}, {"HEADRACE_S3": "0.0.0.0:0", "HEADRACE_SERVE": ""}],
)
def test_up_refuses_an_open_listener_without_credentials_before_starting(
    tmp_path, monkeypatch, env
):
    from headrace.app import load_app
    from headrace.config import load_settings
    from headrace.errors import ConfigError
    from headrace.server.coordinator import Coordinator

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HEADRACE_TOKEN", "HEADRACE_S3_ACCESS_KEY_ID", "HEADRACE_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(project)
    # refused by the constructor: no executor, ledger registration or listener was started
    with pytest.raises(ConfigError, match="beyond this machine"):
        Coordinator(settings, load_app(settings))
