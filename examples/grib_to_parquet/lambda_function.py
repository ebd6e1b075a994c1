"""A Lambda-style handler: convert the GRIB file named by an S3 event into Parquet.

It is plain Lambda code (`handler(event, context)` reading the S3 records of its event); the
headrace pieces it touches are `context.storage` (where Lambda code would use an S3 client), the
GRIB converter, and `parse_s3_event`, which decodes the keys and turns a malformed event into an
error that says what is missing. Outputs are keyed by the input key, so a retried invocation
overwrites its own output atomically instead of adding a second one.
"""

import json
import logging
from pathlib import Path

from headrace.events import parse_s3_event
from headrace.formats.grib import grib_to_parquet

logger = logging.getLogger()
logger.setLevel(logging.INFO)

OUTPUT_BUCKET = "curated"


def handler(event, context):
    results = []
    for obj in parse_s3_event(event):
        bucket, key = obj.bucket, obj.key
        # copy to this invocation's scratch space, as a Lambda copies to /tmp
        local = Path(context.tmp_dir) / Path(key).name
        context.storage.bucket(bucket).get_file(key, local)
        out = local.with_name(local.name + ".parquet")
        # errors and the Parquet metadata name the object, not the scratch copy
        report = grib_to_parquet(local, out, source_name=f"s3://{bucket}/{key}")
        dest_key = f"{key}.parquet"
        context.storage.bucket(OUTPUT_BUCKET).put_file(dest_key, out)
        logger.info(
            "converted %s/%s: %d fields, %d rows -> %s/%s",
            bucket,
            key,
            report.fields,
            report.rows,
            OUTPUT_BUCKET,
            dest_key,
        )
        results.append(
            {
                "source": f"{bucket}/{key}",
                "output": f"{OUTPUT_BUCKET}/{dest_key}",
                "fields": report.fields,
                "rows": report.rows,
            }
        )
    print(json.dumps({"converted": len(results), "request": context.aws_request_id}))
    return {"converted": results}
