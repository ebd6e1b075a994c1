"""What the GRIB fast path learns from ecCodes, kept on disk between processes.

The fast path reads ecCodes' concept definition files (``paramId.def``, ``shortName.def``,
``name.def``, ``units.def``, ``typeOfLevelConcept.def``...: tens of thousands of entries) and
parses them (``grib_definitions.parse_concept``) into what it uses (entries of the decision
trees of ``grib_concept_cache``, paramId -> names tables of ``grib_concepts``), then asks ecCodes
for the first field of each path through a tree, which makes ecCodes load its own concept
tables. Both took about 1.5 s in every new process (a one-off conversion, a new Ray worker, a
batch job) before its first conversion ran at full speed. So both are kept on disk: what was
derived from each set of files (``derived``), and ecCodes' answers per tree, leaf path and
reads (the exact key ``grib_concept_cache`` uses in a process). They live in the user's cache
folder
(``$HEADRACE_CACHE_DIR``, else ``platformdirs.user_cache_dir("headrace")``, e.g.
``~/.cache/headrace``), in one file whose name is keyed by the headrace version, the Python
version (the file is ``marshal`` data), the ecCodes version, the definitions' root and the fast
path's fingerprint of the definitions (``grib_fast_path.fingerprint``). Everything derived also
carries the sha256 of the texts it was derived from, and is used only when the files ecCodes
reads now have those texts; each tree's answers carry the sha256 of every file its entries came
from, and are used only when all of them are unchanged: the cache can never answer for a
definition file that changed. The answers are bounded per tree like the trees
(``MAX_ANSWERS``).

The file starts with a magic line and the sha256 of the rest: a damaged or truncated file (or
one of another format) is ignored and rewritten. Writes are atomic (a temporary file in the
same folder, then a rename), merge what another process wrote meanwhile, and happen after a
conversion that learnt something new: right after the first one (a one-off conversion leaves
its cache behind), then at most once a minute (``SAVE_INTERVAL``) and at exit. A cache folder
that cannot be written is not an error: the process then parses, as it did without the cache.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import marshal
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import eccodes

from .grib_definitions import read_definition
from .grib_fast_path import fingerprint

CACHE_DIR_VARIABLE = "HEADRACE_CACHE_DIR"
_MAGIC = b"headrace grib concepts 1\n"
_PREFIX = "grib-concepts-"
_DIGEST = 32  # bytes of sha256

log = logging.getLogger(__name__)
_lock = threading.Lock()
MAX_ANSWERS = 50_000  # per tree
SAVE_INTERVAL = 60.0  # seconds between two writes of one process
Sources = tuple[tuple[str, bytes], ...]  # (path, sha256 of its text) of a tree's files
# "derived": (kind, paths) -> (sha256 of each text, b"" where absent; the derived value)
# "answers": tree id -> (sources, {(leaf path, reads): ecCodes' answer})
_stored: dict[str, dict] | None = None
_memo: dict[tuple[str, tuple[str, ...]], tuple[tuple[bytes, ...], object]] = {}  # this process
_recording: list[list[tuple[str, bytes]]] = []
_dirty = False
_saved_at: float | None = None

T = TypeVar("T")


def derived(kind: str, paths: tuple[str, ...], compute: Callable[[list[str | None]], T]) -> T:
    """``compute(texts)`` of the definition files ``paths`` (None where a file does not exist),
    from the disk cache when those files still have the texts it was computed from.

    ``compute`` must be a pure function of the texts returning ``marshal``-able data; ``kind``
    names it (one kind, one function).
    """
    key = (kind, paths)
    found = _memo.get(key)
    if found is None:
        texts = [read_definition(path) for path in paths]
        digests = tuple(b"" if t is None else hashlib.sha256(t.encode()).digest() for t in texts)
        with _lock:
            stored = _load()["derived"].get(key)
        if stored is not None and stored[0] == digests:
            found = stored
        else:
            found = (digests, compute(texts))
            _remember_derived(key, found)
        _memo[key] = found
    for sources in _recording:
        sources.extend(zip(paths, found[0], strict=True))
    return found[1]  # type: ignore[return-value]


@contextlib.contextmanager
def recording_files() -> Iterator[list[tuple[str, bytes]]]:
    """Collect (path, sha256) of every file ``derived`` reads (or finds memoised) meanwhile."""
    sources: list[tuple[str, bytes]] = []
    _recording.append(sources)
    try:
        yield sources
    finally:  # by identity: two recordings may hold equal lists
        del _recording[next(i for i, r in enumerate(_recording) if r is sources)]


def stored_answers(tree: tuple[str, ...], sources: Sources) -> dict:
    """The answers stored for ``tree`` when built from exactly these files, else empty."""
    with _lock:
        found = _load()["answers"].get(tree)
    if found is None or found[0] != sources:
        return {}
    return found[1]


def remember_answer(tree: tuple[str, ...], sources: Sources, key: tuple, answer: object) -> None:
    """Keep ecCodes' ``answer`` for ``key`` (leaf path, reads) of ``tree`` for later processes."""
    global _dirty
    with _lock:
        answers = _load()["answers"]
        found = answers.get(tree)
        if found is None or found[0] != sources:
            found = answers[tree] = (sources, {})
        if len(found[1]) < MAX_ANSWERS:
            found[1][key] = answer
            _dirty = True


def save(force: bool = False) -> None:
    """Write what this process learnt and the cache did not hold yet (after a conversion)."""
    global _dirty, _saved_at
    if not _dirty:
        return
    if not force and _saved_at is not None and time.monotonic() - _saved_at < SAVE_INTERVAL:
        return
    with _lock:
        if not _dirty:
            return
        _dirty = False
        _saved_at = time.monotonic()
        target = cache_file()
        if target is None:
            return
        try:
            _write(target)
        except (OSError, ValueError) as exc:  # read-only or full folder: parse again next time
            log.debug("GRIB concept cache not written to %s: %s", target, exc)


def cache_file() -> Path | None:
    """Where this process's cache lives (None when no cache folder can be named)."""
    folder = _cache_folder()
    key = _key()
    return None if folder is None or key is None else folder / f"{_PREFIX}{key}.bin"


def reset() -> None:
    """Forget what this process loaded and parsed (tests; a changed cache folder)."""
    global _stored, _dirty, _saved_at
    with _lock:
        _stored, _dirty, _saved_at = None, False, None
        _memo.clear()
    _key.cache_clear()


def _remember_derived(key: tuple[str, tuple[str, ...]], found: tuple) -> None:
    global _dirty
    with _lock:
        _load()["derived"][key] = found
        _dirty = True


def _load() -> dict[str, dict]:
    """The cache file's contents, read once per process (caller holds the lock)."""
    global _stored, _dirty
    if _stored is None:
        target = cache_file()
        _stored = {"derived": {}, "answers": {}}
        if target is not None and target.exists():
            found = _read(target)
            if found is None:
                log.info("GRIB concept cache %s is damaged: ignored, to be rewritten", target)
                _dirty = True
            else:
                _stored = found
    return _stored


def _read(target: Path) -> dict[str, dict] | None:
    try:
        data = target.read_bytes()
    except OSError:
        return None
    header = len(_MAGIC) + _DIGEST
    if len(data) < header or not data.startswith(_MAGIC):
        return None
    payload = data[header:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC) : header]:
        return None
    try:
        found = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    return found if _well_formed(found) else None


def _well_formed(found: object) -> bool:
    if not isinstance(found, dict) or set(found) != {"derived", "answers"}:
        return False
    computed, answers = found["derived"], found["answers"]
    if not isinstance(computed, dict) or not isinstance(answers, dict):
        return False
    for key, value in computed.items():
        if not (isinstance(key, tuple) and isinstance(value, tuple) and len(value) == 2):
            return False
        if not isinstance(value[0], tuple) or len(value[0]) != len(key[1]):
            return False
    for tree, value in answers.items():
        if not (isinstance(tree, tuple) and isinstance(value, tuple) and len(value) == 2):
            return False
        if not (isinstance(value[0], tuple) and isinstance(value[1], dict)):
            return False
    return True


def _write(target: Path) -> None:
    """Merge with the file as it is now, write a temporary file, rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    on_disk = (_read(target) if target.exists() else None) or {"derived": {}, "answers": {}}
    ours = _stored or {"derived": {}, "answers": {}}
    answers = dict(on_disk["answers"])
    for tree, (sources, found) in ours["answers"].items():
        theirs = answers.get(tree)
        if theirs is not None and theirs[0] == sources:  # what another process learnt too
            found = {**theirs[1], **found}
        answers[tree] = (sources, found)
    merged = {"derived": {**on_disk["derived"], **ours["derived"]}, "answers": answers}
    payload = marshal.dumps(merged)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    for stale in target.parent.glob(f"{_PREFIX}*.bin"):  # other versions' caches
        if stale != target:
            with contextlib.suppress(OSError):
                stale.unlink()


def _cache_folder() -> Path | None:
    chosen = os.environ.get(CACHE_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    try:
        import platformdirs
    except ModuleNotFoundError:  # pragma: no cover - a core dependency
        return None
    return Path(platformdirs.user_cache_dir("headrace"))


atexit.register(save, force=True)  # what a long-running process learnt after its last write


@cache
def _key() -> str:
    try:
        version = metadata.version("headrace")
    except metadata.PackageNotFoundError:  # a source tree on sys.path
        version = "source"
    parts = (
        version,
        sys.version.split()[0],
        eccodes.codes_get_api_version(),
        eccodes.codes_definition_path(),
        fingerprint() or "no-fingerprint",
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
