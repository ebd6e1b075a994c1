"""docs/models.md runs as written: its Python snippets, in order, in a fresh project."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")


def test_models_page_snippets_run_in_order(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "models.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    for name in ("HEADRACE_PROJECT", "HEADRACE_HOME", "HEADRACE_LEDGER", "HEADRACE_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    scope: dict = {}
    for block in blocks:
        exec(block, scope)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("digits:1 sklearn ")
    assert printed[1] == "['pixel_0_0', 'pixel_0_1', 'pixel_0_2']"
    assert printed[2] == "[(None, 1), (1, 2), (2, 1)]"
    assert printed[3].startswith("297 ")
    clf, production = scope["clf"], scope["production"]
    X = scope["X"][1500:]
    assert (production.predict(X) == clf.predict(X)).all()
    assert scope["scored"].column("digit").to_pylist() == clf.predict(X).tolist()
    assert scope["frame"]["digit"].tolist() == clf.predict(X).tolist()
    assert printed[4] == "ModelScorer(digits:1)"
    # everything went to the project's own home folder
    assert list((tmp_path / ".headrace" / "buckets" / "models" / "digits").iterdir())
    assert (tmp_path / ".headrace" / "ledger.db").is_file()


@pytest.mark.slow
def test_models_page_commands_run_in_order_after_its_snippets(tmp_path, monkeypatch, capsys):
    import os
    import shlex
    import subprocess
    import sys

    import joblib

    text = (ROOT / "docs" / "models.md").read_text()
    section = text.split("## From the command line", 1)[1]
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1).splitlines()
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    for name in ("HEADRACE_PROJECT", "HEADRACE_HOME", "HEADRACE_LEDGER", "HEADRACE_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    scope: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(block, scope)
    joblib.dump(scope["clf"], tmp_path / "model.joblib")
    (tmp_path / "headrace.toml").touch()  # a project folder, as the page assumes
    for line in commands:
        args = shlex.split(line, comments=True)
        assert args[0] == "headrace"
        out = subprocess.run(
            [sys.executable, "-m", "headrace.cli", *args[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, f"{line}\n{out.stdout}{out.stderr}"
