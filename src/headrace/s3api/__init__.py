"""The project's buckets over the S3 API, so AWS SDK code (boto3, s3fs, pyarrow, the aws CLI,
DuckDB) reaches them unchanged.

The server is rclone's `serve s3` over the bucket root (`rclone`: `start_endpoint`,
`S3Endpoint`); this package starts it bound to 127.0.0.1 with the keys from the settings
(`credentials`), and says how a client reaches it (`credentials.client_environment`). Writes
through it land under hidden `.rclone_temp_*` names and are renamed into place when complete,
so the change watcher sees each object once, whole.

This file imports nothing: the front (`front`, its own process) imports this package first,
and needs neither rclone's launcher nor the settings.
"""
