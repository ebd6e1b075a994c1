"""The built-in function that compacts a feature group's offline table on a schedule.

`app.compaction(group, every=...)` registers a schedule whose invocations run this handler in a
worker like any other function: recorded in the ledger, retried, visible in `headrace
invocations`. The coordinator puts the offline store's location in the payload, so the worker
needs nothing but the group's name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

COMPACT_FUNCTION = "__compact_features__"
compact_handler = "headrace.features.jobs:compact"


def compact(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from headrace.features.compaction import compact as compact_table
    from headrace.features.offline import DeltaOfflineStore

    offline = DeltaOfflineStore(event["features"])
    report = compact_table(
        offline,
        event["group"],
        target_size=event.get("target_size"),
        vacuum_retention_hours=float(event.get("vacuum_retention_hours", 168)),
    )
    out = asdict(report)
    out.pop("metrics", None)
    return out
