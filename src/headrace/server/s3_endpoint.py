"""Starting the S3 endpoint for `headrace up`, or saying why there is none."""

from __future__ import annotations

import importlib.util
import logging

from headrace.config import Settings, listen_address
from headrace.s3api.credentials import keys_from_settings
from headrace.s3api.rclone import S3Endpoint, rclone_binary, start_endpoint
from headrace.storage import ObjectStore

log = logging.getLogger("headrace.coordinator")


def check_s3_setting(settings: Settings, store: ObjectStore) -> None:
    """Raise the ConfigError start_s3_endpoint would (a bad address, keys missing off
    loopback), before the coordinator starts anything."""
    if settings.s3 and store.local_root() is not None:
        keys_from_settings(settings, listen_address(settings.s3, "s3")[0])


def start_s3_endpoint(settings: Settings, store: ObjectStore) -> S3Endpoint | None:
    """The endpoint over the store's buckets, or None when it is off or cannot be served.

    Off by `s3 = ""`. Only local bucket folders are served: an object store (`s3://…`) is
    already reachable by S3 clients at its own endpoint. Without rclone or aiohttp (the
    front's server) installed the coordinator runs on, and says how to get it; a bad address
    or bad keys stop the start."""
    if not settings.s3:
        return None
    root = store.local_root()
    if root is None:
        log.info("no S3 endpoint: storage %s is not a local folder; use its own endpoint", store)
        return None
    missing = [
        name
        for name, absent in (
            ("rclone", rclone_binary() is None),
            ("aiohttp", importlib.util.find_spec("aiohttp") is None),
        )
        if absent
    ]
    if missing:
        log.warning(
            "no S3 endpoint: %s not installed (pip install 'headrace[s3]'), "
            'or set s3 = "" to silence this',
            " and ".join(missing) + (" is" if len(missing) == 1 else " are"),
        )
        return None
    endpoint = start_endpoint(root, settings)
    log.info(
        "S3 endpoint %s (%s)",
        endpoint.url,
        "signatures verified" if endpoint.keys.verified else "127.0.0.1, any signature",
    )
    return endpoint
