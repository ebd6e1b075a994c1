"""Connecting through a Ray Client address: the server's reason is kept, and a failed session
start on the head is tried again (the head starts a server per client, which can miss its
start-up time on a loaded machine)."""

import pytest

from headrace.executors.ray_executor import _error_line
from headrace.serving import ray_pool
from headrace.serving.pool import PoolOptions


class _Head:
    """Stands in for the `ray` module's `init` only: the real failure cannot be caused at will."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def init(self, address: str, **kwargs: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionAbortedError("Initialization failure from server:\nTimeout waiting")


def test_the_server_reason_is_kept_in_the_error_line():
    exc = ConnectionAbortedError("Initialization failure from server:\nTimeout waiting for x")
    line = _error_line(exc)
    assert (
        line == "ConnectionAbortedError: Initialization failure from server: Timeout waiting for x"
    )


@pytest.mark.parametrize(("failures", "calls", "ok"), [(0, 1, True), (2, 3, True), (3, 3, False)])
def test_a_failed_session_start_is_tried_again(monkeypatch, tmp_path, failures, calls, ok):
    monkeypatch.setattr(ray_pool.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(ray_pool.serve_folder, "make", lambda: tmp_path)
    pool = ray_pool.RayPool({}, PoolOptions(), address="ray://127.0.0.1:10001")
    head = _Head(failures)
    if ok:
        pool._init(head, {})
    else:
        with pytest.raises(ConnectionAbortedError):
            pool._init(head, {})
    assert head.calls == calls
    local = ray_pool.RayPool({}, PoolOptions())  # a local Ray is not tried again
    with pytest.raises(ConnectionAbortedError):
        local._init(_Head(1), {})
