"""Fast calls into ecCodes: scalar keys, value arrays, handles from bytes, message offsets.

A field needs ~20 keys, and the public ``eccodes.codes_get_*`` wrappers spend several
microseconds each on type checks and temporary buffers, which adds up to a visible share of the
conversion time over thousands of fields. These helpers call the same C functions through
eccodes' own cffi binding with buffers allocated once per thread; if that binding is not
importable (a different eccodes build), they fall back to the public functions (and the
converter reads files with ecCodes' own reader).
"""

from __future__ import annotations

import ctypes
import math
import threading
from typing import Any

import eccodes
import numpy as np

try:  # the binding eccodes itself uses; not public API, hence the fallback
    from gribapi.bindings import ffi as _ffi
    from gribapi.bindings import lib as _lib
    from gribapi.errors import raise_grib_error as _raise
except ImportError:  # pragma: no cover - depends on the eccodes build
    _ffi = _lib = _raise = None

_buffers = threading.local()
if _ffi is not None:  # C types resolved once: a type given by name is parsed on every call
    _HANDLE = _ffi.typeof("grib_handle*")
    _SIZE = _ffi.typeof("size_t")
    _SIZE_POINTER = _ffi.typeof("size_t*")
    _DOUBLES = _ffi.typeof("double[]")
_NOT_FOUND = getattr(_lib, "GRIB_NOT_FOUND", -10) if _lib is not None else -10
_STRING_SIZE = 1024
_NAN = math.nan


class KeyReader:
    """Typed getters bound to one handle; ``optional_long`` returns None for undefined keys.

    ``long_or_error`` returns the value, or for a failed read a (negative) error code shifted
    below any C long, so that one int tells a value from a failure (used as a cache key).
    """

    __slots__ = ("_double", "_handle", "_id", "_length", "_long", "_longs", "_strings", "_text")

    def __init__(self, handle_id: int) -> None:
        self._id = handle_id
        self._longs: dict[bytes, int] = {}  # raw reads: a handle does not change while read
        self._strings: dict[bytes, str | int] = {}
        if _lib is not None:
            self._handle = _ffi.cast(_HANDLE, handle_id)
            buffers = getattr(_buffers, "value", None)
            if buffers is None:  # once per thread; a reader is used by one thread at a time
                buffers = _buffers.value = (
                    _ffi.new("long*"),
                    _ffi.new("double*"),
                    _ffi.new("char[]", _STRING_SIZE),
                    _ffi.new("size_t*"),
                )
            self._long, self._double, self._text, self._length = buffers

    def long(self, key: str) -> int:
        if _lib is None:
            return eccodes.codes_get_long(self._id, key)
        err = _lib.grib_get_long(self._handle, key.encode(), self._long)
        if err:
            _raise(err)
        return self._long[0]

    def longs(self, keys: tuple[bytes, ...]) -> list[int]:
        """Several long keys in one call (fewer Python layers than one ``long`` each)."""
        if _lib is None:
            return [eccodes.codes_get_long(self._id, k.decode()) for k in keys]
        return self._many(_lib.grib_get_long, self._long, keys)

    def doubles(self, keys: tuple[bytes, ...]) -> list[float]:
        if _lib is None:
            return [eccodes.codes_get_double(self._id, k.decode()) for k in keys]
        return self._many(_lib.grib_get_double, self._double, keys)

    def _many(self, get: Any, out: Any, keys: tuple[bytes, ...]) -> list[Any]:
        handle = self._handle
        values = []
        for key in keys:
            err = get(handle, key, out)
            if err:
                _raise(err)
            values.append(out[0])
        return values

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

    def defined(self, key: bytes) -> bool:
        if _lib is None:
            return bool(eccodes.codes_is_defined(self._id, key.decode()))
        return bool(_lib.grib_is_defined(self._handle, key))

    # -- raw reads for cache keys: (error or value), never raising; ``key`` is bytes
    def long_or_error(self, key: bytes) -> int:
        value = self._longs.get(key)
        if value is None:
            if self._strings.get(key) == _MISSING:  # no such key, whatever the type asked
                return _MISSING
            if _lib is None:
                value = _public_or_error(eccodes.codes_get_long, self._id, key)
            else:
                err = _lib.grib_get_long(self._handle, key, self._long)
                value = _ERROR_BASE + err if err else self._long[0]
            self._longs[key] = value
        return value

    def double_or_error(self, key: bytes) -> float | int:
        if _lib is None:
            return _public_or_error(eccodes.codes_get_double, self._id, key)
        err = _lib.grib_get_double(self._handle, key, self._double)
        return _ERROR_BASE + err if err else self._double[0]

    def string_or_error(self, key: bytes) -> str | int:
        value = self._strings.get(key)
        if value is None:
            if self._longs.get(key) == _MISSING:  # no such key, whatever the type asked
                return _MISSING
            if _lib is None:
                value = _public_or_error(eccodes.codes_get_string, self._id, key)
            else:
                self._length[0] = _STRING_SIZE
                err = _lib.grib_get_string(self._handle, key, self._text, self._length)
                text = _ffi.string(self._text, self._length[0]).decode("latin-1")
                value = _ERROR_BASE + err if err else text
            self._strings[key] = value
        return value

    def long_array_or_error(self, key: bytes) -> tuple[int, ...] | int:
        try:
            return tuple(int(v) for v in eccodes.codes_get_long_array(self._id, key.decode()))
        except eccodes.CodesInternalError as exc:
            return _ERROR_BASE + getattr(exc, "value", -1)


# Below any C long: an error code can never equal a value.
_ERROR_BASE = -(1 << 80)
# grib_get_long and grib_get_string both start with grib_find_accessor: a key that is not found
# as one type is not found as any
_MISSING = _ERROR_BASE + _NOT_FOUND


def _public_or_error(getter, handle: int, key: bytes):  # type: ignore[no-untyped-def]
    try:
        return getter(handle, key.decode())
    except eccodes.CodesInternalError as exc:
        return _ERROR_BASE + getattr(exc, "value", -1)


def decode_values(handle: int) -> np.ndarray:
    """All values as float64, NaN where ecCodes treats a point as missing.

    ``missingValue`` is set to NaN first: GRIB values are never NaN, so NaN marks exactly the
    points ecCodes reports as missing (bitmap, grid_complex missing-value management, entirely
    missing fields); a sentinel such as 9999 would collide with real data.
    """
    if _lib is None:
        eccodes.codes_set_double(handle, "missingValue", _NAN)
        return eccodes.codes_get_double_array(handle, "values")
    pointer = _ffi.cast(_HANDLE, handle)
    _check(_lib.grib_set_double(pointer, b"missingValue", _NAN))
    size = _ffi.new(_SIZE_POINTER)
    _check(_lib.grib_get_size(pointer, b"values", size))
    values = np.empty(size[0], dtype=np.float64)
    _check(
        _lib.grib_get_double_array(
            pointer, b"values", _ffi.from_buffer(_DOUBLES, values, require_writable=True), size
        )
    )
    return values[: size[0]]


def handle_from_message(message: bytes | memoryview) -> int | None:
    """A handle on a copy of ``message`` (one complete GRIB message), or None if refused."""
    if _lib is None:
        try:
            return eccodes.codes_new_from_message(bytes(message))
        except eccodes.CodesInternalError:
            return None
    handle = _lib.grib_handle_new_from_message_copy(
        _ffi.NULL, _ffi.from_buffer(message), len(message)
    )
    if handle == _ffi.NULL:
        return None
    return int(_ffi.cast(_SIZE, handle))


def release(handle: int) -> None:
    if _lib is None:
        eccodes.codes_release(handle)
    else:
        _lib.grib_handle_delete(_ffi.cast(_HANDLE, handle))


def extract_offsets_sizes(path: str) -> list[tuple[int, int]] | None:
    """(offset, length) of each GRIB message by ecCodes' strict scanner; None on any error.

    Must not run while multi-field support is on (ecCodes refuses to count then).
    """
    if _lib is None:
        return None
    offsets = _ffi.new("long int**")
    sizes = _ffi.new("size_t**")
    count = _ffi.new("int*")
    strict = 1
    err = _lib.codes_extract_offsets_sizes_malloc(
        _ffi.NULL, path.encode(), _lib.PRODUCT_GRIB, offsets, sizes, count, strict
    )
    try:
        if err:
            return None
        return [(offsets[0][i], sizes[0][i]) for i in range(count[0])]
    finally:
        for array in (offsets[0], sizes[0]):
            if array != _ffi.NULL:  # calloc'ed by ecCodes; gribapi's wrapper leaks them
                _free(int(_ffi.cast("uintptr_t", array)))


def _check(err: int) -> None:
    if err:
        _raise(err)


try:
    _libc_free = ctypes.CDLL(None).free
    _libc_free.argtypes = [ctypes.c_void_p]
except (OSError, AttributeError, TypeError):  # pragma: no cover - no C library by that name
    _libc_free = None


def _free(address: int) -> None:
    if _libc_free is not None:  # else the two small arrays are left to the process
        _libc_free(address)
