"""ecCodes' own definition files, read where ecCodes reads them, and their concept entries.

ecCodes 2.50 wheels compile the definitions into a memory file system (MEMFS) inside
``libeccodes_memfs.so``; other builds read a directory. Either way the files read here are the
ones the running ecCodes evaluates. Anything that could make them differ (extra definition
paths, several roots) disables reading, and callers then ask ecCodes on each field.

A concept is a list of entries ``'value' = { key = literal; ... }`` (in its own file, or inline
in a ``.def`` file as ``concept name { ... }``). ``parse_concept`` returns the entries in file
order as (value, set of ``key=literal`` conditions with blanks removed), or None whenever the
text holds something it does not recognise, so that nothing is ever guessed.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

Entries = list[tuple[str, frozenset[str]]]

# 'value' = {...}, "value" = {...} or (numeric concepts such as MTG2Switch) -1 = {...}
_ENTRY = re.compile(r"""(?:'([^'\\]*)'|"([^"\\]*)"|(?<![\w.])(-?[0-9]+))\s*=\s*\{([^}]*)\}""")


def read_definition(path: str) -> str | None:
    """Text of the definition file ``path`` (relative to the definitions root), or None."""
    reader = _reader()
    return None if reader is None else reader(path)


def definitions_readable() -> bool:
    return _reader() is not None


def parse_concept(text: str) -> Entries | None:
    """Entries of a concept file: (value, set of conditions), in file order."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    body = "\n".join(lines)
    entries = []
    for match in _ENTRY.finditer(body):
        if "#" in match[4]:
            return None  # an inline comment: do not guess how it parses
        value = next(v for v in match.groups()[:3] if v is not None)
        conditions = frozenset("".join(c.split()) for c in match[4].split(";") if c.strip())
        entries.append((value, conditions))
    # every entry must have been recognised: a value with quotes or braces is not guessed at
    if body.count("{") != len(entries):
        return None
    return entries


def parse_inline_concept(text: str, declaration: str) -> Entries | None:
    """Entries of the block ``declaration { ... }`` of a .def file (exactly one such block)."""
    starts = [m.end() for m in re.finditer(re.escape(declaration) + r"\s*\{", text)]
    if len(starts) != 1:
        return None
    depth, position = 1, starts[0]
    while depth and position < len(text):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        position += 1
    if depth:
        return None
    return parse_concept(text[starts[0] : position - 1])


@cache
def _reader() -> Callable[[str], str | None] | None:
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


def _memfs_reader(root: str) -> Callable[[str], str | None] | None:
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
