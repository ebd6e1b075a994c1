"""A weather handler as written for AWS Lambda: boto3 to fetch, pygrib to read, pandas to write
Parquet straight to an `s3://` path. Nothing in it knows about headrace."""

import os
import urllib.parse

import boto3
import pandas as pd
import pygrib

s3_client = boto3.client("s3")


def lambda_handler(event, context):
    written = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        local = f"/tmp/{os.path.basename(key)}"
        try:
            s3_client.download_file(bucket, key, local)
            rows = []
            with pygrib.open(local) as grbs:
                for msg in grbs:
                    lats, lons = msg.latlons()
                    values = msg.values
                    rows.append(
                        pd.DataFrame(
                            {
                                "name": msg.shortName,
                                "level": msg.level,
                                "valid_time": msg.validDate,
                                "latitude": lats.ravel(),
                                "longitude": lons.ravel(),
                                "value": values.ravel(),
                            }
                        )
                    )
            df = pd.concat(rows, ignore_index=True)
            # the variable as named in the Lambda configuration this handler came with
            out = os.environ["S3path"] + os.path.basename(key) + ".parquet"  # noqa: SIM112
            df.to_parquet(out, index=False)
            written.append(out)
        except Exception as e:
            # the habit the endpoint must survive: the error is printed, not raised
            print(f"failed on s3://{bucket}/{key}: {e!r}")
        finally:
            if os.path.exists(local):
                os.remove(local)
    return {"written": written}
