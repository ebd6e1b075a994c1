"""The kill -9 campaign: put 1,000 objects while `headrace up` is killed with SIGKILL 20 times.

    python benchmarks/kill9_campaign.py --ledger sqlite
    python benchmarks/kill9_campaign.py --ledger postgres   # needs PostgreSQL on 127.0.0.1:5432

Checks, and prints as one JSON line:

* every object was converted exactly once in the ledger: one invocation per object, succeeded,
  with exactly one `ok` attempt (a re-run after a kill follows an `abandoned` attempt);
* no handler kept running after its coordinator died: every process the coordinator had (fork
  server, workers) is gone within a second of the kill (`slowest_death_s`, `outlived`);
* no attempt is recorded as failed (dead, timeout, crashed) by a worker that wrote its output;
* every output is there and right; no scratch folder is left.

* no handler finished after its coordinator was killed (`finished_after_coordinator_died`, from
  the marks handlers leave with their coordinator's pid and the time), allowing DEATH_TOLERANCE
  for the kernel to deliver the kills (`latest_finish_after_kill_s` shows the actual figure).

It also counts handlers that ran to completion twice (`completed_twice`): a handler whose
coordinator was killed after the handler wrote its output but before the coordinator recorded it
runs again, as at-least-once delivery allows; the ledger still shows one successful attempt.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import psutil
from sqlalchemy import select

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "kill9_app"
# A SIGKILL is not instantaneous: the kernel tears the coordinator down, then the fork server
# (PR_SET_PDEATHSIG), then the workers. A handler in its last milliseconds may still finish.
DEATH_TOLERANCE = 0.1
PG_ADMIN = os.environ.get("HEADRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Up:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None
        self.killed_at: dict[int, float] = {}  # coordinator pid -> when it was killed
        self.info = Path(env["HEADRACE_HOME"]) / "coordinator.json"

    def start(self) -> None:
        with open(self.log, "a") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "headrace.cli", "-C", str(APP_DIR), "up", "--quiet"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.info.read_text()).get("pid") == self.proc.pid:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"headrace up exited; see {self.log}")
            time.sleep(0.05)
        raise RuntimeError("headrace up did not start")

    def family(self) -> list[int]:
        """The coordinator's processes: its children, and the fork server's (the workers)."""
        assert self.proc is not None
        try:
            return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            return []

    def kill9(self) -> tuple[float, list[int]]:
        """SIGKILL the coordinator; how long its processes lived on, and which outlived 1 s."""
        assert self.proc is not None
        family = self.family()
        self.proc.send_signal(signal.SIGKILL)
        killed = time.time()
        self.killed_at[self.proc.pid] = killed
        self.proc.wait(30)
        while any(_alive(p) for p in family) and time.time() - killed < 5:
            time.sleep(0.005)
        slowest = time.time() - killed if family else 0.0
        late = [p for p in family if _alive(p)]
        if slowest > 1.0:
            late = family
        for pid in late:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return slowest, late

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


def _ledger_url(kind: str, home: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{home / 'ledger.db'}", None
    import psycopg

    name = f"headrace_kill9_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}", name


def _drop(name: str | None) -> None:
    if name:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(kind: str, n_objects: int, kills: int, seed: int, workdir: Path) -> dict:
    from headrace.ledger import Ledger
    from headrace.ledger.schema import attempts, invocations

    rng = random.Random(seed)
    home, marks = workdir / "home", workdir / "marks"
    landing = home / "buckets" / "landing"
    landing.mkdir(parents=True)
    marks.mkdir()
    url, database = _ledger_url(kind, home)
    env = {
        "HEADRACE_HOME": str(home),
        "HEADRACE_LEDGER": url,
        "HEADRACE_POLL_INTERVAL": "0.2",
        "HEADRACE_WORKERS": "2",
        "KILL9_MARKS": str(marks),
    }
    expected = {
        f"obj-{i:04d}.dat": f"object {i} {rng.random()}\n".encode() * 40 for i in range(n_objects)
    }
    put_for = max(10.0, kills * 2.0)  # spread the puts over the kills

    def put_all() -> None:
        for name, data in expected.items():
            tmp = landing / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, landing / name)
            time.sleep(rng.uniform(0, 2 * put_for / n_objects))

    up = Up(env, workdir / "up.log")
    started = time.time()
    up.start()
    writer = threading.Thread(target=put_all)
    writer.start()
    deaths: list[float] = []
    outlived: list[int] = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 2 * put_for / kills))
            slowest, late = up.kill9()
            deaths.append(slowest)
            outlived += late
            time.sleep(rng.uniform(0, 0.3))
            up.start()
        writer.join()
        ledger = Ledger(url)
        deadline = time.time() + 600
        while time.time() < deadline:
            counts = ledger.count_by_status("convert")
            if counts.get("succeeded", 0) + counts.get("dead", 0) >= n_objects:
                break
            time.sleep(0.5)
        stopped = up.stop()
        elapsed = time.time() - started

        with ledger.engine.connect() as conn:
            invs = conn.execute(
                select(invocations.c.id, invocations.c.status, invocations.c.payload).where(
                    invocations.c.function == "convert"
                )
            ).all()
            rows = conn.execute(
                select(
                    attempts.c.invocation_id,
                    attempts.c.number,
                    attempts.c.status,
                    attempts.c.worker,
                ).where(attempts.c.function == "convert")
            ).all()
        ledger.close()
    finally:
        writer.join()
        if up.proc is not None and up.proc.poll() is None:
            up.proc.kill()

    key_of = {r.id: json.loads(r.payload)["Records"][0]["s3"]["object"]["key"] for r in invs}
    per_key = Counter(key_of.values())
    statuses = Counter(r.status for r in invs)
    ok_per_inv = Counter(r.invocation_id for r in rows if r.status == "ok")
    attempt_statuses = Counter(r.status for r in rows)

    done = defaultdict(list)  # key -> [(worker, attempt)]
    after_death = []  # handlers that finished after their coordinator was killed
    for mark in marks.glob("*.done"):
        key, worker, attempt, coordinator = mark.name[: -len(".done")].split("--")
        done[key].append((worker, int(attempt)))
        killed = up.killed_at.get(int(coordinator))
        finished = float(mark.read_text())
        if killed is not None and finished > killed:
            after_death.append((key, round(finished - killed, 3)))
    failed_with_output = [
        (key_of[r.invocation_id], r.number, r.status)
        for r in rows
        if r.status not in ("ok", "abandoned")
        and (r.worker, r.number) in done.get(key_of[r.invocation_id], [])
    ]
    dead_with_output = [key_of[r.id] for r in invs if r.status == "dead" and done.get(key_of[r.id])]
    converted = home / "buckets" / "converted"
    wrong_outputs = [
        k
        for k, data in expected.items()
        if not (converted / k).exists()
        or (converted / k).read_bytes() != hashlib.sha256(data).hexdigest().encode()
    ]
    tmp = home / "tmp"
    return {
        "ledger": kind,
        "objects": n_objects,
        "kills": kills,
        "seconds": round(elapsed, 1),
        "stopped_with": stopped,
        "invocations": len(invs),
        "objects_with_one_invocation": sum(1 for n in per_key.values() if n == 1),
        "invocation_statuses": dict(statuses),
        "attempt_statuses": dict(attempt_statuses),
        "succeeded_with_one_ok_attempt": sum(
            1 for r in invs if r.status == "succeeded" and ok_per_inv[r.id] == 1
        ),
        "slowest_death_s": round(max(deaths, default=0.0), 3),
        "outlived": len(outlived),
        "finished_after_coordinator_died": [a for a in after_death if a[1] > DEATH_TOLERANCE],
        "latest_finish_after_kill_s": max((d for _, d in after_death), default=None),
        "failed_attempts_with_output": failed_with_output,
        "dead_with_output": dead_with_output,
        "completed_twice": sum(1 for v in done.values() if len(v) > 1),
        "wrong_or_missing_outputs": len(wrong_outputs),
        "scratch_left": len(list(tmp.iterdir())) if tmp.exists() else 0,
        "_database": database,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=f"headrace-kill9-{args.ledger}-"))
    report = run(args.ledger, args.objects, args.kills, args.seed, workdir)
    _drop(report.pop("_database"))
    ok = (
        report["objects_with_one_invocation"] == args.objects
        and report["succeeded_with_one_ok_attempt"] == args.objects
        and report["outlived"] == 0
        and not report["finished_after_coordinator_died"]
        and not report["failed_attempts_with_output"]
        and not report["dead_with_output"]
        and report["wrong_or_missing_outputs"] == 0
        and report["scratch_left"] == 0
    )
    report["ok"] = ok
    report["workdir"] = str(workdir)
    print(json.dumps(report))
    if not args.keep and ok:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
