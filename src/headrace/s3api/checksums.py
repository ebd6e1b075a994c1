"""S3's checksums of uploads (`x-amz-checksum-crc32`, `-crc32c`, `-crc64nvme`, `-sha1`,
`-sha256`), checked by the front on the bodies of PutObject and UploadPart as they pass
through: rclone 1.75.2 stores a body whatever checksum came with it, in a header or in the
trailer of an `aws-chunked` body.

The CRCs the standard library lacks (CRC32C, CRC64/NVME) come from `awscrt`, the AWS common
runtime, which is also what botocore computes them with. It is imported by the first upload
that needs it, not with this module: loading its native library takes about 45 ms, a sixth of
the front's start, which every coordinator pays, while most uploads carry boto3's default
CRC32 or no checksum at all. An `aws-chunked` body is decoded as
it arrives: `<hex size>[;chunk-signature=…]\\r\\n`, the data, `\\r\\n`, repeated up to a
zero-size chunk, then `name:value\\r\\n` trailer lines and an empty line.

Errors are S3's: a malformed or ambiguous checksum header is 400 `InvalidRequest`, a checksum
that does not match the data is 400 `BadDigest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping
from typing import Protocol

_PREFIX = "x-amz-checksum-"
# longest chunk-header or trailer line accepted: a size, a signature and a name, with room
_LINE_LIMIT = 8192


class Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC computed over data given piece by piece, by a function (data, previous) -> int."""

    def __init__(self, function: Callable[[bytes | memoryview, int], int], size: int) -> None:
        self.function, self.size, self.value = function, size, 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = self.function(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self.size, "big")


def _crt(name: str, size: int) -> Callable[[], Digest]:
    def make() -> Digest:
        from awscrt import checksums  # see the module's docstring

        return _Crc(getattr(checksums, name), size)

    return make


#: algorithm (as in the header's name) -> a new digest, and the size of its value in bytes
ALGORITHMS: dict[str, tuple[Callable[[], Digest], int]] = {
    "crc32": (lambda: _Crc(zlib.crc32, 4), 4),
    "crc32c": (_crt("crc32c", 4), 4),
    "crc64nvme": (_crt("crc64nvme", 8), 8),
    "sha1": (hashlib.sha1, 20),
    "sha256": (hashlib.sha256, 32),
}


class ChecksumError(Exception):
    """An upload refused: `code` is S3's error code (InvalidRequest, BadDigest)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _algorithm(header: str) -> str | None:
    name = header.lower()
    if not name.startswith(_PREFIX):
        return None
    algorithm = name.removeprefix(_PREFIX)
    return algorithm if algorithm in ALGORITHMS else None


class _AwsChunked:
    """Decodes an `aws-chunked` body fed piece by piece: its data goes to `sink`, its
    trailer lines are kept in `trailers` (lower-case names)."""

    def __init__(self, sink: Callable[[memoryview], None]) -> None:
        self.sink = sink
        self.trailers: dict[str, str] = {}
        self._state = "size"  # size, data, data-end, trailer, done
        self._left = 0  # bytes of the current chunk's data still to come
        self._line = b""  # the start of a line that has not ended yet

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        at = 0
        while at < len(data):
            if self._state == "data":
                take = min(self._left, len(data) - at)
                self.sink(view[at : at + take])
                at += take
                self._left -= take
                if not self._left:
                    self._state = "data-end"
                continue
            end = data.find(b"\n", at)
            if end < 0:
                self._line += data[at:]
                if len(self._line) > _LINE_LIMIT:
                    raise ChecksumError("InvalidRequest", "an aws-chunked line is too long")
                return
            line, self._line = self._line + data[at : end + 1], b""
            at = end + 1
            self._line_ended(line)

    def _line_ended(self, line: bytes) -> None:
        if not line.endswith(b"\r\n"):
            raise ChecksumError("InvalidRequest", "an aws-chunked line does not end in CRLF")
        line = line[:-2]
        if self._state == "data-end":
            if line:
                raise ChecksumError("InvalidRequest", "an aws-chunked chunk is longer than said")
            self._state = "size"
        elif self._state == "size":
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ChecksumError(
                    "InvalidRequest", "the aws-chunked body has a malformed chunk header"
                ) from None
            self._state, self._left = ("trailer", 0) if size == 0 else ("data", size)
        elif self._state == "trailer":
            if not line:
                self._state = "done"
                return
            name, _, value = line.decode("latin-1").partition(":")
            self.trailers[name.strip().lower()] = value.strip()

    def finish(self) -> None:
        if self._state not in ("trailer", "done") or self._line:
            raise ChecksumError("IncompleteBody", "the aws-chunked body ends inside a chunk")


class Verifier:
    """The checksum an upload came with, and the one of the data that arrived."""

    def __init__(self, algorithm: str, sent: str | None, aws_chunked: bool) -> None:
        self.algorithm = algorithm
        self.header = _PREFIX + algorithm
        self._sent = sent  # None: in the trailer
        self._digest = ALGORITHMS[algorithm][0]()
        self._chunked = _AwsChunked(self._digest.update) if aws_chunked else None
        #: the data's checksum (base64), once `finish` found it equal to the one sent
        self.value: str | None = None
        #: why the body was refused, once it was (set by whoever streams it)
        self.refused: ChecksumError | None = None

    def feed(self, data: bytes) -> None:
        """One more piece of the body as sent (aws-chunked or not)."""
        if self._chunked is None:
            self._digest.update(data)
        else:
            self._chunked.feed(data)

    def finish(self) -> str:
        """The data's checksum (base64); ChecksumError when it is not the one sent."""
        sent = self._sent
        if self._chunked is not None:
            self._chunked.finish()
            if sent is None:
                sent = self._chunked.trailers.get(self.header)
        if sent is None:
            raise ChecksumError(
                "InvalidRequest", f"the trailer {self.header} named in x-amz-trailer is missing"
            )
        computed = base64.b64encode(self._digest.digest()).decode()
        if sent != computed:
            raise ChecksumError(
                "BadDigest",
                f"The {self.algorithm.upper()} you specified in {self.header} ({sent}) did "
                f"not match the calculated checksum ({computed})",
            )
        self.value = computed
        return computed


def verifier(headers: Mapping[str, str]) -> Verifier | None:
    """The check an upload's body needs, from its headers (case-insensitive), or None when it
    carries no checksum. ChecksumError (InvalidRequest) when the headers are malformed or
    name more than one checksum, as S3 refuses them."""
    aws_chunked = "aws-chunked" in headers.get("Content-Encoding", "").lower() or headers.get(
        "x-amz-content-sha256", ""
    ).startswith("STREAMING-")
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    sent = [(name, algorithm) for name in headers if (algorithm := _algorithm(name))]
    if trailer:
        if _algorithm(trailer) is None:
            raise ChecksumError(
                "InvalidRequest",
                f"x-amz-trailer names {trailer!r}, not one of "
                + ", ".join(_PREFIX + a for a in ALGORITHMS),
            )
        if not aws_chunked:
            raise ChecksumError(
                "InvalidRequest", "x-amz-trailer needs an aws-chunked body (Content-Encoding)"
            )
        sent.append((trailer, _algorithm(trailer)))  # type: ignore[arg-type]
    if not sent:
        return None
    if len({name.lower() for name, _ in sent}) > 1:
        raise ChecksumError("InvalidRequest", "Expecting a single x-amz-checksum- header")
    name, algorithm = sent[0]
    if trailer:
        return Verifier(algorithm, None, aws_chunked)
    value = headers[name].strip()
    try:
        size = len(base64.b64decode(value, validate=True))
    except binascii.Error:
        size = -1
    if size != ALGORITHMS[algorithm][1]:
        raise ChecksumError("InvalidRequest", f"Value for {name.lower()} header is invalid.")
    return Verifier(algorithm, value, aws_chunked)
