"""The same dataset code for Ray Data and headrace (test_data_vs_ray.py runs both).

python tests/data_parity_pipelines.py ray SRC OUT.json    # Ray's side, in its own process
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        return value.item()
    if isinstance(value, float) and value != value:
        return "NaN"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run(data: Any, src: str) -> dict[str, Any]:
    import numpy as np

    ds = data.read_parquet(src)
    out: dict[str, Any] = {"count": ds.count()}
    schema = ds.schema()
    out["schema"] = [[n, str(t)] for n, t in zip(schema.names, schema.types, strict=True)]
    ratio = ds.add_column("ratio", lambda df: df["helpful_votes"] / df["total_votes"])
    out["add_column"] = ratio.select_columns(["review_id", "ratio"]).take_all()
    notebook = ratio.drop_columns(["review_body", "vine"]).sort("total_votes")
    notebook = notebook.map_batches(lambda df: df[df["total_votes"] < 100], batch_format="pandas")
    notebook = notebook.map_batches(
        lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")], batch_format="pandas"
    )
    rows = notebook.take_all()
    out["notebook_votes_order"] = [r["total_votes"] for r in rows]
    out["notebook"] = sorted(rows, key=lambda r: r["review_id"])
    out["numpy"] = ds.map_batches(
        lambda b: {"id": b["review_id"], "double": np.asarray(b["star_rating"]) * 2},
        batch_format="numpy",
    ).take(5)
    out["pyarrow"] = ds.map_batches(
        lambda t: t.select(["review_id", "star_rating"]), batch_format="pyarrow"
    ).take(5)
    # Ray 2.60 aggregates by hash partition: its groups come in no defined order
    by_key = sorted(ds.groupby("marketplace").count().take_all(), key=lambda r: r["marketplace"])
    out["groupby_count"] = by_key
    means = ds.groupby("marketplace").mean("total_votes").take_all()
    out["groupby_mean"] = sorted(means, key=lambda r: r["marketplace"])
    top = ds.sort(["star_rating", "review_id"], descending=[True, False]).take(5)
    out["sort_multi"] = [r["review_id"] for r in top]
    out["filter_count"] = ds.filter(lambda r: r["total_votes"] > 50).count()
    out["map"] = ds.map(lambda r: {"id": r["review_id"], "stars": r["star_rating"]}).take(3)
    out["flat_map"] = ds.limit(2).flat_map(lambda r: [{"v": r["star_rating"]}] * 2).take_all()
    out["unique"] = sorted(ds.unique("marketplace"))
    out["renamed"] = ds.rename_columns({"review_id": "rid"}).select_columns(["rid"]).columns()
    out["limit_union"] = ds.limit(3).union(ds.limit(2)).count()
    out["take_batch_pandas"] = type(ds.take_batch(3, batch_format="pandas")).__name__
    return _plain(out)


if __name__ == "__main__":
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    result = run(ray.data, sys.argv[2])
    with open(sys.argv[3], "w") as f:
        json.dump(result, f)
