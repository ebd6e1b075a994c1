"""Jobs on engines: time from submit to the script's first line per runner, and a pandas-UDF
batch-inference job under headrace's Spark runner against plain `spark-submit`.

Run: ``.venv/bin/python benchmarks/job_submit.py [--repeats 3] [--rows 10000000]``

1. **Submit to first line.** A script whose first statement prints `time.time()`; the clock
   starts before `Jobs.submit` and the job runs in this process (`Jobs.run`). Per runner, with
   its engine's own tool as the baseline, started the same way from this process:

   * `local` (subprocess runner) vs `subprocess.Popen([python, script])`;
   * `ray` on a running head vs `JobSubmissionClient.submit_job` on the same head;
   * `ray`, no cluster: headrace starts a head for the job (what it costs; no baseline);
   * `spark` (`local[*]`) vs `spark-submit --master local[*] script` (the script's first line
     comes after the JVM started and launched Python).

2. **pandas UDF job.** `benchmarks/_pandas_udf_job.py`: `--rows` rows of 13 generated feature
   columns, a scikit-learn `LogisticRegression` (trained on the driver) applied by a
   `@pandas_udf` to every row, predictions summed. Run in turn under headrace's Spark runner
   and under plain `spark-submit`, both `local[*]` with `--driver-memory 1g`; the script
   prints its own wall time and the prediction sum, which must agree between the two.

Medians (min-max) of `--repeats` rounds, modes alternating. Writes `results/job_submit.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "job_submit.json"
FIRST = 'import time; print("FIRST", repr(time.time()), flush=True)\n'
SPARK_FIRST = FIRST + (
    "from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().range(10).count()\n"
)
SPARK_ENV = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}


def first_line(text: str) -> float:
    match = re.search(r"^FIRST (\S+)$", text, re.M)
    if match is None:
        raise SystemExit(f"no FIRST line in the output:\n{text[-3000:]}")
    return float(match.group(1))


def headrace_job(jobs, definition) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    began = time.time()
    job = jobs.run_sync(definition, job_name="bench")
    log = jobs.logs(job.id)
    if job.status != "SUCCEEDED":
        raise SystemExit(f"{definition.runner} job failed: {job.status_reason}\n{log[-3000:]}")
    return first_line(log) - began, log


def plain(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    began = time.time()
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return first_line(done.stdout) - began, done.stdout


def ray_plain(head, script: str, cwd: str) -> float:  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers=head.headers)
    began = time.time()
    sid = client.submit_job(entrypoint=f"cd {cwd} && {sys.executable} {script}")
    while not client.get_job_status(sid).is_terminal():
        time.sleep(0.05)
    return first_line(client.get_job_logs(sid)) - began


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def submit_latency(repeats: int, folder: str) -> dict[str, dict[str, float]]:
    from headrace.jobs import JobDefinition, Jobs
    from headrace.jobs.ray_head import LocalRayHead
    from headrace.ledger import Ledger

    Path(folder, "first.py").write_text(FIRST)
    Path(folder, "spark_first.py").write_text(SPARK_FIRST)
    ledger = Ledger(f"sqlite:///{folder}/ledger.db")
    jobs = Jobs(ledger, f"{folder}/home")
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)
        print(f"  {name}: {seconds:.3f}s", flush=True)

    with LocalRayHead(num_cpus=2) as head:
        os.environ["RAY_AUTH_TOKEN"] = head.token  # what a client of a token-auth cluster sets
        for _ in range(repeats):
            local = JobDefinition("first", ["python", "first.py"], working_dir=folder)
            add("local", headrace_job(jobs, local)[0])
            add("local_baseline", plain([sys.executable, "first.py"], folder)[0])
            ray = JobDefinition(
                "first", ["python", "first.py"], runner="ray", cluster=head.address,
                working_dir=folder,
            )  # fmt: skip
            add("ray", headrace_job(jobs, ray)[0])
            add("ray_baseline", ray_plain(head, "first.py", folder))
            spark = JobDefinition(
                "first", ["spark_first.py"], runner="spark", working_dir=folder,
                environment=SPARK_ENV,
            )  # fmt: skip
            add("spark", headrace_job(jobs, spark)[0])
            argv = [spark_submit, "--master", "local[*]", "spark_first.py"]
            add("spark_baseline", plain(argv, folder, SPARK_ENV)[0])
    os.environ.pop("RAY_AUTH_TOKEN")
    for _ in range(repeats):
        own = JobDefinition("first", ["python", "first.py"], runner="ray", working_dir=folder)
        add("ray_own_head", headrace_job(jobs, own)[0])
    ledger.close()
    return {name: summary(values) for name, values in times.items()}


def pandas_udf_job(repeats: int, rows: int, folder: str) -> dict[str, object]:
    from headrace.jobs import JobDefinition, Jobs
    from headrace.ledger import Ledger

    script = str(HERE / "_pandas_udf_job.py")
    ledger = Ledger(f"sqlite:///{folder}/udf.db")
    jobs = Jobs(ledger, f"{folder}/udf-home")
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    args = ["--driver-memory", "1g", script, str(rows)]
    walls: dict[str, list[float]] = {"headrace": [], "spark-submit": []}
    cpus: dict[str, list[float]] = {"headrace": [], "spark-submit": []}
    sums: set[str] = set()
    for i in range(repeats):
        order = ["headrace", "spark-submit"] if i % 2 == 0 else ["spark-submit", "headrace"]
        for mode in order:
            began = time.time()
            # the job's processes are this process's children either way (the runner's
            # process group, or spark-submit): their CPU time is the steadier figure when the
            # machine is shared
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            if mode == "headrace":
                definition = JobDefinition(
                    "udf", args, runner="spark", memory=6144, working_dir=folder,
                    environment=SPARK_ENV,
                )  # fmt: skip
                job = jobs.run_sync(definition, job_name="udf")
                out = jobs.logs(job.id)
                if job.status != "SUCCEEDED":
                    raise SystemExit(f"headrace spark job failed:\n{out[-3000:]}")
            else:
                done = subprocess.run(
                    [spark_submit, "--master", "local[*]", *args],
                    cwd=folder, capture_output=True, text=True, env={**os.environ, **SPARK_ENV},
                )  # fmt: skip
                out = done.stdout
                if done.returncode != 0:
                    raise SystemExit(f"spark-submit failed:\n{done.stderr[-3000:]}")
            wall = time.time() - began
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
            cpus[mode].append(cpu)
            result = json.loads(re.search(r"^RESULT (.*)$", out, re.M).group(1))  # type: ignore[union-attr]
            sums.add(f"{result['prediction_sum']:.6f}")
            walls[mode].append(wall)
            print(
                f"  {mode}: {wall:.1f}s, {cpu:.1f} CPU s (job {result['seconds']:.1f}s)", flush=True
            )
    if len(sums) != 1:
        raise SystemExit(f"the two runs disagree on the predictions: {sums}")
    ledger.close()
    out = {mode: summary(values) for mode, values in walls.items()}
    cpu_out = {f"{mode}_cpu": summary(values) for mode, values in cpus.items()}
    ratio = out["headrace"]["median"] / out["spark-submit"]["median"]
    cpu_ratio = cpu_out["headrace_cpu"]["median"] / cpu_out["spark-submit_cpu"]["median"]
    return {
        **out,
        **cpu_out,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "rows": rows,
        "prediction_sum": sums.pop(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--skip-udf", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        latency: dict = {}
        if not options.skip_latency:
            print("submit to first line:", flush=True)
            latency = submit_latency(options.repeats, folder)
        udf = None
        if not options.skip_udf:
            print(f"pandas UDF job over {options.rows:,} rows:", flush=True)
            udf = pandas_udf_job(options.repeats, options.rows, folder)
    if latency:
        print("\nsubmit to first line (median, min-max):")
    for name, s in latency.items():
        print(f"  {name:16s} {s['median']:.3f}s ({s['min']:.3f}-{s['max']:.3f})")
    if udf is not None:
        print("\npandas UDF job (median, min-max):")
        for mode in ("headrace", "spark-submit"):
            wall, cpu = udf[mode], udf[f"{mode}_cpu"]
            print(
                f"  {mode:12s} {wall['median']:.1f}s ({wall['min']:.1f}-{wall['max']:.1f}), "
                f"{cpu['median']:.1f} CPU s ({cpu['min']:.1f}-{cpu['max']:.1f})"
            )
        print(
            f"pandas UDF job: headrace/spark-submit = {udf['ratio']:.3f} wall, "
            f"{udf['cpu_ratio']:.3f} CPU"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {
        "submit_to_first_line": latency or previous.get("submit_to_first_line"),
        "pandas_udf": udf or previous.get("pandas_udf"),
    }
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
