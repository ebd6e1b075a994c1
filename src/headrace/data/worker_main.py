"""A dataset worker process: runs the per-block operations of plan stages, one task at a time.

Started by `headrace.data.workers` as `python -m headrace.data.worker_main FD PARENT`: FD is
its end of a socket pair. It exits when the other end closes, so it never outlives the driver;
with a PARENT pid (not 0) the kernel also kills it when the driver dies mid-task.
Messages are pickled tuples:

* `("setup", sys_path)` once;
* `("stage", key, blob)`: a cloudpickled `(source, ops)` to run later under `key`;
* `("task", task_id, key, kind, payload, where)`: kind `"fragment"` (read it from the
  stage's source) or `"block"` (a shared-memory block path); the answer is
  `("ok", task_id, block_path, num_rows)` or `("error", task_id, exception)`;
* `("drop", key)`: forget a stage (and the instances its actor operations made).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from headrace.executors import lifetime


def _run(conn: Connection) -> None:
    import cloudpickle
    import pyarrow as pa

    from headrace.data.errors import DatasetError
    from headrace.data.ops import Where, apply_chain
    from headrace.data.transport import put_block, take_block

    stages: dict[str, Any] = {}
    state: dict[str, Any] = {}
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "setup":
            for entry in reversed(message[1]):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            continue
        if kind == "stage":
            stages[message[1]] = message[2]  # unpickled on first use, so errors reach a task
            continue
        if kind == "drop":
            stages.pop(message[1], None)
            continue
        _, task_id, key, input_kind, payload, where_text, task_index, folder = message
        try:
            stage = stages[key]
            if isinstance(stage, bytes):
                try:
                    stage = stages[key] = cloudpickle.loads(stage)
                except Exception as exc:
                    raise DatasetError(
                        "dataset worker",
                        f"could not load the operations: {type(exc).__name__}: {exc}",
                        "make the functions' modules importable from the script's folder",
                    ) from None
            source, reading, ops = stage
            if input_kind == "fragment":
                columns, prefilters = reading
                table = source.read(payload, columns, prefilters)
            else:
                table = take_block(payload)
            where = Where(where_text, task_index)
            table = apply_chain(table, ops, where, state)
            if not isinstance(table, pa.Table):
                raise DatasetError("dataset worker", f"an operation gave {type(table)}", None)
            path = put_block(table, folder)
            answer = ("ok", task_id, path, table.num_rows)
        except BaseException as exc:
            answer = ("error", task_id, _portable(exc))
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=5))
        except (EOFError, OSError):
            return


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a DatasetError with its text."""
    from headrace.data.errors import DatasetError

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return DatasetError("dataset worker", f"{type(exc).__name__}: {exc}\n{text}", None)


def main() -> None:
    parent = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if parent:  # killed with the driver, even a `kill -9`ed one in the middle of a task
        lifetime.die_with_parent(parent)
    conn = Connection(int(sys.argv[1]))
    try:
        _run(conn)
    finally:
        conn.close()
        os._exit(0)


if __name__ == "__main__":
    main()
