"""Where a GRIB2 field's parameter concepts live (conceptsDir1/2, paramIdFilename), cached exactly.

Reading ``conceptsDir1``, ``conceptsDir2`` and ``paramIdFilename`` costs about 60 us per GRIB2
field in ecCodes 2.50: each directory evaluates the ``datasetForLocal`` concept (whose
``marsClass`` conditions each search the whole handle when a field has no MARS section), and
the file name evaluates the ``MTG2Switch`` concept and its default. Their declarations in 2.50
(``grib2/section.1.def``, ``section.4.def``, ``parameters.def``; each declared once) are::

    concept datasetForLocal(unknown) { ... }                     # inline entries
    meta conceptsDir1 g2_concept_dir(preferLocalConcepts, conceptsMasterDir,
                                     conceptsLocalDirAll, datasetForLocal, 1)   # and 2
    concept MTG2SwitchViaTablesVersion(false, "MTG2SwitchViaTablesVersionConcept.def",
                                       conceptsDir2, conceptsDir1)
    meta MTG2SwitchDefault mtg2_switch_default(tablesVersion, tablesVersionMTG2Switch,
                                               marsClass, MTG2SwitchViaTablesVersion)
    concept MTG2Switch(MTG2SwitchDefault, "MTG2SwitchConcept.def", conceptsDir2, conceptsDir1)
    meta paramIdFilename g2_param_concept_filename("paramId", MTG2Switch,
                                                   tablesVersionMTG2Switch)

and the three ``meta`` accessors (``G2ConceptDir``, ``Mtg2SwitchDefault``,
``G2ParamConceptFilename`` in ecCodes' sources) read nothing but their arguments. So each value
is ecCodes' own answer cached by exactly what it reads: the concepts through
``grib_concept_cache`` (their entries' reads, their defaults' reads), the metas by their
arguments' values. Used only where ``grib_fast_path.fast_path_enabled()`` holds; otherwise, and for
any value these caches cannot vouch for, ecCodes is read directly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .grib_concept_cache import cached_concept, file_entries, inline_entries
from .grib_keys import KeyReader

Directories = tuple[str, str, str]  # conceptsDir1, conceptsDir2, paramIdFilename (as read)

MAX_ENTRIES = 10_000
_directories: dict[tuple[object, ...], tuple] = {}  # -> (directories, switch sources)
_filenames: dict[tuple[object, ...], str] = {}


def grib2_directories(
    keys: KeyReader, centre: str | None, recompose: Callable[[str], str]
) -> Directories:
    """``conceptsDir1``, ``conceptsDir2`` and ``paramIdFilename`` as ecCodes reads them.

    ``recompose`` turns a directory as read (``grib2/localConcepts/[centre:s]``) into the one
    ecCodes opens, as ``grib_concepts`` does (``centre`` is the field's, for that). Raises what
    ecCodes raises.
    """
    dataset = cached_concept(keys, _DATASET_TREE, _dataset_entries, _DATASET_DEFAULT, _DATASET)
    arguments = (
        keys.long_or_error(b"preferLocalConcepts"),
        keys.string_or_error(b"conceptsMasterDir"),
        keys.string_or_error(b"conceptsLocalDirAll"),
        dataset,
        centre,  # names the local directory once recomposed
    )
    found = _directories.get(arguments)
    if found is None:
        directories = (keys.string("conceptsDir1"), keys.string("conceptsDir2"))
        found = (directories, _switch_sources(tuple(recompose(d) for d in directories)))
        _remember(_directories, arguments, found)
    directories, (via_tree, via_load, switch_tree, switch_load) = found
    via = cached_concept(keys, via_tree, via_load, _VIA_DEFAULT, _VIA_TABLES_VERSION)
    switch = cached_concept(
        keys, switch_tree, switch_load, _SWITCH_DEFAULT, _MTG2_SWITCH, known=(via,)
    )
    arguments = (switch, keys.long_or_error(b"tablesVersionMTG2Switch"))
    filename = _filenames.get(arguments)
    if filename is None:
        filename = keys.string("paramIdFilename")
        _remember(_filenames, arguments, filename)
    return (*directories, filename)


_DATASET_TREE = ("datasetForLocal",)
_DATASET_DEFAULT = (("unknown", "string"),)  # concept datasetForLocal(unknown)
_VIA_DEFAULT = (("false", "long"),)  # concept MTG2SwitchViaTablesVersion(false, ...)
# MTG2SwitchDefault = mtg2_switch_default(tablesVersion, tablesVersionMTG2Switch, marsClass,
# MTG2SwitchViaTablesVersion); the last is passed as known
_SWITCH_DEFAULT = (
    ("tablesVersion", "long"),
    ("tablesVersionMTG2Switch", "long"),
    ("marsClass", "string"),
)


def _dataset_entries():  # type: ignore[no-untyped-def]
    return inline_entries("grib2/section.4.def", "concept datasetForLocal(unknown)")


def _switch_sources(own: tuple[str, ...]) -> tuple[tuple[str, ...], Callable, tuple, Callable]:
    via = tuple(f"{d}/MTG2SwitchViaTablesVersionConcept.def" for d in own)
    switch = tuple(f"{d}/MTG2SwitchConcept.def" for d in own)
    return (
        ("MTG2SwitchViaTablesVersion", *own),
        partial(file_entries, via),
        ("MTG2Switch", *own),
        partial(file_entries, switch),
    )


def _remember(cache: dict, key: tuple[object, ...], value: object) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = value


def _DATASET(keys: KeyReader) -> str:
    return keys.string("datasetForLocal")


def _VIA_TABLES_VERSION(keys: KeyReader) -> int:
    return keys.long("MTG2SwitchViaTablesVersion")


def _MTG2_SWITCH(keys: KeyReader) -> int:
    return keys.long("MTG2Switch")
