"""What a stranger's trial of the CLI found: markup in keys and errors, tracebacks, silent
no-ops, unchecked values. Each test runs the real `headrace` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e_helpers import Up, headrace

_FAILING_APP = """
from headrace import App

app = App("trial")


@app.on_object_created(bucket="landing", suffix=".txt")
@app.function(retries=0)
def fails(event, context):
    raise ValueError("got an object with keys [a] (fix: send [b])")
"""


def _project(tmp_path, source: str = _FAILING_APP):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "headrace.toml").write_text('app = "pipeline:app"\n')
    (proj / "pipeline.py").write_text(source)
    env = {"HEADRACE_HOME": str(proj / ".headrace"), "HEADRACE_POLL_INTERVAL": "0.2"}
    return proj, env


def _one_line(text: str) -> str:
    """typer's boxed error joined back into one line."""
    return " ".join(line.strip("│╭╮╰╯─ ").strip() for line in text.splitlines() if line.strip())


# -- 1. user text is never rich markup ----------------------------------------------------------


@pytest.mark.parametrize("key", ["inbox/q[/i].csv", "inbox/[bold]x.csv", "inbox/[a].csv"])
def test_put_prints_keys_with_brackets_as_written(tmp_path, key):
    proj, env = _project(tmp_path)
    doc = tmp_path / "a.csv"
    doc.write_text("a\n")
    result = headrace("put", str(doc), key, project=proj, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{key}  2 bytes"), result.stdout
    # no blank line from the progress bar off a terminal; the key printed as written
    assert result.stderr == (
        f"warning: nothing runs for {key}: no trigger watches bucket 'inbox' (watched: landing)\n"
    )
    stored = proj / ".headrace" / "buckets" / key
    assert stored.read_text() == "a\n"


@pytest.mark.slow
def test_up_banner_and_invoke_failure_print_brackets(tmp_path):
    proj, env = _project(tmp_path)
    up = Up(proj, env, tmp_path / "up.log").start()
    try:
        failed = headrace("invoke", "fails", "--payload", '{"x": 1}', project=proj, env=env)
        assert failed.returncode == 1, failed.stderr
        assert "fails failed after 1 attempt:" in failed.stderr
        assert "got an object with keys [a] (fix: send [b])" in failed.stderr
        wide = {**env, "COLUMNS": "300"}
        for table in (["invocations"], ["dlq", "list"]):  # error cells of tables too
            listed = headrace(*table, project=proj, env=wide)
            assert "keys [a] (fix: send [b])" in listed.stdout, listed.stdout
        deadline = time.time() + 10
        while "headrace up:" not in up.output() and time.time() < deadline:
            time.sleep(0.1)
        banner = next(line for line in up.output().splitlines() if "headrace up:" in line)
        # the user's one function, not the built-in service functions as well
        assert "headrace up: 1 function (+3 built-in), watching [landing" in banner, banner
    finally:
        up.terminate()


# -- 2. Ctrl-C during `headrace up`'s start-up ------------------------------------------------


def _start_up(proj, env) -> subprocess.Popen:
    """`headrace up` in its own process group, as a shell runs it (Ctrl-C reaches the group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "headrace.cli", "-C", str(proj), "up", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )


def _assert_stopped_cleanly(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out and "Aborted" not in out, out
    assert "stopped" in out, out
    assert proc.returncode == 130, out
    return out


@pytest.mark.slow
def test_ctrl_c_while_the_app_loads_stops_cleanly(tmp_path):
    proj, env = _project(tmp_path, "import time\n\ntime.sleep(30)\n" + _FAILING_APP)
    proc = _start_up(proj, env)
    time.sleep(2.0)  # well inside the 30 s import of pipeline.py
    os.killpg(proc.pid, signal.SIGINT)
    assert "interrupted during start-up" in _assert_stopped_cleanly(proc)


@pytest.mark.slow
def test_ctrl_c_while_the_fork_server_starts_stops_cleanly(tmp_path):
    import psutil

    proj, env = _project(tmp_path)
    proc = _start_up(proj, env)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 60
    while time.time() < deadline:  # the moment the fork server exists, before its setsid
        if any("forkserver" in " ".join(c.cmdline()) for c in _children(parent)):
            break
        time.sleep(0.005)
    else:
        raise AssertionError("no fork server started")
    os.killpg(proc.pid, signal.SIGINT)
    _assert_stopped_cleanly(proc)


def _children(parent):
    import psutil

    found = []
    for child in parent.children():
        try:
            child.cmdline()
            found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("where", ["afile", "afile/sub"])
def test_init_on_a_file_is_a_one_line_error(tmp_path, where):
    (tmp_path / "afile").write_text("not a folder")
    result = headrace("init", str(tmp_path / where), project=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = _one_line(result.stderr)
    assert "afile" in message and (
        "is a file, not a folder" in message or "Not a directory" in message
    )
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_the_init_template_says_what_an_empty_event_lacks(tmp_path):
    import importlib.util

    from headrace.errors import MalformedEvent, is_deterministic

    assert headrace("init", str(tmp_path / "proj"), project=tmp_path).returncode == 0
    spec = importlib.util.spec_from_file_location("initpipeline", tmp_path / "proj/pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(MalformedEvent, match="names 0 objects in its 'Records' list") as e:
        module.count_words({"Records": []}, None)
    assert "send one record with s3.bucket.name and s3.object.key" in str(e.value)
    assert is_deterministic(f"MalformedEvent: {e.value}")  # not retried


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


_PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


def test_execute_refuses_input_nested_past_the_limit():
    from headrace.jsontext import MAX_DEPTH
    from headrace.workflows import execute
    from headrace.workflows.names import InvalidExecutionInput

    with pytest.raises(InvalidExecutionInput, match=f"the limit is {MAX_DEPTH} levels"):
        execute(_PASS, _nested(5000))
    assert execute(_PASS, _nested(MAX_DEPTH - 1)).status == "SUCCEEDED"


def test_start_execution_refuses_input_nested_past_the_limit(tmp_path):
    from headrace.ledger import Ledger
    from headrace.workflows import api
    from headrace.workflows.names import InvalidExecutionInput

    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    with pytest.raises(InvalidExecutionInput, match="the limit is 128 levels"):
        api.start_execution(ledger, {"m": _PASS}, "m", _nested(5000))


# -- 3. task tokens nobody waits on are refused ---------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["send-task-success", "bogus-token", "--output", '{"a":1}'],
        ["send-task-failure", "bogus-token", "--error", "E"],
        ["send-task-heartbeat", "bogus-token"],
    ],
    ids=["success", "failure", "heartbeat"],
)
def test_send_task_commands_refuse_an_unknown_token(tmp_path, command):
    (tmp_path / "home").mkdir()  # a home that does not exist is refused before the token
    env = {"HEADRACE_HOME": str(tmp_path / "home")}
    result = headrace(*command, project=tmp_path, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: task token 'bogus-token': TaskDoesNotExist")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_send_task_success_ends_the_task_once(tmp_path):
    from pathlib import Path

    flows = Path(__file__).parent / "apps" / "flows"
    env = {"HEADRACE_HOME": str(tmp_path / "home"), "HEADRACE_POLL_INTERVAL": "0.2"}
    up = Up(flows, env, tmp_path / "up.log").start()
    try:
        marks = tmp_path / "marks"
        started = headrace(
            "start-execution", "approval", "--name", "ask1", "--input",
            f'{{"marks": "{marks}"}}', project=flows, env=env,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        deadline = time.time() + 30
        while not (marks / "token.txt").exists() and time.time() < deadline:
            time.sleep(0.05)
        token = (marks / "token.txt").read_text()
        beat = headrace("send-task-heartbeat", token, project=flows, env=env)
        assert beat.returncode == 0, beat.stderr
        done = headrace("send-task-success", token, "--output", '{"ok": 1}', project=flows, env=env)
        assert done.returncode == 0, done.stderr
        deadline = time.time() + 30
        while time.time() < deadline:
            row = headrace("describe-execution", "ask1", project=flows, env=env)
            if '"SUCCEEDED"' in row.stdout:
                break
            time.sleep(0.2)
        again = headrace("send-task-success", token, project=flows, env=env)
        assert again.returncode == 2 and "TaskTimedOut" in again.stderr, again.stderr
        for wrong in (token + "x", token.split("#", 1)[0] + "#nope"):
            other = headrace("send-task-failure", wrong, project=flows, env=env)
            assert other.returncode == 2 and "TaskDoesNotExist" in other.stderr, other.stderr
    finally:
        up.terminate()


# -- 4. arguments that are not UTF-8; definition files that cannot be read -------------------


@pytest.mark.parametrize(
    "command",
    [["invoke", "fails", "--async", "--payload"], ["start-execution", "m", "--input"]],
    ids=["payload", "input"],
)
def test_json_options_refuse_bytes_that_are_not_utf8(tmp_path, command):
    proj, env = _project(tmp_path)
    result = headrace(*command, b'{"a": "\xff.txt"}', project=proj, env=env)
    message = _one_line(result.stderr)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{command[-1]} is not valid UTF-8 (byte 0xff at character 8)" in message
    assert (
        not (proj / ".headrace").exists()
        or "dcff" not in headrace("invocations", "--json", project=proj, env=env).stdout
    )


def test_a_missing_definition_file_is_not_told_to_correct_fields(tmp_path):
    proj, env = _project(
        tmp_path, _FAILING_APP + "\napp.state_machine('m', 'machines/nowhere.asl.json')\n"
    )
    result = headrace("graph", "m", project=proj, env=env)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "cannot read machines/nowhere.asl.json" in message
    assert "correct the fields named above" not in message
    assert "check the file's path" in message


# -- 5. unknown values are refused, not answered with nothing --------------------------------

_TWO_MACHINES = (
    _FAILING_APP
    + """
_PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
app.state_machine("first", _PASS)
app.state_machine("second", _PASS)
"""
)


def test_graph_refuses_an_execution_of_another_state_machine(tmp_path):
    proj, env = _project(tmp_path, _TWO_MACHINES)
    started = headrace("start-execution", "first", "--name", "run1", project=proj, env=env)
    assert started.returncode == 0, started.stderr
    assert headrace("graph", "first", "-e", "run1", project=proj, env=env).returncode == 0
    result = headrace("graph", "second", "-e", "run1", project=proj, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = _one_line(result.stderr)
    assert "execution 'run1' is of state machine 'first', not 'second'" in message


def test_logs_refuses_an_unknown_function(tmp_path):
    proj, env = _project(tmp_path)
    result = headrace("logs", "nosuch", project=proj, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "no function 'nosuch' (known: fails)" in _one_line(result.stderr)
    never = headrace("logs", "fails", project=proj, env=env)  # known, never run: said so
    assert never.returncode == 1 and never.stdout == "", never.stderr
    assert never.stderr == "no attempts of function fails yet (see `headrace invocations`)\n"


@pytest.mark.parametrize(
    ("command", "known"),
    [
        ("invocations", "pending, running, succeeded, dead"),
        ("executions", "RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED"),
    ],
)
def test_list_commands_refuse_an_unknown_status(tmp_path, command, known):
    proj, env = _project(tmp_path)
    result = headrace(command, "--status", "bogus", project=proj, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"no status 'bogus': use one of {known}" in _one_line(result.stderr)


@pytest.mark.parametrize(
    "command",
    [["invocations"], ["executions"], ["logs", "fails"], ["jobs", "list"], ["query", "select 1"]],
)
def test_limits_below_one_are_refused(tmp_path, command):
    proj, env = _project(tmp_path)
    result = headrace(*command, "--limit", "-5", project=proj, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "--limit" in result.stderr and "greater than or equal to 1" in result.stderr


@pytest.mark.parametrize("env", [{}, {"HEADRACE_HOME": "home"}], ids=["plain", "home-set"])
def test_up_outside_a_project_refuses_and_names_init(tmp_path, env):
    env = {k: str(tmp_path / v) for k, v in env.items()}
    result = headrace("up", "--quiet", project=tmp_path, env=env, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = " ".join(result.stderr.split())
    assert "headrace init" in message and "Traceback" not in message
    if env:  # a home given, but none there and no headrace.toml: not a project either
        assert f"{env['HEADRACE_HOME']}: does not exist, and {tmp_path} has no headrace.toml" in (
            message
        )
    else:
        assert f"{tmp_path}: is not a headrace project (no headrace.toml)" in message
    assert list(tmp_path.iterdir()) == []  # nothing created: no .headrace, no home


def test_a_missing_project_folder_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "nonexistent"
    for command in (["invocations"], ["up"], ["status"], ["ls"]):
        result = headrace(*command, project=missing, env={"HEADRACE_PROJECT": ""})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"project folder {missing}: does not exist" in " ".join(result.stderr.split())
        assert result.stdout == ""
    assert not missing.exists()


# -- 6. version and help ------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(tmp_path):
    from importlib.metadata import version

    result = headrace("--version", project=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"headrace {version('headrace')}\n"


@pytest.mark.parametrize("command", [[], ["invocations"], ["start-execution"], ["jobs", "list"]])
def test_help_shows_no_value_type_for_flags(tmp_path, command):
    result = headrace(*command, "--help", project=tmp_path, env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout and "<bool>" not in result.stdout, result.stdout
    if command == ["invocations"]:  # numbers keep their type; text values are named
        assert "<int" in result.stdout and "<str>" not in result.stdout
        assert "--function -f FUNCTION" in " ".join(result.stdout.split()), result.stdout


@pytest.mark.parametrize(
    ("command", "shown"),
    [(["dlq", "redrive"], "ids... IDS..."), (["cat"], "* BUCKET/KEY BUCKET/KEY of the object.")],
)
def test_help_names_text_values_instead_of_their_python_type(tmp_path, command, shown):
    result = headrace(*command, "--help", project=tmp_path, env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "<str>" not in result.stdout and "<list[str]>" not in result.stdout, result.stdout
    assert shown in " ".join(result.stdout.replace("│", " ").split()), result.stdout
