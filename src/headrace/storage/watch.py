"""Change detection: learn about every complete object version that appears in a bucket.

Objects arrive through headrace (atomic rename into place) and through any other tool (`cp`,
`rsync`, a program writing in place, a hard link). Two mechanisms cover them:

* inotify (local folders, via watchdog): a file is complete when a writer closes it
  (IN_CLOSE_WRITE) or when it is renamed into place (IN_MOVED_TO). Create/modify events alone
  are ignored because the file may still be half written. This is the low-latency path, so
  nothing on it sleeps.
* polling (always on; the only mechanism for non-local stores or without inotify): a full
  listing every `poll_interval`; an object is reported once it has held still for
  `settle_seconds` (same size and mtime across polls, or an mtime that old). It catches what
  inotify cannot see: hard links, files written before a new folder got its watch, events
  lost to a queue overflow, and every object store.

* store notifications (optional, `headrace.storage.notifications`): a store's own event feed,
  used only as a wake-up. A notification makes the watcher re-list that bucket at once (and
  again when what it found has settled) instead of at the next poll; the listing decides what
  is reported, so a lost, duplicated or late notification costs latency, never a trigger.

All feed one de-duplicating reporter keyed by (bucket, key) and version, so each version is
reported once per watcher lifetime however many events or polls see it.
"""

from __future__ import annotations

import logging
import os
import queue
import stat as _stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from headrace.errors import InvalidKey
from headrace.storage.beneath import walk
from headrace.storage.keys import validate_bucket_name, validate_key
from headrace.storage.notifications import ChangeNotifier
from headrace.storage.store import (
    Bucket,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    hash_local_file,
    info_from_stat,
    local_version,
    remote_signature,
)
from headrace.storage.temp_names import TEMP_PREFIX, remove_if_dead

logger = logging.getLogger("headrace.storage")

#: Threads that hash large files reported by inotify (hashlib and reads release the GIL).
HASH_WORKERS = 2

#: Files up to this size are hashed on the event thread itself (about 2 ms at most), which
#: saves a thread hand-off; larger ones go to the hash workers so that one big file's MD5
#: never delays the small files behind it.
INLINE_HASH_MAX = 1 << 20

_MAX_WARNED = 10_000

#: How long watchdog holds a rename's IN_MOVED_FROM waiting for its IN_MOVED_TO. The two
#: arrive in the same read() in practice, but watchdog's default of 0.5 s blocks every event
#: queued behind it for that long whenever the pairing races, and always when a file is moved
#: out of the tree: a 0.5 s stall on the low-latency path.
MOVE_PAIR_DELAY = 0.005

OnObject = Callable[[ObjectInfo], None]


class _Reported(NamedTuple):
    version: str
    sequencer: int
    at: float  # time.monotonic() of the report


class _Listed(NamedTuple):
    """One object seen by a poll."""

    bucket: str
    key: str
    version: str
    mtime: float | None
    ref: Any  # local: the path; remote: (path, fsspec info)


class ChangeWatcher:
    """Reports each complete object version in a store's buckets to `on_object`.

    `on_object` is never called concurrently with itself (calls are serialised), runs on the
    watcher's threads, and should return quickly: a slow callback delays later reports.
    Exceptions it raises are logged and otherwise ignored.
    """

    def __init__(
        self,
        store: ObjectStore,
        buckets: list[str] | None = None,
        *,
        poll_interval: float = 1.0,
        settle_seconds: float = 0.5,
        use_inotify: bool = True,
        notifier: ChangeNotifier | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        if settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")
        self.store = store
        self.poll_interval = poll_interval
        self.settle_seconds = settle_seconds
        self.use_inotify = use_inotify
        self._scope = (
            None if buckets is None else frozenset(validate_bucket_name(b) for b in buckets)
        )
        self._root_prefix = store.root.rstrip("/") + "/"

        self._lock = threading.Lock()  # guards _reported and _inflight
        self._reported: dict[tuple[str, str], _Reported] = {}
        self._inflight: set[tuple[tuple[str, str], str]] = set()
        self._callback_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}  # poller: version, first seen
        self._partial_listing = False  # set by a poll that could not read every folder
        self._warned: set[str] = set()
        self._bucket_objs: dict[str, Bucket] = {}

        self._on_object: OnObject | None = None
        self._stop = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, str, str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self._inotify_lock = threading.Lock()  # start/stop/re-arm of the observer
        self._started = False
        self.notifier = notifier
        self._woken = threading.Event()
        self._wake_lock = threading.Lock()  # guards _wake_buckets
        self._wake_buckets: set[str] = set()
        self._unsettled: dict[str, float] = {}  # bucket -> monotonic time its next object settles

    # ------------------------------------------------------------------------ lifecycle

    @property
    def inotify_active(self) -> bool:
        """True while the inotify observer runs (False: polling only)."""
        return self._observer is not None

    def start(self, on_object: OnObject) -> None:
        """Start watching; returns at once. Every object already present is reported too
        (once settled), so the caller's ledger decides what is new across restarts."""
        if self._started:
            raise RuntimeError("ChangeWatcher.start() can be called only once")
        self._started = True
        self._on_object = on_object
        if self._scope is not None:
            for name in sorted(self._scope):
                self.store.bucket(name, create=True)  # a folder must exist to be watched
        # Watches first, then the start-up scan: an object written in between is seen by at
        # least one of them, and de-duplication absorbs the overlap.
        if self.use_inotify and self.store.is_local:
            with self._inotify_lock:
                self._start_inotify()
        for i in range(HASH_WORKERS if self._observer is not None else 0):
            self._spawn(self._work_loop, f"headrace-watch-hash-{i}")
        self._spawn(self._poll_loop, "headrace-watch-poll")
        if self.notifier is not None:
            self._spawn(self._wake_loop, "headrace-watch-wake")
            self.notifier.start(self.wake)

    def stop(self) -> None:
        """Stop all threads; safe to call more than once."""
        self._stop.set()
        self._woken.set()
        if self.notifier is not None:
            self.notifier.stop()
        with self._inotify_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            _stop_observer(observer)
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + 1.0
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []

    def __enter__(self) -> ChangeWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_inotify(self) -> None:
        try:
            from watchdog.events import (
                DirMovedEvent,
                FileClosedEvent,
                FileMovedEvent,
                FileSystemEventHandler,
            )
            from watchdog.observers.inotify import InotifyObserver
        except (ImportError, OSError) as exc:  # not Linux, or no inotify in this kernel
            logger.info("inotify unavailable (%s); watching %s by polling", exc, self.store.url)
            return

        # watchdog 7 warns each time `mkdir -p` makes it re-add a watch it already holds; that
        # is harmless here and would otherwise flood the log with one warning per folder.
        warnings.filterwarnings(
            "ignore",
            message="Callback with id .* already exists",
            category=RuntimeWarning,
            module="watchdog",
        )
        watcher = self

        class Handler(FileSystemEventHandler):
            def dispatch(self, event: Any) -> None:
                try:
                    watcher._on_fs_event(event)
                except Exception:
                    logger.exception("handling file system event %r failed", event)

        observer = None
        try:
            # Full events: a file moved in from outside the tree arrives as a move with an
            # empty source instead of a "created" event we would have to ignore.
            observer = InotifyObserver(generate_full_events=True)
            paths = (
                [self.store.root]
                if self._scope is None
                else [f"{self.store.root}/{b}" for b in sorted(self._scope)]
            )
            for path in paths:
                observer.schedule(
                    Handler(),
                    path,
                    recursive=True,
                    # Filtering also narrows the inotify mask: no per-write IN_MODIFY events.
                    event_filter=[FileClosedEvent, FileMovedEvent, DirMovedEvent],
                )
            observer.daemon = True
            observer.start()
            _shorten_move_pair_delay(observer)
        except Exception as exc:  # e.g. ENOSPC: fs.inotify.max_user_watches reached
            logger.warning(
                "inotify watch on %s failed (%s); falling back to polling every %.3gs",
                self.store.url,
                exc,
                self.poll_interval,
            )
            if observer is not None:
                _stop_observer(observer)
            return
        self._observer = observer

    def _check_inotify(self) -> None:
        """Re-arm inotify if a watched folder was deleted (watchdog then ends that watch for
        good; `rm -rf bucket && mkdir bucket` would otherwise leave only polling)."""
        observer = self._observer
        if observer is None:
            return
        emitters = list(getattr(observer, "emitters", ()))
        if observer.is_alive() and emitters and all(e.is_alive() for e in emitters):
            return
        with self._inotify_lock:
            if self._stop.is_set() or self._observer is not observer:
                return
            logger.warning(
                "the inotify watch on %s ended (was a watched folder deleted?); re-arming",
                self.store.url,
            )
            self._observer = None
            _stop_observer(observer)
            try:
                if self._scope is None:
                    os.makedirs(self.store.root, exist_ok=True)
                else:
                    for name in sorted(self._scope):
                        self.store.bucket(name, create=True)
            except OSError:
                logger.exception("cannot recreate the watched folders; polling only")
                return
            self._start_inotify()

    # ------------------------------------------------------------------------ inotify path

    def _on_fs_event(self, event: Any) -> None:
        etype = event.event_type
        if etype == "closed":
            self._submit(os.fsdecode(event.src_path))
        elif etype == "moved":
            dest = os.fsdecode(event.dest_path) if event.dest_path else ""
            if not dest:
                return  # moved out of the tree
            if event.is_directory:
                self._submit_tree(dest)
            else:
                self._submit(dest)

    def _submit(self, path: str) -> None:
        target = self._classify(path)
        if target is None:
            return
        try:
            st = os.lstat(path)
        except OSError:
            return  # already gone
        if _stat.S_ISLNK(st.st_mode):
            self._warn_link(path)
            return
        if st.st_size <= INLINE_HASH_MAX or not self._threads:
            self._report_local(*target, st)
        else:
            self._queue.put(target)

    def _submit_tree(self, folder: str) -> None:
        """A folder renamed into place: its files are as complete as the rename."""
        if self._classify(folder + "/x") is None:
            return  # the folder itself is hidden or out of scope
        if os.path.islink(folder):
            self._warn_link(folder)
            return
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                self._submit(os.path.join(dirpath, name))

    def _classify(self, path: str) -> tuple[str, str, str] | None:
        """(bucket, key, path) for a file under the store root, or None to ignore it."""
        if not path.startswith(self._root_prefix):
            return None
        parts = path[len(self._root_prefix) :].split("/")
        if len(parts) < 2 or any(p.startswith(".") for p in parts):
            return None  # not in a bucket, or hidden: temp files, swap files, rsync partials
        bucket = parts[0]
        if not self._in_scope(bucket):
            return None
        key = "/".join(parts[1:])
        if not self._key_ok(key, path):
            return None
        return bucket, key, path

    def _in_scope(self, bucket: str) -> bool:
        if self._scope is not None:
            return bucket in self._scope
        try:
            validate_bucket_name(bucket)
        except InvalidKey as exc:
            self._warn_once(f"bucket:{bucket}", "ignoring folder %s: %s", bucket, exc)
            return False
        return True

    def _key_ok(self, key: str, where: str) -> bool:
        try:
            validate_key(key)
        except InvalidKey as exc:
            self._warn_once(where, "ignoring %s: %s", where, exc)
            return False
        return True

    def _warn_link(self, path: str) -> None:
        self._warn_once(
            f"link:{path}",
            "ignoring %s: a symbolic link is not an object, and headrace never follows links"
            " inside a bucket (copy the file in instead)",
            path,
        )

    def _warn_once(self, token: str, msg: str, *args: object) -> None:
        # Polls see the same bad name every pass; one warning per name is enough.
        if token in self._warned:
            return
        if len(self._warned) >= _MAX_WARNED:
            self._warned.clear()
        self._warned.add(token)
        logger.warning(msg, *args)

    def _work_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            try:
                self._report_local(*item)
            except Exception:
                logger.exception("reporting %s failed", item[2])

    # -------------------------------------------------------------------------- reporting

    def _bucket(self, name: str) -> Bucket:
        bucket = self._bucket_objs.get(name)
        if bucket is None:
            bucket = self._bucket_objs[name] = Bucket(self.store, name)
        return bucket

    def _is_reported(self, k: tuple[str, str], version: str) -> bool:
        with self._lock:
            prev = self._reported.get(k)
            return prev is not None and prev.version == version

    def _claim(self, k: tuple[str, str], version: str) -> bool:
        """Reserve the right to report this version, so two threads never hash it twice."""
        with self._lock:
            prev = self._reported.get(k)
            if (prev is not None and prev.version == version) or (k, version) in self._inflight:
                return False
            self._inflight.add((k, version))
            return True

    def _release(self, k: tuple[str, str], version: str) -> None:
        with self._lock:
            self._inflight.discard((k, version))

    def _deliver(
        self,
        k: tuple[str, str],
        claimed: str,
        info: ObjectInfo,
        still_current: Callable[[], bool] | None = None,
    ) -> ObjectInfo | None:
        seq = int(info.sequencer, 16)
        with self._lock:
            self._inflight.discard((k, claimed))
            prev = self._reported.get(k)
            stale = prev is not None and seq < prev.sequencer
            if prev is not None and prev.version == info.version:
                return None
        # A lower sequencer usually means a thread that read an old version lost the race to
        # one that read the newer one; but after a clock step back it is a genuine new version.
        if stale and (still_current is None or not still_current()):
            return None
        with self._lock:
            prev = self._reported.get(k)
            if prev is not None and prev.version == info.version:
                return None
            self._reported[k] = _Reported(info.version, seq, time.monotonic())
        self._emit(info)
        return info

    def _emit(self, info: ObjectInfo) -> None:
        callback = self._on_object
        if callback is None:
            return
        with self._callback_lock:
            try:
                callback(info)
            except Exception:
                logger.exception("on_object failed for %s/%s", info.bucket, info.key)

    def _report_local(
        self, bucket: str, key: str, path: str, st: os.stat_result | None = None
    ) -> ObjectInfo | None:
        k = (bucket, key)
        if st is None:
            try:
                st = os.lstat(path)
            except OSError:
                return None  # gone already (deleted or renamed on): nothing to report
        if not _stat.S_ISREG(st.st_mode):
            return None
        version = local_version(st)
        if not self._claim(k, version):
            return None
        try:
            # Reads through descriptors from the bucket folder down, refusing any link: the
            # path may have been swapped for one (or a folder on it) since it was listed.
            st, etag = hash_local_file(self._bucket(bucket).root, key, cancel=self._stop)
        except (ObjectChanged, OSError):
            # Rewritten while we read it (its writer's close or rename brings a new event,
            # and the poller backs that up), gone, or now a link: this version is no more.
            self._release(k, version)
            return None
        except BaseException:
            self._release(k, version)
            raise
        info = info_from_stat(bucket, key, st, etag)

        def still_current() -> bool:
            try:
                return local_version(os.lstat(path)) == info.version
            except OSError:
                return False

        return self._deliver(k, version, info, still_current)

    def _report_remote(
        self, bucket: str, key: str, path: str, entry: Mapping[str, Any]
    ) -> ObjectInfo | None:
        k = (bucket, key)
        version = remote_signature(entry)[0]
        if not self._claim(k, version):
            return None
        try:
            info = self._bucket(bucket).remote_info(key, path, entry)
        except FileNotFoundError:
            self._release(k, version)
            return None
        except BaseException:
            self._release(k, version)
            raise
        return self._deliver(k, version, info)

    # ------------------------------------------------------------------- notification path

    def wake(self, bucket: str = "") -> None:
        """Re-list `bucket` ("": every watched bucket) now rather than at the next poll."""
        if bucket and not (
            self._in_scope(bucket) if self._scope is None else bucket in self._scope
        ):
            return
        with self._wake_lock:
            self._wake_buckets.add(bucket)
        self._woken.set()

    def _wake_loop(self) -> None:
        due: dict[str, float] = {}  # buckets to re-list once what they hold has settled
        while not self._stop.is_set():
            self._woken.wait(None if not due else max(0.0, min(due.values()) - time.monotonic()))
            if self._stop.is_set():
                return
            self._woken.clear()
            with self._wake_lock:
                woken, self._wake_buckets = self._wake_buckets, set()
            now = time.monotonic()
            woken |= {b for b, at in due.items() if at <= now}
            if not woken:
                continue
            buckets = None if "" in woken else sorted(woken)
            try:
                self._scan(abortable=True, buckets=buckets)
            except Exception:
                logger.exception("re-listing %s after a notification failed", self.store.url)
                continue
            for b in woken if buckets is not None else list(due):
                due.pop(b, None)
            due.update(self._unsettled)

    # ---------------------------------------------------------------------------- polling

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_inotify()
                self._scan(abortable=True)
            except Exception:
                logger.exception("polling %s failed; retrying", self.store.url)
            if self._stop.wait(self.poll_interval):
                return

    def scan(self) -> list[ObjectInfo]:
        """One full list-and-compare pass; returns (and reports) the versions it found new.

        An object is reported once it is settled: its mtime is `settle_seconds` old, or its
        size and mtime have not changed across polls for that long."""
        return self._scan(abortable=False)

    def _scan(self, *, abortable: bool, buckets: list[str] | None = None) -> list[ObjectInfo]:
        """`buckets`: list only these (a wake-up); None: the full pass, which also forgets
        what was deleted."""
        with self._scan_lock:
            started = time.monotonic()
            wall = time.time()
            settle = self.settle_seconds
            present: set[tuple[str, str]] = set()
            found: list[ObjectInfo] = []
            self._partial_listing = False
            unsettled: dict[str, float] = {}
            for obj in self._list_all(buckets):
                if abortable and self._stop.is_set():
                    return found  # incomplete: keep what we know
                k = (obj.bucket, obj.key)
                present.add(k)
                seen = self._seen.get(k)
                if seen is None or seen[0] != obj.version:
                    self._seen[k] = (obj.version, started)
                    first = started
                else:
                    first = seen[1]
                aged = obj.mtime is not None and wall - obj.mtime >= settle
                if not (aged or started - first >= settle):
                    at = first + settle
                    if obj.mtime is not None:
                        at = min(at, started + obj.mtime + settle - wall)
                    unsettled[obj.bucket] = min(at, unsettled.get(obj.bucket, at))
                    continue
                if self._is_reported(k, obj.version):
                    continue
                if self.store.is_local:
                    info = self._report_local(obj.bucket, obj.key, obj.ref)
                else:
                    info = self._report_remote(obj.bucket, obj.key, *obj.ref)
                if info is not None:
                    found.append(info)
            self._unsettled = unsettled
            if self._partial_listing or buckets is not None:
                return found  # some folder was unreadable: absent need not mean deleted
            # Forget deleted objects so memory stays bounded, but not ones reported after
            # this listing began: the listing may simply have missed them.
            for k in [k for k in self._seen if k not in present]:
                del self._seen[k]
            with self._lock:
                for k in [k for k, r in self._reported.items() if k not in present]:
                    if self._reported[k].at < started:
                        del self._reported[k]
            return found

    def _buckets_to_scan(self) -> list[str]:
        if self._scope is not None:
            return sorted(self._scope)
        return [b for b in self.store.list_buckets() if self._in_scope(b)]

    def _list_all(self, buckets: list[str] | None = None) -> Iterator[_Listed]:
        if self.store.is_local:
            for bucket in self._buckets_to_scan() if buckets is None else buckets:
                yield from self._list_local(bucket)
            return
        fs = self.store.fs
        if buckets is not None:
            roots = [f"{self.store.root}/{b}" for b in buckets]
        elif self._scope is None:
            roots = [self.store.root]
        else:
            roots = [f"{self.store.root}/{b}" for b in sorted(self._scope)]
        for root in roots:
            try:
                fs.invalidate_cache(root)
            except Exception:
                logger.debug("invalidate_cache(%s) failed", root, exc_info=True)
            try:
                entries = fs.find(root, detail=True)
            except FileNotFoundError:
                continue
            for path, entry in entries.items():
                if entry.get("type", "file") != "file":
                    continue
                target = self._classify(path)
                if target is None:
                    continue
                version, _, mtime = remote_signature(entry)
                yield _Listed(target[0], target[1], version, mtime, (path, entry))

    def _list_local(self, bucket: str) -> Iterator[_Listed]:
        root = f"{self.store.root}/{bucket}"

        def failed(rel: str, exc: OSError) -> None:
            # EACCES, EMFILE...: its objects are not known to be gone
            self._partial_listing = True
            self._warn_once(f"scan:{root}/{rel}", "cannot list %s/%s: %s", root, rel, exc)

        def skipped(folder: int, name: str) -> None:
            if name.startswith(TEMP_PREFIX):
                remove_if_dead(folder, name)

        hidden = walk(
            root, skip_name=lambda name: name.startswith("."), on_error=failed, on_skipped=skipped
        )
        for key, st, _ in hidden:
            path = f"{root}/{key}"
            if _stat.S_ISLNK(st.st_mode):
                self._warn_link(path)
                continue
            if not _stat.S_ISREG(st.st_mode) or not self._key_ok(key, path):
                continue
            yield _Listed(bucket, key, local_version(st), st.st_mtime, path)


def _stop_observer(observer: Any) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=1.0)
    except Exception:
        logger.exception("stopping the inotify observer failed")


def _shorten_move_pair_delay(observer: Any) -> None:
    """Set MOVE_PAIR_DELAY on the observer's move-pairing queues.

    This reaches into watchdog's private structures (7.x: emitter._inotify._move_event_grouper
    ._queue; 4.x-6.x: emitter._inotify._queue), so anything unexpected leaves watchdog's default
    in place: correctness doesn't depend on it, only the worst-case latency of renames.
    """
    for emitter in list(getattr(observer, "emitters", ())):
        group = getattr(emitter, "_inotify", None)
        grouper = getattr(group, "_move_event_grouper", group)
        delayed = getattr(grouper, "_queue", None)
        attrs = [a for a in ("delay", "delay_sec") if a in getattr(delayed, "__dict__", {})]
        if not attrs:
            logger.debug("watchdog internals differ; keeping its move-pairing delay")
        for attr in attrs:
            setattr(delayed, attr, MOVE_PAIR_DELAY)
