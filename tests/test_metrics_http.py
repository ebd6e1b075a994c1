"""The coordinator's metrics endpoint over real sockets: concurrency, timeouts, bearer auth,
and the rules for binding beyond loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time

import pytest

from headrace.config import listen_address
from headrace.errors import ConfigError
from headrace.server import metrics as metrics_module
from headrace.server.metrics import Metrics, serve_metrics
from tests.e2e_helpers import Up, headrace

TOKEN = "s3cret-token-0123456789abcdef"


def _project(folder):
    """A project with an app of no functions: `up` refuses to run without an app."""
    (folder / "headrace.toml").write_text('app = "pipeline:app"\n')
    (folder / "pipeline.py").write_text("from headrace import App\n\napp = App()\n")


@pytest.fixture
def endpoint():
    """serve_metrics(...) that shuts every server it started down after the test."""
    servers = []

    def start(address: str = "127.0.0.1:0"):
        server, url = serve_metrics(Metrics(), address)
        servers.append(server)
        return server, url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(port: int, headers: dict[str, str | bytes] | None = None, host: str = "127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.putrequest("GET", "/metrics")
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_an_idle_connection_does_not_block_other_clients(endpoint):
    server, _ = endpoint()
    idle = socket.create_connection(("127.0.0.1", server.server_port))
    try:
        started = time.monotonic()
        resp, body = _get(server.server_port)
        assert resp.status == 200 and b"headrace_invocations_total" in body
        assert time.monotonic() - started < 1.0
    finally:
        idle.close()


def test_an_idle_connection_is_closed_after_the_socket_timeout(endpoint, monkeypatch, capfd):
    monkeypatch.setattr(metrics_module._Handler, "timeout", 0.3)
    server, _ = endpoint()
    with socket.create_connection(("127.0.0.1", server.server_port)) as idle:
        idle.settimeout(5)
        started = time.monotonic()
        assert idle.recv(100) == b""  # the server hung up on us
        assert time.monotonic() - started < 3
    with socket.create_connection(("127.0.0.1", server.server_port)) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finishes the request
        slow.settimeout(5)
        assert slow.recv(100) == b""
    assert _get(server.server_port)[0].status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_trickling_client_is_cut_off_at_the_request_deadline(endpoint, monkeypatch, capfd):
    monkeypatch.setattr(metrics_module, "REQUEST_DEADLINE", 1.0)
    server, _ = endpoint()
    with socket.create_connection(("127.0.0.1", server.server_port)) as slow:
        slow.settimeout(0.2)
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 10:
            try:
                slow.sendall(b"X")  # one byte at a time: each read succeeds within the timeout
                if slow.recv(100) == b"":
                    cut = True
                    break
            except TimeoutError:
                continue
            except OSError:
                cut = True
                break
        assert cut and time.monotonic() - started < 3
    assert "Traceback" not in capfd.readouterr().err


def test_a_flood_of_idle_connections_never_locks_a_scrape_out(endpoint):
    # more idle connections than the cap, held open the whole time (the socket timeout is
    # 5 s): a scrape made while they hold must still be answered, at once
    server, _ = endpoint()
    port = server.server_port
    idle = [
        socket.create_connection(("127.0.0.1", port))
        for _ in range(metrics_module.MAX_CONNECTIONS + 10)
    ]
    try:
        for _ in range(3):
            started = time.monotonic()
            assert _get(port)[0].status == 200
            assert time.monotonic() - started < 2.0
        oldest = idle[0]
        oldest.settimeout(5)
        assert oldest.recv(100) == b""  # the oldest were closed to make room
    finally:
        for s in idle:
            s.close()


def test_trickling_clients_that_keep_reconnecting_never_lock_a_scrape_out(endpoint):
    # slowloris: each sends a header line now and then and never finishes its request
    server, _ = endpoint()
    port = server.server_port
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
                    while not stop.wait(0.3):
                        s.sendall(b"X-a: b\r\n")
            except OSError:
                continue

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(80)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        ok = 0
        for _ in range(5):
            with contextlib.suppress(OSError):
                ok += _get(port)[0].status == 200
        assert ok >= 4, f"only {ok} of 5 scrapes answered under the trickle"
    finally:
        stop.set()
        for t in threads:
            t.join(10)


@pytest.fixture
def with_token(monkeypatch):
    monkeypatch.setenv("HEADRACE_TOKEN", TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        None,
        TOKEN,  # the bare token, without the Bearer scheme
        f"Basic {TOKEN}",
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        "Bearer ",
        "Bearer é€".encode(),  # non-ASCII bytes
        "Bearer é".encode("latin-1"),
    ],
)
def test_bad_or_missing_auth_is_401_without_a_traceback(endpoint, with_token, capfd, header):
    server, _ = endpoint()
    resp, body = _get(server.server_port, {"Authorization": header} if header else {})
    assert resp.status == 401
    assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert body.startswith(b"missing or wrong bearer token") and b"/login?token=" in body
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_token_is_accepted(endpoint, with_token, scheme):
    server, _ = endpoint()
    resp, body = _get(server.server_port, {"Authorization": f"{scheme} {TOKEN}"})
    assert resp.status == 200 and b"headrace_objects_ingested_total" in body


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "is not set"),
        (" ", "is blank"),
        ("                    ", "is blank"),
        ("short", "shorter than 16"),
        ("ünïcödé-token-0123456789", "non-ASCII"),
        ("has a space 0123456789", "spaces"),
    ],
)
def test_binding_beyond_loopback_needs_a_real_token(endpoint, monkeypatch, token, reason):
    monkeypatch.setenv("HEADRACE_TOKEN", token)
    with pytest.raises(ConfigError, match=reason) as info:
        endpoint("0.0.0.0:0")
    assert "0.0.0.0:0" in str(info.value) and "bind 127.0.0.1" in str(info.value)


def test_binding_beyond_loopback_with_a_good_token_requires_it(endpoint, with_token):
    server, url = endpoint("0.0.0.0:0")
    assert url.startswith("http://0.0.0.0:")
    assert _get(server.server_port)[0].status == 401
    assert _get(server.server_port, {"Authorization": f"Bearer {TOKEN}"})[0].status == 200


def test_an_unusable_token_is_refused_on_loopback_too(endpoint, monkeypatch):
    # A token that can never be sent in a header would lock everyone out silently.
    monkeypatch.setenv("HEADRACE_TOKEN", "ünïcödé-token-0123456789")
    with pytest.raises(ConfigError, match="HEADRACE_TOKEN"):
        endpoint("127.0.0.1:0")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_is_served_without_a_token(endpoint, monkeypatch):
    monkeypatch.delenv("HEADRACE_TOKEN", raising=False)
    server, url = endpoint("[::1]:0")
    assert url == f"http://[::1]:{server.server_port}/metrics"
    assert _get(server.server_port, host="::1")[0].status == 200


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9100", ("::1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_listen_addresses(address, expected):
    assert listen_address(address) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1:99999", "above 65535"),
        ("127.0.0.1:" + "9" * 5000, "above 65535"),
        ("127.0.0.1:abc", "not a number"),
        ("127.0.0.1:-1", "not a number"),
        ("127.0.0.1", "no ':PORT'"),
        ("::1:0", "brackets"),
        ("[127.0.0.1]:0", "not an IPv6 address"),
    ],
)
def test_bad_listen_addresses(address, reason):
    with pytest.raises(ConfigError, match=reason):
        listen_address(address)


# -- the real CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [("127.0.0.1:99999", "above 65535"), ("127.0.0.1:abc", "'abc' is not a number")],
)
def test_up_with_a_bad_metrics_address_is_a_one_line_error(tmp_path, address, reason):
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "HEADRACE_METRICS": address}
    _project(tmp_path)
    result = headrace("up", "--quiet", project=tmp_path, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # not wrapped at the terminal width either
    assert lines[0].startswith(f"error: setting 'metrics' ({address!r})") and reason in lines[0]
    assert "e.g. 127.0.0.1:9100 or [::1]:9100" in lines[0]  # brackets are not rich markup


def test_up_with_a_blank_token_beyond_loopback_is_a_one_line_error(tmp_path):
    env = {
        "HEADRACE_HOME": str(tmp_path / "home"),
        "HEADRACE_METRICS": "0.0.0.0:0",
        "HEADRACE_TOKEN": " ",
    }
    _project(tmp_path)
    result = headrace("up", "--quiet", project=tmp_path, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    [line] = errors
    assert line.startswith("error: metrics address '0.0.0.0:0'")
    assert "HEADRACE_TOKEN is blank" in line


@pytest.mark.slow
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_up_serves_metrics_on_ipv6_loopback(tmp_path):
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "HEADRACE_METRICS": "[::1]:0"}
    _project(tmp_path)
    up = Up(tmp_path, env, tmp_path / "up.log").start()
    try:
        url = json.loads((tmp_path / "home" / "coordinator.json").read_text())["metrics"]
        assert url.startswith("http://[::1]:")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert _get(port, host="::1")[0].status == 200
    finally:
        assert up.terminate() == 0, up.output()


def test_an_address_that_is_not_on_this_machine_is_a_config_error(endpoint, with_token):
    with pytest.raises(ConfigError, match="cannot be bound"):
        endpoint("192.0.2.1:0")  # TEST-NET-1: never assigned to this machine


def test_an_unresolvable_host_is_a_config_error(endpoint):
    with pytest.raises(ConfigError, match="cannot be resolved"):
        endpoint("no-such-host.invalid:0")


def test_a_busy_port_is_a_config_error(endpoint):
    server, _ = endpoint()
    with pytest.raises(ConfigError, match="cannot be bound: Address already in use"):
        endpoint(f"127.0.0.1:{server.server_port}")


def test_a_coordinator_run_in_a_thread_frees_its_metrics_port_when_it_stops(tmp_path):
    # as tests and notebooks run one: the endpoint kept listening after the coordinator stopped
    from pathlib import Path
    from urllib.parse import urlparse

    from headrace.app import load_app
    from headrace.config import load_settings
    from tests.coordinator_thread import coordinator_thread

    app_dir = Path(__file__).parent / "apps" / "flows"
    settings = load_settings(app_dir, home=str(tmp_path / "home"), poll_interval=0.2, workers=1)
    with coordinator_thread(settings, load_app(settings)) as coordinator:
        port = urlparse(coordinator.metrics_url).port
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
