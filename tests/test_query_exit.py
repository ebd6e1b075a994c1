"""`headrace query` exits 0 after printing its rows, every time.

It used to abort (exit -6, "terminate called without an active exception"), segfault or hang
after correct output: the offline table was scanned through deltalake's Python filesystem
handler, and Arrow I/O threads still reading ahead when the interpreter exited (DuckDB stops
at a LIMIT) were killed taking the GIL inside C++ code.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from headrace.app import load_app
from headrace.config import load_settings
from headrace.features.store import open_app_store
from tests.e2e_helpers import headrace

APP = """
import pyarrow as pa
from headrace import App
from headrace.features import FeatureGroup

app = App()
app.feature_group(
    FeatureGroup("fees", entity_keys=["network"], event_time="ts",
                 features={"avg_fee": pa.float64()})
)
"""


@pytest.mark.slow
def test_query_exits_cleanly_every_time(tmp_path):
    (tmp_path / "headrace.toml").write_text('app = "qapp:app"\nhome = ".headrace"\n')
    (tmp_path / "qapp.py").write_text(textwrap.dedent(APP))
    settings = load_settings(tmp_path)
    store = open_app_store(settings, load_app(settings))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(0)
    for i in range(40):  # many files, so a LIMIT leaves reads in flight
        n = 20_000
        batch = pa.table(
            {
                "network": [f"n{j}" for j in range(n)],
                "ts": [start + timedelta(hours=i)] * n,
                "avg_fee": rng.random(n),
            }
        )
        store.write("fees", batch, writer="test", sequence=i + 1)
    store.close()
    for sql in ["SELECT network, avg_fee FROM fees LIMIT 1"] * 6 + [
        "SELECT count(*) AS n FROM fees"
    ] * 2:
        result = headrace("query", sql, "--json", project=tmp_path, timeout=120)
        assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
        rows = json.loads(result.stdout)
        assert rows == [{"n": 800_000}] or (len(rows) == 1 and rows[0]["network"].startswith("n"))
