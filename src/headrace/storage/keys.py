"""Validation of object keys and bucket names.

Keys become file paths on local stores, so a key that is harmless on S3 ("../x", "a//b", a
1000-byte segment) can escape the bucket folder, alias another key or fail only at write time.
Rejecting those up front, with a message that says what to do, keeps every store kind behaving
the same way and keeps the watcher's view of a folder identical to what `Bucket.list` shows.
"""

from __future__ import annotations

import re
import reprlib
import unicodedata

from headrace.errors import InvalidKey

#: Segments starting with this (any case) are headrace's own: temp files of in-progress writes
#: and state folders. Keys may not use them, so `list` and the watcher can skip them blindly.
RESERVED_PREFIX = ".headrace"

#: S3's limit for a whole key.
MAX_KEY_BYTES = 1024

#: NAME_MAX of Linux and macOS file systems: a longer segment cannot be a local file name.
MAX_SEGMENT_BYTES = 255

_DRIVE = re.compile(r"^[A-Za-z]:([\\/]|$)")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

_KEY_FIX = "use a relative path of '/'-separated names, e.g. 'raw/2024/05/01/file.grib2'"


#: A key in an error shown whole up to this many characters; a longer one (too long is one of
#: the errors) keeps its start and end, which say which key it is, around "...".
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 120


def _key_error(key: object, reason: str, fix: str = _KEY_FIX) -> InvalidKey:
    return InvalidKey(f"object key {_SHOWN.repr(key)}", reason, fix)


def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise InvalidKey.

    The key is returned unchanged: rewriting it (Unicode normalisation, stripping slashes)
    would make a key reported by the watcher differ from the file name it came from, so a
    later `get` of that key would miss the file.
    """
    if not isinstance(key, str):
        raise _key_error(key, f"is a {type(key).__name__}, not a str", "pass the key as a str")
    if not key:
        raise _key_error(key, "is empty", "give the object a name, e.g. 'data.csv'")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        # Undecodable file names reach Python as lone surrogates (surrogateescape).
        raise _key_error(
            key, "is not valid UTF-8", "rename the file so its name is valid UTF-8"
        ) from None
    for char in key:
        if unicodedata.category(char) == "Cc":
            raise _key_error(
                key,
                f"contains the control character {char!r}",
                "remove NUL, newline, tab and other control characters from the key",
            )
    if "\\" in key:
        raise _key_error(key, "contains a backslash", "use '/' to separate the parts of a key")
    if key.startswith("/") or _DRIVE.match(key):
        raise _key_error(
            key,
            "is an absolute path",
            "use a path relative to the bucket, e.g. 'raw/file.csv' instead of '/raw/file.csv'",
        )
    if size > MAX_KEY_BYTES:
        raise _key_error(
            key,
            f"is {size} bytes long in UTF-8, more than the limit of {MAX_KEY_BYTES}",
            "use a shorter key",
        )
    for segment in key.split("/"):
        if not segment:
            raise _key_error(
                key,
                "has an empty segment (a leading, trailing or doubled '/')",
                "remove the extra '/'",
            )
        if segment in (".", ".."):
            raise _key_error(
                key,
                f"has a {segment!r} segment",
                "spell the path out without '.' and '..' segments",
            )
        if segment.lower().startswith(RESERVED_PREFIX):
            raise _key_error(
                key,
                f"has the segment {segment!r}: names starting with {RESERVED_PREFIX!r} are"
                " reserved for headrace's temp files and state",
                f"rename that part so it does not start with {RESERVED_PREFIX!r}",
            )
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _key_error(
                key,
                f"has a segment longer than {MAX_SEGMENT_BYTES} bytes, which no local file"
                " system can store",
                "split the long part with '/' or shorten it",
            )
    return key


def validate_bucket_name(name: str) -> str:
    """Return `name` if it follows S3's bucket naming rules, else raise InvalidKey.

    S3's rules are the strictest of the stores headrace targets, so a name that passes here
    works as a folder name and as a real S3 bucket when a project moves to S3.
    """
    subject = f"bucket name {name!r}"
    fix = (
        "use 3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter"
        " or digit"
    )
    if not isinstance(name, str):
        raise InvalidKey(subject, f"is a {type(name).__name__}, not a str", "pass a str")
    if not 3 <= len(name) <= 63:
        raise InvalidKey(subject, f"is {len(name)} characters long, not 3-63", fix)
    if not _BUCKET.match(name):
        raise InvalidKey(
            subject,
            "may only contain lowercase letters, digits, '-' and '.', and must start and end"
            " with a letter or digit",
            fix,
        )
    if ".." in name:
        raise InvalidKey(subject, "contains '..'", "use a single '.' between parts")
    if _IPV4.match(name):
        raise InvalidKey(subject, "looks like an IP address", "add a letter to the name")
    return name
