"""Running one invocation inside a worker: the target every executor calls for a function.

It decodes the event, builds the `Context`, captures what the handler prints or logs into the
invocation's log file, enforces the scratch-space limit, and returns a JSON-safe result.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headrace.errors import FunctionError, TmpSpaceExceeded
from headrace.executors.calls import resolve_target, user_traceback
from headrace.functions.context import Context

TARGET = "headrace.functions.runtime:run_invocation"


class _LazyLog(io.TextIOBase):
    """A log file created on the first write, so silent invocations cost no file."""

    def __init__(self, path: Path, request_id: str) -> None:
        self.path = path
        self.request_id = request_id
        self._fh: io.TextIOWrapper | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not text:
            return 0
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        return self._fh.write(text)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _LambdaFormatter(logging.Formatter):
    # The Lambda Python runtime's format: level, UTC time, request id, message.
    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        text = f"[{record.levelname}]\t{ts}Z\t{self.request_id}\t{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def run_invocation(
    *,
    invocation_id: str,
    attempt: int,
    function: str,
    handler: str,
    payload: str,
    version: str,
    arn: str,
    memory: int,
    tmp_size: int,
    deadline: float,
    log_path: str,
    log_stream: str,
    tmp_root: str,
    storage_url: str,
    environment: dict[str, str] | None = None,
    layer: str = "",
) -> Any:
    log = _LazyLog(Path(log_path), invocation_id)
    if layer and layer not in sys.path:
        # the function's requirements, ahead of the project's environment (a Lambda layer)
        sys.path.insert(0, layer)
    with _environment(environment or {}), _capture_descriptors(Path(log_path)):
        return _run(
            log,
            handler,
            invocation_id,
            attempt,
            function,
            payload,
            version,
            arn,
            memory,
            tmp_size,
            deadline,
            log_stream,
            tmp_root,
            storage_url,
        )


_LIBC = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        import ctypes

        _LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def _capture_descriptors(path: Path) -> Any:
    """Send what is written to descriptor 1 during the call to the invocation's log: programs
    the handler runs and C libraries print there, not to `sys.stdout` (Lambda logs a process's
    whole output). Descriptor 2 stays the executor's: it keeps the last lines a worker wrote
    there for the error of a call the worker dies in. A log left empty is removed: silent
    invocations cost no file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        saved = os.dup(1)
    except OSError:
        yield
        return
    with contextlib.suppress(Exception):
        sys.__stdout__.flush()
    os.dup2(fd, 1)
    try:
        yield
    finally:
        if _LIBC is not None:
            _LIBC.fflush(None)  # C stdio buffers of this call belong to its log
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Any:
    """Set the function's variables for one call; the worker runs other functions after it."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(
    log: _LazyLog,
    handler: str,
    invocation_id: str,
    attempt: int,
    function: str,
    payload: str,
    version: str,
    arn: str,
    memory: int,
    tmp_size: int,
    deadline: float,
    log_stream: str,
    tmp_root: str,
    storage_url: str,
) -> Any:
    handler_fn = resolve_target(handler)
    context = Context(
        function_name=function,
        function_version=version,
        invoked_function_arn=arn,
        memory_limit_in_mb=memory,
        aws_request_id=invocation_id,
        log_stream_name=log_stream,
        deadline=deadline,
        tmp_root=Path(tmp_root),
        tmp_size_mb=tmp_size,
        storage_url=storage_url,
        attempt=attempt,
    )
    event = json.loads(payload)
    log_handler = logging.StreamHandler(log)
    log_handler.setFormatter(_LambdaFormatter(invocation_id))
    root = logging.getLogger()
    root.addHandler(log_handler)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        result = handler_fn(event, context)
        used = context.tmp_used_bytes()
        if used > tmp_size * 1024 * 1024:
            raise TmpSpaceExceeded(
                f"function {function!r} invocation {invocation_id}",
                f"wrote {used / 2**20:.1f} MB to its scratch folder, over its {tmp_size} MB limit",
                "raise tmp_size= in @app.function, or clean up files it no longer needs",
            )
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise FunctionError(
                f"function {function!r}",
                f"returned a value that is not JSON: {exc}",
                "return dicts, lists, strings, numbers, booleans or None",
            ) from None
        return result
    except (Exception, SystemExit) as exc:
        log.write(f"[ERROR] {type(exc).__name__}: {exc}\n{user_traceback(exc)}")
        raise
    finally:
        sys.stdout, sys.stderr = saved
        root.removeHandler(log_handler)
        log.close()
        context.cleanup()


def log_location(
    logs_dir: Path, function: str, invocation_id: str, attempt: int
) -> tuple[str, str]:
    """Where an attempt's log lines go, and its Lambda-style log stream name."""
    day = time.strftime("%Y/%m/%d", time.gmtime())
    stream = f"{day}/[$LATEST]{invocation_id[:8]}"
    path = logs_dir / function / day / f"{invocation_id}-{attempt}.log"
    return str(path), stream
