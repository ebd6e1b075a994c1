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
    assert result.stderr == ""  # no blank line from the progress bar off a terminal
    stored = proj / ".headrace" / "buckets" / key
    assert stored.read_text() == "a\n"


@pytest.mark.slow
def test_up_banner_and_invoke_failure_print_brackets(tmp_path):
    proj, env = _project(tmp_path)
    up = Up(proj, env, tmp_path / "up.log").start()
    try:
        failed = headrace("invoke", "fails", "--payload", '{"x": 1}', project=proj, env=env)
        assert failed.returncode == 1, failed.stderr
        assert "fails failed after 1 attempts" in failed.stderr
        assert "got an object with keys [a] (fix: send [b])" in failed.stderr
        deadline = time.time() + 10
        while "headrace up:" not in up.output() and time.time() < deadline:
            time.sleep(0.1)
        banner = next(line for line in up.output().splitlines() if "headrace up:" in line)
        # the user's one function, not the built-in service functions as well
        assert "headrace up: 1 function (+3 built-in), watching [landing" in banner, banner
    finally:
        up.terminate()
