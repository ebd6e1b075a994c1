"""Serving throughput and latency, same run, same model, same body, same load.

Servers: FastAPI + uvicorn with 2 workers (the anchor's fastapi_app.py), LitServe with 2
workers (the anchor's litserve_app.py, in its own virtualenv: LITSERVE_PYTHON, skipped when
absent), plain Ray Serve with 2 replicas (the anchor's ray_serve_app.py: its own HTTP proxy,
`ray.init(num_cpus=2)`), and `headrace serve` with 2 replicas on examples/digits_api:

- local replicas: the plain JSON route POST /predict_one (one predict per request), the SAM
  handler unchanged at POST /classify_digit (API Gateway event in, proxy response out), the
  batched JSON route POST /predict and the SAM handler's batched form POST /classify_digits;
- `--serving ray` (a Ray Serve deployment of 2 replicas on a local Ray of 2 CPUs, headrace's
  front and batching in front): POST /predict and POST /classify_digit;
- chaos: local replicas under load at POST /predict, one replica SIGKILLed every 5 s: failed
  requests against the requests the killed replicas had in flight, and the time until 2
  replicas serve again;
- roll-over: local replicas under load at POST /predict while digits@production moves to a
  new version: failed requests (the target is 0) and the roll-over's duration.

The model is the anchor's: SVC(gamma=0.001, C=10) on all of scikit-learn's digits, pushed to
the registry as digits@production. Every server answers the same 50 digits with the same
labels (checked, printed).

Load: `wrk -t1 -c64 -d{SECONDS}s --timeout 30s --latency` with the anchor's post.lua (a JSON
list of 64 floats), after a 5 s warm-up, on the same machine.

Usage: python benchmarks/serving.py [SECONDS=20] [only: fastapi,litserve,rayserve,headrace,
headrace-ray,chaos,rollout,headrace-base] [ROUNDS=3]

`headrace-base` (with HEADRACE_BASELINE_SRC=/path/to/other/checkout/src) adds the same
headrace server run from another checkout's source to the interleaved rounds (its SAM route
and batched route), for a before/after on the same machine load.

FastAPI, LitServe and headrace's local replicas run side by side and are measured in turn,
ROUNDS times over (the order rotated each round; the median round is reported), so that the
load other jobs put on the machine weighs on all of them alike. The two Ray servers each start
a Ray of 2 CPUs, so they run one after the other, each measured once.
Prints one JSON line per measurement and a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
ALL = "fastapi,litserve,rayserve,headrace,headrace-ray,chaos,rollout"
BASELINE_SRC = os.environ.get("HEADRACE_BASELINE_SRC", "")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
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
    if token.endswith("m"):
        return float(token[:-1]) * 60000
    return float(token[:-1]) * 1000


def _wrk_cmd(url: str, seconds: int) -> list[str]:
    return [
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
    ]


def parse_wrk(out: str) -> dict:
    res: dict = {"errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith("50%"):
            res["p50_ms"] = round(_ms(parts[1]), 2)
        elif line.strip().startswith("99%"):
            res["p99_ms"] = round(_ms(parts[1]), 2)
        elif line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif "requests in" in line:
            res["requests"] = int(parts[0])
        elif "Non-2xx" in line:
            res["errors"] += int(parts[-1])
        elif "Socket errors" in line:
            res["errors"] += sum(int(x.strip(",")) for x in parts[3::2])
    return res


def wrk(url: str, seconds: int) -> dict:
    out = subprocess.run(_wrk_cmd(url, seconds), capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


def answers(url: str) -> list[int]:
    """Labels of 50 digits, one request each."""
    from sklearn.datasets import load_digits

    rows = load_digits().data[:50].tolist()
    with httpx.Client(timeout=60) as client:
        return [client.post(url, json=row).json()["predicted_label"] for row in rows]


class Server:
    """A server in its own session: SIGTERM to it, then whatever is left of its group goes."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env=None) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = Path(f"/tmp/bench-serving-{name}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # what it started and left behind (uvicorn workers, a Ray it started)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        time.sleep(2)


def measure(
    name: str, cmd: list[str], urls: dict[str, str], cwd: Path, seconds: int, env=None
) -> list[dict]:
    server = Server(name, cmd, cwd, env)
    results = []
    try:
        wait_ready(next(iter(urls.values())), server.proc)
        for label, url in urls.items():
            wait_ready(url, server.proc)
            same = answers(url)
            wrk(url, 5)
            result = {"server": label, **wrk(url, seconds), "labels": same}
            print(json.dumps({k: v for k, v in result.items() if k != "labels"}), flush=True)
            results.append(result)
        return results
    finally:
        server.stop()


def interleaved(
    servers: list[tuple[str, list[str], Path, dict | None]],
    urls: dict[str, str],
    seconds: int,
    rounds: int,
) -> list[dict]:
    """Start every server, then measure the URLs in turn, `rounds` times over (the order
    rotated each round), so that a noisy machine weighs on all of them alike; the median of
    each URL's rounds is its figure."""
    started = [Server(name, cmd, cwd, env) for name, cmd, cwd, env in servers]
    try:
        labels = {}
        for label, url in urls.items():
            port = url.split(":")[2].split("/")[0]
            wait_ready(url, next(s.proc for s in started if port in s.cmd))
            labels[label] = answers(url)
            wrk(url, 3)
        runs: dict[str, list[dict]] = {label: [] for label in urls}
        order = list(urls)
        for n in range(rounds):
            for label in order[n % len(order) :] + order[: n % len(order)]:
                result = wrk(urls[label], seconds)
                load = round(os.getloadavg()[0], 1)
                print(
                    json.dumps({"server": label, "round": n + 1, "load": load, **result}),
                    flush=True,
                )
                runs[label].append(result)
        out = []
        for label, results in runs.items():
            med = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
            out.append(
                {
                    "server": label,
                    **med,
                    "errors": sum(r["errors"] for r in results),
                    "rps_rounds": [r["rps"] for r in results],
                    "p99_rounds": [r.get("p99_ms") for r in results],
                    "labels": labels[label],
                }
            )
        return out
    finally:
        for server in started:
            server.stop()


def push_model(folder: Path) -> None:
    code = (
        "from sklearn.datasets import load_digits\nfrom sklearn.svm import SVC\n"
        "import headrace.models as m\nd = load_digits()\n"
        "v = m.push('digits', SVC(gamma=0.001, C=10.0).fit(d.data, d.target))\n"
        "m.set_alias('digits', 'production', v.version)\nprint(v.version)\n"
    )
    subprocess.run([PY, "-c", code], cwd=folder, check=True, capture_output=True)


def headrace_project() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-serving-")) / "digits_api"
    shutil.copytree(
        ROOT / "examples" / "digits_api",
        folder,
        ignore=shutil.ignore_patterns(".headrace", "__pycache__"),
    )
    push_model(folder)
    return folder


def headrace_cmd(port: int, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "headrace.cli",
        "serve",
        "--port",
        str(port),
        "--replicas",
        "2",
        "--no-access-log",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}


def _replicas(url: str) -> float:
    text = httpx.get(f"{url}/_headrace/metrics", timeout=5).text
    found = re.search(r"^headrace_serving_replicas (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


def _serving_pids(text: str) -> list[int]:
    """Pids of the replicas that serve, from the log: ready ones, less spares not promoted."""
    pids = {int(n): int(p) for n, p in re.findall(r"replica (\d+) ready \(pid (\d+)\)", text)}
    spares = {int(n) for n in re.findall(r"replica (\d+) is a spare", text)}
    promoted = {int(n) for n in re.findall(r"spare replica (\d+) takes", text)}
    return [pid for n, pid in pids.items() if n not in spares or n in promoted]


def chaos(folder: Path, seconds: int, spares: int) -> dict:
    """A serving replica SIGKILLed every 5 s under load."""
    port = 8306
    base = f"http://127.0.0.1:{port}"
    cmd = headrace_cmd(port, "--spare-replicas", str(spares))
    server = Server(f"headrace-chaos-{spares}", cmd, folder, _env())
    try:
        wait_ready(f"{base}/predict", server.proc)
        while spares and "is a spare" not in server.text():
            time.sleep(0.2)
        wrk(f"{base}/predict", 5)
        load = subprocess.Popen(
            _wrk_cmd(f"{base}/predict", seconds), stdout=subprocess.PIPE, text=True
        )
        killed: list[int] = []
        recoveries: list[float] = []
        end = time.time() + seconds - 3
        time.sleep(2.5)
        while time.time() < end:
            live = [p for p in _serving_pids(server.text()) if p not in killed]
            if len(live) < 2:
                time.sleep(0.1)
                continue
            victim = live[len(killed) % 2]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            t0 = time.monotonic()
            # recovered once the front has seen the replica go (its log line) and 2 replicas
            # serve again (a spare takes the place at once; else a new replica has to start)
            seen = len(killed) - 1
            while server.text().count("is gone with") <= seen and time.monotonic() - t0 < 10:
                time.sleep(0.005)
            while _replicas(base) < 2 and time.monotonic() - t0 < 60:
                time.sleep(0.005)
            recoveries.append(round(time.monotonic() - t0, 3))
            time.sleep(max(0.0, 5.0 - (time.monotonic() - t0)))
        out, _ = load.communicate()
        result = parse_wrk(out)
        gone = re.findall(r"is gone with (\d+) requests in flight", server.text())
        summary = {
            "server": f"headrace-2replicas-{spares}spare-kill-every-5s",
            **result,
            "kills": len(killed),
            "in_flight_on_killed": sum(int(n) for n in gone),
            "recovery_s": recoveries,
        }
        print(json.dumps(summary), flush=True)
        return summary
    finally:
        server.stop()


def rollout(folder: Path, seconds: int) -> dict:
    """digits@production moves to a new version under load; the load runs until the roll-over
    is done and 5 s more."""
    port = 8307
    base = f"http://127.0.0.1:{port}"
    server = Server("headrace-rollout", headrace_cmd(port), folder, _env())
    try:
        code = (
            "from sklearn.datasets import load_digits\nfrom sklearn.svm import SVC\n"
            "import headrace.models as m\nd = load_digits()\n"
            "print(m.push('digits', SVC(gamma=0.001, C=10.0).fit(d.data, d.target)).version)\n"
        )
        new = subprocess.run(
            [PY, "-c", code], cwd=folder, check=True, capture_output=True, text=True
        ).stdout.strip()
        wait_ready(f"{base}/predict", server.proc)
        wrk(f"{base}/predict", 5)
        load = subprocess.Popen(_wrk_cmd(f"{base}/predict", 300), stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        t0 = time.monotonic()
        subprocess.run(
            [PY, "-m", "headrace.cli", "models", "promote", "digits", new],
            cwd=folder,
            check=True,
            capture_output=True,
            env=_env(),
        )
        took = None
        while time.monotonic() - t0 < 240 and load.poll() is None:
            if f"serving digits:{new}" in server.text():
                took = round(time.monotonic() - t0, 2)
                break
            time.sleep(0.1)
        time.sleep(5)
        load.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        out, _ = load.communicate()
        summary = {
            "server": "headrace-2replicas-rollout",
            **parse_wrk(out),
            "rolled_over": took is not None,
            "rollout_s": took,
        }
        print(json.dumps(summary), flush=True)
        return summary
    finally:
        server.stop()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    only = set((sys.argv[2] if len(sys.argv) > 2 else ALL).split(","))
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: list[dict] = []
    extra: list[dict] = []
    folder = headrace_project()
    env = _env()
    local: list[tuple[str, list[str], Path, dict | None]] = []
    urls: dict[str, str] = {}
    if "fastapi" in only:
        cmd = [PY, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", "8301"]
        cmd += ["--workers", "2", "--log-level", "warning", "--no-access-log"]
        local.append(("fastapi", cmd, ANCHORS, None))
        urls["fastapi-uvicorn-2workers"] = "http://127.0.0.1:8301/predict"
    if "litserve" in only and Path(LITSERVE_PYTHON).exists():
        local.append(("litserve", [LITSERVE_PYTHON, "litserve_app.py", "8302"], ANCHORS, None))
        urls["litserve-2workers"] = "http://127.0.0.1:8302/predict"
    if "headrace" in only:
        base = "http://127.0.0.1:8303"
        local.append(("headrace", headrace_cmd(8303), folder, env))
        urls.update(
            {
                "headrace-2replicas-plain-json": f"{base}/predict_one",
                "headrace-2replicas-sam-handler": f"{base}/classify_digit",
                "headrace-2replicas-batched-json": f"{base}/predict",
                "headrace-2replicas-sam-batched": f"{base}/classify_digits",
            }
        )
    if "headrace-base" in only and BASELINE_SRC:
        # the same server from another checkout's source (HEADRACE_BASELINE_SRC=/path/src),
        # measured in the same rounds: a before/after of a change on the same machine load
        base = "http://127.0.0.1:8308"
        local.append(
            ("headrace-base", headrace_cmd(8308), folder, {**env, "PYTHONPATH": BASELINE_SRC})
        )
        urls.update(
            {
                "headrace-base-sam-handler": f"{base}/classify_digit",
                "headrace-base-batched-json": f"{base}/predict",
            }
        )
    if local:
        results += interleaved(local, urls, seconds, rounds)
    if "rayserve" in only:
        cmd = [PY, "ray_serve_app.py", "8304"]
        urls = {"ray-serve-2replicas": "http://127.0.0.1:8304/predict"}
        results += measure("rayserve", cmd, urls, ANCHORS, seconds)
    if "headrace-ray" in only:
        base = "http://127.0.0.1:8305"
        urls = {
            "headrace-ray-serve-batched-json": f"{base}/predict",
            "headrace-ray-serve-sam-handler": f"{base}/classify_digit",
        }
        cmd = headrace_cmd(8305, "--serving", "ray")
        results += measure("headrace-ray", cmd, urls, folder, seconds, env)
    if "chaos" in only:
        extra.append(chaos(folder, max(seconds, 40), 0))
        extra.append(chaos(folder, max(seconds, 40), 1))
    if "rollout" in only:
        extra.append(rollout(folder, seconds))
    print(f"load average after: {os.getloadavg()}", flush=True)
    if results:
        labels = {json.dumps(r["labels"]) for r in results}
        print(f"same answers on 50 digits across {len(results)} servers/routes: {len(labels) == 1}")
    print(f"\n{'server':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9} {'errors':>7}")
    for r in results + extra:
        print(
            f"{r['server']:36} {r.get('rps', 0):9.0f} {r.get('p50_ms', 0):8.1f} "
            f"{r.get('p99_ms', 0):9.1f} {r['errors']:7d}"
        )
    shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
