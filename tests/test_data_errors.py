"""Bad input: each error names the operation or file, the reason and the fix; writes that
fail leave nothing behind."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace import data
from headrace.data import DatasetError, UserFunctionError


def _files(tmp_path, n=2, rows=100):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        pq.write_table(
            pa.table({"a": list(range(i * rows, (i + 1) * rows))}), folder / f"p{i}.parquet"
        )
    return folder


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(DatasetError, match="no such file or folder"):
        data.read_parquet(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="glob matches no file"):
        data.read_parquet(str(tmp_path / "*.parquet"))


def test_unreadable_file_is_named(tmp_path):
    folder = _files(tmp_path)
    (folder / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match=r"broken\.parquet.*not a readable Parquet file"):
        data.read_parquet(str(folder)).count()


def test_schema_differing_between_files(tmp_path):
    folder = _files(tmp_path)
    pq.write_table(pa.table({"a": ["text"]}), folder / "p9.parquet")
    with pytest.raises(DatasetError, match=r"p9\.parquet: has another schema.*'a' is string"):
        data.read_parquet(str(folder)).take(1)
    with pytest.raises(DatasetError, match=r"p9\.parquet: has another schema.*'a' is string"):
        data.read_parquet(str(folder)).count()


def test_user_function_error_names_operator_file_rows_and_traceback(tmp_path):
    folder = _files(tmp_path)

    def explode(df):
        if df["a"].max() >= 150:
            raise ValueError("value too large")
        return df

    with pytest.raises(UserFunctionError) as caught:
        data.read_parquet(str(folder)).map_batches(explode).take_all()
    text = str(caught.value)
    assert "MapBatches(explode)" in text
    assert "p1.parquet" in text and "rows 0-99" in text
    assert "ValueError: value too large" in text
    assert 'in explode\n    raise ValueError("value too large")' in caught.value.user_traceback


def test_wrong_return_type_and_columns(tmp_path):
    folder = _files(tmp_path)
    with pytest.raises(DatasetError, match=r"MapBatches\(<lambda>\): returned int, not a batch"):
        data.read_parquet(str(folder)).map_batches(lambda df: 3).count()
    with pytest.raises(DatasetError, match="columns of different lengths"):
        data.read_parquet(str(folder)).map_batches(lambda df: {"x": [1], "y": [1, 2]}).count()
    with pytest.raises(DatasetError, match="no column"):
        data.read_parquet(str(folder)).drop_columns(["missing"])
    with pytest.raises(DatasetError, match="returned 1 values for a batch of 100 rows"):
        data.read_parquet(str(folder)).add_column("x", lambda df: [1]).count()
    with pytest.raises(DatasetError, match="needs an actor pool"):

        class Model:
            def __call__(self, batch):
                return batch

        data.range(3).map_batches(Model, compute=data.TaskPoolStrategy())


def test_failed_write_leaves_nothing(tmp_path):
    folder = _files(tmp_path, n=4)

    def fail_late(df):
        if df["a"].min() >= 300:
            raise RuntimeError("disk on fire")
        return df

    target = tmp_path / "out"
    with pytest.raises(UserFunctionError, match="disk on fire"):
        data.read_parquet(str(folder)).map_batches(fail_late).write_parquet(str(target))
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no temporary folder left
    data.read_parquet(str(folder)).write_parquet(str(target))
    assert data.read_parquet(str(target)).count() == 400
    with pytest.raises(DatasetError, match="already exists"):
        data.read_parquet(str(folder)).write_parquet(str(target), mode="error")
    data.read_parquet(str(folder)).write_parquet(str(target), mode="overwrite")
    assert data.read_parquet(str(target)).count() == 400


def test_a_worker_that_dies_is_reported(tmp_path):
    import os

    def die(df):
        os._exit(3)

    with pytest.raises(data.WorkerLost, match="exited") as caught:
        data.range(10).map_batches(die).count()
    # its own exit, not memory: the code, who ended it, and no batch_size/memory advice
    text = str(caught.value)
    assert "exited (code 3)" in text and "the function it ran ended the process" in text, text
    assert "memory" not in text and "batch_size" not in text, text
    assert data.range(10).map_batches(lambda df: df).count() == 10  # the pool recovered


def test_filter_refuses_a_result_that_is_not_a_bool():
    ds = data.from_items([{"a": 1}, {"a": 2}])
    with pytest.raises(DatasetError, match=r"Filter.*returned str \('yes'\).*return a bool"):
        ds.filter(lambda r: "yes").take_all()
    assert ds.filter(lambda r: r["a"] > 1).take_all() == [{"a": 2}]


def test_add_column_scalar_result_says_how_to_return_a_column():
    ds = data.from_items([{"a": 1}, {"a": 2}])
    with pytest.raises(DatasetError, match=r"is one int \(1\), not a column.*len\(df\)"):
        ds.add_column("x", lambda df: 1).take_all()


def test_an_actor_over_its_memory_names_the_class_and_the_fix():
    import time

    import numpy as np

    from headrace.data import ActorPoolStrategy

    class Hog:
        def __init__(self):
            self.kept = []

        def __call__(self, df):
            self.kept.append(np.ones(100 * 2**20 // 8))  # 100 MiB, touched, per batch
            time.sleep(0.3)
            return df

    ds = data.range(100).map_batches(
        Hog, compute=ActorPoolStrategy(size=1), batch_size=10, memory=300 * 2**20
    )
    with pytest.raises(data.WorkerLost) as caught:
        ds.count()
    text = str(caught.value)
    assert "an actor of MapBatches(Hog)" in text
    assert "more than its memory=300 MiB" in text
    assert "rows " in text and "batch_size=" in text
    assert data.range(10).map_batches(lambda df: df).count() == 10


def test_a_task_worker_killed_between_datasets_is_replaced(tmp_path):
    import os
    import signal

    from headrace.data import workers

    first = data.from_items([{"x": i} for i in range(10)]).map_batches(lambda df: df)
    assert first.count() == 10
    pool = workers.task_pool(workers._shared.min_size)  # the shared pool the first one used
    victim = pool.workers[0].process
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    again = data.from_items([{"x": i} for i in range(10)]).map_batches(lambda df: df)
    assert again.count() == 10


def _children(pid: int) -> set[int]:
    from pathlib import Path

    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_workers_die_with_a_script_killed_mid_task(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"x": list(range(2000))}), folder / "part-0.parquet")
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from headrace import data\n"
        "from headrace.data import ActorPoolStrategy\n"
        f"MARKS = Path({str(marks)!r})\n"
        "def mark(kind):\n    (MARKS / f'{kind}-{os.getpid()}').touch()\n"
        "def slow(df):\n    mark('task')\n    time.sleep(2)\n    return df\n"
        "class Slow:\n    def __call__(self, df):\n        mark('actor')\n"
        "        time.sleep(2)\n        return df\n"
        "ds = data.read_parquet(sys.argv[1]).map_batches(slow, batch_size=100)\n"
        "ds = ds.map_batches(Slow, compute=ActorPoolStrategy(size=1), batch_size=100)\n"
        "print(ds.count())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        # killed while a task worker and an actor are each in the middle of a batch
        while {p.name.split("-")[0] for p in marks.iterdir()} != {"task", "actor"}:
            assert proc.poll() is None and time.time() < deadline, "the script did not run"
            time.sleep(0.1)
        workers = _children(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    busy = {int(p.name.split("-")[1]) for p in marks.iterdir()}
    assert busy <= workers, (busy, workers)
    deadline = time.time() + 1.5  # at once, not when the tasks sent to it are done
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers outlived the killed script: {left}"
