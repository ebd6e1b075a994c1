"""docs/scale-out.md: every setting, variable, extra and command it shows exists."""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import fields
from pathlib import Path

import fsspec.config
from typer.testing import CliRunner

from headrace import config
from headrace.cli import app as cli
from headrace.jobs.ray_head import ray_executable

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "scale-out.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_every_settings_block_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(fsspec.config, "conf", {})  # storage_endpoint sets it for the process
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "unset")  # so it is restored (unset) after
    monkeypatch.delenv("FSSPEC_S3_ENDPOINT_URL")
    for name in config._ENV:
        monkeypatch.delenv(name, raising=False)
    known = {f.name for f in fields(config.Settings)}
    blocks = _blocks("toml")
    assert len(blocks) >= 4
    for block in blocks:
        values = tomllib.loads(block)
        assert set(values) <= known, set(values) - known
        (tmp_path / "headrace.toml").write_text(block)
        settings = config.load_settings(tmp_path)
        for key, value in values.items():
            assert str(getattr(settings, key)).endswith(value.lstrip(".")), key
    assert fsspec.config.conf["s3"]["endpoint_url"] == "http://127.0.0.1:8333"


def test_every_variable_and_extra_exists():
    for var in set(re.findall(r"\bHEADRACE_[A-Z_]+\b", DOC)):
        assert var in config._ENV, var
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in re.findall(r"headrace\[(\w+)\]", DOC):
        assert extra in extras, extra


def test_every_command_exists():
    runner = CliRunner()
    commands = set()
    for block in _blocks("bash"):
        commands.update(re.findall(r"\bheadrace ([a-z][a-z-]*)", block))
    assert "up" in commands
    for command in commands:
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
    ray_help = subprocess.run(
        [ray_executable(), "start", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for block in _blocks("bash"):
        for line in block.splitlines():
            if line.strip().startswith("ray start"):
                for flag in re.findall(r"(--[a-z-]+)", line):
                    assert flag in ray_help, flag
