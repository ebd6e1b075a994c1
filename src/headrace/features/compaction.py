"""Compaction of a group's offline Delta table: small appended files rewritten into fewer large
ones (Delta `optimize.compact`), then files no version needs any more removed (`vacuum`).

Safe while writers keep appending: compaction only rewrites the files of the version it read
and commits through Delta's optimistic concurrency, which lets appends and a compaction commit
in either order (appends add files, compaction swaps files no append touches). Vacuum only
deletes files removed from the table more than `retention` ago, so readers still scanning an
older version, and writers whose commit is in flight, keep their files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deltalake.exceptions import DeltaError

from headrace.errors import FeatureStoreError
from headrace.features.offline import DeltaOfflineStore

MIN_RETENTION_HOURS = 1  # shorter would delete files that a long scan or commit still needs


@dataclass
class CompactionReport:
    """What one compaction did."""

    group: str
    version_before: int | None
    version_after: int | None
    files_added: int = 0
    files_removed: int = 0
    partitions_optimized: int = 0
    files_vacuumed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)


def compact(
    offline: DeltaOfflineStore,
    group: str,
    *,
    target_size: int | None = None,
    vacuum_retention_hours: float = 168,
    now: datetime | None = None,
) -> CompactionReport:
    """Compact then vacuum the group's table.

    `now` is the clock the vacuum retention is measured from (default: the real one); a later
    `now` vacuums as if that much time had passed, for tests and for catching up.
    """
    if vacuum_retention_hours < MIN_RETENTION_HOURS:
        raise FeatureStoreError(
            f"compaction of feature group {group!r}",
            f"vacuum_retention_hours={vacuum_retention_hours} is below "
            f"{MIN_RETENTION_HOURS} hour: readers of older versions could lose their files",
            f"use {MIN_RETENTION_HOURS} or more (the default is 168)",
        )
    started = time.perf_counter()
    table = offline.table(group)
    if table is None:
        return CompactionReport(group, None, None)
    before = table.version()
    try:
        metrics = table.optimize.compact(target_size=target_size)
        table.update_incremental()
        if metrics.get("numFilesAdded", 0):
            table.create_checkpoint()  # a long log of small appends makes every open slower
        retention = vacuum_retention_hours
        if now is not None:
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)  # naive times are UTC throughout the store
            ahead = (now - datetime.now(UTC)).total_seconds() / 3600
            retention = max(0.0, retention - ahead)
        vacuumed = table.vacuum(
            retention_hours=int(retention),
            dry_run=False,
            # Our own floor is enforced above; Delta's default (7 days) would refuse less.
            enforce_retention_duration=False,
        )
        table.update_incremental()
    except DeltaError as exc:
        raise FeatureStoreError(
            f"compaction of feature group {group!r}",
            f"Delta refused it: {exc}",
            "run it again; a compaction that lost a race with a writer commits nothing",
        ) from exc
    return CompactionReport(
        group=group,
        version_before=before,
        version_after=table.version(),
        files_added=int(metrics.get("numFilesAdded", 0)),
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        partitions_optimized=int(metrics.get("partitionsOptimized", 0)),
        files_vacuumed=list(vacuumed),
        seconds=time.perf_counter() - started,
        metrics=metrics,
    )
