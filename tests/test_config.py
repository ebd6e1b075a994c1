import os
from pathlib import Path

import pytest

from headrace.config import load_settings
from headrace.errors import ConfigError


def test_defaults_need_no_service(tmp_path, monkeypatch):
    for var in ("HEADRACE_LEDGER", "HEADRACE_STORAGE", "HEADRACE_HOME", "HEADRACE_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(tmp_path)
    assert s.home == tmp_path / ".headrace"
    assert s.ledger_url == f"sqlite:///{tmp_path / '.headrace' / 'ledger.db'}"
    assert s.storage_url == str(tmp_path / ".headrace" / "buckets")
    assert s.executor == "local" and s.workers >= 1


def test_file_then_env_then_arguments(tmp_path, monkeypatch):
    (tmp_path / "headrace.toml").write_text(
        'app = "pipeline:app"\nworkers = 3\nstorage = "data"\nexecutor = "ray"\n'
    )
    s = load_settings(tmp_path)
    assert (s.app, s.workers, s.executor) == ("pipeline:app", 3, "ray")
    assert s.storage_url == str(tmp_path / "data")
    monkeypatch.setenv("HEADRACE_WORKERS", "5")
    monkeypatch.setenv("HEADRACE_LEDGER", "postgresql://127.0.0.1/x")
    s = load_settings(tmp_path)
    assert s.workers == 5 and s.ledger_url == "postgresql://127.0.0.1/x"
    assert load_settings(tmp_path, workers=1).workers == 1


def test_headrace_section_is_accepted(tmp_path):
    (tmp_path / "headrace.toml").write_text('[headrace]\nhome = "/tmp/elsewhere"\n')
    assert load_settings(tmp_path).home == Path("/tmp/elsewhere")


@pytest.mark.parametrize(
    "text, words",
    [
        ("workers = 0", ["workers", "at least 1"]),
        ("wrkers = 2", ["unknown setting 'wrkers'", "use one of"]),
        ("app = [", ["not valid TOML"]),
        ("poll_interval = -1", ["poll_interval", "positive"]),
        ('ledger_sync = "sometimes"', ["ledger_sync"]),
    ],
)
def test_bad_settings_name_the_setting_and_the_fix(tmp_path, text, words):
    (tmp_path / "headrace.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    for word in words:
        assert word in str(info.value)


def test_bad_env_value(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRACE_WORKERS", "many")
    with pytest.raises(ConfigError, match=r"\$HEADRACE_WORKERS"):
        load_settings(tmp_path)


def test_storage_endpoint_must_be_an_http_url(tmp_path, monkeypatch):
    import fsspec.config

    from headrace.errors import ConfigError

    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "unset")  # so it is restored (unset) after
    monkeypatch.delenv("FSSPEC_S3_ENDPOINT_URL")
    with pytest.raises(ConfigError, match=r"storage_endpoint.*not an http"):
        load_settings(tmp_path, storage="s3://root", storage_endpoint="127.0.0.1:8333")
    settings = load_settings(
        tmp_path, storage="s3://root", storage_endpoint="http://127.0.0.1:8333"
    )
    assert settings.storage_endpoint == "http://127.0.0.1:8333"
    # every s3:// file system of this process, and of the processes it starts, goes there
    assert fsspec.config.conf["s3"]["endpoint_url"] == "http://127.0.0.1:8333"
    assert os.environ["FSSPEC_S3_ENDPOINT_URL"] == "http://127.0.0.1:8333"
