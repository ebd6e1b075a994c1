"""A second stranger's trial of the CLI (issue 15, section 2): tables at 80 columns, short ids,
`took` after a redrive, messages. Each test runs the real `headrace` command."""

from __future__ import annotations

import json
from pathlib import Path

from headrace.ledger import Ledger, NewInvocation
from tests.e2e_helpers import headrace

_APP = """
from headrace import App

app = App("trial")


@app.on_object_created(bucket="landing", suffix=".txt")
@app.function(retries=0)
def f(event, context):
    return None
"""

_ERROR = (
    "MalformedEvent: the event has no Records list; an S3 notification carries one record "
    "per object created (fix: send the notification as S3 does)"
)
_KEY = "inbox/2026/12/07/a-rather-long-object-key-name.txt"


def _project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "headrace.toml").write_text('app = "pipeline:app"\n')
    (proj / "pipeline.py").write_text(_APP)
    home = proj / ".headrace"
    home.mkdir()
    return proj, {"HEADRACE_HOME": str(home), "COLUMNS": "80"}


def _dead_invocation(proj: Path, error: str = _ERROR, inv_id: str | None = None) -> str:
    """An invocation of f that failed its one attempt: in the ledger and the dead-letter list."""
    ledger = Ledger(f"sqlite:///{proj / '.headrace' / 'ledger.db'}")
    payload = {"Records": [{"s3": {"bucket": {"name": "landing"}, "object": {"key": _KEY}}}]}
    payload["Records"][0]["eventSource"] = "aws:s3"
    (inv,) = ledger.enqueue([NewInvocation("f", payload, max_attempts=1, id=inv_id)])
    with ledger.begin() as conn:
        (claimed,) = ledger.claim(conn, "f", 1, "owner", 60)
        update = {"id": inv, "attempt": 1, "status": "dead", "error": error}
        update.update(function="f", payload=json.dumps(payload), leased_at=claimed.leased_at)
        ledger.finish(conn, "owner", [update])
    return inv


def _lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


def test_tables_at_80_columns_keep_ids_keys_and_error_words_whole(tmp_path):
    proj, env = _project(tmp_path)
    inv = _dead_invocation(proj)
    for command, shown_id in ((["invocations"], inv[:8]), (["dlq", "list"], inv)):
        result = headrace(*command, project=proj, env=env)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert all(len(line) <= 80 for line in out.splitlines()), out
        assert _lines_with(out, shown_id), out  # the id whole, on one line
        assert "created" in out or "when" in out, out  # headers are not split either
        if command == ["invocations"]:
            assert _lines_with(out, f"landing/{_KEY}"), out  # the object key, copyable
        # every word of the error whole, and the error in a readable number of lines
        for word in _ERROR.split():
            assert any(word in line for line in out.splitlines()), (word, out)
        error_lines = [line for line in out.splitlines() if any(w in line for w in ("Records",))]
        assert error_lines, out
        assert len(out.splitlines()) < 25, out


def test_dlq_redrive_and_logs_take_the_short_id_invocations_shows(tmp_path):
    proj, env = _project(tmp_path)
    first = _dead_invocation(proj, inv_id="abcd1234-0000-4000-8000-000000000001")
    second = _dead_invocation(proj, inv_id="abcd5678-0000-4000-8000-000000000002")
    ambiguous = headrace("dlq", "redrive", "abcd", project=proj, env=env)
    assert ambiguous.returncode == 2, (ambiguous.stdout, ambiguous.stderr)
    message = " ".join(ambiguous.stderr.split())
    assert "'abcd' is ambiguous" in message and first in message and second in message, message
    logs = headrace("logs", "f", "-i", "abcd", project=proj, env=env)
    assert logs.returncode == 2 and "'abcd' is ambiguous" in " ".join(logs.stderr.split())
    result = headrace("dlq", "redrive", first[:8], project=proj, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.split() == ["redriven:", "1", first]
    again = headrace("dlq", "redrive", first[:8], project=proj, env=env)  # redriven already
    assert again.returncode == 1 and "not in the dead-letter list: abcd1234" in again.stderr


def test_took_is_the_last_attempts_duration_not_the_time_since_creation(tmp_path):
    from sqlalchemy import update

    from headrace.ledger import browse
    from headrace.ledger.schema import invocations

    proj, env = _project(tmp_path)
    inv = _dead_invocation(proj)
    ledger = Ledger(f"sqlite:///{proj / '.headrace' / 'ledger.db'}")
    with ledger.begin() as conn:  # a day in the dead-letter list, then a 1.25 s attempt
        conn.execute(update(invocations).values(created_at=invocations.c.created_at - 86400))
        ledger.record_attempts(
            conn,
            [{"invocation_id": inv, "number": 1, "function": "f", "status": "ok",
              "duration_ms": 1250.0}],
        )  # fmt: skip
    result = headrace("invocations", project=proj, env={**env, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if inv[:8] in line)
    assert "1.25s" in row and "86400" not in row, row
    with ledger.begin() as conn:  # the console's invocations page reads the same figure
        (page_row,) = browse.page_invocations(conn)
    assert page_row["last_attempt_ms"] == 1250.0


def test_a_missing_home_outside_a_project_is_refused_and_not_created(tmp_path):
    home = tmp_path / "x" / "nohome"
    for command in (["invocations"], ["dlq", "list"], ["status"], ["ls"]):
        result = headrace(*command, project=tmp_path, env={"HEADRACE_HOME": str(home)})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        said = " ".join(result.stderr.split())
        assert f"HEADRACE_HOME {home}: does not exist, and {tmp_path} has no headrace.toml" in said
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
    # inside a project the home is made on first use, as before
    proj, env = _project(tmp_path)
    env["HEADRACE_HOME"] = str(proj / "fresh")
    assert headrace("invocations", project=proj, env=env).returncode == 0


def test_up_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    """`headrace up &` from a script: the shell ignores SIGINT for it; so does `up`, which then
    stops on SIGTERM and says what stops it at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proj, env = _project(tmp_path)
    info = proj / ".headrace" / "coordinator.json"
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli", "-C", str(proj), "up", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert info.exists(), log.read_text()
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert "SIGINT" not in said, said
    assert "SIGTERM: draining, running invocations finish first (SIGKILL stops now)" in said


def test_up_does_not_warn_about_a_declared_output_bucket(tmp_path):
    from headrace import App
    from headrace.server.triggers import idle_report
    from headrace.storage import ObjectStore

    app = App("outputs")

    @app.on_object_created(bucket="landing", suffix=".txt", output_bucket="results")
    @app.function()
    def count(event, context):
        return None

    store = ObjectStore(str(tmp_path / "buckets"))
    store.bucket("landing").put("a.txt", b"a")
    store.bucket("results").put("a.txt.json", b"1")  # what count wrote: no warning
    store.bucket("stray").put("b.txt", b"b")  # nothing writes or watches it: a warning
    assert idle_report(app, store) == [
        "bucket 'stray' holds objects (e.g. 'b.txt') and no trigger watches it (watched: landing)"
    ]


def test_counts_of_one_are_singular(tmp_path):
    proj, env = _project(tmp_path)
    result = headrace("query", "select 1 as x", project=proj, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 row", result.stdout
