"""The examples and documented snippets stay runnable.

The getting-started walk-through (init, up, put, a plain copy, invocations, logs) is exercised
command by command in test_cli.py; this file runs `make run`'s demo and the GRIB snippet.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_run_demo(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "grib_to_parquet" / "run_demo.py"), "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 converted, 0 failed" in result.stdout
    curated = tmp_path / "home" / "buckets" / "curated"
    assert len(list(curated.glob("*.parquet"))) == 3
    # at 80 columns too, paths and commands are printed whole, each on one line to paste
    here = ROOT / "examples" / "grib_to_parquet"
    lines = result.stdout.splitlines()
    assert f"Parquet files: {curated}" in lines, result.stdout
    assert f"        cd {here} && headrace logs grib_to_parquet" in lines, result.stdout


@pytest.mark.slow
def test_make_run_band_composite_demo(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "band_composite" / "run_demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "execution SUCCEEDED" in result.stdout
    composites = list((tmp_path / "home" / "buckets" / "composites").rglob("*.tif"))
    assert len(composites) == 4
    assert "done.jsonl: band composites done" in result.stdout


def test_getting_started_grib_snippet(shared_data, tmp_path, monkeypatch):
    text = (ROOT / "docs" / "getting-started.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "read_grib" in b]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gfs.grib2").write_bytes(
        (shared_data / "grib" / "gfs.t12z.pgrbf120.2p5deg.grib2").read_bytes()
    )
    (tmp_path / "era5.grib").write_bytes(
        (shared_data / "grib" / "era5-levels-members.grib").read_bytes()
    )
    scope: dict = {}
    exec(snippet, scope)
    assert scope["report"].fields == 343
    assert scope["table"].num_rows == 160 * 7320


def test_getting_started_grib_snippet_on_generated_files(generated_gribs, tmp_path, monkeypatch):
    """The same snippet on GRIB files generated with ecCodes, so a fresh clone runs it too."""
    text = (ROOT / "docs" / "getting-started.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "read_grib" in b]
    monkeypatch.chdir(tmp_path)
    gfs_like = generated_gribs["multi_field.grib2"]  # GRIB2 with multi-field messages
    era5_like = generated_gribs["levels_members_steps.grib"]  # GRIB1 levels and members
    (tmp_path / "gfs.grib2").write_bytes(gfs_like.path.read_bytes())
    (tmp_path / "era5.grib").write_bytes(era5_like.path.read_bytes())
    scope: dict = {}
    exec(snippet, scope)
    assert scope["report"].fields == gfs_like.fields > gfs_like.messages
    assert scope["table"].num_rows == era5_like.fields * era5_like.points
    assert (tmp_path / "gfs.parquet").is_file()


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    commands = [line.split("#")[0].strip() for line in lines[2:4]]
    assert lines[1] == "```sh" and commands == ["make run", "make test"]


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)


def test_streams_page_declarations_load(tmp_path, monkeypatch):
    (snippet,) = [b for b in _python_blocks("streams.md") if "app.pipeline" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)
    app = scope["app"]
    app.check_streams()
    assert app.pipelines["tx"].stage_names == [
        "dedup",
        "archive:archive/transactions/",
        "tumbling",
        "map:<lambda>",
        "features:tx_minute",
    ]
    assert "tx-late" in app.streams and "compact-tx_minute" in app.schedules


def test_streams_page_feature_store_snippet(tmp_path, monkeypatch):
    (snippet,) = [b for b in _python_blocks("streams.md") if "FeatureStore(" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)
    assert scope["online"][0]["avg_fee"] == 12.5
    assert scope["training"]["avg_fee"].to_pylist() == [None, 10.0, 12.5]
    assert scope["minutes"]["n"].to_pylist() == [2]


def test_streams_page_flush_snippet(tmp_path, monkeypatch):
    (snippet,) = [b for b in _python_blocks("streams.md") if "flush_pipeline" in b]
    monkeypatch.chdir(ROOT)  # the snippet names the example by its path in the repository
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    scope: dict = {}
    exec(snippet, scope)
    result = scope["result"]
    assert (result["pipeline"], result["by"]) == ("tx", "this process")
    assert (result["records"], result["windows"]) == (0, 0)  # an empty stream: nothing open


@pytest.mark.slow
def test_make_run_transactions_demo(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "transactions_features" / "run_demo.py"), "12"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HEADRACE_HOME": str(tmp_path / "home"), "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "distinct hashes" in result.stdout and "online read tx_minute" in result.stdout
    assert list((tmp_path / "home" / "buckets" / "archive").rglob("*.parquet"))


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_every_relative_link_in_readme_and_docs_resolves_inside_the_repo():
    """A clone has only the repository: no link may point beside it (../shared) or nowhere."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_json_options_in_documented_commands_are_json():
    """A command pasted from the README or docs runs: its --input and --payload are real JSON
    (shortened), not placeholders such as [...]."""
    import itertools
    import json
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for line in page.read_text().splitlines():
            if not line.startswith("headrace ") or not re.search(r"--(input|payload) '", line):
                continue
            words = shlex.split(line.split("  #")[0])
            for flag, value in itertools.pairwise(words):
                if flag in ("--input", "--payload"):
                    try:
                        json.loads(value)
                    except ValueError as exc:
                        raise AssertionError(f"{page.name}: {line}: {exc}") from None
                    checked += 1
    assert checked >= 2
