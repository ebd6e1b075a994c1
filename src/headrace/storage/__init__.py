"""Buckets of objects over fsspec: atomic writes, key validation and change detection.

Works on local folders (`file://` or a plain path), `memory://` (tests) and, with the matching
fsspec package installed, object stores such as `s3://`. Symbolic links inside a local bucket
are not objects and are never followed (`headrace.storage.beneath`).
"""

from headrace.storage.keys import validate_bucket_name, validate_key
from headrace.storage.store import Bucket, ObjectInfo, ObjectStore
from headrace.storage.watch import ChangeWatcher

__all__ = [
    "Bucket",
    "ChangeWatcher",
    "ObjectInfo",
    "ObjectStore",
    "validate_bucket_name",
    "validate_key",
]
