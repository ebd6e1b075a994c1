"""The reviews notebook as a job on each engine: `headrace jobs submit --engine local|ray`.

Generates ROWS reviews into the project's bucket `amazon-reviews-pds` (as run_demo.py does),
then submits notebook.py unchanged as a job, once per engine, as a user would:

    headrace jobs submit --engine local examples/reviews/notebook.py --wait -- IN OUT
    headrace jobs submit --engine ray --vcpus 0.25 examples/reviews/notebook.py --wait -- IN OUT

On `ray` the script is a Ray job (on a Ray head headrace starts for it, or the project's
`ray_address`) and its datasets run on Ray Data on that cluster. The job's driver reserves its
vCPUs on the cluster: 0.25 leaves the notebook's actor pool and the reads feeding it the rest
of a 2-CPU head. Then the outputs are compared row for row (by review_id; Ray's sort is not
stable, so rows with equal total_votes may come in another order).

    python examples/reviews/run_jobs.py [ROWS] [--engines local,ray]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import generate  # noqa: E402

from headrace.config import load_settings  # noqa: E402

SOURCE = "s3://amazon-reviews-pds/parquet/"


def submit(engine: str) -> str:
    target = f"s3://reviews-curated/helpful-reviews-{engine}/"
    command = [sys.executable, "-m", "headrace.cli", "jobs", "submit", "--engine", engine]
    if engine == "ray":
        command += ["--vcpus", "0.25"]
    command += [str(HERE / "notebook.py"), "--wait", "--", SOURCE, target]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="?", type=int, default=20_000)
    parser.add_argument("--engines", default="local,ray")
    args = parser.parse_args()
    buckets = Path(load_settings().storage_url)
    source = buckets / "amazon-reviews-pds" / "parquet"
    shutil.rmtree(source, ignore_errors=True)
    generate(str(source), rows=args.rows, files_per_category=2)
    curated = buckets / "reviews-curated"
    shutil.rmtree(curated, ignore_errors=True)
    curated.mkdir(parents=True)
    outputs = {}
    for engine in args.engines.split(","):
        submit(engine)
        outputs[engine] = curated / f"helpful-reviews-{engine}"
    import pyarrow.parquet as pq

    tables = {
        engine: pq.read_table(folder).sort_by("review_id") for engine, folder in outputs.items()
    }
    first, *rest = tables
    for engine in rest:
        same = tables[engine].equals(tables[first])
        print(f"{engine} and {first}: {'the same' if same else 'DIFFERENT'} rows")
        if not same:
            return 1
    print(f"{tables[first].num_rows:,} rows on each engine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
