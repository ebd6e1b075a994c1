"""`headrace models`: push, list, show, alias, rollback, history and delete, and the errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headrace.cli import app
from headrace.models import ModelInUse, ModelNotFound

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")


@pytest.fixture
def project(tmp_path):
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(X, y), tmp_path / "tree.joblib")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    (tmp_path / "headrace.toml").write_text("")  # a project: its registry is in its home
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["-C", str(tmp_path), "models", *args], env=env)

    return tmp_path, invoke


def test_push_list_show_alias_rollback_delete(project):
    folder, invoke = project
    pushed = invoke(
        "push", "digits", str(folder / "tree.joblib"), "--alias", "staging",
        "-m", "accuracy=0.91", "--tag", "team=vision", "--description", "a tree",
    )  # fmt: skip
    assert pushed.exit_code == 0, pushed.output
    assert pushed.stdout.strip() == "digits:1"
    second = invoke("push", "digits", str(folder / "tree.joblib"), "--json")
    assert json.loads(second.stdout)["version"] == 2

    (summary,) = json.loads(invoke("list", "--json").stdout)
    assert (summary["name"], summary["versions"], summary["latest"]) == ("digits", 2, 2)
    assert summary["aliases"] == {"staging": 1}
    assert "staging→1" in invoke("list").stdout
    versions = json.loads(invoke("list", "digits", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2]
    assert "a tree" not in invoke("list", "digits").stdout  # the table keeps to one line each

    shown = json.loads(invoke("show", "digits@staging", "--json").stdout)
    assert shown["version"] == 1 and shown["metrics"] == {"accuracy": 0.91}
    assert shown["tags"] == {"team": "vision"} and shown["framework"] == "sklearn"
    assert shown["filename"] == "tree.joblib" and len(shown["sha256"]) == 64
    text = invoke("show", "digits").stdout
    assert re.search(r"model\s+digits:2", text) and "scikit-learn" in text

    moved = invoke("alias", "digits", "production", "2")
    assert moved.exit_code == 0 and "digits@production → version 2" in moved.stderr
    invoke("alias", "digits", "production", "1")
    back = invoke("rollback", "digits", "production")
    assert "version 2 (was 1)" in back.stderr
    history = json.loads(invoke("history", "digits", "production", "--json").stdout)
    assert [(m["previous"], m["version"]) for m in history] == [(None, 2), (2, 1), (1, 2)]
    assert invoke("alias", "digits", "staging", "--remove").exit_code == 0

    refused = invoke("delete", "digits:2")
    assert isinstance(refused.exception, ModelInUse)
    assert invoke("delete", "digits:1").exit_code == 0
    assert [v["version"] for v in json.loads(invoke("list", "digits", "--json").stdout)] == [2]
    missing = invoke("show", "digits:1")
    assert isinstance(missing.exception, ModelNotFound)
    assert "versions: 2" in str(missing.exception)


def test_usage_errors(project):
    folder, invoke = project
    invoke("push", "digits", str(folder / "tree.joblib"))
    bad_metric = invoke("push", "digits", str(folder / "tree.joblib"), "-m", "accuracy=high")
    assert bad_metric.exit_code == 2 and "not a number" in bad_metric.output
    assert invoke("delete", "digits").exit_code == 2  # the version is required
    both = invoke("alias", "digits", "production", "1", "--remove")
    assert both.exit_code == 2 and "--remove" in both.output


def test_errors_print_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    (tmp_path / "headrace.toml").write_text("")
    (tmp_path / "notes.pkl").write_text("not a pickle")
    for args, message in [
        (["show", "digits@production"], "error: model 'digits': is not in the registry"),
        (["push", "digits", str(tmp_path / "absent.joblib")], "absent.joblib': does not exist"),
        (["push", "digits", str(tmp_path / "notes.pkl")], "cannot be loaded as a pickle"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "headrace.cli", "-C", str(tmp_path), "models", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
