"""`SparkSubmitRunner`: a job attempt as `spark-submit`, in client deploy mode.

* The definition's command is spark-submit's arguments, as an EMR step's `Args`: spark-submit
  options first (`--conf k=v`, `--py-files`, ...), then the script and its arguments. The
  runner adds `--master` (the definition's `cluster`, else `$HEADRACE_SPARK_MASTER` — the
  `spark_master` setting —, else the runner's `master`, else `local[*]`) and, unless given,
  `--driver-memory` (half the definition's memory: the rest is for the Python workers and the
  JVM's own overhead, all counted against `memory`).
* `spark-submit` is the one of pyspark (`headrace[spark]`), or of `$SPARK_HOME` when set; the
  driver and the executors' Python is the definition's runtime (`PYSPARK_PYTHON`): the
  project's environment or its `venv`. On a standalone cluster's other machines that path must
  exist too.
* Client mode: the driver runs here, as a process group like any local job (it is the
  `SubprocessRunner`'s): its exit code is the script's, stopping it stops the driver and its
  Python workers, and the standalone master then removes the application's executors.
  (Standalone clusters do not run Python drivers in cluster mode.)
* Bucket paths in the arguments become `file://` URLs (local storage) or `s3a://` URLs (S3
  storage, which needs the hadoop-aws jar): see `headrace.jobs.bucket_paths`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import replace
from pathlib import Path

from headrace.jobs import runtime
from headrace.jobs.bucket_paths import check_spark_s3, resolve_args
from headrace.jobs.errors import RunnerNotAvailable
from headrace.jobs.runners import Attempt, Poll
from headrace.jobs.subprocess_runner import SubprocessHandle, SubprocessRunner

MASTER_VARIABLE = "HEADRACE_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"


def spark_home() -> str:
    """`$SPARK_HOME`, else the folder of the installed pyspark (which ships Spark's jars and
    scripts); `RunnerNotAvailable` when neither exists."""
    home = os.environ.get("SPARK_HOME")
    if home and Path(home, "bin", "spark-submit").exists():
        return home
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RunnerNotAvailable(
            "job runner 'spark-submit'",
            "needs Spark, and neither pyspark nor $SPARK_HOME is installed",
            "pip install 'headrace[spark]', or set SPARK_HOME to a Spark installation",
        )
    return str(Path(spec.origin).parent)


def java_home() -> str | None:
    """`$JAVA_HOME`, else the JDK the `java` on PATH belongs to; None when there is no Java."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    return str(Path(java).resolve().parent.parent) if java else None


class SparkSubmitRunner:
    name = "spark-submit"

    def __init__(
        self,
        *,
        master: str | None = None,
        kill_grace: float = 10.0,
        memory_limit: str = "rss",
        base_env: dict[str, str] | None = None,
    ) -> None:
        self.home = spark_home()
        self.java = java_home()
        if self.java is None:
            raise RunnerNotAvailable(
                "job runner 'spark-submit'",
                "needs Java (Spark 4 runs on Java 17 or 21) and finds no java on PATH and no "
                "JAVA_HOME",
                "install a JDK (apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
            )
        self.master = master
        self.base_env = base_env
        self._process = SubprocessRunner(
            kill_grace=kill_grace, memory_limit=memory_limit, base_env=base_env
        )

    def master_for(self, attempt: Attempt) -> str:
        return (
            attempt.definition.cluster
            or os.environ.get(MASTER_VARIABLE)
            or self.master
            or DEFAULT_MASTER
        )

    def argv(self, attempt: Attempt) -> list[str]:
        """The spark-submit command line of the attempt (bucket paths resolved)."""
        definition = attempt.definition
        env = attempt.environment({})
        storage = env.get("HEADRACE_STORAGE") or os.environ.get("HEADRACE_STORAGE")
        args = resolve_args(definition.command, storage, self.name)
        check_spark_s3(args, self.home)
        options = ["--master", self.master_for(attempt)]
        if not any(a == "--driver-memory" or a.startswith("--driver-memory=") for a in args):
            options += ["--driver-memory", f"{max(512, definition.memory // 2)}m"]
        return [str(Path(self.home, "bin", "spark-submit")), *options, *args]

    def start(self, attempt: Attempt) -> SubprocessHandle:
        definition = attempt.definition
        python = runtime.python_for(definition, definition.working_dir)
        spark_env = {
            "SPARK_HOME": self.home,
            "JAVA_HOME": self.java or "",
            "PYSPARK_PYTHON": python,
            "PYSPARK_DRIVER_PYTHON": python,
        }
        master = self.master_for(attempt)
        if master.startswith("local") or "://127.0.0.1" in master or "://localhost" in master:
            # the driver's servers (block manager, UI) on the loopback interface only
            spark_env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        spark_env.update(definition.environment)  # the job's own settings win
        spec = replace(definition, command=self.argv(attempt), environment=spark_env)
        return self._process.start(replace(attempt, definition=spec))

    def poll(self, handle: SubprocessHandle) -> Poll:
        return self._process.poll(handle)

    def stop(self, handle: SubprocessHandle, reason: str) -> Poll:
        return self._process.stop(handle, reason)

    def logs(self, attempt: Attempt) -> str:
        return self._process.logs(attempt)

    def pid(self, handle: SubprocessHandle) -> int | None:
        return self._process.pid(handle)
