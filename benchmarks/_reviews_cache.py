"""The anchor's generated reviews (../shared/anchors/reviews_data.py), made fast and cached.

The anchor's generator builds each review text by gathering vocabulary bytes through an
int64 index of one entry per output byte: 125 million entries (1 GB) per 625,000-row file,
plus its temporaries. On this virtual machine most of that time is the kernel zeroing the
pages (system time several times the user time), and under the load other work puts on the
machine 10M rows took about 45 minutes. Here the same words are gathered by Arrow's `take` on
a binary array of the vocabulary (its value buffer is exactly those bytes, in that order),
with the same random draws in the same order: the files are the anchor's, byte for byte (a
test compares them), generated in seconds.

They are cached outside the repository, in /tmp/headrace-bench-cache/reviews-ROWS-FILES-HASH
(HASH: the anchor generator's text), so a benchmark generates each size once per machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
CACHE = Path(os.environ.get("HEADRACE_BENCH_CACHE", "/tmp/headrace-bench-cache"))


def anchor_generator(anchors: Path = ANCHORS) -> ModuleType:
    """The anchor's reviews_data module, imported from its file."""
    path = anchors / "reviews_data.py"
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmark needs ../shared/anchors")
    spec = importlib.util.spec_from_file_location("_anchor_reviews_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def word_stream(
    rng: np.random.Generator, vb: np.ndarray, vstarts: np.ndarray, vlens: np.ndarray, n_bytes: int
) -> np.ndarray:
    """The anchor's `word_stream`: the same draws, the same bytes, without the per-byte index."""
    avg = vlens.mean()
    n_words = int(n_bytes / avg * 1.05) + 16
    w = rng.integers(0, len(vstarts), n_words)
    lens = vlens[w]
    while lens.sum() < n_bytes:
        w = np.concatenate([w, rng.integers(0, len(vstarts), n_words // 10 + 16)])
        lens = vlens[w]
    # the vocabulary's words (each with its trailing space) lie end to end in vb
    offsets = np.append(vstarts, vstarts[-1] + vlens[-1]).astype(np.int64)
    words = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(vstarts), [None, pa.py_buffer(offsets), pa.py_buffer(vb)]
    )
    picked = words.take(pa.array(w))
    return np.frombuffer(picked.buffers()[2], dtype=np.uint8, count=int(lens.sum()))


def fast_generator(anchors: Path = ANCHORS) -> ModuleType:
    module = anchor_generator(anchors)
    module.word_stream = word_stream  # `strings` looks it up in its module at call time
    return module


def reviews(rows: int, files: int = 16, anchors: Path = ANCHORS) -> str:
    """The folder of the anchor's `rows` reviews in `files` Parquet files, generated once."""
    digest = hashlib.sha256((anchors / "reviews_data.py").read_bytes()).hexdigest()[:12]
    folder = CACHE / f"reviews-{rows}-{files}-{digest}"
    done = folder.with_name(folder.name + ".complete")  # beside it: readers see parquet only
    if done.exists() and folder.is_dir():
        return str(folder)
    print(f"generating {rows:,} rows into {folder} (once; not timed)", flush=True)
    start = time.perf_counter()
    generator = fast_generator(anchors)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    per = rows // files
    for i in range(files):  # the anchor's main(), file by file
        n = per if i < files - 1 else rows - per * (files - 1)
        generator.make_file(i, n, str(partial / f"part-{i:02d}.parquet"), i * per)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    done.write_text(f"{rows} rows, {files} files\n")
    print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    return str(folder)


if __name__ == "__main__":
    print(reviews(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 16))
