"""`SubprocessRunner`: a job attempt as a local process group, like a container without an image.

* The command runs in the definition's runtime (`headrace.jobs.runtime`): the project's
  environment, another virtualenv, or a container image through the docker/podman client (whose
  container is removed when the attempt ends or is stopped).

* The command runs as an argv list (no shell) in a new session, so its process group holds
  everything it spawns; stopping the job signals the whole group (SIGTERM, then SIGKILL after
  `kill_grace` seconds), and when the main process exits the rest of the group is killed, as a
  container's processes die with it.
* On Linux the main process gets `PR_SET_PDEATHSIG(SIGKILL)`: if the worker that started it dies,
  so does the job. The kernel ties this to the *thread* that forked, so `start` must be called
  from a thread that outlives the job (`Jobs.run` does: it polls in the same thread).
  Grandchildren do not get the signal; `Jobs` sweeps them (by their `HEADRACE_JOB_ID`) when it
  takes over the job from a dead worker.
* Memory: `memory_limit="rss"` (default) sums the resident memory of the process and its
  descendants at every poll and kills the group above the definition's `memory`, as a cgroup
  would (checked every `memory_check_interval` seconds, so a fast spike can slip through).
  `"address-space"` sets `RLIMIT_AS` instead: a hard kernel limit on *virtual* memory, per
  process, which programs that reserve large address ranges (JVMs, CUDA, some allocators) hit
  long before they use that much RAM. `"off"` enforces nothing.
* stdout and stderr go to the attempt's log file directly (no pipe for the worker to drain).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from headrace.jobs import runtime
from headrace.jobs.errors import InvalidJobDefinition
from headrace.jobs.runners import Attempt, Poll

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
_PR_SET_PDEATHSIG = 1
_LIBC = None
if sys.platform.startswith("linux"):
    # loaded before any fork: dlopen in the child between fork and exec is not safe
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class SubprocessHandle:
    process: subprocess.Popen
    attempt: Attempt
    started_at: float
    pgid: int
    result: Poll | None = None
    last_memory_check: float = 0.0
    launch: runtime.Launch | None = None


def exit_code_of(returncode: int) -> int:
    """A signal death as a shell or container reports it: 128 + the signal number."""
    return 128 - returncode if returncode < 0 else returncode


class SubprocessRunner:
    name = "subprocess"

    def __init__(
        self,
        *,
        kill_grace: float = 10.0,
        memory_limit: str = "rss",
        memory_check_interval: float = 0.25,
        base_env: dict[str, str] | None = None,
    ) -> None:
        if memory_limit not in ("rss", "address-space", "off"):
            raise InvalidJobDefinition(
                "SubprocessRunner",
                f"memory_limit {memory_limit!r}",
                "use rss, address-space or off",
            )
        self.kill_grace = kill_grace
        self.memory_limit = memory_limit
        self.memory_check_interval = memory_check_interval
        self.base_env = base_env

    # -- starting ---------------------------------------------------------------------------

    def start(self, attempt: Attempt) -> SubprocessHandle:
        definition = attempt.definition
        attempt.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = attempt.environment(dict(os.environ) if self.base_env is None else self.base_env)
        cwd = definition.working_dir
        if cwd is not None and not Path(cwd).is_dir():
            raise InvalidJobDefinition(
                f"job definition {definition.name!r}",
                f"working_dir {cwd} is not a folder",
                "create it or fix the path",
            )
        name = runtime.container_name(attempt.job_id, attempt.number)
        launch = runtime.launch(definition, env, container=name, cwd=cwd)
        limit = definition.memory * 2**20 if self.memory_limit == "address-space" else None
        preexec = _child_setup(os.getpid(), limit)
        with open(attempt.log_path, "ab", buffering=0) as log:
            if launch.note:  # which interpreter or image the job got, for whoever reads its log
                log.write(f"{launch.note}\n".encode())
            try:
                process = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=launch.env,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                    close_fds=True,
                )
            except OSError as exc:
                # a missing executable is the job's failure, not the worker's: exit 127 as sh does
                log.write(f"headrace: cannot start {launch.argv[0]!r}: {exc}\n".encode())
                return _failed_to_start(attempt, str(exc))
        return SubprocessHandle(process, attempt, time.time(), pgid=process.pid, launch=launch)

    # -- watching ---------------------------------------------------------------------------

    def poll(self, handle: SubprocessHandle) -> Poll:
        if handle.result is not None:
            return handle.result
        if _exited(handle.process.pid):
            return self._finish(handle, None)
        now = time.monotonic()
        if (
            self.memory_limit == "rss"
            and now - handle.last_memory_check >= self.memory_check_interval
        ):
            handle.last_memory_check = now
            rss_mb = _group_rss(handle.process.pid) / 2**20
            if rss_mb > handle.attempt.definition.memory:
                _signal_group(handle.pgid, signal.SIGKILL)
                return self._finish(handle, OOM_REASON)
        return Poll(running=True)

    def stop(self, handle: SubprocessHandle, reason: str) -> Poll:
        if handle.result is not None:
            return handle.result
        if handle.launch is not None:
            # the engine client forwards SIGTERM to the container; SIGKILL it cannot forward
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                runtime.stop_container(handle.launch, self.kill_grace)
        _signal_group(handle.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        # wait for the whole group, not only the main process: a grandchild may ignore SIGTERM
        while time.monotonic() < deadline:
            if _exited(handle.process.pid) and not _group_has_others(handle):
                break
            time.sleep(0.05)
        return self._finish(handle, reason)

    def _finish(self, handle: SubprocessHandle, reason: str | None) -> Poll:
        # The main process is a zombie now (waitid WNOWAIT), so its pid still names the
        # group: nothing can reuse it before we kill the leftovers and reap.
        _signal_group(handle.pgid, signal.SIGKILL)
        returncode = handle.process.wait()
        if handle.launch is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                runtime.remove_container(handle.launch)
        # SIGKILL is delivered asynchronously: give the group a moment to be gone, so that
        # "stopped" means stopped (bounded, as zombies may wait on an init that never reaps)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and _group_has_others(handle):
            time.sleep(0.01)
        handle.result = Poll(running=False, exit_code=exit_code_of(returncode), reason=reason)
        return handle.result

    def logs(self, attempt: Attempt) -> str:
        try:
            return attempt.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pid(self, handle: SubprocessHandle) -> int | None:
        return handle.process.pid if handle.process is not None else None


def _child_setup(parent_pid: int, address_space: int | None):  # type: ignore[no-untyped-def]
    """The code run in the child between fork and exec: keep it to system calls."""
    libc = _LIBC

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            # the worker may have died between fork and prctl: then nobody will signal us
            if os.getppid() != parent_pid:
                os._exit(137)
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return setup


def _failed_to_start(attempt: Attempt, reason: str) -> SubprocessHandle:
    handle = SubprocessHandle(None, attempt, time.time(), pgid=0)  # type: ignore[arg-type]
    handle.result = Poll(
        running=False, exit_code=127, reason=f"CannotStartContainerError: {reason}"
    )
    return handle


def _exited(pid: int) -> bool:
    """Whether the process has exited, without reaping it (so its pid keeps naming the group)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_has_others(handle: SubprocessHandle) -> bool:
    """Whether a live (not zombie) process other than the exited leader is still in the group.

    Zombies do not count: they are dead, and an init that is slow to reap them (or never does,
    in some containers) must not make a stop wait out its grace period."""
    leader = handle.process.pid
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: ask the kernel whether anything at all is left in the group
        try:
            os.killpg(handle.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in entries:
        if not entry.isdigit() or int(entry) == leader:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == handle.pgid and fields[0] != b"Z":
            return True
    return False


def _group_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total
