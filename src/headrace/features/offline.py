"""The offline store: one Delta Lake table per feature group, under a root folder or URL.

Rows are appended, never updated, and partitioned by `date` (the UTC day of the event time), so
point-in-time joins and SQL read only the days they need and compaction works day by day. An
idempotent write records (writer, sequence) as a Delta application transaction in the same
commit as the rows: a retried batch whose sequence the table already holds is skipped, and two
concurrent retries of one batch cannot both commit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from headrace.errors import FeatureStoreError
from headrace.features.group import PARTITION_COLUMN, FeatureGroup


def local_or_url(root: str | os.PathLike[str]) -> tuple[str, bool]:
    """`root` as deltalake wants it (a plain path for local folders) and whether it is local."""
    root = str(root)
    if root.startswith("file://"):
        root = root[len("file://") :]
    if "://" in root:
        return root.rstrip("/"), False
    return str(Path(root).expanduser().resolve()), True


def offline_schema(group: FeatureGroup) -> pa.Schema:
    return group.schema.append(pa.field(PARTITION_COLUMN, pa.date32(), nullable=False))


class DeltaOfflineStore:
    """Delta tables `<root>/<group name>`."""

    def __init__(
        self, root: str | os.PathLike[str], storage_options: dict[str, str] | None = None
    ) -> None:
        self.root, self.is_local = local_or_url(root)
        self.storage_options = storage_options

    def table_uri(self, group: str) -> str:
        return f"{self.root}/{group}"

    def table(self, group: str) -> DeltaTable | None:
        """The group's Delta table at its latest version, None before the first write."""
        try:
            return DeltaTable(self.table_uri(group), storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        except DeltaError as exc:
            raise FeatureStoreError(
                f"offline table of feature group {group!r}",
                f"cannot open {self.table_uri(group)}: {exc}",
                "check the store root and its storage options",
            ) from exc

    def applied_sequence(self, group: str, writer: str) -> int | None:
        table = self.table(group)
        return None if table is None else table.transaction_version(writer)

    def append(
        self, group: FeatureGroup, batch: pa.Table, *, writer: str | None, sequence: int | None
    ) -> int | None:
        """Append a conformed batch; the new table version, or None if (writer, sequence) was
        already committed."""
        # one open of the table serves the idempotency check, the write and the new version
        table = self.table(group.name)
        if writer is not None and table is not None:
            applied = table.transaction_version(writer)
            if applied is not None and applied >= sequence:
                return None
        day = pc.cast(batch.column(group.event_time), pa.date32())
        data = batch.append_column(offline_schema(group).field(PARTITION_COLUMN), day)
        commit = None
        if writer is not None:
            commit = CommitProperties(app_transactions=[Transaction(writer, sequence)])
        uri = self.table_uri(group.name)
        try:
            write_deltalake(
                uri if table is None else table,  # a DeltaTable is brought up to date in place
                data,
                mode="append",
                partition_by=[PARTITION_COLUMN],
                schema_mode="merge",  # a feature added to the group becomes a new column
                description=group.description or None,
                storage_options=self.storage_options,
                commit_properties=commit,
            )
        except CommitFailedError:
            # A concurrent commit holding the same application transaction won: the batch is in.
            if writer is not None and (self.applied_sequence(group.name, writer) or -1) >= sequence:
                return None
            raise
        except DeltaError as exc:
            raise FeatureStoreError(
                f"offline table of feature group {group.name!r}",
                f"the append to {uri} failed: {exc}",
                "if the group's column types changed, write to a new group name",
            ) from exc
        if table is None:
            table = self.table(group.name)
            assert table is not None
        return table.version()

    def dataset(self, group: FeatureGroup) -> pads.Dataset:
        """The group's rows as an Arrow dataset (an empty one before the first write).

        A local table whose files are its rows (reader version 1) is read through Arrow's own
        local filesystem. deltalake's dataset reads through a Python filesystem handler, so
        Arrow's I/O threads call into Python; one still reading ahead when the interpreter
        exits (DuckDB stops at a LIMIT) is killed taking the GIL, inside C++ code that may not
        unwind: "terminate called without an active exception", exit -6, after correct output.
        """
        table = self.table(group.name)
        if table is None:
            return pads.dataset(offline_schema(group).empty_table())
        delta = table.to_pyarrow_dataset()  # for its schema; no file is read here
        protocol = table.protocol()
        if not (
            self.is_local and protocol.min_reader_version == 1 and not protocol.reader_features
        ):
            return delta
        partitions = table.metadata().partition_columns
        return pads.dataset(
            [uri.removeprefix("file://") for uri in table.file_uris()],
            schema=delta.schema,
            format="parquet",
            partitioning=pads.partitioning(
                pa.schema([delta.schema.field(name) for name in partitions]), flavor="hive"
            ),
            filesystem=pafs.LocalFileSystem(),
        )

    def scan_source(self, group: FeatureGroup) -> pads.Dataset | list[str]:
        """What a DuckDB join should read: the Parquet files of the current version when they
        are local plain files (DuckDB's own reader is the fastest), else an Arrow dataset."""
        table = self.table(group.name)
        if table is None:
            return pads.dataset(offline_schema(group).empty_table())
        protocol = table.protocol()
        if self.is_local and protocol.min_reader_version == 1 and not protocol.reader_features:
            # Reader version 1 has no deletion vectors or column mapping: the files are the rows.
            return table.file_uris()
        return table.to_pyarrow_dataset()

    def history(self, group: str, limit: int | None = None) -> list[dict[str, Any]]:
        table = self.table(group)
        return [] if table is None else table.history(limit)
