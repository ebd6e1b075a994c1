"""`headrace up --reload`: run the coordinator in a child process and restart it, with fresh
workers and a freshly imported app, whenever the project's code or settings change.

The child is an ordinary `headrace up`: a restart drains it (running invocations finish, as on
SIGTERM) before the next one starts, so nothing is lost or run twice. The project folder is
watched with watchdog, leaving out the state headrace itself writes (the home folder, local
buckets, streams and features) and folders that are not the project's code (hidden ones such as
.git and .venv, __pycache__, node_modules), so results written into buckets never trigger a
restart. The child stops if this process dies, so no coordinator outlives its supervisor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

err = Console(stderr=True)

#: What counts as the project's code or settings.
WATCHED_SUFFIXES = (".py", ".toml", ".json", ".yaml", ".yml", ".sql")
#: Folders never watched, besides hidden ones and headrace's own state.
SKIPPED_FOLDERS = {"__pycache__", "node_modules", "venv", "build", "dist"}
#: Quiet time after the last change before restarting: an editor's save is several events.
SETTLE = 0.3
#: The child checks that its supervisor is alive this often (seconds).
PARENT_CHECK = 1.0
PARENT_ENV = "HEADRACE_RELOAD_PARENT"
#: watchdog event types that change a file.
CHANGES = {"created", "modified", "moved", "deleted", "closed"}
#: A child that dies within this many seconds of starting is restarted after a backoff.
STARTED = 5.0
#: Waits before restarting a child that keeps dying quickly: doubled each time, up to the max.
BACKOFF, MAX_BACKOFF = 0.5, 30.0


def _skipped_roots(settings: Any) -> list[Path]:
    roots = [settings.home]
    for url in (settings.storage_url, settings.streams_url, settings.features_url):
        if "://" not in url:
            roots.append(Path(url))
    return [r.resolve() for r in roots]


def _skip_folder(path: Path, skipped: list[Path]) -> bool:
    name = path.name
    if name.startswith(".") or name in SKIPPED_FOLDERS or name.endswith(".egg-info"):
        return True
    resolved = path.resolve()
    return any(resolved == r or r in resolved.parents for r in skipped)


def relevant(path: str, project: Path, skipped: list[Path]) -> bool:
    """Whether a change at `path` is a change of the project's code or settings."""
    p = Path(path)
    if not p.name.endswith(WATCHED_SUFFIXES) or p.name.startswith("."):
        return False
    try:
        rel = p.resolve().relative_to(project)
    except ValueError:
        return False
    folder = project
    for part in rel.parts[:-1]:
        folder = folder / part
        if _skip_folder(folder, skipped):
            return False
    return True


class _Changes:
    """watchdog handler: remembers the last relevant change and when it happened."""

    def __init__(self, project: Path, skipped: list[Path]) -> None:
        self.project, self.skipped = project, skipped
        self.lock = threading.Lock()
        self.last: tuple[float, str] | None = None

        #: called with a folder created at the project root, to watch it too
        self.new_folder: Any = None

    def dispatch(self, event: Any) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved") and self.new_folder is not None:
                folder = Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))
                if folder.parent == self.project and not _skip_folder(folder, self.skipped):
                    self.new_folder(folder)
            return
        # not "opened" or "closed_no_write": importing the app reads its files
        if event.event_type not in CHANGES:
            return
        for path in (event.src_path, getattr(event, "dest_path", "") or ""):
            if path and relevant(os.fsdecode(path), self.project, self.skipped):
                with self.lock:
                    self.last = (time.monotonic(), os.fsdecode(path))

    def settled(self) -> str | None:
        """The changed file once changes have stopped for SETTLE seconds, else None."""
        with self.lock:
            if self.last is None or time.monotonic() - self.last[0] < SETTLE:
                return None
            path, self.last = self.last[1], None
            return path


def _observe(project: Path, skipped: list[Path], handler: _Changes) -> Any:
    """Watch the project root and each of its code folders recursively, so that big folders
    that are not code (a .venv, the home with its buckets) cost no watches."""
    from watchdog.observers import Observer

    observer = Observer()
    observer.schedule(handler, str(project), recursive=False)  # type: ignore[arg-type]
    for entry in project.iterdir():
        if entry.is_dir() and not _skip_folder(entry, skipped):
            observer.schedule(handler, str(entry), recursive=True)  # type: ignore[arg-type]

    def watch_new(folder: Path) -> None:
        # a folder made after start-up (deeper ones are covered by their recursive watch)
        observer.schedule(handler, str(folder), recursive=True)  # type: ignore[arg-type]
        # files written into it before the watch began count as changes too
        for path in folder.rglob("*"):
            if path.is_file() and relevant(str(path), project, skipped):
                with handler.lock:
                    handler.last = (time.monotonic(), str(path))

    handler.new_folder = watch_new
    observer.start()
    return observer


def _is_up(home: Path, pid: int) -> bool:
    """Whether the coordinator with this pid has started (it wrote its coordinator.json)."""
    try:
        return json.loads((home / "coordinator.json").read_text()).get("pid") == pid
    except (OSError, ValueError, AttributeError):
        return False


def supervise(settings: Any, up_args: list[str]) -> int:
    """Run `headrace up` with `up_args` in a child; restart it when the project changes.
    Returns the exit code of the last child once this process is asked to stop."""
    project = settings.project_dir.resolve()
    skipped = _skipped_roots(settings)
    handler = _Changes(project, skipped)
    observer = _observe(project, skipped, handler)
    command = [sys.executable, "-m", "headrace.cli", "-C", str(project), "up", *up_args]
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # a second Ctrl-C reaches it too: stop now

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # else the child ignores it too
        signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    err.print(f"reload: watching {project} for changes to its code", markup=False, soft_wrap=True)
    code = 0
    backoff = 0.0
    try:
        while not stopping.is_set():
            # its own session: a Ctrl-C at the terminal reaches it once, through `forward`
            child = subprocess.Popen(command, env=env, start_new_session=True)
            changed, up_at = None, None
            while child.poll() is None and not stopping.is_set():
                time.sleep(0.1)
                if up_at is None and _is_up(settings.home, child.pid):
                    up_at = time.monotonic()
                changed = handler.settled()
                if changed:
                    err.print(
                        f"reload: {changed} changed: restarting", markup=False, soft_wrap=True
                    )
                    child.send_signal(signal.SIGTERM)  # drain: running invocations finish
                    break
            code = child.wait()
            if stopping.is_set():
                break
            if changed is None and up_at is not None:
                # it had started and then died (killed, crashed): restart it now, backing off
                # while it keeps dying soon after starting
                ran = time.monotonic() - up_at
                backoff = 0.0 if ran >= STARTED else min(max(backoff * 2, BACKOFF), MAX_BACKOFF)
                err.print(
                    f"reload: the coordinator died ({code}) after running {ran:.1f} s; restarting"
                    + (f" in {backoff:.1f} s" if backoff else ""),
                    markup=False,
                    soft_wrap=True,
                )
                stopping.wait(backoff)
                continue
            if changed is None:  # it stopped by itself (a start-up error): wait for a fix
                err.print(
                    f"reload: the coordinator exited ({code}); restarting when the code changes",
                    markup=False,
                    soft_wrap=True,
                )
                while not stopping.is_set() and handler.settled() is None:
                    time.sleep(0.1)
    finally:
        observer.stop()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            code = child.wait()
    return code


def watch_parent() -> None:
    """In a child of `supervise`: stop this process (as SIGTERM does, draining) when the
    supervisor is gone, so a killed supervisor leaves no coordinator behind."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return

    def check() -> None:
        while os.getppid() == int(parent):
            time.sleep(PARENT_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=check, name="headrace-reload-parent", daemon=True).start()
