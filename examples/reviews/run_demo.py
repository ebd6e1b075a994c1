"""The reviews notebook on a generated dataset in the project's buckets.

Generates ROWS reviews (default 20,000) with the Amazon reviews Parquet schema into the bucket
`amazon-reviews-pds` (prefix `parquet/`, partitioned by product_category), creates the bucket
`reviews-curated`, and runs notebook.py unchanged against `s3://` paths, which resolve to
those buckets.

    python examples/reviews/run_demo.py [ROWS]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import generate  # noqa: E402
from notebook import main  # noqa: E402

from headrace.config import load_settings  # noqa: E402


def run(rows: int) -> int:
    buckets = Path(load_settings().storage_url)
    source = buckets / "amazon-reviews-pds" / "parquet"
    shutil.rmtree(source, ignore_errors=True)
    generate(str(source), rows=rows, files_per_category=2)
    curated = buckets / "reviews-curated"
    for old in curated.glob("helpful-reviews*"):
        shutil.rmtree(old)
    curated.mkdir(parents=True, exist_ok=True)
    print(f"generated {rows:,} reviews in {source}")
    kept = main("s3://amazon-reviews-pds/parquet/", "s3://reviews-curated/helpful-reviews/")
    print(f"wrote {kept:,} reviews to {curated / 'helpful-reviews'}")
    return kept


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
