"""The Ray job of the multi-node Ray test: says which node its driver runs on, then runs
tasks spread over the cluster (each leaves a mark in MARKS) and prints their sum."""

import os
import sys
import time
from pathlib import Path

import ray

marks = sys.argv[1]
NODE = os.environ.get("HEADRACE_TEST_NODE", "?")  # the driver's node (its tasks read their own)
attempt = os.environ.get("AWS_BATCH_JOB_ATTEMPT", "?")
print(f"driver on {NODE}, attempt {attempt}", flush=True)
Path(marks, f"driver-{os.environ['HEADRACE_JOB_ID']}-{attempt}-{NODE}").touch()
ray.init()


@ray.remote(num_cpus=0, scheduling_strategy="SPREAD")
def square(i: int) -> int:
    Path(marks, f"task-{i}-{os.environ.get('HEADRACE_TEST_NODE', '?')}").touch()
    time.sleep(2)
    return i * i


print("sum", sum(ray.get([square.remote(i) for i in range(12)])), flush=True)
