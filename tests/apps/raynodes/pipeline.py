"""The dataset pipeline of the multi-node Ray test, run as a driver on the cluster that
RAY_ADDRESS names: read Parquet, a function per batch, a class in an actor pool, write Parquet.
Each batch leaves a mark (step, first id, node) in MARKS, so the test sees where work ran and
which batches were done twice."""

import os
import sys
import time
import uuid
from pathlib import Path

from headrace import data

source, target, marks = sys.argv[1:4]


def mark(step: str, batch) -> None:
    # read where it runs: each node's `ray start` sets HEADRACE_TEST_NODE for its workers
    node = os.environ.get("HEADRACE_TEST_NODE", "?")
    Path(marks, f"{step}-{int(batch['id'].iloc[0])}-{node}-{uuid.uuid4().hex[:8]}").touch()


def double(batch):
    mark("fn", batch)
    time.sleep(0.3)
    batch["double"] = batch["id"] * 2
    return batch


class Square:
    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        mark("actor", batch)
        time.sleep(1.0)
        self.calls += 1
        batch["square"] = batch["id"] * batch["id"]
        return batch


data.DataContext.get_current().engine = "ray"
(
    data.read_parquet(source)
    .map_batches(double, batch_format="pandas")
    .map_batches(Square, compute=data.ActorPoolStrategy(size=2), batch_format="pandas")
    .write_parquet(target)
)
print("pipeline done", flush=True)
