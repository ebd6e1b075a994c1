"""The baseline of benchmarks/band_composite.py: the composite script a rasterio user writes.

Open the three bands, ``read()`` each fully, ``np.stack``, write a GeoTIFF with the first band's
profile (``count`` updated), ``build_overviews`` and store numpy's statistics with
``update_tags``. Sequential, one process, nothing headrace.

``like_for_like=True`` (the default the ratio is computed against) writes what ``composite``
writes by default: 512x512 tiles, deflate with the horizontal predictor, pixel interleave, the
same overview factors with average resampling. It still does less: its overviews end up after
the full-resolution data (not a Cloud Optimized GeoTIFF), it writes the file in place (no
atomic rename) and it holds every band in memory. ``like_for_like=False`` keeps the source
profile unchanged (uncompressed strips here): smaller CPU cost, 4-6x larger files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling

FACTORS = [2, 4, 8, 16, 32]


def composite_script(band_paths: Sequence[str], dst: str, like_for_like: bool = True) -> int:
    """One composite the plain way; returns the bytes written."""
    arrays = []
    profile = None
    for path in band_paths:
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            profile = profile or src.profile
    stack = np.stack(arrays)
    profile.update(count=len(arrays))
    if like_for_like:
        profile.update(
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            predictor=2,
            interleave="pixel",
        )
    with rasterio.open(dst, "w", **profile) as out:
        out.write(stack)
        out.build_overviews(FACTORS, Resampling.average)
        for index, band in enumerate(stack, start=1):
            out.update_tags(
                index,
                STATISTICS_MINIMUM=float(band.min()),
                STATISTICS_MAXIMUM=float(band.max()),
                STATISTICS_MEAN=float(band.mean()),
                STATISTICS_STDDEV=float(band.std()),
            )
    return os.path.getsize(dst)


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork and
    exec, so spawned workers would report their parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_pass(cells: Sequence[Sequence[str]], folder: str, like_for_like: bool) -> dict:
    """Composite every cell in order; time it from inside the process (no IPC counted)."""
    cpu, wall = time.process_time(), time.perf_counter()
    written = 0
    for index, bands in enumerate(cells):
        written += composite_script(
            bands, os.path.join(folder, f"cell{index:04d}.tif"), like_for_like
        )
    return {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "bytes_out": written,
        "peak_rss_mib": peak_rss_mib(),
    }
