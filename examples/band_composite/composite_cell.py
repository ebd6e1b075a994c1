"""The batch job of one cell: stack its blue, green and red bands into a Cloud Optimized
GeoTIFF, upload it, and write the cell's row in the task log.

It is an ordinary program configured by its environment, as a Batch job is: CELL, BLUE, GREEN,
RED, DATE, OUTPUT_BUCKET, plus HEADRACE_LEDGER and HEADRACE_STORAGE, which headrace adds.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from headrace.formats.raster import composite
from headrace.ledger import Ledger
from headrace.storage import ObjectStore
from headrace.tables import Tables

TASK_LOG = "composite-tasklog"


def main() -> int:
    cell, date, bucket = os.environ["CELL"], os.environ["DATE"], os.environ["OUTPUT_BUCKET"]
    bands = [os.environ[b] for b in ("BLUE", "GREEN", "RED")]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{cell}.tif"
        report = composite(bands, out, names=["blue", "green", "red"])
        key = f"{date}/{cell}.tif"
        info = ObjectStore(os.environ["HEADRACE_STORAGE"]).bucket(bucket).put_file(key, out)
    stats = {
        name: {k: round(float(v), 3) for k, v in s.as_dict().items() if isinstance(v, int | float)}
        for name, s in zip(report.band_names, report.statistics, strict=True)
    }
    Tables(Ledger(os.environ["HEADRACE_LEDGER"])).put_item(
        TASK_LOG,
        {
            "cell": cell,
            "date": date,
            "status": "SUCCEEDED",
            "output": f"{bucket}/{key}",
            "bytes": info.size,
            "width": report.width,
            "height": report.height,
            "seconds": round(time.time() - started, 3),
            "statistics": stats,
        },
    )
    print(f"{cell}: {bucket}/{key} ({info.size} bytes), {report.width}x{report.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
