"""The trailing checksum of an `aws-chunked` upload (`x-amz-trailer: x-amz-checksum-…`),
checked by the front on bodies it has read whole: rclone 1.75.2 stores such a body without
comparing its trailer with the data. Decoded here: `<hex size>[;chunk-signature=…]\\r\\n`,
the data, `\\r\\n`, repeated up to a zero-size chunk, then `name:value\\r\\n` trailer lines."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from typing import BinaryIO


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


#: the algorithms the standard library computes; others (CRC32C, CRC64NVME) go unchecked
ALGORITHMS: dict[str, Callable[[], object]] = {
    "x-amz-checksum-crc32": _Crc32,
    "x-amz-checksum-sha1": hashlib.sha1,
    "x-amz-checksum-sha256": hashlib.sha256,
}


def mismatch(body: BinaryIO, trailer: str) -> str | None:
    """Why the spooled `aws-chunked` body in `body` does not match its trailing checksum
    named `trailer`, or None (it matches, or the algorithm is not one checked here).
    Leaves `body` at its start."""
    make = ALGORITHMS.get(trailer.strip().lower())
    if make is None:
        return None
    digest = make()
    try:
        while True:
            line = body.readline()
            if not line.endswith(b"\r\n"):
                return "the aws-chunked body ends inside a chunk header"
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                break
            data = body.read(size)
            if len(data) != size or body.read(2) != b"\r\n":
                return "the aws-chunked body ends inside a chunk"
            digest.update(data)  # type: ignore[attr-defined]
        sent = None
        for line in body:
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == trailer.strip().lower():
                sent = value.strip()
    except ValueError:
        return "the aws-chunked body has a malformed chunk header"
    finally:
        body.seek(0)
    if sent is None:
        return f"the trailer {trailer} announced in x-amz-trailer is missing"
    computed = base64.b64encode(digest.digest()).decode()  # type: ignore[attr-defined]
    if sent != computed:
        return f"{trailer} sent {sent}, the data's is {computed}"
    return None
