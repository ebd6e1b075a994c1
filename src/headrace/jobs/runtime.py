"""Where a job's command runs: the project's environment, another virtualenv, or a container image.

A job definition names its runtime (`JobDefinition.venv`, `JobDefinition.image`; neither means
the project's environment):

* **project** (default): the Python environment headrace itself runs in (`sys.executable`, so
  the project's virtualenv with headrace and the project's libraries).
* **venv**: another Python environment, given as its folder (a virtualenv, or any installation
  with `bin/python`). A relative path is relative to the job's working directory.
* **image**: a container image, run with docker or podman (the first whose engine answers;
  `HEADRACE_CONTAINER_ENGINE` picks one). The command runs inside the image as written, as AWS
  Batch runs it; the working directory, when given, is mounted at the same path.

For the two Python runtimes, an interpreter named by a command — `python`, `python3`,
`python3.11`, any path ending in one (`/usr/bin/python3`), or `/usr/bin/env python3` — is that
runtime's interpreter: a state machine written for AWS that overrides the command with
`["/usr/bin/python3", "job.py"]` runs `job.py` with the libraries of the runtime chosen, not the
host's bare system Python. The runtime's `bin` folder leads `PATH`, so `pip` or console scripts
resolve there too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headrace.jobs.errors import RuntimeNotAvailable

if TYPE_CHECKING:
    from headrace.jobs.definition import JobDefinition

ENGINES = ("docker", "podman")
ENGINE_VARIABLE = "HEADRACE_CONTAINER_ENGINE"
_PYTHON = re.compile(r"^python(?:3(?:\.\d+)?)?$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_engines: dict[str, str] = {}  # engine name -> path, for engines that answered once


@dataclass(frozen=True)
class Launch:
    """How to start one attempt: the argv, its environment, and what was resolved (for the
    attempt's log), if anything."""

    argv: list[str]
    env: dict[str, str]
    note: str | None = None
    container: str | None = None  # the container's name (image runtime)
    engine: str | None = None


def describe(definition: JobDefinition) -> str:
    if definition.image:
        return f"image {definition.image}"
    if definition.venv:
        return f"virtualenv {definition.venv}"
    return f"the project's environment ({sys.prefix})"


def check(definition: JobDefinition, cwd: str | None = None) -> None:
    """Raise `RuntimeNotAvailable` when the definition's runtime cannot run on this host."""
    if definition.image:
        container_engine(definition)
    elif definition.venv:
        _interpreter(definition, cwd)


def launch(
    definition: JobDefinition, env: dict[str, str], *, container: str, cwd: str | None = None
) -> Launch:
    """The argv and environment that run `definition.command` in its runtime. `env` is the
    environment the job should see; `container` names its container (image runtime)."""
    if definition.image:
        return _container_launch(definition, env, container)
    if definition.venv:
        python = _interpreter(definition, cwd)
        prefix = python.parent.parent
    else:
        python, prefix = Path(sys.executable), Path(sys.prefix)
    argv, resolved = resolve_interpreter(definition.command, str(python))
    env = dict(env)
    env["PATH"] = os.pathsep.join([str(python.parent), *filter(None, [env.get("PATH")])])
    env.pop("PYTHONHOME", None)
    if definition.venv or sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = str(prefix)
    else:
        env.pop("VIRTUAL_ENV", None)
    note = None
    if resolved is not None and resolved != str(python):
        note = f"headrace: {resolved} is {python} ({describe(definition)})"
    return Launch(argv, env, note)


def python_for(definition: JobDefinition, cwd: str | None = None) -> str:
    """The Python interpreter of the definition's runtime (the project's, or its venv's)."""
    if definition.venv:
        return str(_interpreter(definition, cwd))
    return sys.executable


def resolve_interpreter(command: list[str], python: str) -> tuple[list[str], str | None]:
    """`command` with the Python interpreter it names replaced by `python`, and the name
    replaced (None when it names none)."""
    first = command[0]
    if _PYTHON.match(os.path.basename(first)):
        return [python, *command[1:]], first
    if os.path.basename(first) == "env":
        for i, arg in enumerate(command[1:], start=1):
            if arg.startswith("-") or _ASSIGNMENT.match(arg):
                continue  # env's options and NAME=value assignments come before the program
            if _PYTHON.match(os.path.basename(arg)):
                return [*command[:i], python, *command[i + 1 :]], arg
            break
    return list(command), None


def _interpreter(definition: JobDefinition, cwd: str | None) -> Path:
    assert definition.venv is not None
    folder = Path(cwd or os.getcwd(), definition.venv)  # an absolute venv stays as it is
    python = folder / "bin" / "python"
    if not os.access(python, os.X_OK):
        what = "does not exist" if not folder.exists() else "has no bin/python"
        raise RuntimeNotAvailable(
            f"job definition {definition.name!r}",
            f"its virtualenv {folder} {what}",
            f"create it (python -m venv {folder}) and install the job's libraries, or fix venv=",
        )
    return python


def container_engine(definition: JobDefinition) -> str:
    """The path of a container engine that answers, or `RuntimeNotAvailable` saying why none."""
    chosen = os.environ.get(ENGINE_VARIABLE)
    candidates = [chosen] if chosen else list(ENGINES)
    problems = []
    for name in candidates:
        if name in _engines:
            return _engines[name]
        path = shutil.which(name)
        if path is None:
            problems.append(f"{name} is not installed")
            continue
        try:
            probe = subprocess.run(
                [path, "info"], capture_output=True, text=True, timeout=15, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{name} info failed: {exc}")
            continue
        if probe.returncode == 0:
            _engines[name] = path
            return path
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        detail = next((x for x in reversed(lines) if x.strip()), f"exit code {probe.returncode}")
        problems.append(f"{name} is installed but its engine does not answer ({detail.strip()})")
    raise RuntimeNotAvailable(
        f"job definition {definition.name!r}",
        f"runs image {definition.image!r}, but no container engine is available: "
        + "; ".join(problems),
        "start the docker daemon or install podman"
        + (f" (or unset {ENGINE_VARIABLE})" if chosen else "")
        + ", or run the job in a virtualenv (venv=) or the project's environment",
    )


def _container_launch(definition: JobDefinition, env: dict[str, str], name: str) -> Launch:
    engine = container_engine(definition)
    argv = [engine, "run", "--rm", "--init", "--name", name, "--label", f"headrace.job={name}"]
    argv += ["--memory", f"{definition.memory}m", "--cpus", f"{definition.vcpus:g}"]
    if definition.working_dir:
        argv += ["-v", f"{definition.working_dir}:{definition.working_dir}"]
        argv += ["-w", definition.working_dir]
    # the container sees the job's own variables, not the host's; values travel in the
    # engine client's environment (`-e NAME`), not on its command line
    names = sorted(k for k in env if k in definition.environment or _job_variable(k))
    for key in names:
        argv += ["-e", key]
    argv += [definition.image or "", *definition.command]
    return Launch(argv, env, f"headrace: running in {describe(definition)}", name, engine)


def _job_variable(name: str) -> bool:
    return name.startswith("AWS_BATCH_") or name == "HEADRACE_JOB_ID"


def container_name(job_id: str, attempt: int) -> str:
    return f"headrace-{job_id}-{attempt}"


def remove_leftover_containers(definition: JobDefinition, job_id: str, attempts: int) -> None:
    """After a worker died: its attempts' containers outlived their engine clients."""
    if not definition.image:
        return
    try:
        engine = container_engine(definition)
    except RuntimeNotAvailable:
        return  # no engine, no containers
    for number in range(1, attempts + 1):
        remove_container(Launch([], {}, container=container_name(job_id, number), engine=engine))


def stop_container(launch: Launch, grace: float) -> None:
    """Ask the attempt's container to stop (SIGTERM, then SIGKILL after `grace` seconds)."""
    if launch.container and launch.engine:
        subprocess.run(
            [launch.engine, "stop", "--time", f"{grace:.0f}", launch.container],
            capture_output=True,
            timeout=grace + 30,
            check=False,
        )


def remove_container(launch: Launch) -> None:
    """Stop and remove the attempt's container (the engine client may be gone already)."""
    if launch.container and launch.engine:
        subprocess.run(
            [launch.engine, "rm", "--force", launch.container],
            capture_output=True,
            timeout=60,
            check=False,
        )
