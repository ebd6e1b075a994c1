"""Shared set-up of the dataset tests: the generated reviews dataset of examples/reviews."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DROP = ["review_body", "vine", "product_parent", "verified_purchase", "review_headline"]


def reviews_module():
    spec = importlib.util.spec_from_file_location(
        "reviews_generate", ROOT / "examples" / "reviews" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_notebook_output(folder: Path):
    """The notebook pipeline in plain pandas: the rows headrace must write."""
    import pandas as pd
    import pyarrow.dataset as pads

    df = pads.dataset(str(folder), format="parquet", partitioning="hive").to_table().to_pandas()
    df["helpful_votes_ratio"] = df["helpful_votes"] / df["total_votes"]
    df = df.drop(columns=DROP)
    df = df[(df["total_votes"] < 100) & (df["total_votes"] > 0) & (df["marketplace"] == "US")]
    return (
        df.sort_values("review_id")
        .reset_index(drop=True)
        .astype({"product_category": str})
        .pipe(pd.DataFrame)
    )
