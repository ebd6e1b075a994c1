"""Blocks between processes: an Arrow IPC file in shared memory, mapped by the reader.

The writer writes the block once into its driver's block folder (`block_folders`: in
`/dev/shm`, or the temp folder where there is none); the reader maps it and unlinks it at
once, so its Arrow buffers point into the mapping (no copy) and the memory is returned when
the last table using it is gone.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pyarrow as pa


def put_block(table: pa.Table, folder: str) -> str:
    path = os.path.join(folder, uuid.uuid4().hex + ".arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def take_block(path: str) -> pa.Table:
    source = pa.memory_map(path, "r")
    try:
        return pa.ipc.open_file(source).read_all()
    finally:
        os.unlink(path)


def discard_block(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
