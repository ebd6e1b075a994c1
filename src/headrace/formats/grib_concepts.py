"""shortName, name and units of a field from its paramId, read from ecCodes' own definitions.

ecCodes evaluates each of paramId, shortName, name and units as a separate "concept": a scan of
thousands of condition blocks (about 0.2 ms per field and concept) over tables it loads per
edition and local-concepts directory and keeps for the life of the process (``name`` of GRIB2
centre 8, NDFD, is 68 MB; an unknown parameter also loads ECMWF's tables: 120 ms and +58 MB).

The four concepts are declared alike: same directories, same fallback chain (the field's own
concepts directories, then ECMWF's, then for GRIB2 ECMWF's legacy files), and their files are
generated together, so entry *i* of ``name.def`` has the same conditions as entry *i* of
``paramId.def``. The concept evaluation therefore picks the same entry for all four, and when
every entry with a given paramId in those files carries the same (shortName, name, units), the
paramId that ecCodes evaluated determines them exactly. This module reads the files ecCodes
reads (its MEMFS or its definitions directory), checks both conditions per set of files, and
answers only then. It answers None otherwise, and the caller asks ecCodes on the field:

* the files of a concept are not parallel (the order or conditions of entries differ), or a
  paramId has several names within the files of one field (ecCodes 2.50: 4 paramIds of the
  local concepts of eswi and lowm, e.g. 172 is ``(0 - 1)`` or ``Proportion``);
* the definitions cannot be read (another ecCodes build), ecCodes is given extra definition
  directories, or a directory name uses a key this module does not resolve.

Across centres and editions the same paramId can have different names (433 paramIds in ecCodes
2.50, e.g. 228028 is ``10fg3`` or ``gust``), so answers are kept per set of files, never per
paramId alone.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from pathlib import Path

from .grib_keys import KeyReader

Names = tuple[str, str, str]  # shortName, name, units

_NAME_CONCEPTS = ("shortName", "name", "units")
_CONCEPTS = ("paramId", *_NAME_CONCEPTS)
_DIRECTORY_KEYS = ("conceptsDir1", "conceptsDir2", "conceptsLocalDirECMF", "conceptsMasterDir")
_ENTRY = re.compile(r"'([^'\\]*)'\s*=\s*\{([^}]*)\}")
_RECOMPOSE = re.compile(r"\[(\w+)(?::([sld]))?\]")
_AMBIGUOUS = object()

_lock = threading.Lock()
# one entry per directory's 4 files: paramId -> names (or _AMBIGUOUS); None if not trusted
_groups: dict[tuple[str, ...], dict[int, object] | None] = {}
_file_sets: dict[tuple[str, ...], list[dict[int, object]] | None] = {}
_resolved: dict[tuple[object, ...], tuple[str, ...]] = {}  # directory keys -> files


def parameter_names(keys: KeyReader, edition: int, param_id: int) -> Names | None:
    """(shortName, name, units) exactly as ecCodes would evaluate them, or None if unsure."""
    files = _concept_files(keys, edition)
    if files is None:
        return None
    groups = _file_sets.get(files)
    if groups is None and files not in _file_sets:
        with _lock:
            groups = _file_sets[files] = _load(files)
    if groups is None:
        return None
    found = {names for group in groups if (names := group.get(param_id)) is not None}
    if not found and param_id == 0:  # no entry matched: every concept takes its default
        default_name = keys.string("defaultName")
        return keys.string("defaultShortName"), default_name, default_name
    if len(found) != 1 or _AMBIGUOUS in found:
        return None
    return found.pop()  # type: ignore[return-value]


def _concept_files(keys: KeyReader, edition: int) -> tuple[str, ...] | None:
    """Every file the four concepts may read for this field: per directory paramId, shortName,
    name and units.

    Mirrors the declarations in grib1/section.1.def and grib2/parameters.def:
    ``concept paramId(paramIdECMF, <file>, conceptsDir2, conceptsDir1)``, falling back to
    ``conceptsMasterDir``/``conceptsLocalDirECMF``, then (GRIB2) the ``.legacy.def`` files. In
    GRIB2 the file name comes from ``g2_param_concept_filename(<concept>, MTG2Switch,
    tablesVersionMTG2Switch)`` for all four, so the suffix of ``paramIdFilename`` (e.g.
    ``.lte33.def``) is theirs too; reading it once saves three evaluations of MTG2Switch.
    """
    try:
        directories = tuple(_recompose(keys, keys.string(k)) for k in _DIRECTORY_KEYS)
        suffix = ".def"
        if edition == 2:
            filename = keys.string("paramIdFilename")
            if not filename.startswith("paramId"):
                return None
            suffix = filename[len("paramId") :]
    except Exception:  # a key missing in this edition/template: let ecCodes answer
        return None
    memo = (edition, suffix, *directories)
    files = _resolved.get(memo)
    if files is None:
        own, ecmf = directories[:2], directories[2:]
        levels = [(own, suffix), (ecmf, suffix)]
        if edition == 2:
            levels.append((ecmf, ".legacy.def"))
        files = _resolved[memo] = tuple(
            f"{directory}/{concept}{ending}"
            for group, ending in levels
            for directory in group
            for concept in _CONCEPTS
        )
    return files


def _recompose(keys: KeyReader, template: str) -> str:
    """ecCodes' ``[key]`` / ``[key:s]`` / ``[key:l]`` substitution in directory names."""
    if "[" not in template:
        return template
    return _RECOMPOSE.sub(
        lambda m: str(keys.long(m[1])) if m[2] == "l" else keys.string(m[1]), template
    )


def _load(files: tuple[str, ...]) -> list[dict[int, object]] | None:
    """The tables of every directory in ``files``, or None if one cannot be trusted."""
    groups = []
    for start in range(0, len(files), 4):  # paramId, shortName, name, units of one directory
        paths = files[start : start + 4]
        if paths not in _groups:
            _groups[paths] = _load_group(paths)
        group = _groups[paths]
        if group is None:
            return None
        groups.append(group)
    return groups


def _load_group(paths: tuple[str, ...]) -> dict[int, object] | None:
    reader = _reader()
    if reader is None:
        return None
    texts = [reader(path) for path in paths]
    if all(t is None for t in texts):
        return {}  # ecCodes skips a directory without these files, e.g. no local concepts
    if any(t is None for t in texts):
        return None
    parsed = [_parse(t) for t in texts if t is not None]
    if any(p is None for p in parsed):
        return None
    params, *named = parsed
    conditions = [c for _, c in params]  # type: ignore[union-attr]
    if any([c for _, c in n] != conditions for n in named):  # type: ignore[union-attr]
        return None
    table: dict[int, object] = {}
    for position, (value, _) in enumerate(params):  # type: ignore[arg-type]
        try:
            param_id = int(value)
        except ValueError:
            return None
        names = tuple(n[position][0] for n in named)  # type: ignore[index]
        if table.setdefault(param_id, names) != names:
            table[param_id] = _AMBIGUOUS
    return table


def _parse(text: str) -> list[tuple[str, frozenset[str]]] | None:
    """Entries of a concept file: (value, set of conditions), in file order."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    body = "\n".join(lines)
    entries = []
    for match in _ENTRY.finditer(body):
        if "#" in match[2]:
            return None  # an inline comment: do not guess how it parses
        conditions = frozenset("".join(c.split()) for c in match[2].split(";") if c.strip())
        entries.append((match[1], conditions))
    # every entry must have been recognised: a value with quotes or braces is not guessed at
    if body.count("{") != len(entries):
        return None
    return entries


# ----------------------------------------------------------------------------- reading files
_reader_cache: list[object] = []


def _reader():  # -> Callable[[str], str | None] | None
    if not _reader_cache:
        _reader_cache.append(_make_reader())
    return _reader_cache[0]


def _make_reader():
    """Read definition files where ecCodes does: one definitions root, MEMFS or a directory."""
    import eccodes

    if os.environ.get("ECCODES_EXTRA_DEFINITION_PATH"):
        return None  # user definitions may add or override concept entries
    root = eccodes.codes_definition_path()
    if ":" in root:
        return None
    if not root.startswith("/MEMFS"):
        base = Path(root)

        def from_disk(path: str) -> str | None:
            try:
                return (base / path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                return None

        return from_disk if base.is_dir() else None
    return _memfs_reader(root)


def _memfs_reader(root: str):
    try:
        # By soname: the dynamic loader hands back the copy libeccodes itself loaded, so the
        # files read are the ones ecCodes evaluates, whichever build provided the library.
        memfs = ctypes.CDLL("libeccodes_memfs.so", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        libc = ctypes.CDLL(None)
        memfs.codes_memfs_open.restype = ctypes.c_void_p
        memfs.codes_memfs_open.argtypes = [ctypes.c_char_p]
        libc.fread.restype = ctypes.c_size_t
        libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except Exception:
        return None

    def from_memfs(path: str) -> str | None:
        stream = memfs.codes_memfs_open(f"{root}/{path}".encode())
        if not stream:
            return None
        chunks, buffer = [], ctypes.create_string_buffer(1 << 16)
        try:
            while size := libc.fread(buffer, 1, len(buffer), stream):
                chunks.append(buffer.raw[:size])
        finally:
            libc.fclose(stream)
        return b"".join(chunks).decode("utf-8", "replace")

    return from_memfs
