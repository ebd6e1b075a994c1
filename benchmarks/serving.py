"""Serving throughput and latency, same run, same model, same body, same load.

Servers: FastAPI + uvicorn with 2 workers (the anchor's fastapi_app.py), LitServe with 2
workers (the anchor's litserve_app.py, in its own virtualenv: LITSERVE_PYTHON), and
`headrace serve` with 2 replicas on examples/digits_api: the batched JSON route
POST /predict and the unchanged SAM handler at POST /classify_digit (API Gateway event in,
proxy response out). The model is the anchor's: SVC(gamma=0.001, C=10) on all of
scikit-learn's digits, pushed to the registry as digits@production.

Load: `wrk -t1 -c64 -d{SECONDS}s --timeout 30s --latency` with the anchor's post.lua (a JSON
list of 64 floats), after a 5 s warm-up, on the same machine.

Usage: python benchmarks/serving.py [SECONDS=20] [only: fastapi,litserve,headrace]
Prints one JSON line per server and a table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors" / "serving"
POST_LUA = ANCHORS / "post.lua"
BODY = json.dumps([0.0] * 64)
PY = sys.executable
LITSERVE_PYTHON = os.environ.get("LITSERVE_PYTHON", "/tmp/bench-litserve/bin/python")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.post(url, content=BODY, headers={"content-type": "application/json"})
            if r.status_code == 200 and "predicted_label" in r.text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready")


def _ms(token: str) -> float:
    if token.endswith("us"):
        return float(token[:-2]) / 1000
    if token.endswith("ms"):
        return float(token[:-2])
    return float(token[:-1]) * 1000


def wrk(url: str, seconds: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(POST_LUA),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    res: dict = {"errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith("50%"):
            res["p50_ms"] = round(_ms(parts[1]), 2)
        elif line.strip().startswith("99%"):
            res["p99_ms"] = round(_ms(parts[1]), 2)
        elif line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif "Non-2xx" in line:
            res["errors"] += int(parts[-1])
        elif "Socket errors" in line:
            res["errors"] += sum(int(x.strip(",")) for x in parts[3::2])
    return res


def run(name: str, cmd: list[str], url: str, cwd: Path, seconds: int, env=None) -> dict:
    log = open(f"/tmp/bench-serving-{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        wait_ready(url, proc)
        wrk(url, 5)
        result = {"server": name, **wrk(url, seconds)}
        print(json.dumps(result), flush=True)
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        time.sleep(2)


def headrace_project() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-serving-")) / "digits_api"
    shutil.copytree(
        ROOT / "examples" / "digits_api",
        folder,
        ignore=shutil.ignore_patterns(".headrace", "__pycache__"),
    )
    code = (
        "from sklearn.datasets import load_digits\nfrom sklearn.svm import SVC\n"
        "import headrace.models as m\nd = load_digits()\n"
        "v = m.push('digits', SVC(gamma=0.001, C=10.0).fit(d.data, d.target))\n"
        "m.set_alias('digits', 'production', v.version)\n"
    )
    subprocess.run([PY, "-c", code], cwd=folder, check=True)
    return folder


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else {"fastapi", "litserve", "headrace"}
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    results = []
    if "fastapi" in only:
        results.append(
            run(
                "fastapi-uvicorn-2workers",
                [
                    PY,
                    "-m",
                    "uvicorn",
                    "fastapi_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "8301",
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                "http://127.0.0.1:8301/predict",
                ANCHORS,
                seconds,
            )
        )
    if "litserve" in only and Path(LITSERVE_PYTHON).exists():
        results.append(
            run(
                "litserve-2workers",
                [LITSERVE_PYTHON, "litserve_app.py", "8302"],
                "http://127.0.0.1:8302/predict",
                ANCHORS,
                seconds,
            )
        )
    if "headrace" in only:
        folder = headrace_project()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
        cmd = [
            PY,
            "-m",
            "headrace.cli",
            "serve",
            "--port",
            "8303",
            "--replicas",
            "2",
            "--no-access-log",
        ]
        for name, path in (
            ("headrace-2replicas-batched", "/predict"),
            ("headrace-2replicas-sam-handler", "/classify_digit"),
        ):
            results.append(run(name, cmd, f"http://127.0.0.1:8303{path}", folder, seconds, env))
    print(f"\n{'server':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r['server']:34} {r['rps']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
            f"{r['errors']:7d}"
        )


if __name__ == "__main__":
    main()
