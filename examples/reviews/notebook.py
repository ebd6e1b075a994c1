"""The Ray Data reviews notebook, as written for Ray, with headrace's module in its place.

Reads the product-reviews dataset from a bucket, answers count/schema/size from the Parquet
footers, shows a record, adds a helpfulness ratio, drops the long text columns, sorts, runs a
pandas function as tasks and a stateful class on an autoscaling actor pool, filters twice and
writes Parquet (and CSV/JSON) back to a bucket.

    python examples/reviews/notebook.py [INPUT] [OUTPUT]

INPUT defaults to s3://amazon-reviews-pds/parquet/ and OUTPUT to
s3://reviews-curated/helpful-reviews/: with headrace, `s3://NAME/...` is the project's bucket
NAME when it has one (run_demo.py puts a generated dataset there), else Amazon S3.
"""

from __future__ import annotations

import sys

from headrace import data
from headrace.data import ActorPoolStrategy


def pandas_transform(df):
    """A pandas function run as stateless tasks: the length of each review's headline."""
    df["headline_words"] = df["review_headline"].str.count(" ") + 1
    return df


class HelpfulnessLabeler:
    """A stateful transform: built once per worker (think: loading a model), then called on
    batches of 4 rows."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, df):
        df["is_helpful"] = df["helpful_votes_ratio"] > self.threshold
        return df


def main(source: str, target: str) -> int:
    ds = data.read_parquet(source)
    print("rows:", ds.count())
    print(ds.schema())
    print("size in memory:", ds.size_bytes(), "bytes;", len(ds.input_files()), "files")
    ds.show(1)

    ds = ds.add_column("helpful_votes_ratio", lambda df: df["helpful_votes"] / df["total_votes"])
    ds = ds.drop_columns(["review_body", "vine", "product_parent", "verified_purchase"])
    ds = ds.sort("total_votes")
    ds = ds.map_batches(pandas_transform)
    ds = ds.map_batches(lambda df: df[df["total_votes"] < 100])
    ds = ds.map_batches(lambda df: df[(df["total_votes"] > 0) & (df["marketplace"] == "US")])
    ds = ds.map_batches(HelpfulnessLabeler, compute=ActorPoolStrategy(2, 4), batch_size=4)
    kept = ds.count()
    print("reviews with votes, US marketplace:", kept)
    ds.write_parquet(target)
    ds.limit(1000).write_csv(target.rstrip("/") + "-sample-csv/")
    ds.limit(1000).write_json(target.rstrip("/") + "-sample-json/")
    print(ds.stats())
    return kept


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "s3://amazon-reviews-pds/parquet/"
    target = sys.argv[2] if len(sys.argv) > 2 else "s3://reviews-curated/helpful-reviews/"
    main(source, target)
