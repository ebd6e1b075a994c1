"""The frames between the HTTP front and its replicas, over one Unix socket per replica.

A frame is a 9-byte header — payload length (u32), request id (u32), kind (u8) — then the
payload. Requests carry their fields NUL-separated (no HTTP field holds a NUL) and the body
as is; responses carry the status, headers NUL-separated, and the body. No JSON on the front's
side: building events and encoding answers is the replicas' work, so the one front process
only parses HTTP and moves bytes.
"""

from __future__ import annotations

import struct
from urllib.parse import unquote

from headrace.serving.apigateway import Request, Response

HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size
_META = struct.Struct("<I")
_STATUS = struct.Struct("<HI")

REQUEST, RESPONSE, PING, PONG, READY = 1, 2, 3, 4, 5
#: A replica is about to run this request: the ones it has not started when it dies or hangs
#: are sent to another replica instead of failing. It leaves with the answer before it.
START = 6

#: Largest payload either side accepts; the front's body limit is far below it.
MAX_FRAME = 1 << 30


def frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), request_id, kind) + payload


def encode_request(
    route: int,
    method: bytes,
    path: bytes,
    query: bytes,
    source_ip: bytes,
    time_ms: int,
    params: list[bytes],
    headers: list[bytes],
    body: bytes,
) -> bytes:
    """`params` and `headers` are flat name, value, name, value … lists of bytes."""
    meta = b"\0".join(
        [
            str(route).encode(),
            method,
            path,
            query,
            source_ip,
            str(time_ms).encode(),
            str(len(params)).encode(),
            *params,
            *headers,
        ]
    )
    return _META.pack(len(meta)) + meta + body


def request_route(payload: bytes) -> int:
    """The route index of an encoded request, without decoding the rest."""
    end = payload.index(b"\0", _META.size)
    return int(payload[_META.size : end])


def decode_request(payload: bytes) -> tuple[int, Request]:
    (size,) = _META.unpack_from(payload)
    fields = payload[4 : 4 + size].decode("latin-1").split("\0")
    body = payload[4 + size :]
    route, method, path, query, ip, time_ms, nparams = fields[:7]
    n = int(nparams)
    rest = fields[7:]
    # path parameters reach handlers decoded, as API Gateway hands them over
    params = {k: unquote(v) for k, v in zip(rest[0:n:2], rest[1:n:2], strict=True)}
    heads = rest[n:]
    headers = list(zip(heads[0::2], heads[1::2], strict=True))
    request = Request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        source_ip=ip,
        params=params,
        time_ms=int(time_ms),
    )
    return int(route), request


def encode_response(response: Response) -> bytes:
    block = "\0".join(f"{k}\0{v}" for k, v in response.headers).encode("latin-1", "replace")
    return _STATUS.pack(response.status, len(block)) + block + response.body


def decode_response(payload: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status, size = _STATUS.unpack_from(payload)
    block = payload[6 : 6 + size]
    parts = block.split(b"\0") if block else []
    return status, list(zip(parts[0::2], parts[1::2], strict=True)), payload[6 + size :]
