"""The console behind the metrics endpoint's token: API, pages and the browser's sign-in."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from headrace.config import load_settings
from headrace.console import Console, ConsoleContext
from headrace.ledger import Ledger
from headrace.server.metrics import Metrics, serve_metrics

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture
def served(tmp_path, monkeypatch):
    def start(address: str = "127.0.0.1:0"):
        settings = load_settings(tmp_path, home=str(tmp_path / "home"))
        ledger = Ledger(settings.ledger_url)
        app = SimpleNamespace(
            name="t",
            functions={},
            state_machines={},
            rules=[],
            buckets=[],
            sources={},
            pipelines={},
            streams={},
            feature_groups={},
        )
        console = Console(ConsoleContext(settings, app, ledger, None, lambda: "me"))
        server, _ = serve_metrics(Metrics(), address, console)
        started.append((server, ledger))
        return f"http://127.0.0.1:{server.server_port}"

    started: list = []
    yield start
    for server, ledger in started:
        server.shutdown()
        server.server_close()
        ledger.close()


def test_without_a_token_loopback_serves_console_and_metrics(served, monkeypatch):
    monkeypatch.delenv("HEADRACE_TOKEN", raising=False)
    base = served()
    assert httpx.get(base + "/").status_code == 200
    assert httpx.get(base + "/api/overview").json()["app"] == "t"
    assert httpx.get(base + "/api/streams").json()["streams"] == []
    assert "headrace_" in httpx.get(base + "/metrics").text
    missing = httpx.get(base + "/api/nosuch")
    assert missing.status_code == 404 and missing.json() == {"error": "no API at /api/nosuch"}
    assert httpx.post(base + "/api/overview", headers={"X-Headrace": "1"}).status_code == 405


def test_beyond_loopback_every_path_needs_the_token_and_a_browser_signs_in(served, monkeypatch):
    monkeypatch.setenv("HEADRACE_TOKEN", TOKEN)
    base = served("0.0.0.0:0")
    for path in ("/", "/static/app.js", "/api/overview", "/api/live", "/metrics"):
        assert httpx.get(base + path).status_code == 401, path
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/api/overview", headers=bearer).status_code == 200
    assert httpx.get(base + "/login?token=wrong-token-0123456789").status_code == 401
    with httpx.Client(base_url=base) as browser:
        signed = browser.get(f"/login?token={TOKEN}")
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert browser.get("/api/overview").status_code == 200  # the cookie now
        assert browser.get("/").status_code == 200


def test_without_a_token_a_foreign_host_or_origin_is_refused(served, monkeypatch):
    # DNS rebinding: a web page whose name resolves to 127.0.0.1 sends its own name as Host
    monkeypatch.delenv("HEADRACE_TOKEN", raising=False)
    base = served()
    port = base.rsplit(":", 1)[1]
    for host in (f"rebind.attacker.example:{port}", "127.0.0.1:1", f"127.0.0.1.evil:{port}"):
        for path in ("/api/overview", "/", "/metrics"):
            refused = httpx.get(base + path, headers={"Host": host})
            assert refused.status_code == 403, (host, path)
            assert "Host" in refused.json()["error"]
        posted = httpx.post(
            base + "/api/invocations/x/redrive", headers={"Host": host, "X-Headrace": "1"}
        )
        assert posted.status_code == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert httpx.get(base + "/api/overview", headers={"Host": host}).status_code == 200
        assert "headrace_" in httpx.get(base + "/metrics", headers={"Host": host}).text
    evil = {"Origin": f"http://rebind.attacker.example:{port}", "X-Headrace": "1"}
    refused = httpx.post(base + "/api/overview", headers=evil)
    assert refused.status_code == 403 and "Origin" in refused.json()["error"]
    same = {"Origin": f"http://localhost:{port}", "X-Headrace": "1"}
    assert httpx.post(base + "/api/overview", headers=same).status_code == 405  # reached the API


def test_the_401_page_says_how_to_sign_in(served, monkeypatch):
    monkeypatch.setenv("HEADRACE_TOKEN", TOKEN)
    base = served()
    denied = httpx.get(base + "/")
    assert denied.status_code == 401 and "/login?token=" in denied.text
