"""What ecCodes alone costs per pass over the benchmark files: the floor under any converter.

    python benchmarks/_grib_floor.py [--passes 5] FILE...   -> table + JSON on the last line

Times, per pass (after one warm-up pass), the ecCodes calls every exact converter makes for
every field, each measured around the call alone: create the handle (multi-field support on,
as the converter reads), evaluate paramId, decode the values, release the handle; also
creating handles from bytes in memory (``codes_new_from_message``, no multi-field support)
for comparison, and the CPU of a full ``grib_to_parquet`` pass. ``implied_max_mb_per_s`` is
what a converter doing nothing but those four calls could reach on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter

import eccodes

STEPS = ("handle_from_file", "paramId", "values", "release")


def one_pass(files: list[str], cost: Counter) -> None:
    clock = time.perf_counter
    for path in files:
        with open(path, "rb") as file:
            eccodes.codes_grib_multi_support_on()
            try:
                while True:
                    start = clock()
                    handle = eccodes.codes_grib_new_from_file(file)
                    cost["handle_from_file"] += clock() - start
                    if handle is None:
                        break
                    start = clock()
                    eccodes.codes_get_long(handle, "paramId")
                    cost["paramId"] += clock() - start
                    start = clock()
                    eccodes.codes_set_double(handle, "missingValue", math.nan)
                    eccodes.codes_get_double_array(handle, "values")
                    cost["values"] += clock() - start
                    start = clock()
                    eccodes.codes_release(handle)
                    cost["release"] += clock() - start
            finally:
                eccodes.codes_grib_multi_support_reset_file(file)
                eccodes.codes_grib_multi_support_off()


def from_memory_pass(files: list[str], cost: Counter) -> None:
    for path in files:
        with open(path, "rb") as file:
            data = file.read()
            file.seek(0)
            spans = []
            while (handle := eccodes.codes_grib_new_from_file(file)) is not None:
                offset = int(eccodes.codes_get_double(handle, "offset"))
                spans.append((offset, eccodes.codes_get_long(handle, "totalLength")))
                eccodes.codes_release(handle)
        view = memoryview(data)
        start = time.perf_counter()
        for offset, length in spans:
            eccodes.codes_release(eccodes.codes_new_from_message(view[offset : offset + length]))
        cost["handle_from_memory_incl_release"] += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("files", nargs="+")
    options = parser.parse_args()
    files = options.files
    size = sum(os.path.getsize(p) for p in files)
    one_pass(files, Counter())
    cost: Counter = Counter()
    for _ in range(options.passes):
        one_pass(files, cost)
        from_memory_pass(files, cost)
    per_pass = {k: v / options.passes for k, v in cost.items()}
    floor = sum(per_pass[k] for k in STEPS)

    from headrace.formats.grib import grib_to_parquet  # after: its tables stay out of the above

    target = "/tmp/_grib_floor.parquet"
    for path in files:
        grib_to_parquet(path, target)
    cpu = time.process_time()
    for _ in range(options.passes):
        for path in files:
            grib_to_parquet(path, target)
    per_pass["grib_to_parquet_cpu"] = (time.process_time() - cpu) / options.passes
    os.unlink(target)
    print(
        f"{len(files)} files, {size / 1e6:.2f} MB per pass, {options.passes} passes",
        file=sys.stderr,
    )
    for key, seconds in per_pass.items():
        print(f"  {key:34s} {seconds:.3f} s per pass", file=sys.stderr)
    print(f"  {'sum of the four ecCodes calls':34s} {floor:.3f} s per pass", file=sys.stderr)
    print(
        json.dumps(
            {
                "per_pass_seconds": per_pass,
                "ecCodes_floor_seconds": floor,
                "implied_max_mb_per_s": size / floor / 1e6,
                "bytes_per_pass": size,
            }
        )
    )


if __name__ == "__main__":
    main()
