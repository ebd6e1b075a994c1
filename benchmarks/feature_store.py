"""Feature store against Feast, like for like, both measured in this run.

Feast's side is the anchor script itself (shared/anchors/feast_store.py: Feast 0.67.0, local
provider, SQLite online store, file (dask) offline store), run in its own virtualenv
(benchmarks/.venvs/feast, created on first use with the anchor's exact package set from
shared/anchors/logs/freeze-feast.txt) in a subprocess. That subprocess generates the data (numpy
default_rng(7): 100,000 users x 10 days = 1,000,000 feature rows of 10 float32 features, and
1,000,000 entity rows at random times over 11 days); headrace's side then reads the very same
Parquet files. The anchor's FeatureView has ttl = 30 days, longer than the data span.

Measured, 3 runs each, median (min-max):
  1. load: Feast `materialize` (offline file -> 100k newest rows in SQLite) against headrace
     `FeatureStore.write` of the 1M rows (offline Delta append partitioned by day + online upsert
     of the 100k newest rows into SQLite) - headrace does more work here.
  2. online: 100 warm-up calls, then 2,000 sequential single-entity lookups of 10 features, on
     the same random keys (default_rng(11)) on both sides; per-call p50 / p99.
     Feast's online reads do not apply the TTL; the 2024 data is older than 30 days today, so
     headrace's online group has a TTL long enough to keep it (its TTL check still runs).
  3. point-in-time join of the 1M entity rows (a pandas DataFrame on both sides, as in the
     anchor) against the 1M feature rows, result as a pandas DataFrame (`to_df()` / our
     `get_historical(...).to_pandas()`; the Arrow result without pandas is reported too).
Then the results are compared: every row Feast returns must have identical values in ours, and
the rows Feast drops are counted and explained.

    .venv/bin/python benchmarks/feature_store.py [--rows 1000000] [--runs 3] [--no-feast]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parents[1] / "shared" / "anchors"
ANCHOR = ANCHORS / "feast_store.py"
FEAST_FREEZE = ANCHORS / "logs" / "freeze-feast.txt"
FEAST_PINS = ["feast==0.67.0", "duckdb==2.0.0", "pandas==2.3.3", "dask==2026.8.0"]
FEAST_VENV = HERE / ".venvs" / "feast"
N_ENT, N_FEAT = 100_000, 10
FEATURES = [f"user_stats:f{i}" for i in range(N_FEAT)]
ONLINE_CHECK_KEYS = 500


def load_anchor(work: Path):
    """The anchor module with its data and repo folders moved under `work`."""
    spec = importlib.util.spec_from_file_location("feast_anchor", ANCHOR)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    anchor.REPO = str(work / "feast-repo")
    anchor.DATA = f"{anchor.REPO}/data"
    anchor.FEAT = f"{anchor.DATA}/features.parquet"
    anchor.ENT = f"{anchor.DATA}/entities.parquet"
    return anchor


# -- Feast's side (runs in Feast's venv) -------------------------------------------------------


def feast_child(work: Path, rows: int) -> None:
    """Run the anchor's main() unchanged, keeping its last historical result and a sample of
    online values for the comparison."""
    import feast
    import numpy as np

    anchor = load_anchor(work)
    kept = {}
    original = feast.FeatureStore.get_historical_features

    def get_historical_features(self, *args, **kwargs):
        job = original(self, *args, **kwargs)
        to_df = job.to_df

        def keep_df(*a, **k):
            kept["df"] = to_df(*a, **k)
            return kept["df"]

        job.to_df = keep_df
        return job

    feast.FeatureStore.get_historical_features = get_historical_features
    sys.argv = [str(ANCHOR), str(rows)]
    anchor.main()
    kept["df"].to_parquet(work / "feast_historical.parquet", index=False)
    store = feast.FeatureStore(repo_path=anchor.REPO)
    keys = np.random.default_rng(5).integers(0, N_ENT, ONLINE_CHECK_KEYS).tolist()
    values = []
    for k in keys:
        got = store.get_online_features(features=FEATURES, entity_rows=[{"user_id": k}]).to_dict()
        values.append([got[f"f{i}"][0] for i in range(N_FEAT)])
    (work / "feast_online.json").write_text(json.dumps({"keys": keys, "values": values}))


def feast_python() -> Path:
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FEAST_VENV} (first use)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        pins = ["-r", str(FEAST_FREEZE)] if FEAST_FREEZE.exists() else FEAST_PINS
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def run_feast(work: Path, rows: int) -> dict[str, list[float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    proc = subprocess.run(
        [str(feast_python()), __file__, "--feast-child", str(work), "--rows", str(rows)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(work),
    )
    for line in proc.stdout.splitlines():
        print(f"  [feast] {line}", flush=True)
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"the Feast anchor failed (exit {proc.returncode})")
    out = proc.stdout

    def runs(pattern: str) -> list[float]:
        return [float(v) for v in re.findall(pattern, out)]

    return {
        "load_s": runs(r"materialize run \d+: ([\d.]+) s"),
        "online_p50_ms": runs(r"online run \d+: p50 ([\d.]+) ms"),
        "online_p99_ms": runs(r"online run \d+: p50 [\d.]+ ms, p99 ([\d.]+) ms"),
        "historical_s": runs(r"historical run \d+: ([\d.]+) s"),
        "duckdb_asof_s": runs(r"duckdb asof run \d+: ([\d.]+) s"),
    }


# -- headrace's side -------------------------------------------------------------------------


def headrace_side(
    data: Path, work: Path, runs: int, online_sample: Path | None = None
) -> tuple[dict[str, list[float]], object, object]:
    """headrace on the Parquet files in `data` (stores under `work`): load, online, join."""
    import numpy as np
    import pandas as pd

    from headrace.features import FeatureGroup, FeatureStore

    print(f"headrace (load average {os.getloadavg()[0]:.1f}):", flush=True)
    features = pq.read_table(data / "features.parquet")
    entity_df = pd.read_parquet(data / "entities.parquet")
    schema = features.schema.remove_metadata()
    train_group = FeatureGroup(
        "user_stats", "user_id", "event_timestamp", schema, ttl=timedelta(days=30)
    )
    online_group = FeatureGroup(
        "user_stats", "user_id", "event_timestamp", schema, ttl=timedelta(days=3650)
    )
    res: dict[str, list[float]] = {k: [] for k in ("load_s", "historical_s", "historical_arrow_s")}
    res |= {"online_p50_ms": [], "online_p99_ms": []}

    root = work
    for rep in range(runs):
        root = work / f"headrace-{rep}"
        with FeatureStore(root) as store:
            store.register(online_group)
            t = time.perf_counter()
            store.write("user_stats", features)
            res["load_s"].append(time.perf_counter() - t)
        print(f"  headrace write run {rep + 1}: {res['load_s'][-1]:.2f} s", flush=True)

    with FeatureStore(root) as store:
        store.register(online_group)
        rng = np.random.default_rng(11)  # the anchor's keys, in the anchor's order
        assert store.get_online("user_stats", [42])[0]["f0"] is not None
        for k in rng.integers(0, N_ENT, 100).tolist():
            store.get_online("user_stats", [k])
        for rep in range(runs):
            lat = []
            for k in rng.integers(0, N_ENT, 2000).tolist():
                t = time.perf_counter()
                store.get_online("user_stats", [k])
                lat.append(time.perf_counter() - t)
            a = np.array(lat) * 1000
            res["online_p50_ms"].append(float(np.percentile(a, 50)))
            res["online_p99_ms"].append(float(np.percentile(a, 99)))
            print(
                f"  headrace online run {rep + 1}: p50 {res['online_p50_ms'][-1]:.4f} ms, "
                f"p99 {res['online_p99_ms'][-1]:.4f} ms",
                flush=True,
            )
        online_check = None
        if online_sample is not None:
            sample = json.loads(online_sample.read_text())
            ours = store.get_online("user_stats", sample["keys"])
            same = sum(
                [r[f"f{i}"] for i in range(N_FEAT)] == v
                for r, v in zip(ours, sample["values"], strict=True)
            )
            online_check = (same, len(sample["keys"]))

    with FeatureStore(root) as store:  # the anchor's definition: ttl 30 days
        store.register(train_group)
        result = None
        for rep in range(runs):
            t = time.perf_counter()
            table = store.get_historical(entity_df, FEATURES)
            arrow_s = time.perf_counter() - t
            table.to_pandas()
            res["historical_s"].append(time.perf_counter() - t)
            res["historical_arrow_s"].append(arrow_s)
            result = table
            print(
                f"  headrace historical run {rep + 1}: {res['historical_s'][-1]:.3f} s "
                f"(arrow {arrow_s:.3f} s, {table.num_rows:,} rows out)",
                flush=True,
            )
    return res, result, online_check


def compare(work: Path, ours: pa.Table) -> dict[str, int]:
    """Row-by-row comparison of the two historical results, and why Feast's missing rows
    are missing."""
    import duckdb

    con = duckdb.connect()
    con.register("ours", ours)
    con.execute(f"CREATE VIEW feast AS SELECT * FROM '{work / 'feast_historical.parquet'}'")
    con.execute(
        f"CREATE VIEW firsts AS SELECT user_id, min(event_timestamp) AS first_ts "
        f"FROM '{work / 'feast-repo' / 'data' / 'features.parquet'}' GROUP BY user_id"
    )
    differs = " OR ".join(f"o.f{i} IS DISTINCT FROM f.f{i}" for i in range(N_FEAT))
    q = con.sql(
        f"""
        SELECT
          (SELECT count(*) FROM ours) AS ours_rows,
          (SELECT count(*) FROM ours WHERE f0 IS NULL) AS ours_null_rows,
          (SELECT count(*) FROM feast) AS feast_rows,
          count(*) AS matched,
          count(*) FILTER (WHERE {differs}) AS matched_differing
        FROM feast f JOIN ours o USING (user_id, event_timestamp)
        """
    )
    stats = q.to_arrow_table().to_pylist()[0]
    dropped = con.sql(
        """
        SELECT count(*) AS dropped,
               count(*) FILTER (WHERE o.f0 IS NULL) AS dropped_null_in_ours,
               count(*) FILTER (WHERE fi.first_ts IS NULL OR o.event_timestamp < fi.first_ts)
                 AS dropped_before_first_value
        FROM ours o
        ANTI JOIN feast f USING (user_id, event_timestamp)
        LEFT JOIN firsts fi USING (user_id)
        """
    )
    return stats | dropped.to_arrow_table().to_pylist()[0]


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.4g} ({min(values):.4g}-{max(values):.4g})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows for the join")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-feast", action="store_true", help="headrace's side only")
    parser.add_argument("--feast-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feast_child:
        feast_child(args.feast_child, args.rows)
        return 0

    with tempfile.TemporaryDirectory(prefix="headrace-feast-") as tmp:
        work = Path(tmp)
        # headrace runs before and after Feast (the machine is shared: a load that comes and
        # goes then weighs on both sides); the data is the anchor's generator, same seed.
        anchor = load_anchor(work / "pre")
        os.makedirs(anchor.DATA)
        anchor.make_data(args.rows)
        ours, result, online_check = headrace_side(Path(anchor.DATA), work / "pre", args.runs)
        feast: dict[str, list[float]] = {}
        check: dict[str, int] = {}
        if not args.no_feast and ANCHOR.exists():
            print(f"Feast (anchor script, its own venv; load average {os.getloadavg()[0]:.1f}):")
            feast = run_feast(work, args.rows)
            data = work / "feast-repo" / "data"
            for name in ("features.parquet", "entities.parquet"):
                same = pq.read_table(data / name).equals(pq.read_table(Path(anchor.DATA) / name))
                assert same, f"{name} differs between Feast's run and headrace's"
            after, result, online_check = headrace_side(
                data, work / "post", args.runs, work / "feast_online.json"
            )
            ours = {k: v + after[k] for k, v in ours.items()}
            check = compare(work, result)

    med = {k: statistics.median(v) for k, v in ours.items() if v}
    fmed = {k: statistics.median(v) for k, v in feast.items() if v}
    ratio = {
        k: fmed[k] / med[k]
        for k in ("load_s", "online_p50_ms", "online_p99_ms", "historical_s")
        if k in fmed
    }
    print(
        f"\nFeature store, 1M feature rows x 10 features, {args.rows:,} entity rows; median "
        f"(min-max) of {args.runs} Feast runs and {len(ours['load_s'])} headrace runs "
        "(half before Feast, half after)"
    )
    print("| measure | Feast 0.67.0 | headrace | Feast / headrace |\n|---|---:|---:|---:|")
    labels = {
        "load_s": "load 1M rows (s): Feast materialize / headrace write (Delta + online)",
        "online_p50_ms": "online get, 1 entity x 10 features, p50 (ms)",
        "online_p99_ms": "online get, 1 entity x 10 features, p99 (ms)",
        "historical_s": f"point-in-time join {args.rows:,} x 1M, to pandas (s)",
        "historical_arrow_s": "point-in-time join, Arrow result (s)",
        "duckdb_asof_s": "bare DuckDB ASOF on the Parquet files (anchor's reference) (s)",
    }
    for key, label in labels.items():
        r = f"{ratio[key]:.1f}x" if key in ratio else ""
        print(f"| {label} | {summary(feast.get(key, []))} | {summary(ours.get(key, []))} | {r} |")
    if check:
        print(
            f"\nrows: Feast {check['feast_rows']:,}, headrace {check['ours_rows']:,} "
            f"({check['ours_null_rows']:,} with null features). Of Feast's rows, "
            f"{check['matched']:,} found in ours, {check['matched_differing']:,} with any "
            f"feature value different."
        )
        print(
            f"Feast dropped {check['dropped']:,} entity rows; in headrace "
            f"{check['dropped_null_in_ours']:,} of them have null features and "
            f"{check['dropped_before_first_value']:,} precede the entity's first feature value: "
            "Feast's file (dask) offline store left-merges every feature row of the entity, "
            "then its TTL filter keeps rows with feature time in [t - ttl, t]; when all of an "
            "entity's values are later than t, every merged row is filtered out and the entity "
            "row disappears. headrace keeps every entity row, with nulls."
        )
    if online_check:
        print(
            f"online: {online_check[0]} of {online_check[1]} sampled entities have identical "
            "values in Feast and headrace"
        )
    line = {
        "benchmark": "feature_store",
        "rows": args.rows,
        "runs": args.runs,
        "feast": feast,
        "headrace": ours,
        "ratio_feast_over_headrace": ratio,
        "check": check,
        "online_identical": online_check,
        "date": time.strftime("%F"),
    }
    print(json.dumps(line))
    out = HERE / "results" / "feature_store.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(line, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
