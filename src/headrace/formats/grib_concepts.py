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

import re
import sys
import threading
from dataclasses import dataclass

from .grib_concept_dirs import grib2_directories
from .grib_definitions import definitions_readable, parse_concept
from .grib_disk_cache import derived
from .grib_fast_path import fast_path_enabled
from .grib_keys import KeyReader

Names = tuple[str, str, str]  # shortName, name, units

_NAME_CONCEPTS = ("shortName", "name", "units")
_CONCEPTS = ("paramId", *_NAME_CONCEPTS)
_DIRECTORY_KEYS = ("conceptsDir1", "conceptsDir2", "conceptsLocalDirECMF", "conceptsMasterDir")
_RECOMPOSE = re.compile(r"\[(\w+)(?::([sld]))?\]")
_AMBIGUOUS = ("(ambiguous)",)  # not a names triple; a tuple so that tables can be cached
_UNSET = object()

_lock = threading.Lock()
# one entry per directory's 4 files: paramId -> names (or _AMBIGUOUS); None if not trusted
_groups: dict[tuple[str, ...], dict[int, object] | None] = {}
_file_sets: dict[tuple[str, ...], list[dict[int, object]] | None] = {}
_layouts: dict[tuple[object, ...], ConceptLayout] = {}
_recomposed: dict[tuple[object, ...], str] = {}
_layouts_read: dict[tuple[object, ...], ConceptLayout] = {}  # by the strings read
_names_met: dict[Names, Names] = {}


@dataclass(frozen=True, slots=True, eq=False)
class ConceptLayout:
    """Where a field's concepts live: (conceptsDir1, conceptsDir2, conceptsLocalDirECMF,
    conceptsMasterDir) resolved, the GRIB2 parameter-file suffix, and the parameter files.

    One object per distinct layout, so callers may key caches on it.
    """

    edition: int
    directories: tuple[str, str, str, str]
    suffix: str
    files: tuple[str, ...]  # per directory and level: paramId, shortName, name, units


def parameter_names(
    keys: KeyReader, edition: int, param_id: int, layout: ConceptLayout | object | None = _UNSET
) -> Names | None:
    """(shortName, name, units) exactly as ecCodes would evaluate them, or None if unsure.

    ``layout`` is ``concept_layout(keys, edition)`` when the caller already has it.
    """
    if layout is _UNSET:
        layout = concept_layout(keys, edition)
    if not isinstance(layout, ConceptLayout):
        return None
    files = layout.files
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


def concept_layout(
    keys: KeyReader, edition: int, centre: str | None = None
) -> ConceptLayout | None:
    """The concepts directories and parameter files of this field, or None if unsure.

    ``centre`` is the field's ``centre`` string when the caller has read it already (it names
    the local concepts directory).

    Mirrors the declarations in grib1/section.1.def and grib2/parameters.def:
    ``concept paramId(paramIdECMF, <file>, conceptsDir2, conceptsDir1)``, falling back to
    ``conceptsMasterDir``/``conceptsLocalDirECMF``, then (GRIB2) the ``.legacy.def`` files. In
    GRIB2 the file name comes from ``g2_param_concept_filename(<concept>, MTG2Switch,
    tablesVersionMTG2Switch)`` for all four, so the suffix of ``paramIdFilename`` (e.g.
    ``.lte33.def``) is theirs too; reading it once saves three evaluations of MTG2Switch.
    GRIB2 ``conceptsDir1/2`` and ``paramIdFilename`` come from the exact caches of
    ``grib_concept_dirs`` (60 us per field less). None whenever the fast path is off
    (``grib_fast_path``).
    """
    if not fast_path_enabled():
        return None  # every concept is evaluated by ecCodes on the field
    try:
        known = {} if centre is None else {"centre": centre}
        if edition == 2:
            dir1, dir2, filename = grib2_directories(
                keys, centre, lambda d: _recompose(keys, d, known)
            )
            raw = (dir1, dir2, *(_read_string(keys, k) for k in _DIRECTORY_KEYS[2:]))
        else:
            raw = tuple(keys.string(k) for k in _DIRECTORY_KEYS)
            filename = keys.string("paramIdFilename") if edition == 2 else ""
        read = (edition, centre, filename, *raw)
        layout = _layouts_read.get(read)
        if layout is not None:
            return layout
        directories = tuple(_recompose(keys, d, known) for d in raw)
        suffix = ".def"
        if edition == 2:
            if not filename.startswith("paramId"):
                return None
            suffix = filename[len("paramId") :]
    except Exception:  # a key missing in this edition/template: let ecCodes answer
        return None
    layout = _layout(edition, suffix, directories)  # type: ignore[arg-type]
    if centre is not None and _only_centre(raw):
        _layouts_read[read] = layout  # the strings read (and the centre) determine it
    return layout


def _only_centre(raw: tuple[str, ...]) -> bool:
    """True if the only ``[key]`` the directory names use is the centre as a string."""
    return all(m[1] == "centre" and m[2] != "l" for d in raw for m in _RECOMPOSE.finditer(d))


def _layout(edition: int, suffix: str, directories: tuple[str, str, str, str]) -> ConceptLayout:
    memo = (edition, suffix, *directories)
    layout = _layouts.get(memo)
    if layout is None:
        own, ecmf = directories[:2], directories[2:]
        levels = [(own, suffix), (ecmf, suffix)]
        if edition == 2:
            levels.append((ecmf, ".legacy.def"))
        files = tuple(
            f"{directory}/{concept}{ending}"
            for group, ending in levels
            for directory in group
            for concept in _CONCEPTS
        )
        layout = _layouts.setdefault(memo, ConceptLayout(edition, directories, suffix, files))
    return layout


def _read_string(keys: KeyReader, key: str) -> str:
    value = keys.string_or_error(key.encode())  # shared with the caches' reads of this field
    return value if isinstance(value, str) else keys.string(key)  # raises ecCodes' error


def _recompose(keys: KeyReader, template: str, known: dict[str, str]) -> str:
    """ecCodes' ``[key]`` / ``[key:s]`` / ``[key:l]`` substitution in directory names."""
    if "[" not in template:
        return template
    memo = (template, *known.items())
    if memo in _recomposed:  # (a template using only known keys gives the same answer)
        return _recomposed[memo]
    used = {m[1] for m in _RECOMPOSE.finditer(template)}

    def value(match: re.Match[str]) -> str:
        if match[2] == "l":
            return str(keys.long(match[1]))
        return known[match[1]] if match[1] in known else keys.string(match[1])

    result = _RECOMPOSE.sub(value, template)
    if used <= known.keys() and all(m[2] != "l" for m in _RECOMPOSE.finditer(template)):
        if len(_recomposed) > 1000:
            _recomposed.clear()
        _recomposed[memo] = result
    return result


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
    if not definitions_readable():
        return None
    # the table, kept on disk between processes (grib_disk_cache)
    table = derived("names table", paths, _names_table)
    if table is None:
        return None
    # the same names recur across files and directories: each string and triple kept once
    for param_id, names in table.items():
        names = tuple(sys.intern(n) for n in names)
        table[param_id] = _names_met.setdefault(names, names)
    return table


def _names_table(texts: list[str | None]) -> dict[int, tuple[str, ...]] | None:
    """paramId -> (shortName, name, units) of one directory's four files, or None if unsure."""
    if all(t is None for t in texts):
        return {}  # ecCodes skips a directory without these files, e.g. no local concepts
    if any(t is None for t in texts):
        return None
    parsed = [parse_concept(t) for t in texts if t is not None]
    if any(p is None for p in parsed):
        return None
    params, *named = parsed
    conditions = [c for _, c in params]  # type: ignore[union-attr]
    if any([c for _, c in n] != conditions for n in named):  # type: ignore[union-attr]
        return None
    table: dict[int, tuple[str, ...]] = {}
    for position, (value, _) in enumerate(params):  # type: ignore[arg-type]
        try:
            param_id = int(value)
        except ValueError:
            return None
        names = tuple(n[position][0] for n in named)  # type: ignore[index]
        if table.setdefault(param_id, names) != names:
            table[param_id] = _AMBIGUOUS
    return table
