"""The project's buckets over the S3 API, so AWS SDK code (boto3, s3fs, pyarrow, the aws CLI,
DuckDB) reaches them unchanged.

The server is rclone's `serve s3` over the bucket root (`rclone`); this package starts it bound
to 127.0.0.1 with the keys from the settings (`credentials`), and says how a client reaches it
(`client_environment`). Writes through it land under hidden `.rclone_temp_*` names and are
renamed into place when complete, so the change watcher sees each object once, whole.
"""

from headrace.s3api.credentials import S3Keys, client_environment, keys_from_settings
from headrace.s3api.rclone import S3Endpoint, rclone_binary, start_endpoint

__all__ = [
    "S3Endpoint",
    "S3Keys",
    "client_environment",
    "keys_from_settings",
    "rclone_binary",
    "start_endpoint",
]
