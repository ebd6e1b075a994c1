"""What the unavoidable work costs per pass over the benchmark files: the floor of the converter.

    python benchmarks/_grib_floor.py [--passes 5] FILE...   -> table + JSON on the last line

Times, per pass (after one warm-up pass), each step any converter with headrace's output must
take, measured around the step alone and done the way headrace does it:

* ``handle_from_memory`` / ``release``: ecCodes handles from the bytes of each field, created
  16 at a time (as ``grib_read`` batches them), and their release;
* ``values``: decoding every value as float64 with ``missingValue`` NaN;
* ``keys``: the metadata keys read from ecCodes on every field (dates, steps, validity, levels,
  number, grid and packing type, centre, edition: what no cache can vouch for);
* ``parquet_write``: writing the same tables with the default options (lz4_raw + byte stream
  split), renaming and deleting the files.

``floor_seconds`` is their sum; ``implied_max_mb_per_s`` what a converter doing only that would
reach on one core. For reference it also times what the converter avoids: ``handle_from_file``
(ecCodes' multi-field reader) and evaluating ``paramId`` on every field, and the CPU of a full
``grib_to_parquet`` pass; ``orchestration`` is that CPU minus the floor (concept caches, Python,
Arrow tables and metadata).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import eccodes

try:
    from headrace.formats import grib_messages
    from headrace.formats.grib import _parquet_writer, grib_to_parquet, read_grib
    from headrace.formats.grib_keys import KeyReader, decode_values, handle_from_message, release
except ModuleNotFoundError:  # not installed in the venv: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from headrace.formats import grib_messages
    from headrace.formats.grib import _parquet_writer, grib_to_parquet, read_grib
    from headrace.formats.grib_keys import KeyReader, decode_values, handle_from_message, release

FLOOR = ("handle_from_memory", "release", "values", "keys", "parquet_write")
LONGS = (b"edition", b"dataDate", b"dataTime", b"validityDate", b"validityTime", b"stepUnits")
LONGS += (b"startStep", b"endStep", b"numberOfPoints")
DOUBLES = (b"level", b"topLevel", b"bottomLevel")
STRINGS = ("centre", "gridType", "packingType")
BATCH = 16


def fields_of(path: str) -> list[bytes | memoryview]:
    with open(path, "rb") as file:
        spans = grib_messages.locate_messages(path)
        return [d for m in grib_messages.read_messages(file, spans) for d, _ in m.fields]


def floor_pass(fields: dict[str, list], tables: dict, cost: Counter) -> None:
    clock = time.process_time
    for data in fields.values():
        for start in range(0, len(data), BATCH):
            began = clock()
            handles = [handle_from_message(d) for d in data[start : start + BATCH]]
            cost["handle_from_memory"] += clock() - began
            began = clock()
            for handle in handles:
                keys = KeyReader(handle)
                keys.longs(LONGS)
                keys.doubles(DOUBLES)
                keys.optional_long("number")
                for key in STRINGS:
                    keys.string(key)
            cost["keys"] += clock() - began
            began = clock()
            for handle in handles:
                decode_values(handle)
            cost["values"] += clock() - began
            began = clock()
            for handle in handles:
                release(handle)
            cost["release"] += clock() - began
    began = clock()
    for table in tables.values():
        path = f"/tmp/_grib_floor_{uuid.uuid4().hex}.parquet"
        _parquet_writer(table, "lz4_raw", True)(path + ".tmp")
        os.replace(path + ".tmp", path)
        os.unlink(path)
    cost["parquet_write"] += clock() - began


def reference_pass(files: list[str], cost: Counter) -> None:
    """What the converter avoids: ecCodes' multi-field file reader and paramId per field."""
    clock = time.process_time
    for path in files:
        with open(path, "rb") as file:
            eccodes.codes_grib_multi_support_on()
            try:
                while True:
                    began = clock()
                    handle = eccodes.codes_grib_new_from_file(file)
                    cost["handle_from_file"] += clock() - began
                    if handle is None:
                        break
                    began = clock()
                    eccodes.codes_get_long(handle, "paramId")
                    cost["paramId_evaluated"] += clock() - began
                    eccodes.codes_set_double(handle, "missingValue", math.nan)
                    eccodes.codes_release(handle)
            finally:
                eccodes.codes_grib_multi_support_reset_file(file)
                eccodes.codes_grib_multi_support_off()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("files", nargs="+")
    options = parser.parse_args()
    files = options.files
    size = sum(os.path.getsize(p) for p in files)
    fields = {p: [bytes(d) for d in fields_of(p)] for p in files}
    tables = {p: read_grib(p) for p in files}
    floor_pass(fields, tables, Counter())
    reference_pass(files, Counter())
    cost: Counter = Counter()
    for _ in range(options.passes):
        floor_pass(fields, tables, cost)
        reference_pass(files, cost)
    per_pass = {k: v / options.passes for k, v in cost.items()}
    floor = sum(per_pass[k] for k in FLOOR)

    target = f"/tmp/_grib_floor_{os.getpid()}.parquet"
    for path in files:
        grib_to_parquet(path, target)
    cpu = time.process_time()
    for _ in range(options.passes):
        for path in files:
            report = grib_to_parquet(path, target)
            os.unlink(report.dst)
    per_pass["grib_to_parquet_cpu"] = (time.process_time() - cpu) / options.passes
    per_pass["orchestration"] = per_pass["grib_to_parquet_cpu"] - floor
    print(
        f"{len(files)} files, {size / 1e6:.2f} MB per pass, {options.passes} passes",
        file=sys.stderr,
    )
    for key, seconds in per_pass.items():
        print(f"  {key:34s} {seconds:.3f} s per pass", file=sys.stderr)
    print(f"  {'floor (sum of ' + ', '.join(FLOOR) + ')':34s} {floor:.3f} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "per_pass_seconds": per_pass,
                "floor_seconds": floor,
                "implied_max_mb_per_s": size / floor / 1e6,
                "bytes_per_pass": size,
            }
        )
    )


if __name__ == "__main__":
    main()
