"""`RayJobsRunner`: a job attempt as a Ray job, through Ray's job submission API.

* Where: the definition's `cluster` (a Ray dashboard address, `http://host:8265`), else
  `$HEADRACE_RAY_ADDRESS` (the `ray_address` setting), else the runner's `address`; with none,
  the attempt gets a Ray head of its own on 127.0.0.1 (`headrace.jobs.ray_head`), stopped when
  the attempt ends, is stopped, or its worker dies.
* What: the definition's command is the entrypoint. On a cluster on this machine the job runs
  in the definition's working folder with the runtime's interpreter (the project's or the
  venv's Python), as a local job would; on another machine the working folder is uploaded
  (`runtime_env.working_dir`) and the command runs there as written. The job's environment
  (definition, overrides, `AWS_BATCH_*`, `HEADRACE_JOB_ID`) travels as `runtime_env.env_vars`.
* The submission id is `<job id>-<attempt>`: an attempt re-dispatched after its worker died
  finds the earlier attempts' Ray jobs and stops them before it starts its own.
* Exit code: the driver's (`JobInfo.driver_exit_code`); a job Ray could not start (its runtime
  environment failed) fails with Ray's message as the reason.
* Logs: fetched from Ray while the job runs and appended to the attempt's log file, so
  `headrace jobs logs` works after the cluster is gone.
* Nodes: the cluster's nodes are watched while the job runs (Ray's state API, every few
  seconds). A node that dies is written into the attempt's log (Ray runs the tasks it lost again
  elsewhere, and the job may well succeed); an attempt that fails without an exit code after a
  node died (its driver was there) says so in its reason, and is retried as the definition
  allows, as AWS Batch retries a job whose host went away.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from headrace.jobs import runtime
from headrace.jobs.bucket_paths import resolve_args
from headrace.jobs.errors import RunnerNotAvailable
from headrace.jobs.ray_head import LocalRayHead
from headrace.jobs.runners import Attempt, Poll

ADDRESS_VARIABLE = "HEADRACE_RAY_ADDRESS"
STOPPED_EXIT_CODE = 143  # a stopped job, as a shell reports a SIGTERM death
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class RayHandle:
    client: Any
    submission_id: str
    attempt: Attempt
    head: LocalRayHead | None = None
    logged: int = 0  # characters of Ray's log already in the attempt's log file
    last_fetch: float = 0.0
    result: Poll | None = None
    nodes: dict[str, str] = field(default_factory=dict)  # node id -> ip, alive at the start
    dead: list[str] = field(default_factory=list)  # what was logged about nodes that died
    last_nodes: float = 0.0
    state: Any = None  # Ray's state API client, made on first use


class RayJobsRunner:
    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        head_cpus: int = 2,
        log_interval: float = 0.5,
        node_interval: float = 2.0,
        stop_timeout: float = 30.0,
        submit_timeout: float = 120.0,
    ) -> None:
        try:
            from ray.job_submission import JobSubmissionClient  # noqa: F401
        except ImportError as exc:
            raise RunnerNotAvailable(
                "job runner 'ray'",
                f"needs Ray, which is not installed ({exc})",
                "pip install 'headrace[ray]'",
            ) from None
        self.address = address
        self.head_cpus = head_cpus
        self.log_interval = log_interval
        self.node_interval = node_interval
        self.stop_timeout = stop_timeout
        self.submit_timeout = submit_timeout

    # -- starting ---------------------------------------------------------------------------

    def start(self, attempt: Attempt) -> RayHandle:
        from ray.job_submission import JobSubmissionClient

        definition = attempt.definition
        attempt.log_path.parent.mkdir(parents=True, exist_ok=True)
        address = definition.cluster or os.environ.get(ADDRESS_VARIABLE) or self.address
        head = None
        if not address:
            head = LocalRayHead(num_cpus=self.head_cpus, env={"HEADRACE_JOB_ID": attempt.job_id})
            address = head.start()
            _append(attempt, f"headrace: started a local Ray head at {address}\n")
        try:
            try:
                client = JobSubmissionClient(address, headers=_headers(head))
            except Exception as exc:
                raise RunnerNotAvailable(
                    f"Ray cluster {address!r}",
                    f"does not answer ({_first_line(exc)})",
                    "start it (`ray start --head --dashboard-host=127.0.0.1`), fix the job's "
                    "cluster / the ray_address setting, or leave both unset for a local head; "
                    "a cluster with token authentication needs $RAY_AUTH_TOKEN",
                ) from None
            self._stop_earlier(client, attempt)
            submission_id = f"{attempt.job_id}-{attempt.number}"
            kwargs = self._submission(attempt, _is_local(address))
            self._submit(client, address, submission_id, kwargs)
            handle = RayHandle(client, submission_id, attempt, head)
            handle.nodes = self._alive_nodes(handle, address, _headers(head))
            return handle
        except BaseException:
            if head is not None:
                head.stop()
            raise

    def _submit(self, client: Any, address: str, submission_id: str, kwargs: dict) -> None:
        # a head that has just come up answers before its job agent is ready ("No available
        # agent to submit job, please try again later"): Ray asks to retry, so we do
        deadline = time.monotonic() + self.submit_timeout
        while True:
            try:
                client.submit_job(submission_id=submission_id, **kwargs)
                return
            except Exception as exc:
                text = str(exc)
                if "already exists" in text:  # a re-dispatched start: Ray has the job
                    return
                if "try again later" in text and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise RunnerNotAvailable(
                    f"Ray cluster {address!r}",
                    f"refused the job: {_first_line(exc)}",
                    "check the cluster's dashboard and logs (`ray status`), then run it again",
                ) from None

    def _submission(self, attempt: Attempt, local: bool) -> dict[str, Any]:
        definition = attempt.definition
        # datasets the script builds run on the cluster it runs on (the definition may say
        # otherwise): the Glue-for-Ray notebook as a Ray job uses Ray Data there
        env = attempt.environment({"HEADRACE_DATA_ENGINE": "ray"})
        storage = env.get("HEADRACE_STORAGE") or os.environ.get("HEADRACE_STORAGE")
        command = resolve_args(definition.command, storage, self.name)
        runtime_env: dict[str, Any] = {"env_vars": env}
        if local:
            cwd = definition.working_dir or os.getcwd()
            command, _ = runtime.resolve_interpreter(
                command, runtime.python_for(definition, definition.working_dir)
            )
            entrypoint = f"cd {shlex.quote(cwd)} && exec {shlex.join(command)}"
        else:
            if definition.working_dir:
                runtime_env["working_dir"] = definition.working_dir
            entrypoint = shlex.join(command)
        # the definition's vCPUs and memory are reserved for the driver on the cluster, as
        # Ray's `ray job submit --entrypoint-num-cpus/--entrypoint-memory` do: the job waits
        # for them, and the tasks it starts get what is left
        return {
            "entrypoint": entrypoint,
            "runtime_env": runtime_env,
            "entrypoint_num_cpus": definition.vcpus,
            "entrypoint_memory": definition.memory * 2**20,
        }

    def _stop_earlier(self, client: Any, attempt: Attempt) -> None:
        for number in range(1, attempt.number):
            with contextlib.suppress(Exception):  # an attempt Ray never saw is not an error
                if not client.get_job_status(f"{attempt.job_id}-{number}").is_terminal():
                    client.stop_job(f"{attempt.job_id}-{number}")

    # -- watching ---------------------------------------------------------------------------

    def poll(self, handle: RayHandle) -> Poll:
        if handle.result is not None:
            return handle.result
        try:
            status = handle.client.get_job_status(handle.submission_id)
        except Exception as exc:
            self._fetch_logs(handle, force=True)
            return self._finish(handle, Poll(False, None, f"lost the Ray job: {_first_line(exc)}"))
        if not status.is_terminal():
            self._fetch_logs(handle)
            self._watch_nodes(handle)
            return Poll(running=True)
        self._watch_nodes(handle, force=True)
        return self._finish(handle, self._outcome(handle, None))

    def _outcome(self, handle: RayHandle, reason: str | None) -> Poll:
        info = handle.client.get_job_info(handle.submission_id)
        status = str(info.status.value if hasattr(info.status, "value") else info.status)
        code = info.driver_exit_code
        if status == "SUCCEEDED":
            return Poll(False, 0 if code is None else code, reason)
        if status == "STOPPED":
            return Poll(
                False,
                STOPPED_EXIT_CODE if code is None else code,
                reason or "stopped on the Ray cluster (ray job stop)",
            )
        if code is None and handle.dead:  # the driver went with its node
            said = _first_line(info.message or status)
            return Poll(False, None, reason or f"{'; '.join(handle.dead)}; Ray: {said}")
        if code is None:  # Ray never ran the entrypoint: say why
            return Poll(False, None, reason or f"Ray: {_first_line(info.message or status)}")
        return Poll(False, code, reason)

    def stop(self, handle: RayHandle, reason: str) -> Poll:
        if handle.result is not None:
            return handle.result
        with contextlib.suppress(Exception):
            handle.client.stop_job(handle.submission_id)
        deadline = time.monotonic() + self.stop_timeout
        result = Poll(False, None, reason)
        while time.monotonic() < deadline:
            try:
                if handle.client.get_job_status(handle.submission_id).is_terminal():
                    result = self._outcome(handle, reason)
                    break
            except Exception:
                break
            time.sleep(0.1)
        return self._finish(handle, result)

    def _finish(self, handle: RayHandle, result: Poll) -> Poll:
        self._fetch_logs(handle, force=True)
        if handle.head is not None:
            handle.head.stop()
            handle.head = None
        handle.result = result
        return result

    def _fetch_logs(self, handle: RayHandle, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - handle.last_fetch < self.log_interval:
            return
        handle.last_fetch = now
        try:
            text = handle.client.get_job_logs(handle.submission_id)
        except Exception:
            return
        if len(text) > handle.logged:
            _append(handle.attempt, text[handle.logged :])
            handle.logged = len(text)

    # -- the cluster's nodes ------------------------------------------------------------------

    def _alive_nodes(
        self, handle: RayHandle, address: str, headers: dict[str, str] | None
    ) -> dict[str, str]:
        try:
            from ray.util.state.api import StateApiClient

            handle.state = StateApiClient(address, headers=headers)
            return {n.node_id: n.node_ip for n in self._nodes(handle) if n.state == "ALIVE"}
        except Exception:  # a cluster without the state API: jobs run, nodes go unwatched
            handle.state = None
            return {}

    def _nodes(self, handle: RayHandle) -> list[Any]:
        from ray.util.state.common import ListApiOptions, StateResource

        return handle.state.list(
            StateResource.NODES,
            options=ListApiOptions(detail=True, timeout=10),
            raise_on_missing_output=False,
        )

    def _watch_nodes(self, handle: RayHandle, *, force: bool = False) -> None:
        """Log each node that was alive when the attempt started and is dead now."""
        now = time.monotonic()
        if handle.state is None or (not force and now - handle.last_nodes < self.node_interval):
            return
        handle.last_nodes = now
        try:
            nodes = {n.node_id: n for n in self._nodes(handle)}
        except Exception:
            return
        for node_id, ip in list(handle.nodes.items()):
            node = nodes.get(node_id)
            # only a node Ray reports DEAD: a listing that missed one (Ray's state API returns
            # what it could gather) is no evidence of a death
            if node is None or node.state != "DEAD":
                continue
            del handle.nodes[node_id]
            why = _first_line(node.state_message or "no reason given")
            handle.dead.append(f"Ray node {node_id} at {ip} died while the job ran ({why})")
            _append(
                handle.attempt,
                f"headrace: {handle.dead[-1]}; Ray runs the tasks it lost again on other "
                "nodes, a driver that was there is lost with it\n",
            )

    def logs(self, attempt: Attempt) -> str:
        try:
            return attempt.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pid(self, handle: RayHandle) -> int | None:
        return handle.head.pid() if handle.head is not None else None


def _headers(head: LocalRayHead | None) -> dict[str, str] | None:
    """The head's own token, or the user's (`$RAY_AUTH_TOKEN`) for a cluster that wants one."""
    if head is not None:
        return head.headers
    token = os.environ.get("RAY_AUTH_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else None


def _append(attempt: Attempt, text: str) -> None:
    with open(attempt.log_path, "a", encoding="utf-8", errors="replace") as fh:
        fh.write(text)


def _is_local(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in _LOCAL_HOSTS


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
