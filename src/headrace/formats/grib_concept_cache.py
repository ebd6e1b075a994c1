"""paramId, typeOfLevel and stepType as ecCodes evaluates them, without evaluating every field.

These keys are ecCodes "concepts": ecCodes tests every entry of the concept's files (about
11,000 entries for the GRIB2 paramId, 0.2 ms per field) and picks the best fully matching one
(``concept_evaluate`` in ecCodes' ``accessor/Concept.cc``). Each condition of an entry compares
one key of the field, read with ``grib_get_long``, ``grib_get_double``, ``grib_get_string`` or
``grib_get_long_array`` (by the type of the literal), with a constant; a failed read is a false
condition. The answer is therefore a function of what those reads return (and of the concept's
default), and this module caches ecCodes' own answer keyed by exactly those reads.

Reading every key the files test would cost nearly as much as the concept (a key a field does
not have costs 4 us to look up), so the reads are chosen by a decision tree built from the
entries themselves: read the key that most of the remaining entries compare with an integer,
drop every entry whose comparison is false (its integer differs, or the read failed: ecCodes
counts both as no match), and repeat until no remaining entry compares a key not yet read; then
read the keys of the remaining entries' other conditions (``missing()``, negative numbers,
strings, reals, arrays; reals and ``missing()``/negatives as long and as double, so as not to
depend on how ecCodes types them) and the keys a default reads. Entries dropped on the way fail
whatever their other keys hold, and every condition of every remaining entry has been read, so
two fields with the same reads along the same path get the same answer from ecCodes. Nothing is
keyed by a subset of what the concept tests; the first field of each path and set of values is
answered by ecCodes itself, and so is every field whose concept files cannot be read and parsed
with certainty.

Which accessor a key name finds matters too. paramId is declared once per edition (as the
existing name lookup in ``grib_concepts`` assumes). For typeOfLevel and stepType every
declaration in ecCodes 2.50's definitions was checked: typeOfLevel is one concept per edition;
GRIB2 stepType is the concept of ``section.1.def`` except in the statistical template with more
than two time ranges, where a constant ``"multiple steps"`` is declared together with
``stepTypeInternal = "multiple steps"``, a value no other declaration gives stepTypeInternal;
so stepTypeInternal is read into every stepType key. These caches (and those of
``grib_concept_dirs``) are therefore used only with ecCodes 2.50's definitions, as fingerprinted
by ``grib_fast_path`` (checked once per process); otherwise ecCodes evaluates them on every
field.

Trees and answers are bounded (``MAX_TREE_SIZE``); a first conversion builds them from the
definition files (parsed once per process, about 0.1 s for a GRIB2 centre). Trees grow only
along the paths fields take, but keep the entries they may still need: each file's entries are
parsed once and shared by every tree that reads the file, equal entries are one object, key
names are interned (the 13 shared test files: 45 MiB of entries before, 5 MiB now).
"""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from .grib_definitions import (
    Entries,
    definitions_readable,
    parse_concept,
    parse_inline_concept,
    read_definition,
)
from .grib_disk_cache import (
    Sources,
    derived,
    recording_files,
    remember_answer,
    stored_answers,
)
from .grib_fast_path import fast_path_enabled
from .grib_keys import KeyReader

if TYPE_CHECKING:  # grib_concepts uses this module
    from .grib_concepts import ConceptLayout

T = TypeVar("T")

_PLAIN_INT = re.compile(r"[0-9]+")
_NEGATIVE_INT = re.compile(r"-[0-9]+")
_REAL = re.compile(r"-?[0-9]*\.[0-9]*(?:[eE][-+]?[0-9]+)?")
_INT_ARRAY = re.compile(r"\[-?[0-9]+(?:,-?[0-9]+)*\]")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")

# Each tree keeps at most this many nodes and answers, then starts again (bounded memory).
MAX_TREE_SIZE = 50_000

Reader = Callable[[KeyReader, bytes], object]
_READERS: dict[str, Reader] = {
    "long": KeyReader.long_or_error,
    "double": KeyReader.double_or_error,
    "string": KeyReader.string_or_error,
    "array": KeyReader.long_array_or_error,
}


# ----------------------------------------------------------------------------- public
def param_id(keys: KeyReader, layout: ConceptLayout | None) -> int:
    """The field's paramId, equal to ``keys.long("paramId")``."""
    if layout is None:
        return keys.long("paramId")
    tree_id, load = _sources(layout)[0]
    return cached_concept(keys, tree_id, load, (), _PARAM_ID)


def type_of_level(keys: KeyReader, layout: ConceptLayout | None) -> str:
    """The field's typeOfLevel, equal to ``keys.string("typeOfLevel")``."""
    if layout is None or not fast_path_enabled() or not keys.defined(b"typeOfLevel"):
        return keys.string("typeOfLevel")
    tree_id, load = _sources(layout)[1]
    return cached_concept(keys, tree_id, load, (), _LEVEL)


def step_type(keys: KeyReader, layout: ConceptLayout | None) -> str:
    """The field's stepType, equal to ``keys.string("stepType")``."""
    if layout is None or not fast_path_enabled() or not keys.defined(b"stepType"):
        return keys.string("stepType")
    tree_id, load = _sources(layout)[2]
    extra = _GRIB2_STEP if layout.edition == 2 else _GRIB1_STEP
    return cached_concept(keys, tree_id, load, extra, _STEP)


Source = tuple[tuple[str, ...], Callable[[], "list[_Entry] | None"]]
_layout_sources: dict[ConceptLayout, tuple[Source, Source, Source]] = {}


def _sources(layout: ConceptLayout) -> tuple[Source, Source, Source]:
    """Tree name and entries of paramId, typeOfLevel and stepType for a concept layout."""
    sources = _layout_sources.get(layout)
    if sources is None:
        own, ecmf = layout.directories[:2], layout.directories[2:]
        param = layout.files[0::4]  # the paramId file of each directory and level
        if layout.edition == 2:  # concept (unknown, "typeOfLevelConcept.def", Dir2, Dir1)
            level = tuple(f"{d}/typeOfLevelConcept.def" for d in own)
            step: Source = (("stepType", "grib2"), _grib2_step_entries)
        else:  # then typeOfLevelECMF (unknown, "typeOfLevel.def", MasterDir, LocalDirECMF)
            level = tuple(f"{d}/typeOfLevel.def" for d in (*own, *ecmf))
            # concept_nofail (timeRangeIndicator, "stepType.def", conceptsDir2, conceptsDir1)
            paths = tuple(f"{d}/stepType.def" for d in own)
            step = (("stepType", *paths), partial(file_entries, paths))
        sources = _layout_sources[layout] = (
            (("paramId", *param), partial(file_entries, param)),
            (("typeOfLevel", *level), partial(file_entries, level)),
            step,
        )
    return sources


def clear_concept_cache() -> None:
    with _lock:
        _trees.clear()


# ----------------------------------------------------------------------------- evaluation
def _PARAM_ID(keys: KeyReader) -> int:
    return keys.long("paramId")


def _LEVEL(keys: KeyReader) -> str:
    return keys.string("typeOfLevel")


def _STEP(keys: KeyReader) -> str:
    return keys.string("stepType")


# reads a default or a branch marker makes, added to every key of that concept
_GRIB1_STEP = (("timeRangeIndicator", "string"), ("timeRangeIndicator", "long"))
_GRIB2_STEP = (("stepTypeInternal", "string"),)


class _Entry:
    """The conditions of one concept entry, as the trees use them.

    Entries equal in both fields are one object (``_shared``), whichever file or tree has them:
    the concept files met by a process hold about 60,000 entries but 12,000 distinct ones.
    """

    __slots__ = ("integers", "others")

    def __init__(self, integers: dict[str, int], others: frozenset[tuple[str, str]]) -> None:
        self.integers = integers  # key -> literal, for plain non-negative integer conditions
        self.others = others  # (key, read type) of every other condition

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Entry)
            and self.integers == other.integers
            and self.others == other.others
        )

    def __hash__(self) -> int:
        return hash((frozenset(self.integers.items()), self.others))


class _Node:
    __slots__ = ("children", "key", "path", "reads", "results", "split", "survivors")

    def __init__(
        self,
        survivors: list[_Entry],
        split: frozenset[str],
        extra: frozenset,
        path: tuple[object, ...] = (),
    ) -> None:
        self.survivors = survivors
        self.split = split
        self.path = path  # the values read on the way here: with the tree, names this node
        counts = Counter(k for e in survivors for k in e.integers if k not in split)
        self.key: bytes | None = None
        self.children: dict[object, _Node] = {}
        self.reads: tuple[tuple[bytes, Reader], ...] = ()
        self.results: dict[tuple[object, ...], object] = {}
        if counts:
            best = min(counts, key=lambda k: (-counts[k], k))
            self.key = best.encode()
        else:
            pairs = {pair for e in survivors for pair in e.others} | extra
            self.reads = tuple((k.encode(), _READERS[kind]) for k, kind in sorted(pairs))
            self.survivors = []  # a leaf needs only its reads

    def child(self, value: object, extra: frozenset) -> _Node:
        key = self.key.decode()  # type: ignore[union-attr]
        survivors = [e for e in self.survivors if e.integers.get(key, value) == value]
        return _Node(survivors, self.split | {key}, extra, (*self.path, value))


class _Tree:
    __slots__ = ("extra", "root", "size", "sources", "stored")

    def __init__(self, entries: list[_Entry], extra: frozenset, sources: Sources, stored: dict):
        self.extra = extra
        self.root = _Node(entries, frozenset(), extra)
        self.size = 1
        self.sources = sources  # (path, sha256) of the files the entries came from
        self.stored = stored  # answers earlier processes got from ecCodes (grib_disk_cache)


_lock = threading.Lock()
_trees: dict[tuple[str, ...], _Tree | None] = {}
# parsed once per process, with the files they came from
_entry_lists: dict[tuple[str, ...], tuple[list[_Entry] | None, Sources]] = {}


def cached_concept(
    keys: KeyReader,
    tree_id: tuple[str, ...],
    load: Callable[[], list[_Entry] | None],
    extra: tuple[tuple[str, str], ...],
    evaluate: Callable[[KeyReader], T],
    known: tuple[object, ...] = (),
) -> T:
    """ecCodes' value of a concept, cached by the reads its entries (from ``load``) make.

    ``extra`` are reads (key, "long"/"double"/"string"/"array") its default or a declaration
    makes; ``known`` are values, already exact, of anything else the answer depends on (such
    as another concept its default reads). ``tree_id`` names the entries: one tree each.
    """
    tree = _trees.get(tree_id)
    if tree is None:
        if tree_id in _trees:
            return evaluate(keys)  # files that cannot be read or parsed with certainty
        with _lock:
            if tree_id not in _trees:
                if tree_id not in _entry_lists:
                    with recording_files() as files:
                        loaded = load()
                    _entry_lists[tree_id] = (loaded, tuple(sorted(set(files))))
                entries, sources = _entry_lists[tree_id]
                _trees[tree_id] = (
                    None
                    if entries is None
                    else _Tree(entries, frozenset(extra), sources, stored_answers(tree_id, sources))
                )
            tree = _trees[tree_id]
        if tree is None:
            return evaluate(keys)
    node = tree.root
    while node.key is not None:
        value = keys.long_or_error(node.key)
        following = node.children.get(value)
        if following is None:
            following = node.children.setdefault(value, node.child(value, tree.extra))
            tree.size += 1
        node = following
    signature = (*[read(keys, key) for key, read in node.reads], *known)
    answer = node.results.get(signature)
    if answer is None:
        answer = tree.stored.get((node.path, signature))
        if answer is None:
            answer = evaluate(keys)
            remember_answer(tree_id, tree.sources, (node.path, signature), answer)
        node.results[signature] = answer
        tree.size += 1
        if tree.size > MAX_TREE_SIZE:
            with _lock:
                _trees.pop(tree_id, None)
    return answer  # type: ignore[return-value]


# ----------------------------------------------------------------------------- entries
_ABSENT: tuple[_Entry, ...] = ()  # a file ecCodes skips: it has no such file
# Entries per definition file, parsed once per process: layouts share most of their files.
_file_entries: dict[str, tuple[_Entry, ...] | None] = {}


def file_entries(paths: tuple[str, ...]) -> list[_Entry] | None:
    """Entries of every file in ``paths`` that exists (ecCodes skips the others)."""
    if not definitions_readable():
        return None
    entries: list[_Entry] = []
    for path in paths:
        # the conditions sorted into reads, kept on disk between processes (grib_disk_cache)
        data = derived("tree entries", (path,), _entry_data)
        if path not in _file_entries:
            _file_entries[path] = _from_data(data)
        found = _file_entries[path]
        if found is None:
            return None
        entries.extend(found)
    return entries


EntryData = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]


def _entry_data(texts: list[str | None]) -> bool | list[EntryData] | None:
    """False for a missing file, None if not parsed with certainty, else each entry's reads."""
    if texts[0] is None:
        return False
    entries = _entries(parse_concept(texts[0]))
    if entries is None:
        return None
    return [(tuple(e.integers.items()), tuple(sorted(e.others))) for e in entries]


def _from_data(data: bool | list[EntryData] | None) -> tuple[_Entry, ...] | None:
    if data is False:
        return _ABSENT
    if data is None:
        return None
    found = []
    for integers, others in data:
        key_names = {sys.intern(k): v for k, v in integers}
        shared_others = frozenset((sys.intern(k), kind) for k, kind in others)
        shared_others = _shared.setdefault(shared_others, shared_others)  # type: ignore[assignment]
        entry = _Entry(key_names, shared_others)
        found.append(_shared.setdefault(entry, entry))
    return tuple(found)  # type: ignore[arg-type]


def inline_entries(path: str, declaration: str) -> list[_Entry] | None:
    """Entries of the inline concept ``declaration { ... }`` of the definition file ``path``."""
    text = read_definition(path)
    return None if text is None else _entries(parse_inline_concept(text, declaration))


def _grib2_step_entries() -> list[_Entry] | None:
    return inline_entries("grib2/section.1.def", "concept stepType")


def _entries(parsed: Entries | None) -> list[_Entry] | None:
    if parsed is None:
        return None
    entries = []
    for _, conditions in parsed:
        entry = _entry(conditions)
        if entry is None:
            return None
        if entry is not _NEVER:
            entries.append(entry)
    return entries


_NEVER = _Entry({}, frozenset())  # an entry with contradictory conditions never matches
_shared: dict[object, object] = {}  # each distinct entry, set of reads and key name once


def _entry(conditions: frozenset[str]) -> _Entry | None:
    integers: dict[str, int] = {}
    others: set[tuple[str, str]] = set()
    for condition in conditions:
        key, equals, literal = condition.partition("=")
        if not equals or not _KEY.fullmatch(key):
            return None
        key = sys.intern(key)
        if _PLAIN_INT.fullmatch(literal):
            if integers.setdefault(key, int(literal)) != int(literal):
                return _NEVER
        elif literal == "missing()" or _NEGATIVE_INT.fullmatch(literal) or _REAL.fullmatch(literal):
            others.update({(key, "long"), (key, "double")})
        elif _STRING.fullmatch(literal):
            others.add((key, "string"))
        elif _INT_ARRAY.fullmatch(literal):
            others.add((key, "array"))
        else:
            return None  # an expression this module does not model: never cache
    shared_others = _shared.setdefault(frozenset(others), frozenset(others))
    entry = _Entry(integers, shared_others)  # type: ignore[arg-type]
    return _shared.setdefault(entry, entry)  # type: ignore[return-value]
