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
