"""Writes of blocks already in the driver (after a sort, say) run in its threads: same files,
same order, same all-or-nothing behaviour as the writes in worker processes."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from headrace import data
from headrace.data.engine_local import _threads_suffice
from headrace.data.ops import MapBatches
from headrace.data.sinks import WriteFiles


def _table(n: int = 200_000) -> pa.Table:
    keys = [(i * 7919) % 1000 for i in range(n)]
    return pa.table({"id": list(range(n)), "key": keys, "name": [f"n{i % 97}" for i in range(n)]})


def _files(folder, ext):
    return sorted(folder.glob(f"*.{ext}"))


@pytest.mark.parametrize("file_format", ["parquet", "csv", "json"])
def test_a_write_after_a_sort_keeps_the_order_across_files(tmp_path, file_format):
    table = _table()
    ds = data.from_arrow(table).sort("key")
    getattr(ds, f"write_{file_format}")(str(tmp_path / "out"))
    files = _files(tmp_path / "out", file_format)
    assert len(files) > 1  # the sorted rows come as several blocks, one file each
    if file_format == "parquet":
        parts = [pq.read_table(f) for f in files]
    elif file_format == "csv":
        parts = [pcsv.read_csv(f) for f in files]
    else:
        parts = [
            pa.Table.from_pylist([json.loads(x) for x in f.read_text().splitlines()]) for f in files
        ]
    written = pa.concat_tables(parts)
    expected = table.sort_by([("key", "ascending")])  # a stable sort, as ours
    assert written.column("id").to_pylist() == expected.column("id").to_pylist()
    assert written.column("name").to_pylist() == expected.column("name").to_pylist()


def test_a_failed_threaded_write_leaves_nothing(tmp_path):
    ds = data.from_arrow(_table()).sort("key")
    with pytest.raises(Exception, match=r"codec|compression|Unsupported|no-such"):
        ds.write_parquet(str(tmp_path / "out"), arrow_parquet_args={"compression": "no-such"})
    assert list(tmp_path.iterdir()) == []  # neither the target nor its temporary folder


def test_only_writers_that_release_the_gil_and_no_user_code_run_in_threads(tmp_path):
    fs = pa.fs.LocalFileSystem()
    parquet = WriteFiles("parquet", fs, str(tmp_path), "p")
    assert _threads_suffice([parquet])
    assert _threads_suffice([WriteFiles("csv", fs, str(tmp_path), "p")])
    assert not _threads_suffice([WriteFiles("json", fs, str(tmp_path), "p")])
    user = MapBatches(lambda df: df)
    assert not _threads_suffice([user, parquet])


def test_a_sorted_dataset_read_in_part_gives_its_first_rows_and_stops_gathering():
    import threading

    table = _table()
    batches = data.from_arrow(table).sort("key").iter_batches(batch_size=None)
    first = next(iter(batches))
    expected = table.sort_by([("key", "ascending")])
    assert first["id"].tolist() == expected.column("id").to_pylist()[: len(first["id"])]
    batches.close()
    del batches
    import gc

    gc.collect()
    assert not [t for t in threading.enumerate() if t.name.startswith("headrace-gather")]
