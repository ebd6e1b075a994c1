"""The HTTP front's limits as a client meets them over a raw socket: oversized heads (431),
chunked bodies over --max-body (413), slow clients (408 after --read-timeout), each answered,
closed, counted in the metrics and written to the access log."""

import concurrent.futures as futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "serving"
pytest.importorskip("httptools")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Front:
    def __init__(
        self, project: Path, *args: str, tmp: Path | None = None, app: str | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = project / "serve.log"
        env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
        if tmp is not None:
            env["TMPDIR"] = str(tmp)
        if app is not None:
            env["HEADRACE_APP"] = app
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
                "--replicas",
                "1",
                "--max-body",
                "1000",
                "--max-header",
                "4096",
                "--read-timeout",
                "1",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115 (the child holds it)
            env=env,
        )

    def wait_ready(self) -> None:
        deadline = time.time() + 60
        while "serving " not in self.text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"serve did not start:\n{self.text()}")
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def raw(self, *parts: bytes, pause: float = 0.0) -> bytes:
        """Send the parts (pausing between them) and read until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            try:
                for part in parts:
                    s.sendall(part)
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us mid-send: the answer is still to be read
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
            return out

    def requests_total(self, code: int) -> float:
        text = httpx.get(f"{self.url}/_headrace/metrics").text
        found = re.search(
            rf'^headrace_http_requests_total\{{code="{code}",route="-"\}} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/_headrace/metrics").text
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, text
        return float(found.group(1))


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    project = tmp_path_factory.mktemp("limits") / "project"
    shutil.copytree(APP, project)
    server = Front(project)
    server.wait_ready()
    yield server
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def _access_lines(front: Front, code: int) -> list[str]:
    time.sleep(0.7)  # the access log is written every half second
    return [line for line in front.text().splitlines() if f'" {code} ' in line]


def test_a_head_over_max_header_gets_431_and_is_closed(front):
    before = front.requests_total(431)
    # one endless header line: refused once 4 KiB of head arrived, not read to its end
    answer = front.raw(
        b"POST /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: ", *[b"a" * 1024] * 64, pause=0.005
    )
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"connection: close" in answer
    assert front.requests_total(431) == before + 1
    assert _access_lines(front, 431)
    # a head under the limit is served as before
    ok = httpx.post(f"{front.url}/items/1", content=b"hi", headers={"x-fine": "a" * 2000})
    assert ok.status_code == 200


def test_a_whole_head_over_max_header_in_one_read_gets_431(front):
    # a head that ends inside the read that passes the limit is refused too, whether the
    # bytes are in a header or in the query string
    for head in (
        b"POST /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n",
        b"POST /items/1?q=" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4090 + b"\r\n\r\n",
    ):
        answer = front.raw(head)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    # at the limit, not over it, it is served
    line = b"POST /items/1 HTTP/1.1\r\n"
    fill = (
        4096
        - len(line)
        - len(b"Host: x\r\nContent-Length: 0\r\nConnection: close\r\nX-Fill: \r\n\r\n")
    )
    head = (
        line
        + b"Host: x\r\nContent-Length: 0\r\nConnection: close\r\nX-Fill: "
        + b"a" * fill
        + b"\r\n\r\n"
    )
    assert len(head) == 4096
    assert front.raw(head).startswith(b"HTTP/1.1 200 ")
    assert front.raw(head.replace(b"X-Fill: ", b"X-Fill: a")).startswith(b"HTTP/1.1 431 ")


def test_a_chunked_body_over_max_body_gets_413_and_is_closed(front):
    before = front.requests_total(413)
    head = b"POST /items/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
    answer = front.raw(head, chunk, chunk, chunk)  # 1536 bytes > --max-body 1000, never ended
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert front.requests_total(413) == before + 1
    small = front.raw(
        head.replace(b"Host: x", b"Host: x\r\nConnection: close") + b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert small.startswith(b"HTTP/1.1 200 "), small[:100]


def test_a_content_length_over_max_body_and_a_parser_error_are_counted(front):
    big, bad = front.requests_total(413), front.requests_total(400)
    answer = front.raw(b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = front.raw(b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert front.requests_total(413) == big + 1
    assert front.requests_total(400) == bad + 1
    assert any('"POST /items/1" 413' in line for line in _access_lines(front, 413))


def test_a_half_sent_request_is_closed_after_the_read_timeout(front):
    before = front.metric("headrace_http_read_timeouts_total")
    started = time.time()
    answer = front.raw(b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert time.time() - started < 5
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
        assert s.recv(100).startswith(b"HTTP/1.1 408 ")  # sent nothing at all
    assert front.metric("headrace_http_read_timeouts_total") == before + 2
    # a request that arrives whole within the timeout is unaffected, also on a kept connection
    with httpx.Client() as client:
        for _ in range(2):
            assert client.post(f"{front.url}/items/1", content=b"x").status_code == 200
            time.sleep(0.6)


def test_request_scratch_is_removed_after_each_request_and_the_serve_folder_on_exit(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = Front(project, tmp=tmp)
    server.wait_ready()
    try:
        folders = {httpx.post(f"{server.url}/scratch").text for _ in range(3)}
        assert len(folders) == 3
        for folder in folders:
            assert Path(folder).is_relative_to(tmp)
            assert not Path(folder).exists()
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    assert list(tmp.iterdir()) == []


def _serve_once(project: Path, tmp: Path, port: int, *args: str, app: str = "svc:app", **env):
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"} | env
    env.update(TMPDIR=str(tmp), HEADRACE_APP=app)
    cmd = [sys.executable, "-m", "headrace.cli", "-C", str(project), "serve", "--port", str(port)]
    cmd += args
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_start_errors_are_one_line_and_leave_nothing(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        out = _serve_once(project, tmp, taken.getsockname()[1])
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "replica 1 ready" not in out.stderr  # none started
    assert re.search(r"^error: --host 127.0.0.1 --port \d+: cannot listen there", out.stderr, re.M)
    assert "choose another --port" in out.stderr
    out = _serve_once(project, tmp, 0, app="start_fails:app")
    assert out.returncode == 2, out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert error and "replicas did not start" in error[0], out.stderr
    # the replica's exit code and the import error's last line, not "code None"
    assert "exited (code 1): RuntimeError: the model file is truncated" in error[0], error[0]
    assert "Traceback" not in out.stderr.split(error[0])[1]  # the replica's own log comes before
    assert list(tmp.iterdir()) == []
    started = time.time()
    out = _serve_once(
        project, tmp, 0, "--start-timeout", "1", app="start_fails:app", START_HANGS="1"
    )
    assert out.returncode == 2, out.stderr
    assert "not ready after --start-timeout 1 s" in out.stderr
    assert time.time() - started < 30
    assert list(tmp.iterdir()) == []


def test_one_bad_body_in_a_batch_fails_only_its_own_request(front):
    import concurrent.futures as futures

    bodies = [{"n": n} for n in range(15)] + [{"no n": 1}]
    with httpx.Client(base_url=front.url, timeout=30) as client:
        for _ in range(3):  # sent at once, so most share one batch with the bad body
            with futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda b: client.post("/plus-strict", json=b), bodies))
            assert [a.status_code for a in answers] == [200] * 15 + [502]
            assert [a.json()["n"] for a in answers[:15]] == list(range(1, 16))
            time.sleep(0.7)  # the serve log is written every half second
            if "retrying a batch of" in front.text():
                break  # the bad body did share a batch, and only it failed
        else:
            pytest.fail("the bad body was never batched with good ones")


def test_replaced_replicas_are_a_counter(front):
    text = httpx.get(f"{front.url}/_headrace/metrics").text
    assert re.search(r"^# TYPE headrace_serving_replicas_replaced(_total)? counter$", text, re.M)
    assert front.metric("headrace_serving_replicas_replaced_total") == 0


def test_invoke_gets_the_model_its_route_binds(tmp_path):
    pytest.importorskip("sklearn")  # model_svc imports numpy and loads scikit-learn models
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
    env["HEADRACE_APP"] = "model_svc:app"
    push = "import headrace.models as m; m.push('digits', {'k': 1}, alias='production')"
    subprocess.run([sys.executable, "-c", push], cwd=project, env=env, check=True)
    (project / "event.json").write_text("{}")
    cmd = [sys.executable, "-m", "headrace.cli", "-C", str(project), "invoke", "which"]
    out = subprocess.run(
        [*cmd, "--event", str(project / "event.json")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["model"] == "digits:1"
    assert Path(answer["file"]).exists()


@pytest.mark.slow
def test_a_roll_over_to_a_hanging_version_is_given_up_when_the_alias_moves_back(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
    env["HEADRACE_APP"] = "hang_svc:app"

    def run(code: str) -> None:
        subprocess.run([sys.executable, "-c", code], cwd=project, env=env, check=True)

    run("import headrace.models as m; m.push('digits', {'hang': False}, alias='production')")
    run("import headrace.models as m; m.push('digits', {'hang': True})")
    server = Front(project, "--start-timeout", "120", app="hang_svc:app")
    try:
        server.wait_ready()
        run("import headrace.models as m; m.set_alias('digits', 'production', 2)")
        deadline = time.time() + 30
        while "rolling replicas over" not in server.text():
            assert time.time() < deadline, server.text()
            time.sleep(0.1)
        run("import headrace.models as m; m.rollback('digits', 'production')")
        started = time.time()
        while "giving it up" not in server.text():
            assert time.time() - started < 15, server.text()  # not --start-timeout's 120 s
            time.sleep(0.1)
        assert httpx.get(f"{server.url}/which").text == "digits:1"
        run(
            "import headrace.models as m; "
            "assert m.get('digits', alias='production').version == 1"  # the user's choice stands
        )
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)


def test_a_json_route_refuses_an_empty_body_as_it_does_a_bad_one(front):
    for body in (b"", b"{not json"):
        answer = httpx.post(f"{front.url}/plus", content=body, timeout=30)
        assert answer.status_code == 400, (body, answer.status_code, answer.text)
        assert "the body is not JSON" in answer.json()["message"]
    assert httpx.post(f"{front.url}/plus", json={"n": 1}, timeout=30).json()["n"] == 2


def test_a_replica_cancelled_while_starting_exits_quietly(tmp_path, monkeypatch):
    from headrace.app import load_app
    from headrace.config import load_settings
    from headrace.serving.server import replica_config

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    settings = load_settings(project)
    app = load_app(settings)
    config = replica_config(app.routes, app.functions, [str(project)], settings.storage_url)
    config.update(parent=os.getpid(), environment={}, scratch=str(tmp_path / "scratch"))
    path = tmp_path / "replica.json"
    path.write_text(json.dumps(config))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.close()  # the front gave up on it (SIGTERM while it imported its handlers)
    with theirs:
        cmd = [sys.executable, "-m", "headrace.serving.replica", str(path), str(theirs.fileno())]
        done = subprocess.run(
            cmd, pass_fds=(theirs.fileno(),), capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_with_every_replica_lost_requests_get_503_with_retry_after(front):
    pid = int(httpx.post(f"{front.url}/items/1", timeout=30).headers["x-pid"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    seen = None
    while time.time() < deadline:
        answer = httpx.post(f"{front.url}/items/1", timeout=30)
        if answer.status_code == 503:
            seen = answer
            break
        assert answer.status_code in (200, 502), answer.text
        if answer.status_code == 200 and int(answer.headers["x-pid"]) != pid:
            break  # the replacement came first (a loaded machine): nothing to see
        time.sleep(0.01)
    assert seen is not None, "no 503 while the only replica was being replaced"
    assert seen.headers["retry-after"] == "1"
    assert "no replica is ready" in seen.json()["message"]
    deadline = time.time() + 60
    while httpx.post(f"{front.url}/items/1", timeout=30).status_code != 200:
        assert time.time() < deadline, "no replacement replica"
        time.sleep(0.2)


def test_head_204_and_304_send_no_body_so_the_next_answer_on_the_connection_is_whole(front):
    out = front.raw(
        b"HEAD /shape HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /shape?status=204&body=x HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /shape?status=304&body=x HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /shape HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        pause=0.2,
    )
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"204", b"304", b"200"], out
    head, rest = answers[0].split(b"\r\n\r\n", 1)
    assert b"content-length: 5" in head.lower() and rest == b""  # the length GET would send
    for answer in answers[1:3]:
        head, rest = answer.split(b"\r\n\r\n", 1)
        assert rest == b"" and b"content-length" not in head.lower()
    assert answers[3].endswith(b"\r\n\r\nhello")
    with httpx.Client() as client:  # the repro: HEAD then GET on one connection
        assert client.head(f"{front.url}/shape").status_code == 200
        assert client.get(f"{front.url}/shape").text == "hello"


@pytest.mark.parametrize("status", ["100", "101", "199"])
def test_an_interim_status_from_a_handler_is_a_502(front, status):
    assert httpx.get(f"{front.url}/shape?status={status}").status_code == 502


def test_framing_headers_from_a_handler_are_dropped_for_the_servers_own(front):
    out = front.raw(
        b"GET /shape?h=content-length:2&h=transfer-encoding:chunked&h=keep-alive:timeout=5"
        b"&h=x-kept:1 HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /shape HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        pause=0.2,
    )
    first = out.split(b"HTTP/1.1 ")[1]
    head = first.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"content-length") == 1 and b"content-length: 5" in head
    assert b"transfer-encoding" not in head and b"keep-alive" not in head
    assert b"x-kept: 1" in head
    assert out.count(b"hello") == 2  # both answers whole on the one connection


def test_a_handlers_connection_close_is_sent_once_and_honoured(front):
    out = front.raw(
        b"GET /shape?h=Connection:close HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /shape HTTP/1.1\r\nhost: x\r\n\r\n",
        pause=0.3,
    )
    assert out.count(b"HTTP/1.1 ") == 1, out  # closed after the first answer
    assert out.lower().count(b"connection: close") == 1, out
    assert out.endswith(b"hello")


def test_invoke_calls_a_batched_json_route_handler_as_its_route_does(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
    cli = [sys.executable, "-m", "headrace.cli", "-C", str(project)]
    gateway = project / "gateway.json"
    subprocess.run(
        [
            *cli,
            "generate-event",
            "apigateway",
            "--method",
            "POST",
            "--path",
            "/plus",
            "--body",
            '{"n": 1}',
            "-o",
            str(gateway),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    bare = project / "bare.json"
    bare.write_text('{"n": 41}')
    for event, expected in ((gateway, 2), (bare, 42)):
        out = subprocess.run(
            [*cli, "invoke", "plus_one", "--event", str(event)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        answer = json.loads(out.stdout)  # the one answer, not a list
        assert (answer["n"], answer["batch"]) == (expected, 1)


def test_expect_100_continue_is_answered_before_the_body_is_sent(front):
    head = (
        b"POST /items/1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
        s.sendall(head)
        # without it the server would wait for the body and, past --read-timeout, answer 408
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"{}")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 "), out
    too_big = head.replace(b"content-length: 2", b"content-length: 5000")
    assert front.raw(too_big).startswith(b"HTTP/1.1 413 ")  # refused, no 100 first


def test_an_answer_over_lambdas_6_mb_is_a_502_and_says_why_in_the_log(front):
    assert httpx.get(f"{front.url}/shape?size={6 * 1024 * 1024}").status_code == 200
    assert httpx.get(f"{front.url}/shape?size={6 * 1024 * 1024 + 1}").status_code == 502
    deadline = time.time() + 10
    while "over Lambda's 6 MB response limit" not in front.text() and time.time() < deadline:
        time.sleep(0.1)
    assert "over Lambda's 6 MB response limit" in front.text()


def test_dot_segments_are_a_400_under_the_internal_prefix_too(front):
    out = front.raw(b"GET /_headrace/../items/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out


def test_the_start_log_counts_in_words_and_names_each_replicas_pool(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    server = Front(project, app="one_route_svc:app")
    try:
        server.wait_ready()
        lines = server.text().splitlines()
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)
    serving = next(line for line in lines if "serving " in line)
    assert "serving 1 route on " in serving and "with 1 replica " in serving, serving
    assert "(1 route with replicas of their own)" in serving, serving
    ready = next(line for line in lines if " ready (pid " in line)
    assert re.search(r"replica 1 ready \(pid \d+\) \(pool GET /solo\)$", ready), ready


def test_serve_folders_of_killed_servers_are_swept_at_start(tmp_path):
    from headrace.storage.temp_names import machine_tag

    project = tmp_path / "project"
    shutil.copytree(APP, project)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now: a front killed with -9
    dead = tmp / f"headrace-serve-{machine_tag()}.{gone.pid}-abc"
    alive = tmp / f"headrace-serve-{machine_tag()}.{os.getpid()}-abc"  # a running front's
    for folder in (dead, alive):
        (folder / "scratch-1").mkdir(parents=True)
        (folder / "replica-1.json").write_text("{}")
    server = Front(project, tmp=tmp)
    try:
        server.wait_ready()
        assert not dead.exists()
        assert alive.exists()
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)


def test_queue_depth_is_a_metric_per_route(front):
    def depth() -> float:
        text = httpx.get(f"{front.url}/_headrace/metrics").text
        found = re.search(
            r'^headrace_http_route_queue_depth\{route="GET /slow"\} (\S+)$', text, re.M
        )
        assert found, text
        return float(found.group(1))

    assert depth() == 0
    with futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(httpx.get, f"{front.url}/slow?s=1.5", timeout=30)
        time.sleep(0.3)  # it has started: the next three wait behind it on the one replica
        waiting = [pool.submit(httpx.get, f"{front.url}/slow?s=0", timeout=30) for _ in range(3)]
        seen = 0.0
        deadline = time.time() + 10
        while seen < 3 and time.time() < deadline and not running.done():
            seen = max(seen, depth())
            time.sleep(0.05)
        assert seen == 3
        running.result()
        for request in waiting:
            request.result()
    assert depth() == 0
