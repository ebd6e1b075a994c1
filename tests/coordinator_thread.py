"""A coordinator run in a thread of the test process, stopped when the block ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from headrace.app import App
from headrace.config import Settings
from headrace.server.coordinator import Coordinator


@contextmanager
def coordinator_thread(settings: Settings, app: App) -> Iterator[Coordinator]:
    coordinator = Coordinator(settings, app)
    thread = threading.Thread(target=coordinator.run, kwargs={"drain_timeout": 5})
    thread.start()
    try:
        assert coordinator.ready.wait(30)
        yield coordinator
    finally:
        coordinator.stop()
        thread.join(30)
