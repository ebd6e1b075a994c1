"""Fast reads of scalar GRIB keys.

A field needs ~20 keys, and the public ``eccodes.codes_get_*`` wrappers spend several
microseconds each on type checks and temporary buffers, which adds up to a visible share of the
conversion time over thousands of fields. ``KeyReader`` calls the same C functions through
eccodes' own cffi binding with buffers allocated once per field; if that binding is not
importable (a different eccodes build), it falls back to the public functions.
"""

from __future__ import annotations

import eccodes

try:  # the binding eccodes itself uses; not public API, hence the fallback
    from gribapi.bindings import ffi as _ffi
    from gribapi.bindings import lib as _lib
    from gribapi.errors import raise_grib_error as _raise
except ImportError:  # pragma: no cover - depends on the eccodes build
    _ffi = _lib = _raise = None

_NOT_FOUND = getattr(_lib, "GRIB_NOT_FOUND", -10) if _lib is not None else -10
_STRING_SIZE = 1024


class KeyReader:
    """Typed getters bound to one handle; ``optional_long`` returns None for undefined keys."""

    __slots__ = ("_double", "_handle", "_id", "_length", "_long", "_text")

    def __init__(self, handle_id: int) -> None:
        self._id = handle_id
        if _lib is not None:
            self._handle = _ffi.cast("grib_handle*", handle_id)
            self._long = _ffi.new("long*")
            self._double = _ffi.new("double*")
            self._text = _ffi.new("char[]", _STRING_SIZE)
            self._length = _ffi.new("size_t*")

    def long(self, key: str) -> int:
        if _lib is None:
            return eccodes.codes_get_long(self._id, key)
        err = _lib.grib_get_long(self._handle, key.encode(), self._long)
        if err:
            _raise(err)
        return self._long[0]

    def optional_long(self, key: str) -> int | None:
        if _lib is None:
            try:
                return eccodes.codes_get_long(self._id, key)
            except eccodes.KeyValueNotFoundError:
                return None
        err = _lib.grib_get_long(self._handle, key.encode(), self._long)
        if err == _NOT_FOUND:
            return None
        if err:
            _raise(err)
        return self._long[0]

    def double(self, key: str) -> float:
        if _lib is None:
            return eccodes.codes_get_double(self._id, key)
        err = _lib.grib_get_double(self._handle, key.encode(), self._double)
        if err:
            _raise(err)
        return self._double[0]

    def string(self, key: str) -> str:
        if _lib is None:
            return eccodes.codes_get_string(self._id, key)
        self._length[0] = _STRING_SIZE
        err = _lib.grib_get_string(self._handle, key.encode(), self._text, self._length)
        if err:
            return eccodes.codes_get_string(self._id, key)  # long value, or raises properly
        return _ffi.string(self._text, self._length[0]).decode("ascii", "replace")
