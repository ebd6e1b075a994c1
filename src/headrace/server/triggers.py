"""Which object triggers an object wakes, and which triggers and buckets are idle.

A typo in a bucket name (`put t.txt landng/`) or in a trigger's prefix or suffix is silent:
the object is stored and nothing runs. `put` asks `triggers_for` and warns when the answer is
none; `up` logs `idle_report` at start-up: buckets holding objects no trigger watches, and
triggers that match none of the objects already in their bucket.
"""

from __future__ import annotations

import os
import time
from typing import Any

from headrace.app import App
from headrace.errors import InvalidKey
from headrace.events.s3 import object_created_envelope
from headrace.storage import ObjectStore
from headrace.storage.keys import RESERVED_PREFIX, validate_key

#: At start-up, look at this many objects per bucket at most: enough to tell a trigger that
#: matches nothing, and bounded however big the bucket.
SAMPLE = 1000


def _envelope(bucket: str, key: str) -> dict[str, Any]:
    return object_created_envelope(
        event_id="check",
        bucket=bucket,
        key=key,
        size=0,
        etag="",
        sequencer="0",
        event_time=time.time(),
    )


def triggers_for(app: App, bucket: str, key: str) -> list[str]:
    """The targets ("function:NAME", "stream:NAME" …) an object created at bucket/key wakes."""
    envelope = _envelope(bucket, key)
    return [
        f"{rule.target.kind}:{rule.target.name}"
        for rule in app.rules
        if rule.pattern.matches(envelope)
    ]


def object_triggers(app: App) -> list[dict[str, Any]]:
    """Every object trigger: its rule name, buckets and target; for status pages."""
    return [
        {
            "rule": rule.name,
            "buckets": list(rule.buckets),
            "target": f"{rule.target.kind}:{rule.target.name}",
        }
        for rule in app.rules
        if rule.buckets
    ]


def sample_keys(store: ObjectStore, bucket: str, limit: int = SAMPLE) -> list[str]:
    """Up to `limit` keys of a bucket, sorted. Local folders are walked by name only: listing
    them through the store would hash every file not hashed yet, at every start."""
    root = store.local_root()
    if root is None:
        return [o.key for o in store.bucket(bucket, create=False).list()[:limit]]
    keys: list[str] = []
    top = root / bucket
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = sorted(d for d in subfolders if not d.lower().startswith(RESERVED_PREFIX))
        rel = os.path.relpath(folder, top)
        for name in sorted(files):
            key = name if rel == "." else f"{rel}/{name}"
            try:
                validate_key(key)
            except InvalidKey:
                continue  # temp files of writes in progress, names that are not keys
            keys.append(key)
            if len(keys) >= limit:
                return keys
    return keys


def idle_report(app: App, store: ObjectStore) -> list[str]:
    """One line per bucket with objects that no trigger watches, and per trigger that matches
    none of the objects (up to SAMPLE) already in its non-empty bucket."""
    lines = []
    watched = set(app.buckets)
    written = set().union(*app.outputs.values())  # a function's output_bucket: filled on purpose
    for bucket in store.list_buckets():
        if bucket in watched or bucket in written:
            continue
        keys = sample_keys(store, bucket)
        if keys:
            lines.append(
                f"bucket {bucket!r} holds objects (e.g. {keys[0]!r}) and no trigger watches it "
                f"(watched: {', '.join(sorted(watched)) or 'none'})"
            )
    for rule in app.rules:
        for bucket in rule.buckets:
            try:
                keys = sample_keys(store, bucket)
            except Exception:  # a bucket not created yet: nothing to compare with
                continue
            if keys and not any(rule.pattern.matches(_envelope(bucket, k)) for k in keys):
                lines.append(
                    f"trigger {rule.name!r} ({rule.target.kind} {rule.target.name}) matches "
                    f"none of the {len(keys)}{'+' if len(keys) == SAMPLE else ''} "
                    f"object{'' if len(keys) == 1 else 's'} in "
                    f"bucket {bucket!r} (e.g. {keys[0]!r}): check its prefix and suffix"
                )
    return lines


def sources_of_streams(app: App) -> dict[str, list[str]]:
    """Stream name → the sources whose records its rules route there (judged on the envelope's
    source and detail-type; a rule that also looks inside `detail` is not counted)."""
    from headrace.events.envelope import make_envelope

    out: dict[str, list[str]] = {}
    for name, spec in app.sources.items():
        envelope = make_envelope(spec.event_source, spec.detail_type, {})
        for rule in app.rules:
            if rule.target.kind == "stream" and rule.pattern.matches(envelope):
                out.setdefault(rule.target.name, []).append(name)
    return out
