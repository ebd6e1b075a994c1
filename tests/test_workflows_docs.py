"""The Python snippets of docs/workflows.md run as written."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "workflows.md"
SNIPPETS = [
    block
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    if "execute(" in block
]


def test_the_page_has_runnable_snippets():
    assert SNIPPETS


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_snippet_runs(snippet):
    exec(compile(snippet, str(DOC), "exec"), {})
