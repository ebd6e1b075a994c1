"""Per-band statistics accumulated block by block.

8- and 16-bit integer bands (most satellite bands) are counted into a histogram: exact, and
several times faster than floating-point reductions. Other dtypes: each block contributes its
count, mean and sum of squared deviations, merged with Chan et al.'s pairwise formula, as
accurate as numpy's two-pass ``std`` on the whole band without ever holding the band (the
one-pass ``sum(x**2) - n*mean**2`` loses digits on large, bright images). Nodata pixels (and
NaN in float bands, as GDAL does) are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BandStatistics:
    """Statistics of the valid pixels of one band; min/max/mean/std are None if none are valid."""

    band: int
    name: str
    valid_count: int
    valid_percent: float
    min: float | None
    max: float | None
    mean: float | None
    std: float | None

    def as_dict(self) -> dict:
        return asdict(self)

    def gdal_tags(self) -> dict[str, str]:
        """The band metadata ``gdalinfo`` and ``rasterio`` ``tags(band)`` show."""
        if self.valid_count == 0:
            return {"STATISTICS_VALID_PERCENT": "0"}
        return {
            "STATISTICS_MINIMUM": repr(self.min),
            "STATISTICS_MAXIMUM": repr(self.max),
            "STATISTICS_MEAN": repr(self.mean),
            "STATISTICS_STDDEV": repr(self.std),
            "STATISTICS_VALID_PERCENT": repr(self.valid_percent),
        }


def accumulator(dtype: str, nodata: float | None) -> StatsAccumulator | HistogramAccumulator:
    kind = np.dtype(dtype)
    if kind.kind in "ui" and kind.itemsize <= 2:
        return HistogramAccumulator(kind, nodata)
    return StatsAccumulator(nodata)


class HistogramAccumulator:
    """Exact statistics of an 8/16-bit integer band from its value histogram."""

    def __init__(self, dtype: np.dtype, nodata: float | None) -> None:
        self.offset = -int(np.iinfo(dtype).min)  # bincount takes non-negative values only
        self.histogram = np.zeros(1 << (8 * dtype.itemsize), dtype=np.int64)
        self.nodata = nodata
        self.total = 0

    def add(self, block: np.ndarray) -> None:
        self.total += block.size
        values = block.ravel()
        if self.offset:
            values = values.astype(np.int32) + self.offset
        self.histogram += np.bincount(values, minlength=self.histogram.size)

    def result(self, band: int, name: str) -> BandStatistics:
        histogram = self.histogram.copy()
        if self.nodata is not None and not math.isnan(self.nodata):
            histogram[int(self.nodata) + self.offset] = 0
        count = int(histogram.sum())
        percent = 100.0 * count / self.total if self.total else 0.0
        if count == 0:
            return BandStatistics(band, name, 0, percent, None, None, None, None)
        present = np.flatnonzero(histogram)
        values = present.astype(np.int64) - self.offset
        weights = histogram[present]
        mean = int(np.dot(values, weights)) / count  # exact integer sum, one rounding
        deviations = values - mean
        std = math.sqrt(float(np.dot(weights, deviations * deviations)) / count)
        low, high = float(values[0]), float(values[-1])
        return BandStatistics(band, name, count, percent, low, high, mean, std)


class StatsAccumulator:
    """Running count/mean/M2/min/max of one band of any real dtype."""

    def __init__(self, nodata: float | None) -> None:
        self.nodata = nodata
        self.total = 0
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None

    def add(self, block: np.ndarray) -> None:
        self.total += block.size
        values = self._valid(block)
        n = values.size
        if n == 0:
            return
        block_mean = float(values.mean(dtype=np.float64))
        deviations = values.astype(np.float64, copy=False).ravel() - block_mean
        block_m2 = float(np.dot(deviations, deviations))
        lo, hi = float(values.min()), float(values.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        total = self.count + n
        delta = block_mean - self.mean
        self.mean += delta * n / total
        self.m2 += block_m2 + delta * delta * self.count * n / total
        self.count = total

    def _valid(self, block: np.ndarray) -> np.ndarray:
        keep = None
        if block.dtype.kind == "f":
            keep = ~np.isnan(block)
        if self.nodata is not None and not math.isnan(self.nodata):
            not_nodata = block != block.dtype.type(self.nodata)
            keep = not_nodata if keep is None else keep & not_nodata
        return block if keep is None else block[keep]

    def result(self, band: int, name: str) -> BandStatistics:
        percent = 100.0 * self.count / self.total if self.total else 0.0
        if self.count == 0:
            return BandStatistics(band, name, 0, percent, None, None, None, None)
        # population std (ddof=0), as numpy's default and GDAL's ComputeStatistics
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        return BandStatistics(band, name, self.count, percent, self.min, self.max, self.mean, std)
