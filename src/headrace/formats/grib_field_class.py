"""GRIB2 fields whose time keys and concept layout are functions of a few header bytes.

Three things ecCodes recomputes on every field cost about 90 us per GRIB2 field together, a
seventh of a conversion, although they rarely change within a file:

* the step chain: ``stepUnits``, ``startStep``, ``endStep``, ``validityDate`` and
  ``validityTime`` (``optimal_step_units``, ``step_in_units``, ``g2end_step``,
  ``validity_date``/``validity_time``), with ``dataDate`` and ``dataTime``;
* the concept layout (``conceptsDir1/2`` through the ``datasetForLocal`` concept,
  ``paramIdFilename`` through the ``MTG2Switch`` concepts; see ``grib_concept_dirs``);
* ``stepType`` (a concept over the product template and ``stepTypeInternal``);
* ``number`` (the ensemble member: ``perturbationNumber`` of the ensemble templates, octet 36,
  else undefined, which costs a search of the whole handle; only local definitions, MARS files
  and other templates declare it otherwise).

This module names a **class** of fields for which all of them are determined by a few header
bytes, and ``field_class`` returns those bytes as two keys: ``timing`` (the step chain and
``stepType``: the discipline, the whole sections 1 and 2 and the whole section 4 except the
parameter, octets 10-11, and the fixed surfaces, octets 23-34) and ``layout`` (the concept
layout: sections 1 and 2, the template number and the generating-process octets 12-14 of
section 4). The results of the first field with a key, read from ecCodes, then serve every
later one. A field is in a class when (each condition read from its bytes):

* it has no local-use section (section 2), or the local definition ecCodes would load for it
  (``grib2/local.<centreForLocal>.def``; ``centreForLocal`` is the sub-centre when that is
  98, else the centre) does not exist, so that the section declares nothing but its length
  and number. Then no definition file declares ``marsClass``, ``marsStream`` or
  ``marsType``, so no MARS keyword file loads (``mars/grib.<stream>.<type>.def``: many
  re-alias ``mars.step``) and ``datasetForLocal`` is "unknown" (its other entries need
  production status 4-17);
* its production status is 0-3, whose ``products_<n>.def`` only alias parameter keys and which
  have no post-metadata hook (those of TIGGE, S2S, UERRA, CERRA, DestinE... declare MARS
  keywords and re-alias ``mars.step``);
* its centre's section-4 extras file is absent or mentions neither steps nor other files;
* its product template is 0, 1, 8 or 11 (point in time or statistics, deterministic or
  ensemble): their files declare the step chain over section-1 and section-4 keys, name no
  other files but their parts, and hold the generating-process keys at octets 12-14;
* its section 1 has the standard 21 bytes (no calendar template);
* its grid template (section 3) declares none of the keys the cached values are computed from:
  the Hovmoeller and time-section grids (3.1100, 3.1200) declare their own year to second,
  which then make ``dataDate``/``dataTime``; every grid template's file (and what it includes)
  is scanned for those names once per process;
* the ``MTG2Switch`` concept files of its centre test only keys of section 1, the generating
  process octets, ``marsClass`` and keys of templates other than these (both undefined here,
  which ecCodes counts as no match), and constants.

Why ``step`` matters: ``validity_date`` reads the plain key ``step``, which the template
declares (``alias step=startStep``; statistics only declare ``alias mars.step=endStep``, and a
namespaced alias is found by its plain name), and which any later ``alias mars.step = ...``
re-points. The conditions above exclude every file that does (checked by scanning all of
ecCodes 2.50's GRIB2 and MARS definitions); the masked octets only choose names and levels.

``ECCODES_GRIB_PREFER_LOCAL_CONCEPTS``, which ecCodes reads on every handle and which swaps the
concept directories, is part of both keys. The definition files this rests on are
fingerprinted (ecCodes 2.50.0) and checked once per process (``grib_fast_path``); with any
other ecCodes or definitions, no field is in a class and everything is read from ecCodes on
every field, as it is for every field outside the conditions.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from functools import cache
from typing import NamedTuple, TypeVar

from .grib_definitions import parse_concept, read_definition
from .grib_fast_path import fast_path_enabled
from .grib_messages import field_sections

T = TypeVar("T")


class FieldClass(NamedTuple):
    layout: tuple[bytes, ...]
    timing: tuple[bytes, ...]


_TEMPLATES = frozenset({0, 1, 8, 11})
_PRODUCTION_STATUSES = range(4)
# keys the MTG2Switch concepts may test: section 1, the generating-process octets, keys no
# file of a class declares (marsClass: section 2; the others: post-processing templates)
# and constants
_SWITCH_KEYS = frozenset(
    {
        "tablesVersion",
        "productionStatusOfProcessedData",
        "centre",
        "subCentre",
        "typeOfGeneratingProcess",
        "backgroundProcess",
        "generatingProcessIdentifier",
        "marsClass",
        "inputOriginatingCentre",
        "inputProcessIdentifier",
        "typeOfPostProcessing",
        "true",
        "dummy",
    }
)
# keys the cached values are computed from, directly or through the concepts: a grid
# template that names one of them (outside comments and quoted file names) is not classed
_INPUTS = frozenset(
    {
        *(_SWITCH_KEYS - {"true", "dummy"}),  # constants, used as values everywhere
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "date",
        "dataDate",
        "dataTime",
        "forecastTime",
        "indicatorOfUnitOfTimeRange",
        "indicatorOfUnitForTimeRange",
        "lengthOfTimeRange",
        "typeOfStatisticalProcessing",
        "typeOfTimeIncrement",
        "numberOfTimeRanges",
        "step",
        "stepUnits",
        "startStep",
        "endStep",
        "stepRange",
        "stepType",
        "stepTypeInternal",
        "number",
        "perturbationNumber",
        "validityDate",
        "validityTime",
        "marsStream",
        "marsType",
        "datasetForLocal",
        "MTG2Switch",
        "MTG2SwitchViaTablesVersion",
        "preferLocalConcepts",
        "conceptsDir1",
        "conceptsDir2",
    }
)
_PREFER_LOCAL = "ECCODES_GRIB_PREFER_LOCAL_CONCEPTS"  # read by ecCodes' boot.def
_MAX_KEY_BYTES = 64 << 10  # a larger header (a long pv array) is not worth keeping as a key
_MAX_ENTRIES = 10_000

_lock = threading.Lock()


def field_class(field: bytes | memoryview | None, centre: str) -> FieldClass | None:
    """The class keys of a single-field GRIB2 message, or None if it is in no class.

    ``centre`` is the field's ``centre`` key as ecCodes reads it.
    """
    if field is None or not fast_path_enabled():
        return None
    sections = field_sections(field)
    if sections is None:
        return None
    section1, section3, section4 = sections.get(1), sections.get(3), sections.get(4)
    section2 = bytes(sections.get(2, b""))
    if section1 is None or section3 is None or section4 is None:
        return None
    if len(section1) != 21 or len(section3) < 14 or len(section4) < 34:
        return None
    if len(section2) + len(section4) > _MAX_KEY_BYTES:
        return None
    if section1[19] not in _PRODUCTION_STATUSES:
        return None
    if int.from_bytes(section4[7:9], "big") not in _TEMPLATES or not _centre_is_plain(centre):
        return None
    if not _grid_template_is_plain(int.from_bytes(section3[12:14], "big")):
        return None
    if section2:
        sub_centre = int.from_bytes(section1[7:9], "big")
        local = sub_centre if sub_centre == 98 else int.from_bytes(section1[5:7], "big")
        if not _no_local_definition(local):
            return None  # MARS keywords and dataset files may load
    header = bytes(section1)
    prefer_local = os.environ.get(_PREFER_LOCAL, "0").encode()
    return FieldClass(
        layout=(prefer_local, header, section2, bytes(section4[7:9]), bytes(section4[11:14])),
        timing=(
            prefer_local,
            bytes(field[6:7]),
            header,
            section2,
            bytes(section4[5:9]),
            bytes(section4[11:22]),
            bytes(section4[34:]),
        ),
    )


class ClassCache:
    """Values computed once per field class (bounded; thread-safe)."""

    def __init__(self) -> None:
        self._values: dict[tuple[bytes, ...], object] = {}

    def get(self, key: tuple[bytes, ...] | None, compute: Callable[[], T]) -> T:
        if key is None:
            return compute()
        found = self._values.get(key, _MISSING)
        if found is _MISSING:
            found = compute()
            with _lock:
                if len(self._values) >= _MAX_ENTRIES:
                    self._values.clear()
                self._values[key] = found
        return found  # type: ignore[return-value]

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


_MISSING = object()


@cache
def _centre_is_plain(centre: str) -> bool:
    """The centre's extras leave steps alone and its MTG2Switch concepts read header keys."""
    extras = read_definition(f"grib2/local/{centre}/section4_extras.def")
    if extras is not None:
        code = "\n".join(line.split("#", 1)[0] for line in extras.splitlines())
        if any(word in code.lower() for word in ("step", "include", "template")):
            return False
    for directory in ("grib2", f"grib2/localConcepts/{centre}"):
        for name in ("MTG2SwitchConcept.def", "MTG2SwitchViaTablesVersionConcept.def"):
            text = read_definition(f"{directory}/{name}")
            if text is None:
                continue
            entries = parse_concept(text)
            if entries is None:
                return False
            tested = {c.split("=", 1)[0] for _, conditions in entries for c in conditions}
            if not tested <= _SWITCH_KEYS:
                return False
    return True


@cache
def _no_local_definition(centre_for_local: int) -> bool:
    return read_definition(f"grib2/local.{centre_for_local}.def") is None


@cache
def _grid_template_is_plain(number: int) -> bool:
    """The grid template's definitions (with what they include) name none of ``_INPUTS``."""
    if number >= 32768:
        return False  # a centre's own template, in its local directory
    code = _definition_code(f"grib2/templates/template.3.{number}.def", set())
    if code is None:
        return False
    names = set(re.findall(r"(?<![\w.])[A-Za-z_]\w*", code))
    return not names & _INPUTS


def _definition_code(path: str, seen: set[str]) -> str | None:
    """The file's text and its includes', without comments and quoted names; None if a file is
    missing or loads another by a computed name (``template``), which cannot be followed."""
    if path in seen:
        return ""
    seen.add(path)
    text = read_definition(path)
    if text is None:
        return None
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    parts = [re.sub(r"'[^']*'|\"[^\"]*\"", "", code)]
    if re.search(r"\btemplate(?:_nofail)?\s", parts[0]):
        return None
    for included in re.findall(r'include\s+"([^"]+)"', code):
        found = _definition_code(included, seen)
        if found is None:
            return None
        parts.append(found)
    return "\n".join(parts)
