"""Settings values that used to be accepted and then stall or crash whatever used them."""

from __future__ import annotations

import pytest

from headrace.config import load_settings
from headrace.errors import ConfigError
from tests.e2e_helpers import headrace


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "0", "-1"])
@pytest.mark.parametrize("variable", ["HEADRACE_POLL_INTERVAL", "HEADRACE_LEASE_SECONDS"])
def test_seconds_must_be_positive_and_finite(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match="must be a positive, finite number of seconds"):
        load_settings(tmp_path)


def test_workers_with_5000_digits_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRACE_WORKERS", "9" * 5000)
    with pytest.raises(ConfigError, match="HEADRACE_WORKERS"):
        load_settings(tmp_path)


def test_the_cli_reports_a_nan_poll_interval_in_one_line(tmp_path):
    (tmp_path / "headrace.toml").write_text("")
    result = headrace("invocations", project=tmp_path, env={"HEADRACE_POLL_INTERVAL": "nan"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: setting 'poll_interval' from $HEADRACE_POLL_INTERVAL")


def test_a_list_where_a_number_goes_is_a_config_error(tmp_path):
    (tmp_path / "headrace.toml").write_text("workers = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"setting 'workers'.*\[1, 2\] is not valid"):
        load_settings(tmp_path)


def test_a_huge_value_is_shown_clipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRACE_WORKERS", "9" * 5000)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert len(str(info.value)) < 500 and "(5002 characters)" in str(info.value)
