"""Writing a dataset: one file per block, all of them or none.

Files are written into a hidden temporary folder beside the target (`.headrace-tmp-…`, which
readers and headrace's watcher skip). When every block is written the folder is renamed to the
target, or, when the target folder already exists (`mode="append"`, Ray's default), its files
are moved in one by one (each move is a rename: a file is never seen half-written). A failure
before that point deletes the temporary folder, so a failed write leaves nothing behind; the
folder of a writer that was killed is removed by the next write beside it (local folders) or by
the watcher of the bucket it is in.
`mode="overwrite"` replaces the target's files, `"error"` refuses an existing target,
`"ignore"` writes nothing when it exists.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from headrace.data.errors import DatasetError
from headrace.data.ops import Op, Where
from headrace.data.paths import resolve
from headrace.storage.temp_names import sweep_folder, temp_name

EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "json"}
MODES = ("append", "overwrite", "error", "ignore")


@dataclass(eq=False)
class WriteFiles(Op):
    """Writes each block it gets to one file in `folder`; returns (path, rows) of the file."""

    file_format: str
    filesystem: pafs.FileSystem
    folder: str
    prefix: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"Write{self.file_format.capitalize() if self.file_format != 'csv' else 'CSV'}"

    def columns_out(self, columns: list[str] | None) -> list[str] | None:
        return ["path", "num_rows"]

    def apply(self, table: pa.Table, where: Where, state: dict[str, Any]) -> pa.Table:
        if table.num_rows == 0:
            return pa.table(
                {"path": pa.array([], pa.string()), "num_rows": pa.array([], pa.int64())}
            )
        name = f"{self.prefix}_{where.task:06d}.{EXTENSIONS[self.file_format]}"
        path = posixpath.join(self.folder, name)
        try:
            with self.filesystem.open_output_stream(path) as out:
                _write(table, out, self.file_format, self.options)
        except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DatasetError(
                self.name, f"could not write {path}: {exc}", "check the target and its space"
            ) from None
        return pa.table({"path": [path], "num_rows": pa.array([table.num_rows], pa.int64())})


def _write(table: pa.Table, out: Any, file_format: str, options: dict[str, Any]) -> None:
    if file_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out, **options)
    elif file_format == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, out, **options)
    else:  # Ray writes JSON lines through pandas; so do we, for the same text
        text = table.to_pandas().to_json(orient="records", lines=True, **options)
        out.write(text.encode())


class WriteTarget:
    """The target folder of one write and its temporary sibling."""

    def __init__(
        self,
        path: str,
        file_format: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        mode: str = "append",
        storage_options: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.options = options or {}
        mode = getattr(mode, "value", mode)
        if mode not in MODES:
            raise DatasetError(f"write to {path}", f"mode={mode!r}", f"use one of {MODES}")
        self.location = resolve(path, filesystem=filesystem, storage_options=storage_options)
        self.fs = self.location.filesystem
        self.final = self.location.path.rstrip("/")
        self.mode = mode
        self.file_format = file_format
        self.prefix = uuid.uuid4().hex[:12]
        parent = posixpath.dirname(self.final)
        self.temp = posixpath.join(parent, temp_name())
        info = self.fs.get_file_info(self.final)
        if info.type == pafs.FileType.File:
            raise DatasetError(
                self.location.display,
                "is a file; a dataset is written as a folder of files",
                "write to a folder path",
            )
        self.exists = info.type == pafs.FileType.Directory

    @property
    def skip(self) -> bool:
        return self.exists and self.mode == "ignore"

    def begin(self) -> WriteFiles:
        if self.exists and self.mode == "error":
            raise DatasetError(
                self.location.display, "already exists", "use mode='append' or 'overwrite'"
            )
        if isinstance(self.fs, pafs.LocalFileSystem):
            # a write killed midway left its temp folder here; nothing else would remove it
            sweep_folder(posixpath.dirname(self.final))
        self.fs.create_dir(self.temp, recursive=True)
        return WriteFiles(self.file_format, self.fs, self.temp, self.prefix, self.options)

    def commit(self) -> list[str]:
        names = sorted(
            i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.temp)) if i.is_file
        )
        if not self.exists:
            self.fs.move(self.temp, self.final)
        else:
            if self.mode == "overwrite":
                for old in self.fs.get_file_info(pafs.FileSelector(self.final, recursive=False)):
                    if old.base_name.startswith((".", "_")):
                        continue
                    if old.is_file:
                        self.fs.delete_file(old.path)
                    else:
                        self.fs.delete_dir(old.path)
            for name in names:
                self.fs.move(posixpath.join(self.temp, name), posixpath.join(self.final, name))
            self.fs.delete_dir(self.temp)
        return [posixpath.join(self.final, n) for n in names]

    def abort(self) -> None:
        with contextlib.suppress(OSError, FileNotFoundError):
            self.fs.delete_dir(self.temp)
