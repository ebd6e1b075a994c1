"""Run every benchmark, one after the other (they must not share the 2 cores): `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "grib_throughput.py",
    "trigger_latency.py",
    "invocation_throughput.py",
    "workflow_throughput.py",
    "band_composite.py",
    "band_composite_workflow.py",
    "stream_log.py",
    "stream_window.py",
    "feature_store.py",
    "stream_latency.py",
    "data_pipeline.py",
    "console_pages.py",
    "s3_endpoint.py",
]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
