"""The one guard of the GRIB fast path: the ecCodes it was verified against, by fingerprint.

The fast path (field classes in ``grib_field_class``, concept caches in ``grib_concept_cache``
and ``grib_concept_dirs``, names from definition files in ``grib_concepts``) answers from what
ecCodes answered for an earlier field. That is exact only for the definitions and accessors it
was checked against: ecCodes 2.50.0 (the ``grib`` extra pins ``eccodeslib==2.50.0.*``). It is
on when the library reports that version and the definition files the analysis rests on hash
to the fingerprint recorded here (read where ecCodes reads them: a build with other or extra
definitions differs). Otherwise every key is read from ecCodes on every field: the output is
the same, a conversion is slower. That is logged once per process, and counted per conversion
in ``headrace_grib_fast_path_off_total`` (prometheus_client's default registry).

``HEADRACE_GRIB_FAST_PATH=0`` turns it off on purpose (to compare, or to rule it out).

To verify a new ecCodes: re-check the declarations named in those modules' docs against its
definitions, run the fast-versus-ecCodes tests (``test_grib_fast_path.py``,
``test_grib_field_class.py``, the concept tests of ``test_formats_grib.py``), then record its
version and ``fingerprint()`` here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import cache

import eccodes
from prometheus_client import Counter

from .grib_definitions import definitions_readable, read_definition

VERIFIED_ECCODES = "2.50.0"
# sha256 of the files below as ecCodes 2.50.0 ships them (see fingerprint())
VERIFIED_FINGERPRINT = "151885c0d9eadfd6fbbc270a7eec99822bb20fa9d0b5916e64e64694b9864b0e"
_STATUSES = range(4)  # production statuses of the field classes
FILES = (
    "grib1/section.1.def",
    "grib2/parameters.def",
    *(f"grib2/products_{status}.def" for status in _STATUSES),
    "grib2/section.1.def",
    "grib2/section.2.def",
    "grib2/section.4.def",
    "grib2/sections.def",
    "grib2/stepUnits.def",
    *(
        f"grib2/templates/template.4.{name}.def"
        for name in (
            "0",
            "1",
            "11",
            "8",
            "eps",
            "forecast_time",
            "generating_process",
            "horizontal",
            "parameter",
            "point_in_time",
            "statistical",
        )
    ),
)
# files whose mere presence would change what the analysed ones do
_ABSENT = tuple(f"grib2/post_meta_data.hook.products_{status}.def" for status in _STATUSES)
SWITCH = "HEADRACE_GRIB_FAST_PATH"

log = logging.getLogger(__name__)
OFF_CONVERSIONS = Counter(
    "headrace_grib_fast_path_off",
    "GRIB files converted without the fast path (unverified ecCodes, or switched off)",
    ["reason"],
)


def fast_path_enabled() -> bool:
    """True when the fast path may be used in this process (checked once)."""
    return _off_reason() is None


def count_conversion() -> None:
    """Count one conversion in the metric when it ran without the fast path."""
    reason = _off_reason()
    if reason is not None:
        OFF_CONVERSIONS.labels(reason=reason).inc()


def fingerprint() -> str | None:
    """sha256 of the analysed definition files as the running ecCodes reads them."""
    texts = [read_definition(path) for path in FILES]
    if any(text is None for text in texts):
        return None
    joined = "\0".join(f"{path}\0{text}" for path, text in zip(FILES, texts, strict=True))
    return hashlib.sha256(joined.encode()).hexdigest()


def reset() -> None:
    """Check again (after changing the environment, e.g. in tests)."""
    _off_reason.cache_clear()


@cache
def _off_reason() -> str | None:
    reason, detail = _check()
    if reason is not None:
        log.warning(
            "GRIB fast path off (%s): every key is read from ecCodes on every field; output is "
            "identical, conversions are slower. The fast path was verified against ecCodes %s: "
            "pip install 'headrace[grib]' installs it.",
            detail,
            VERIFIED_ECCODES,
        )
    return reason


def _check() -> tuple[str | None, str]:
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return "switched_off", f"{SWITCH}={os.environ[SWITCH]}"
    version = eccodes.codes_get_api_version()
    if version != VERIFIED_ECCODES:
        return "eccodes_version", f"ecCodes {version} is not the verified {VERIFIED_ECCODES}"
    if not definitions_readable():
        return "definitions", "ecCodes' definitions cannot be read (extra or several paths)"
    if any(read_definition(path) is not None for path in _ABSENT):
        return "definitions", "a post-metadata hook of products 0-3 exists"
    if fingerprint() != VERIFIED_FINGERPRINT:
        return "definitions", "ecCodes' definition files differ from the verified ones"
    return None, ""
