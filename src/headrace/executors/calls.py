"""Running one `Call` inside a worker: import the target, call it, turn the result into an Outcome.

Shared by every executor so that a function behaves the same in a local process and on Ray.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from headrace.executors.base import Call, Outcome

_targets: dict[str, Callable[..., Any]] = {}


def resolve_target(target: str, sys_path: list[str] | None = None) -> Callable[..., Any]:
    """Import `module:attr` (or `module.attr`) once per worker process."""
    fn = _targets.get(target)
    if fn is not None:
        return fn
    for entry in reversed(sys_path or []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"target {target!r} is not of the form 'module:attr' or 'module.attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"target {target!r} is not callable")
    _targets[target] = obj
    return obj


_RUNTIME_FILES = (
    __file__,
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "functions", "runtime.py"),
)


def error_name(exc: BaseException) -> str:
    """An exception's name for error records: its `error_name` when it has one (Step Functions
    and DynamoDB errors such as "DynamoDB.ConditionalCheckFailedException"), else its class."""
    name = getattr(exc, "error_name", None)
    return name if isinstance(name, str) and name else type(exc).__name__


def user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code on, without headrace's own calling frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _RUNTIME_FILES and tb.tb_next:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def max_rss_mb() -> float | None:
    try:
        import resource

        # ru_maxrss is in KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return None


def run_call(call: Call, worker: str = "") -> Outcome:
    """Run `call` in this process. Exceptions become an `error` outcome; never raises."""
    started = time.time()
    try:
        fn = resolve_target(call.target, call.sys_path)
        value = fn(**call.args)
        status = "ok"
        error = tb = None
    except (Exception, SystemExit) as exc:  # a worker reports user failures, it never dies of them
        value = None
        status = "error"
        error = f"{error_name(exc)}: {getattr(exc, 'cause', None) or exc}"
        tb = user_traceback(exc)
    return Outcome(
        id=call.id,
        status=status,
        value=value,
        error=error,
        traceback=tb,
        started_at=started,
        finished_at=time.time(),
        worker=worker or f"pid-{os.getpid()}",
        max_rss_mb=max_rss_mb(),
    )
