"""DynamoDB attribute values: conversion from and to plain Python, validation, ordering.

Items are kept in attribute-value form (`{"S": "x"}`, `{"N": "1.5"}`, `{"B": "<base64>"}`…)
everywhere inside this package, because that form keeps what plain Python loses: a number set
is not a list, `{"N": "1.50"}` and `{"N": "1.5"}` are equal, binary is not a string.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import Any

from headrace.tables.errors import TableValidationError

__all__ = [
    "av_equal",
    "compare",
    "encode_key",
    "from_attribute_values",
    "is_attribute_value_item",
    "to_attribute_values",
]

AVItem = dict[str, dict[str, Any]]

TYPES = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})

# DynamoDB numbers: 38 significant digits, magnitude between 1e-130 and 1e126.
NUMBER_CONTEXT = Context(prec=38, traps=[Inexact, Rounded, InvalidOperation])
# the default context (28 digits) would round while normalizing; this one never does
_WIDE = Context(prec=1000)
_MIN_EXP, _MAX_EXP = -130, 125


def _bad(reason: str, fix: str | None = None) -> TableValidationError:
    return TableValidationError("item", reason, fix)


# -- numbers -----------------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal:
    """A DynamoDB number as a Decimal, rejecting what DynamoDB rejects."""
    if isinstance(value, bool):
        raise _bad(f"{value!r} is a bool, not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{value!r} is not a number DynamoDB can store")
        value = repr(value)  # the shortest text that round-trips, not the binary expansion
    try:
        number = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, TypeError, ValueError):
        raise _bad(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise _bad(f"{value!r} is not a number DynamoDB can store")
    if number.is_zero():
        return Decimal(0)
    try:
        number = NUMBER_CONTEXT.plus(number.normalize(_WIDE))
    except (Inexact, Rounded):
        raise _bad(
            f"{value!r} has more than 38 significant digits", "round it before storing"
        ) from None
    adjusted = number.adjusted()
    if adjusted < _MIN_EXP or adjusted > _MAX_EXP:
        raise _bad(f"{value!r} is out of DynamoDB's number range (1e-130 to 1e126)")
    return number


def number_text(value: Any) -> str:
    """The canonical `N` text: no exponent when short, trailing zeros dropped."""
    number = to_decimal(value)
    if number.is_zero():
        return "0"
    text = format(number.normalize(_WIDE), "f")
    if len(text) > 60:  # keep very large/small magnitudes compact
        text = format(number.normalize(_WIDE), "E")
    return text


# -- plain Python -> attribute values ---------------------------------------------------------


def _set_av(values: set | frozenset) -> dict[str, Any]:
    if not values:
        raise _bad("an empty set cannot be stored", "remove the attribute instead")
    kinds = {_scalar_kind(v) for v in values}
    if len(kinds) != 1 or None in kinds:
        raise _bad(
            f"set {values!r} mixes types or holds something other than strings, numbers, bytes"
        )
    (kind,) = kinds
    if kind == "S":
        return {"SS": sorted(values)}
    if kind == "N":
        return {"NS": sorted({number_text(v) for v in values}, key=Decimal)}
    return {"BS": sorted(base64.b64encode(bytes(v)).decode() for v in values)}


def _scalar_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "S"
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return "N"
    if isinstance(value, bytes | bytearray | memoryview):
        return "B"
    return None


def to_av(value: Any) -> dict[str, Any]:
    """One plain Python value as an attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float | Decimal):
        return {"N": number_text(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"B": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, set | frozenset):
        return _set_av(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _bad(f"map key {k!r} is not a string")
            out[k] = to_av(v)
        return {"M": out}
    if isinstance(value, list | tuple):
        return {"L": [to_av(v) for v in value]}
    raise _bad(
        f"{type(value).__name__} values cannot be stored",
        "use str, numbers, bool, None, bytes, list, dict or set",
    )


def to_attribute_values(item: Mapping[str, Any]) -> AVItem:
    """A plain Python item as DynamoDB attribute values (numbers as `N` strings)."""
    if not isinstance(item, Mapping):
        raise _bad(f"an item must be a dict, not {type(item).__name__}")
    return {str(k): to_av(v) for k, v in item.items()}


# -- attribute values -> plain Python ---------------------------------------------------------


def b64decode(text: Any) -> bytes:
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise _bad(f"{text!r} is not base64 binary") from None


def from_av(av: Mapping[str, Any]) -> Any:
    ((kind, value),) = av.items()
    if kind == "S":
        return value
    if kind == "N":
        return Decimal(value)
    if kind == "B":
        return b64decode(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_av(v) for k, v in value.items()}
    if kind == "L":
        return [from_av(v) for v in value]
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {Decimal(v) for v in value}
    if kind == "BS":
        return {b64decode(v) for v in value}
    raise _bad(f"unknown attribute type {kind!r}")


def from_attribute_values(av: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values as plain Python (numbers as Decimal, sets as set)."""
    return {k: from_av(normalize_av(v)) for k, v in av.items()}


# -- validating attribute-value input ---------------------------------------------------------


def looks_like_av(value: Any) -> bool:
    """True when `value` has the shape of one attribute value (`{"S": "x"}`, `{"M": {…}}`)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    if kind not in TYPES:
        return False
    if kind in ("S",):
        return isinstance(inner, str)
    if kind == "N":
        return isinstance(inner, str | int | Decimal) and not isinstance(inner, bool)
    if kind == "B":
        return isinstance(inner, str | bytes | bytearray)
    if kind == "BOOL":
        return isinstance(inner, bool)
    if kind == "NULL":
        return inner is True
    if kind == "M":
        return isinstance(inner, Mapping)
    return isinstance(inner, list | tuple | set | frozenset)


def is_attribute_value_item(item: Mapping[str, Any]) -> bool:
    """Whether an item (or an ExpressionAttributeValues dict) is in attribute-value form.

    All-or-nothing: a plain item whose every attribute happens to look like `{"S": …}` is read
    as attribute values, as DynamoDB's own JSON would be; a plain item with any other value is
    read as plain Python.
    """
    return bool(item) and all(looks_like_av(v) for v in item.values())


def normalize_av(av: Any) -> dict[str, Any]:
    """Validate one attribute value from outside and return its canonical form."""
    if not looks_like_av(av):
        raise _bad(f"{av!r} is not a DynamoDB attribute value", 'use e.g. {"S": "text"}')
    ((kind, value),) = av.items()
    if kind in ("S", "BOOL"):
        return {kind: value}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "N":
        return {"N": number_text(value)}
    if kind == "B":
        return {"B": base64.b64encode(b64decode(value)).decode()}
    if kind == "M":
        return {"M": {str(k): normalize_av(v) for k, v in value.items()}}
    if kind == "L":
        return {"L": [normalize_av(v) for v in value]}
    items = list(value)
    if not items:
        raise _bad(f"an empty {kind} cannot be stored", "remove the attribute instead")
    if kind == "SS":
        if not all(isinstance(v, str) for v in items):
            raise _bad(f"SS {items!r} holds non-strings")
        out = sorted(set(items))
    elif kind == "NS":
        out = sorted({number_text(v) for v in items}, key=Decimal)
    else:
        out = sorted({base64.b64encode(b64decode(v)).decode() for v in items})
    if len(out) != len(items):
        raise _bad(f"{kind} {items!r} has duplicate values")
    return {kind: out}


def coerce_item(item: Mapping[str, Any]) -> AVItem:
    """An item given as plain Python or as attribute values, in canonical attribute values."""
    if not isinstance(item, Mapping):
        raise _bad(f"an item must be a dict, not {type(item).__name__}")
    if is_attribute_value_item(item):
        return {str(k): normalize_av(v) for k, v in item.items()}
    return to_attribute_values(item)


# -- comparing --------------------------------------------------------------------------------


def _canonical(av: Mapping[str, Any]) -> Any:
    ((kind, value),) = av.items()
    if kind == "N":
        return ("N", Decimal(value))
    if kind == "NS":
        return ("NS", frozenset(Decimal(v) for v in value))
    if kind in ("SS", "BS"):
        return (kind, frozenset(value))
    if kind == "M":
        return ("M", frozenset((k, _canonical(v)) for k, v in value.items()))
    if kind == "L":
        return ("L", tuple(_canonical(v) for v in value))
    return (kind, value)


def av_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    if a is None or b is None:
        return False
    return _canonical(a) == _canonical(b)


def sort_value(av: Mapping[str, Any]) -> tuple[str, Any] | None:
    """What `<`, `BETWEEN` and friends compare, or None for types that have no order."""
    ((kind, value),) = av.items()
    if kind == "S":
        return ("S", value.encode("utf-8"))  # DynamoDB orders strings by UTF-8 bytes
    if kind == "N":
        return ("N", Decimal(value))
    if kind == "B":
        return ("B", b64decode(value))
    return None


def compare(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> int | None:
    """-1/0/1, or None when the two cannot be ordered (missing, other types, not scalar)."""
    if a is None or b is None:
        return None
    sa, sb = sort_value(a), sort_value(b)
    if sa is None or sb is None or sa[0] != sb[0]:
        return None
    return (sa[1] > sb[1]) - (sa[1] < sb[1])


# -- keys in SQL ------------------------------------------------------------------------------


def encode_number_key(number: Decimal) -> str:
    """Text whose byte order is the numeric order.

    Zero is "1"; positives are "2" + biased exponent + mantissa digits; negatives are "0" +
    complemented exponent + complemented digits + "~", the terminator making -1.2 sort above
    -1.23 (a shorter complemented mantissa would otherwise sort first).
    """
    if number.is_zero():
        return "1"
    sign, digits, _ = number.as_tuple()
    mantissa = "".join(map(str, digits)).rstrip("0")
    exponent = number.adjusted() + 200  # 70..325, always three digits
    if not sign:
        return f"2{exponent:03d}{mantissa}"
    flipped = "".join(str(9 - int(d)) for d in mantissa)
    return f"0{999 - exponent:03d}{flipped}~"


def encode_key(av: Mapping[str, Any]) -> str:
    """A key attribute value as the text stored in the key column (order-preserving)."""
    ((kind, value),) = av.items()
    if kind == "S":
        return value
    if kind == "N":
        return encode_number_key(Decimal(value))
    if kind == "B":
        return b64decode(value).hex()  # hex keeps byte order
    raise _bad(f"a key attribute must be S, N or B, not {kind}")
