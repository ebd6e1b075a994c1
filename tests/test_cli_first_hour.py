"""The first hour with the CLI, tried as a new user would: typos that ran nothing, commands that
found nothing and said nothing, waits without a word. Each test runs the real `headrace`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main

from headrace import App
from headrace.cli import app as cli_app
from headrace.errors import is_deterministic
from headrace.workflows.asl import DefinitionError
from tests.e2e_helpers import Up, headrace

PIPELINE = """
from headrace import App
from headrace.events import parse_s3_event

app = App("firsthour")


@app.on_object_created(bucket="landing", prefix="in/", suffix=".txt")
@app.function(retries=2)
def count_words(event, context):
    (obj,) = parse_s3_event(event)
    text = context.storage.bucket(obj.bucket).get(obj.key).decode()
    return {"key": obj.key, "words": len(text.split())}


@app.function(retries=2, backoff=0.1)
def flaky(event, context):
    raise ValueError("a long explanation of what went wrong, which ends with the fix: "
                     "send a payload with the field 'name' set to a non-empty string")


app.state_machine("wait", {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600,
                                                               "End": True}}})
"""


def _project(tmp_path: Path, source: str = PIPELINE) -> tuple[Path, dict[str, str]]:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "headrace.toml").write_text('app = "pipeline:app"\n')
    (proj / "pipeline.py").write_text(source)
    env = {"HEADRACE_HOME": str(proj / ".headrace"), "HEADRACE_POLL_INTERVAL": "0.2"}
    return proj, env


def _wait(predicate, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# -- a put where nothing listens -------------------------------------------------------------


def test_put_warns_when_no_trigger_listens(tmp_path):
    proj, env = _project(tmp_path)
    doc = tmp_path / "t.txt"
    doc.write_text("one two")
    typo = headrace("put", str(doc), "landng/in/", project=proj, env=env)
    assert typo.returncode == 0, typo.stderr
    assert typo.stderr == (
        "warning: nothing runs for landng/in/t.txt: no trigger watches bucket 'landng' "
        "(watched: landing)\n"
    )
    outside = headrace("put", str(doc), "landing/out/t.txt", project=proj, env=env)
    assert "the triggers on bucket 'landing' do not match this key" in outside.stderr
    assert "check their prefix and suffix" in outside.stderr
    heard = headrace("put", str(doc), "landing/in/t.txt", project=proj, env=env)
    assert heard.returncode == 0 and heard.stderr == "", heard.stderr


# -- storage commands ------------------------------------------------------------------------


def test_ls_cat_get(tmp_path):
    proj, env = _project(tmp_path)
    doc = tmp_path / "t.txt"
    doc.write_bytes(b"one two\n")
    assert headrace("put", str(doc), "landing/in/a b.txt", project=proj, env=env).returncode == 0
    buckets = headrace("ls", project=proj, env=env)
    assert buckets.stdout.split() == ["landing"], buckets.stdout
    listed = json.loads(headrace("ls", "landing/in/", "--json", project=proj, env=env).stdout)
    assert [(o["key"], o["size"]) for o in listed] == [("in/a b.txt", 8)]
    table = headrace("ls", "landing", project=proj, env={**env, "COLUMNS": "120"})
    assert "in/a b.txt" in table.stdout
    cat = headrace("cat", "landing/in/a b.txt", project=proj, env=env)
    assert cat.returncode == 0 and cat.stdout == "one two\n"
    got = headrace("get", "landing/in/a b.txt", str(tmp_path), project=proj, env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a b.txt").read_bytes() == b"one two\n"
    for command in ("cat", "get"):  # the fix names the command that lists the bucket
        missing = headrace(command, "landing/in/nope.txt", project=proj, env=env)
        said = " ".join(missing.stderr.split())
        assert missing.returncode == 2 and "object 'in/nope.txt' in bucket 'landing'" in said
        assert "check the key with `headrace ls landing/in`" in said, said
    assert not (tmp_path / "nope.txt").exists()
    nobucket = headrace("ls", "landng", project=proj, env=env)
    assert nobucket.returncode == 2 and "no bucket 'landng' (buckets: landing)" in nobucket.stderr
    empty = headrace("ls", "landing/zzz/", project=proj, env=env)
    assert empty.returncode == 1 and "no objects under landing/zzz/" in empty.stderr
    nodir = tmp_path / "nonexistent" / "x"
    unwritable = headrace("get", "landing/in/a b.txt", str(nodir), project=proj, env=env)
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr, unwritable.stderr
    said = " ".join(unwritable.stderr.split())
    assert f"error: cannot write {nodir}: No such file or directory" in said, said
    assert "fix: give a file or folder in an existing folder" in said


# -- settings and status without a coordinator -------------------------------------------------


def test_settings_name_every_variable_value_and_origin(tmp_path):
    proj, env = _project(tmp_path)
    env = {**env, "HEADRACE_WORKERS": "3"}
    rows = json.loads(headrace("settings", "--json", project=proj, env=env).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["app"]["origin"] == str(proj / "headrace.toml")
    assert by_name["app"]["value"] == "pipeline:app" and by_name["app"]["env"] == "HEADRACE_APP"
    assert by_name["workers"] == {
        "name": "workers", "env": "HEADRACE_WORKERS", "value": "3", "origin": "$HEADRACE_WORKERS"
    }  # fmt: skip
    assert by_name["lease_seconds"]["origin"] == "default"
    assert by_name["ledger"]["value"] == f"sqlite:///{proj / '.headrace' / 'ledger.db'}"
    from dataclasses import fields

    from headrace.config import Settings

    assert set(by_name) == {f.name for f in fields(Settings)} - {"project_dir"}
    table = headrace("settings", project=proj, env={**env, "COLUMNS": "200"})
    assert "HEADRACE_LEASE_SECONDS" in table.stdout and "$HEADRACE_WORKERS" in table.stdout


def test_status_without_a_coordinator_shows_buckets_triggers_and_errors(tmp_path):
    proj, env = _project(tmp_path)
    doc = tmp_path / "t.txt"
    doc.write_text("x")
    headrace("put", str(doc), "landng/t.txt", project=proj, env=env)
    data = json.loads(headrace("status", "--json", project=proj, env=env).stdout)
    assert data["coordinators"] == []
    assert {b["bucket"]: b["watched"] for b in data["buckets"]} == {
        "landing": True,
        "landng": False,
    }
    assert [t["target"] for t in data["triggers"]] == ["function:count_words"]
    assert any(s["name"] == "app" for s in data["settings"])
    text = headrace("status", project=proj, env={**env, "COLUMNS": "120"}).stdout
    assert "no coordinator is running" in text and "none: nothing runs here" in text


# -- commands that find nothing ---------------------------------------------------------------


def test_commands_that_find_nothing_say_so_and_fail(tmp_path):
    proj, env = _project(tmp_path)
    bogus = headrace("dlq", "redrive", "bogus", project=proj, env=env)
    assert bogus.returncode == 1, bogus.stdout
    assert "not in the dead-letter list: bogus" in bogus.stderr and "redriven" not in bogus.stdout
    empty = headrace("dlq", "redrive", project=proj, env=env)
    assert empty.returncode == 1 and "the dead-letter list is empty" in empty.stderr
    started = headrace("start-execution", "wait", "--name", "w1", project=proj, env=env)
    assert started.returncode == 0, started.stderr
    stopped = headrace("stop-execution", "w1", project=proj, env=env)
    assert stopped.returncode == 0 and stopped.stdout == "w1: ABORTED\n", stopped.stderr
    again = headrace("stop-execution", "w1", project=proj, env=env)
    assert again.returncode == 1
    assert "execution 'w1' had already ended (ABORTED at" in again.stderr
    assert "nothing to stop" in again.stderr
    nosuch = headrace("stop-execution", "nosuch", project=proj, env=env)
    assert nosuch.returncode == 2 and "execution 'nosuch': does not exist" in nosuch.stderr
    token = headrace("send-task-success", "bogus", project=proj, env=env)
    assert token.returncode == 2 and "TaskDoesNotExist" in token.stderr
    logs = headrace("logs", "nosuch", project=proj, env=env)
    assert logs.returncode == 2 and "no function 'nosuch'" in logs.stderr


def test_an_app_module_that_fails_to_import_is_named_in_one_line(tmp_path):
    proj, env = _project(tmp_path, "from headrace import App\napp = App(\n")
    for args in (("status",), ("start-execution", "wait"), ("up", "--quiet")):
        result = headrace(*args, project=proj, env=env)
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        assert "app module 'pipeline'" in result.stderr, result.stderr
        assert "failed to import" in result.stderr and "SyntaxError" in result.stderr
        assert "pipeline.py:2" in result.stderr and "fix that error" in result.stderr
    (proj / "pipeline.py").write_text("import json\nSETTING = json.loads('{')\n")
    result = headrace("status", project=proj, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "JSONDecodeError" in result.stderr and "pipeline.py:2" in result.stderr, result.stderr
    # status still shows the rest: the coordinators and settings
    assert "no coordinator is running" in result.stdout and "settings" in result.stdout


def test_executions_json_gives_input_as_json_like_describe_execution(tmp_path):
    proj, env = _project(tmp_path)
    started = headrace(
        "start-execution", "wait", "--name", "w2", "--input", '{"a": [1, 2]}', project=proj, env=env
    )
    assert started.returncode == 0, started.stderr
    [row] = json.loads(headrace("executions", "--json", project=proj, env=env).stdout)
    described = json.loads(headrace("describe-execution", "w2", project=proj, env=env).stdout)
    assert row["input"] == described["input"] == {"a": [1, 2]}


def test_invoke_without_a_coordinator_says_so_at_once(tmp_path):
    proj, env = _project(tmp_path)
    began = time.monotonic()
    result = headrace("invoke", "flaky", project=proj, env=env, timeout=300)
    assert time.monotonic() - began < 300  # not the 600 s of --wait (a busy machine is slow)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "no coordinator is running: it runs once `headrace up` starts" in result.stderr
    [row] = json.loads(headrace("invocations", "--json", project=proj, env=env).stdout)
    assert row["status"] == "pending" and row["id"] in result.stderr  # queued, as it says


# -- start-up checks -------------------------------------------------------------------------


def test_a_state_machine_publishing_to_an_unconfigured_topic_is_found_at_start_up(tmp_path):
    app = App()
    app.topic("alerts", {"kind": "file", "path": str(tmp_path / "alerts.jsonl")})
    app.state_machine(
        "notify",
        {
            "StartAt": "Tell",
            "States": {
                "Tell": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish",
                    "Parameters": {
                        "TopicArn": "arn:aws:sns:us-east-1:000000000000:alertz",
                        "Message": "hi",
                    },
                    "Next": "Known",
                },
                "Known": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish",
                    "Parameters": {"TopicArn": "alerts", "Message.$": "$"},
                    "Next": "Chosen",
                },
                "Chosen": {  # a path chooses the topic at run time: not checked here
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish",
                    "Parameters": {"TopicArn.$": "$.topic", "Message": "hi"},
                    "End": True,
                },
            },
        },
    )
    with pytest.raises(DefinitionError) as caught:
        app.check_state_machines()
    message = str(caught.value)
    assert "state 'Tell': publishes to topic 'alertz', which is not configured" in message
    assert "known: alerts" in message and "'Known'" not in message and "Chosen" not in message


def test_up_refuses_a_state_machine_with_an_unconfigured_topic(tmp_path):
    source = PIPELINE + (
        "\napp.state_machine('tell', {'StartAt': 'T', 'States': {'T': {'Type': 'Task', "
        "'Resource': 'arn:aws:states:::sns:publish', 'Parameters': {'TopicArn': 'nope', "
        "'Message': 'x'}, 'End': True}}})\n"
    )
    proj, env = _project(tmp_path, source)
    result = headrace("up", "--quiet", project=proj, env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "publishes to topic 'nope', which is not configured" in said
    # it stopped before registering: no blank where the coordinator's id goes
    assert "coordinator stopped" not in said and "coordinator  stopped" not in result.stderr
    assert "coordinator (not yet registered) stopped" in said, said


def test_deterministic_errors_are_named():
    assert is_deterministic("MalformedEvent: event: has no Records")
    assert is_deterministic("InvalidKey: object key '../x': ...")
    assert is_deterministic("DefinitionError: 1 problem")
    assert not is_deterministic("ValueError: MalformedEvent in the text")
    assert not is_deterministic(None)


QUERY_APP = """
from headrace import App

app = App()
app.stream("s")
p = app.pipeline("p", stream="s")
p.to_archive("archive", "out/")
"""


def test_query_runs_while_a_view_has_no_files(tmp_path):
    proj, env = _project(tmp_path, QUERY_APP)
    one = headrace("query", "SELECT 1 AS one", "--json", project=proj, env=env)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == [{"one": 1}]
    empty = headrace("query", "SELECT * FROM p_archive", project=proj, env=env)
    assert empty.returncode == 2
    message = " ".join(empty.stderr.split())
    assert "parquet source 'p_archive': has no files yet" in message, message


# -- help --------------------------------------------------------------------------------------


def _commands(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def test_every_option_and_argument_has_help():
    missing = [
        f"{' '.join(path)} {param.name}"
        for path, command in _commands(typer.main.get_command(cli_app), ["headrace"])
        for param in command.params
        if param.name != "help" and not getattr(param, "help", None)
    ]
    assert missing == []


def test_status_options_list_their_values_without_pipes(tmp_path):
    result = headrace("invocations", "--help", project=tmp_path, env={"COLUMNS": "200"})
    assert "one of pending, running, succeeded, dead" in result.stdout
    assert "pending|running" not in result.stdout


# -- with a coordinator ------------------------------------------------------------------------


@pytest.mark.slow
def test_with_a_coordinator(tmp_path):
    """Deterministic errors skip the retries; dead letters redrive by the ids `dlq list --json`
    gives; invocations name the object that triggered them; tables wrap long errors."""
    proj, env = _project(tmp_path)
    early = tmp_path / "early.csv"
    early.write_text("a")
    for dest in ("landng/early.csv", "landing/early.csv"):
        assert headrace("put", str(early), dest, project=proj, env=env).returncode == 0
    up = Up(proj, {**env, "COLUMNS": "400"}, tmp_path / "up.log").start()  # log lines unwrapped
    try:
        # start-up names the bucket nothing watches and the trigger that matches nothing
        _wait(lambda: "matches none of the 1 object in" in " ".join(up.output().split()), 30)
        said = " ".join(up.output().split())
        assert "bucket 'landng' holds objects (e.g. 'early.csv') and no trigger watches it" in said
        assert "(function count_words) matches none of the 1 object in bucket 'landing'" in said
        bad = headrace("invoke", "count_words", "--payload", '{"x": 1}', project=proj, env=env)
        assert bad.returncode == 1, bad.stderr
        assert "failed after 1 attempt:" in bad.stderr and "MalformedEvent" in bad.stderr
        flaky = headrace("invoke", "flaky", project=proj, env=env)
        assert "failed after 3 attempts" in flaky.stderr  # a ValueError is retried

        dead = json.loads(headrace("dlq", "list", "--json", project=proj, env=env).stdout)
        assert {d["function"] for d in dead} == {"count_words", "flaky"}
        assert all("id" not in d for d in dead)
        [malformed] = [d["invocation_id"] for d in dead if d["function"] == "count_words"]
        redriven = headrace("dlq", "redrive", malformed, project=proj, env=env)
        assert redriven.returncode == 0 and malformed in redriven.stdout, redriven.stderr

        narrow = headrace("invocations", "-f", "flaky", project=proj, env={**env, "COLUMNS": "80"})
        # the error (the last column, or a block's last line when 80 columns are too few for
        # a table), read down its lines: the whole message, wrapped at words
        said = " ".join(narrow.stdout.replace("│", " ").split())
        assert "fix: send a payload with the field 'name' set to a non-empty string" in said, said
        assert "…" not in narrow.stdout

        doc = tmp_path / "w.txt"
        doc.write_text("one two three")
        assert headrace("put", str(doc), "landing/in/w.txt", project=proj, env=env).returncode == 0

        def triggered():
            rows = json.loads(
                headrace("invocations", "-f", "count_words", "--json", project=proj, env=env).stdout
            )
            return [r for r in rows if r["object"] and r["status"] == "succeeded"]

        [row] = _wait(triggered)
        assert row["object"] == "landing/in/w.txt"
        table = headrace("invocations", project=proj, env={**env, "COLUMNS": "200"}).stdout
        assert "landing/in/w.txt" in table

        data = json.loads(headrace("status", "--json", project=proj, env=env).stdout)
        [coordinator] = data["coordinators"]
        assert coordinator["pid"] == up.proc.pid
        assert {e["function"] for e in data["errors"]["invocations"]} >= {"flaky"}
    finally:
        assert up.terminate() == 0, up.output()
    assert not (proj / ".headrace" / "coordinator.json").exists()


@pytest.mark.slow
def test_two_coordinators_in_one_folder(tmp_path):
    proj, env = _project(tmp_path)
    first = Up(proj, env, tmp_path / "first.log").start()
    second = None
    try:
        second = Up(proj, {**env, "COLUMNS": "400"}, tmp_path / "second.log").start()
        data = json.loads(headrace("status", "--json", project=proj, env=env).stdout)
        assert sorted(c["pid"] for c in data["coordinators"]) == sorted(
            [first.proc.pid, second.proc.pid]
        )
        text = headrace("status", project=proj, env={**env, "COLUMNS": "160"}).stdout
        assert "2 coordinators share this ledger" in text
        said = " ".join(second.output().split())
        assert f"1 other coordinator(s) use this ledger (pid {first.proc.pid} on" in said, said
        info = proj / ".headrace" / "coordinator.json"
        assert json.loads(info.read_text())["pid"] == second.proc.pid
        assert second.terminate() == 0
        # the file now names the one still running, not the one that stopped
        assert json.loads(info.read_text())["pid"] == first.proc.pid
    finally:
        if second is not None and second.alive():
            second.terminate()
        assert first.terminate() == 0, first.output()
    assert not info.exists()


def test_the_sources_feeding_each_stream_are_known(tmp_path):
    """`up` marks a pipeline whose source is failing (it says ok, yet nothing new comes)."""
    from headrace.server.triggers import sources_of_streams
    from headrace.streams import HttpPoller

    app = App()
    app.source(HttpPoller("chain", "http://127.0.0.1:9/x"), event_source="chain", detail_type="Tx")
    app.source(HttpPoller("other", "http://127.0.0.1:9/y"), event_source="other", detail_type="Tx")
    app.stream("tx")
    app.stream("rest")
    app.rule({"source": ["chain"]}, target="stream:tx")
    app.rule({"detail-type": ["Tx"]}, target="stream:rest")
    assert sources_of_streams(app) == {"tx": ["chain"], "rest": ["chain", "other"]}


FAILING_SOURCE = """
from headrace import App
from headrace.streams import HttpPoller

app = App()
app.source(HttpPoller("chain", "http://127.0.0.1:9/nothing-listens", interval=0.2),
           event_source="chain", detail_type="Tx")
app.stream("tx")
app.rule({"detail-type": ["Tx"]}, target="stream:tx")
"""


@pytest.mark.slow
def test_a_source_that_cannot_connect_shows_in_up_and_status(tmp_path):
    proj, env = _project(tmp_path, FAILING_SOURCE)
    up = Up(proj, env, tmp_path / "up.log").start()
    try:

        def failing():
            data = json.loads(headrace("status", "--json", project=proj, env=env).stdout)
            return [s for s in data["sources"] if s["status"] == "failing"]

        [source] = _wait(failing)
        assert source["component"] == "source:chain" and source["last_error"]
        text = headrace("status", project=proj, env={**env, "COLUMNS": "200"}).stdout
        assert "source:chain" in text and "failing" in text
        _wait(lambda: "source:chain failing" in up.output(), 30)
    finally:
        up.terminate()


@pytest.mark.slow
def test_up_summary_marks_a_pipeline_whose_source_fails(tmp_path):
    """The live summary of `up`, rendered as a terminal shows it."""
    import threading

    from rich.console import Console

    from headrace.app import load_app
    from headrace.cli import _Summary
    from headrace.config import load_settings
    from headrace.server.coordinator import Coordinator

    source = (
        FAILING_SOURCE + '\np = app.pipeline("p", stream="tx")\np.to_archive("archive", "o/")\n'
    )
    proj, _ = _project(tmp_path, source)
    settings = load_settings(proj, home=str(tmp_path / "home"), workers=1, metrics="")
    coordinator = Coordinator(settings, load_app(settings))
    runner = threading.Thread(target=coordinator.run, args=(30,))
    runner.start()
    try:

        def rendered():
            console = Console(record=True, width=200, force_terminal=False)
            console.print(_Summary(coordinator))
            text = console.export_text()
            return text if "ok; source chain failing" in text else None

        text = _wait(rendered, 60)
        assert "source:chain" in text and "failing" in text
    finally:
        coordinator.stop()
        runner.join(60)
    assert not runner.is_alive()


RELOAD_APP = """
from headrace import App

app = App()


@app.function
def version(event, context):
    return "{version}"
"""


@pytest.mark.slow
def test_up_reload_restarts_on_code_changes(tmp_path):
    proj, env = _project(tmp_path, RELOAD_APP.format(version="v1"))
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace.cli", "-C", str(proj), "up", "--quiet", "--reload"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    output = (tmp_path / "up.log").read_text

    def answer(expected):
        result = headrace("invoke", "version", "--wait", "20", project=proj, env=env)
        return result.returncode == 0 and json.loads(result.stdout) == expected

    try:
        _wait(lambda: answer("v1"), 90)
        # results written into buckets and the home are not code: no restart
        (proj / ".headrace" / "buckets" / "out").mkdir(parents=True, exist_ok=True)
        (proj / ".headrace" / "buckets" / "out" / "x.json").write_text("{}")
        time.sleep(1.5)
        assert "changed: restarting" not in output()
        (proj / "pipeline.py").write_text(RELOAD_APP.format(version="v2"))
        _wait(lambda: "pipeline.py changed: restarting" in output(), 30)
        _wait(lambda: answer("v2"), 90)
        assert output().count("changed: restarting") == 1, output()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, output()
        log.close()
    assert not (proj / ".headrace" / "coordinator.json").exists()


@pytest.mark.slow
def test_up_reload_restarts_a_crashed_coordinator_and_watches_new_folders(tmp_path):
    proj, env = _project(tmp_path, RELOAD_APP.format(version="v1"))
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace.cli", "-C", str(proj), "up", "--quiet", "--reload"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    output = (tmp_path / "up.log").read_text
    info = proj / ".headrace" / "coordinator.json"

    def answer(expected):
        result = headrace("invoke", "version", "--wait", "20", project=proj, env=env)
        return result.returncode == 0 and json.loads(result.stdout) == expected

    try:
        _wait(lambda: answer("v1"), 90)
        # a coordinator killed after it started comes back at once, not on the next change
        first = json.loads(info.read_text())["pid"]
        os.kill(first, signal.SIGKILL)
        _wait(lambda: "the coordinator died (-9)" in output(), 30)
        _wait(lambda: json.loads(info.read_text())["pid"] != first, 60)
        _wait(lambda: answer("v1"), 90)
        assert "restarting when the code changes" not in output(), output()
        # a folder made after start-up is watched too
        (proj / "lib").mkdir()
        time.sleep(1.0)
        (proj / "lib" / "helpers.py").write_text("X = 1\n")
        _wait(lambda: "helpers.py changed: restarting" in output(), 30)
        (proj / "lib" / "helpers.py").write_text("X = 2\n")
        _wait(lambda: output().count("helpers.py changed: restarting") == 2, 30)
        _wait(lambda: answer("v1"), 90)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, output()
        log.close()


# -- docs ---------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_docs_write_alternative_commands_on_separate_lines():
    """`headrace dlq list | headrace dlq redrive` pasted into a shell redrives everything."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    piped = [
        f"{page.name}: {line}"
        for page in pages
        for line in page.read_text().splitlines()
        if re.search(r"headrace [^|`]*\|\s*headrace", line)
    ]
    assert piped == []


def test_readme_says_how_to_get_headrace_on_path():
    readme = (ROOT / "README.md").read_text()
    assert ". .venv/bin/activate" in readme and "--install-completion" in readme


def test_start_up_samples_bucket_keys_by_name_without_temp_files(tmp_path):
    from headrace.server.triggers import sample_keys
    from headrace.storage import ObjectStore

    store = ObjectStore(str(tmp_path / "buckets"))
    bucket = store.bucket("bkt")
    for key in ("z.txt", "a/b/c.txt", "a/x.txt"):
        bucket.put(key, b"x")
    (tmp_path / "buckets" / "bkt" / "a" / ".headrace-tmp-writer").write_bytes(b"partial")
    (tmp_path / "buckets" / "bkt" / ".headrace-tmp-dir").mkdir()
    (tmp_path / "buckets" / "bkt" / ".headrace-tmp-dir" / "y.txt").write_bytes(b"y")
    assert sorted(sample_keys(store, "bkt")) == ["a/b/c.txt", "a/x.txt", "z.txt"]
    assert len(sample_keys(store, "bkt", limit=2)) == 2
    assert sample_keys(store, "nothing") == []
