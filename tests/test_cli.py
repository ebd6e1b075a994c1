"""The CLI end to end: init a project, run `up` in the background, use every command."""

import json
import shutil

import pytest

from tests.e2e_helpers import Up, headrace

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "proj"
    result = headrace("init", str(proj), project=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (proj / "headrace.toml").exists() and (proj / "pipeline.py").exists()
    env = {"HEADRACE_HOME": str(proj / ".headrace"), "HEADRACE_POLL_INTERVAL": "0.2"}
    up = Up(proj, env, tmp_path / "up.log").start()
    yield proj, env, up
    if up.alive():
        up.terminate()


def wait_for(predicate, timeout=30.0):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_cli_round_trip(project, tmp_path):
    proj, env, _ = project
    doc = tmp_path / "words.txt"
    doc.write_text("one two three four")
    put = headrace("put", str(doc), "landing/docs/", project=proj, env=env)
    assert put.returncode == 0, put.stderr
    assert "landing/docs/words.txt" in put.stdout

    results = proj / ".headrace" / "buckets" / "results" / "docs" / "words.txt.json"
    assert wait_for(results.exists)
    assert results.read_text() == "4"

    # a file copied in by another tool triggers too
    shutil.copy(doc, proj / ".headrace" / "buckets" / "landing" / "copied.txt")
    assert wait_for((proj / ".headrace" / "buckets" / "results" / "copied.txt.json").exists)

    listed = headrace("invocations", "--json", project=proj, env=env)
    rows = json.loads(listed.stdout)
    assert {r["status"] for r in rows} == {"succeeded"} and len(rows) == 2
    assert rows[0]["payload"]["Records"][0]["eventSource"] == "aws:s3"

    logs = headrace("logs", "count_words", project=proj, env=env)
    assert "docs/words.txt: 4 words" in logs.stdout
    assert "START RequestId:" in logs.stdout and "REPORT RequestId:" in logs.stdout
    one = headrace("logs", "count_words", "-i", rows[0]["id"][:8], project=proj, env=env)
    assert one.stdout.count("START RequestId") == 1

    table = headrace("invocations", project=proj, env=env)
    assert "count_words" in table.stdout and "succeeded" in table.stdout

    event = (
        json.loads(rows[0]["payload"])
        if isinstance(rows[0]["payload"], str)
        else rows[0]["payload"]
    )
    inv = headrace("invoke", "count_words", "--payload", json.dumps(event), project=proj, env=env)
    assert inv.returncode == 0, inv.stderr
    assert json.loads(inv.stdout)["words"] == 4


def test_cli_errors_and_dead_letters(project, tmp_path):
    proj, env, up = project
    bad = headrace("invoke", "count_words", "--payload", '{"bogus": 1}', project=proj, env=env)
    assert bad.returncode == 1
    # a malformed event cannot get better with retries: dead-lettered after one attempt
    assert "failed after 1 attempt:" in bad.stderr and "MalformedEvent" in bad.stderr
    dlq = json.loads(headrace("dlq", "list", "--json", project=proj, env=env).stdout)
    assert len(dlq) == 1 and dlq[0]["function"] == "count_words"
    assert "MalformedEvent" in dlq[0]["error"] and "Traceback" in dlq[0]["traceback"]
    assert "runtime.py" not in dlq[0]["traceback"]  # starts at the user's code
    redrive = headrace("dlq", "redrive", project=proj, env=env)
    assert "redriven: 1" in redrive.stdout

    not_json = headrace("invoke", "count_words", "--payload", "{nope", project=proj, env=env)
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    unknown = headrace("invoke", "nothing_here", project=proj, env=env)
    assert unknown.returncode == 2 and "not registered" in unknown.stderr
    doc = tmp_path / "x.txt"
    doc.write_text("x")
    escape = headrace("put", str(doc), "landing/../../etc/x.txt", project=proj, env=env)
    assert escape.returncode == 2 and ".." in escape.stderr
    assert up.alive()
    assert up.terminate() == 0
