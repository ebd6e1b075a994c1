"""A generated product-reviews dataset with the Amazon customer reviews Parquet schema.

Columns, as in the public `amazon-reviews-pds/parquet` dataset: marketplace, customer_id,
review_id, product_id, product_parent, product_title, star_rating, helpful_votes,
total_votes, vine, verified_purchase, review_headline, review_body, review_date, year;
partitioned by product_category (`product_category=Books/part-00000.parquet`, ...).
Deterministic for a seed; about half the reviews have no votes, as in the real data.

    python examples/reviews/generate.py FOLDER [ROWS] [FILES_PER_CATEGORY]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CATEGORIES = ["Books", "Electronics", "Home", "Toys", "Wireless"]
MARKETPLACES = np.array(["US", "UK", "DE", "FR", "JP"])
WORDS = np.array(
    [
        "great",
        "good",
        "bad",
        "fine",
        "works",
        "broke",
        "love",
        "hate",
        "cheap",
        "quality",
        "fast",
        "slow",
        "battery",
        "screen",
        "sound",
        "price",
        "delivery",
        "size",
        "color",
        "gift",
        "kids",
        "easy",
        "hard",
        "returned",
        "perfect",
        "awful",
        "recommend",
        "again",
        "product",
        "seller",
        "charger",
        "cable",
        "case",
        "book",
        "story",
        "author",
        "pages",
        "plot",
        "toy",
        "phone",
        "lamp",
    ]
)
SCHEMA = pa.schema(
    [
        ("marketplace", pa.string()),
        ("customer_id", pa.string()),
        ("review_id", pa.string()),
        ("product_id", pa.string()),
        ("product_parent", pa.string()),
        ("product_title", pa.string()),
        ("star_rating", pa.int32()),
        ("helpful_votes", pa.int32()),
        ("total_votes", pa.int32()),
        ("vine", pa.string()),
        ("verified_purchase", pa.string()),
        ("review_headline", pa.string()),
        ("review_body", pa.string()),
        ("review_date", pa.date32()),
        ("year", pa.int32()),
    ]
)


def _text(rng: np.random.Generator, rows: int, low: int, high: int) -> pa.Array:
    counts = rng.integers(low, high + 1, rows)
    words = WORDS[rng.integers(0, len(WORDS), int(counts.sum()))]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = pa.array(words)
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)
    return pc.binary_join(lists, " ")


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(values).cast(pa.string()), "")


def reviews_table(rows: int, seed: int, first_id: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    total = np.where(rng.random(rows) < 0.5, 0, rng.geometric(0.05, rows)).astype(np.int32)
    days = rng.integers(12_784, 16_801, rows).astype(np.int32)  # 2005-01-01 .. 2015-12-31
    dates = pa.array(days, pa.int32()).cast(pa.date32())
    table = pa.table(
        {
            "marketplace": MARKETPLACES[rng.choice(5, rows, p=[0.6, 0.1, 0.1, 0.1, 0.1])],
            "customer_id": pa.array(rng.integers(10_000, 60_000_000, rows)).cast(pa.string()),
            "review_id": _ids("R", np.arange(first_id, first_id + rows) * 7919 + 10**10),
            "product_id": _ids("B0", rng.integers(10_000_000, 99_999_999, rows)),
            "product_parent": pa.array(rng.integers(1_000, 999_999_999, rows)).cast(pa.string()),
            "product_title": _text(rng, rows, 2, 8),
            "star_rating": rng.choice(5, rows, p=[0.08, 0.05, 0.08, 0.19, 0.60]).astype(np.int32)
            + 1,
            "helpful_votes": rng.binomial(total, 0.7).astype(np.int32),
            "total_votes": total,
            "vine": np.where(rng.random(rows) < 0.02, "Y", "N"),
            "verified_purchase": np.where(rng.random(rows) < 0.8, "Y", "N"),
            "review_headline": _text(rng, rows, 1, 5),
            "review_body": _text(rng, rows, 10, 40),
            "review_date": dates,
            "year": pc.year(dates).cast(pa.int32()),
        }
    )
    return table.cast(SCHEMA)


def generate(
    folder: str, rows: int = 10_000, files_per_category: int = 2, seed: int = 0
) -> list[str]:
    """Write `rows` reviews under `folder`, spread over the categories; the paths written."""
    paths = []
    parts = len(CATEGORIES) * files_per_category
    per = rows // parts
    written = 0
    for c, category in enumerate(CATEGORIES):
        os.makedirs(os.path.join(folder, f"product_category={category}"), exist_ok=True)
        for f in range(files_per_category):
            index = c * files_per_category + f
            n = per if index < parts - 1 else rows - written
            path = os.path.join(folder, f"product_category={category}", f"part-{f:05d}.parquet")
            pq.write_table(reviews_table(n, seed * 1000 + index, written), path)
            written += n
            paths.append(path)
    return paths


if __name__ == "__main__":
    target = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    per_category = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    generate(target, count, per_category)
    print(f"{count:,} reviews in {target}")
