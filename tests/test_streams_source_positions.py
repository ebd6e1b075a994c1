"""A source's position is kept in the ledger with the poll it made: a coordinator started
again, or killed in the middle of delivering a poll, neither reads a record twice nor loses
one (`headrace.ledger.source_positions`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from headrace import App
from headrace.config import load_settings
from headrace.ledger import Ledger
from headrace.server.metrics import Metrics
from headrace.server.streams import StreamService
from headrace.storage import ObjectStore
from headrace.streams import ObjectSource

ROOT = Path(__file__).resolve().parent.parent


def make_service(root: Path):
    """The stream side of a coordinator over `root`: a file source on `root/drop` routed into
    stream `rows`, with a fresh source object (as a new process has)."""
    app = App()
    spec = app.source(
        ObjectSource("drop", str(root / "drop"), settle_seconds=0, interval=0.05),
        event_source="files",
        detail_type="Row",
        time_field="at",
    )
    app.stream("rows")
    app.rule({"source": ["files"]}, target="stream:rows")
    settings = load_settings(root, home=str(root / "home"))
    ledger = Ledger(settings.ledger_url)
    service = StreamService(
        settings, app, ledger, ObjectStore(settings.storage_url), Metrics().streams, print
    )
    service.open()
    return service, spec, ledger


def _write(root: Path, name: str, ids: list[str]) -> None:
    (root / "drop").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"n": i, "at": f"2024-05-01T12:00:0{k}Z"}) for k, i in enumerate(ids)]
    (root / "drop" / name).write_text("\n".join(lines) + "\n")


def _rows(root: Path) -> list[str]:
    service, _, ledger = make_service(root)
    try:
        table = service.logs["rows"].read(0, 0, 1000)
        return table.column("n").to_pylist() if table.num_rows else []
    finally:
        service.close()
        ledger.close()


def test_a_coordinator_started_again_reads_no_file_twice(tmp_path):
    _write(tmp_path, "one.jsonl", ["a", "b", "c"])
    for _ in range(3):  # three runs of the coordinator's threads, each stopped
        service, _, ledger = make_service(tmp_path)
        service._spawn_threads()
        deadline = time.monotonic() + 20
        while service.logs["rows"].end_offset(0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # several more polls
        service.stop()
        ledger.close()
    assert _rows(tmp_path) == ["a", "b", "c"]
    _write(tmp_path, "two.jsonl", ["d"])
    service, spec, ledger = make_service(tmp_path)
    try:
        assert service.poll_source(spec) == 1
        assert service.poll_source(spec) == 0
    finally:
        service.stop()
        ledger.close()
    assert _rows(tmp_path) == ["a", "b", "c", "d"]


def _killed_at(root: Path, where: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.source_position_child", str(root), where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr


def test_a_poll_killed_before_or_after_its_appends_is_delivered_once(tmp_path):
    for where in ("before-delivery", "after-delivery"):
        root = tmp_path / where
        _write(root, "one.jsonl", ["a", "b", "c"])
        _killed_at(root, where)
        expected = [] if where == "before-delivery" else ["a", "b", "c"]
        assert _rows(root) == expected
        # the next coordinator delivers the poll written down, and reads the file no more
        service, spec, ledger = make_service(root)
        try:
            assert service.poll_source(spec) == 0
            assert service.logs["rows"].read(0, 0, 100).column("n").to_pylist() == ["a", "b", "c"]
            ids = service.logs["rows"].read(0, 0, 100).column("_event_id").to_pylist()
        finally:
            service.stop()
            ledger.close()
        assert len(set(ids)) == 3
        assert _rows(root) == ["a", "b", "c"]
