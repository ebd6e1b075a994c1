"""A thin HTTP front before rclone's `serve s3`, for what rclone 1.75.2 gets wrong.

1. Conditional reads. rclone answers a GET or HEAD carrying `If-Match`, `If-Modified-Since` or
   `If-Unmodified-Since` as if they were absent. The front evaluates all four conditions on
   the headers of rclone's own answer (ETag, Last-Modified), in RFC 9110's order, which is
   S3's: `If-Match` (else `If-Unmodified-Since`) failing answers 412, then `If-None-Match`
   (else `If-Modified-Since`) failing answers 304. No extra request: the answer is read, not
   its body, and dropped when a condition fails.
2. Multipart ETags. rclone answers CompleteMultipartUpload with S3's
   `<md5 of the part md5s>-<parts>` but HEAD, GET and listings later give the whole object's
   MD5. The front keeps the completed upload's ETag in an extended attribute of the object's
   file (`user.headrace.etag`, with the size and mtime it was set for) and answers it in
   HEAD, GET and ListObjects(V2). An object replaced later (atomic writes rename a new file
   into place, which drops the attribute; an in-place rewrite changes size or mtime) gets its
   MD5 again, as on S3.
3. Folder markers (keys ending in `/`), which rclone turns into files without the slash:
   answered here, on folders (`folders`), after checking the request's signature (`sigv4`).
4. Uploads without a Content-Length, which rclone refuses (411): read whole, to memory or a
   temp file, and sent on with their length.
5. Checksums of uploads (`x-amz-checksum-*`, in a header or an `aws-chunked` trailer), which
   rclone stores unchecked: the front computes the data's as a PutObject or UploadPart body
   passes (`checksums`), holding its last piece back until it matched. A mismatch cuts the
   body short, so rclone drops the upload, and is answered 400 BadDigest; a match is
   answered with the checksum, as S3 does. A part with a checksum is read whole and checked
   before it goes on: rclone fails a whole multipart upload on one part cut short.

Everything else passes through untouched: the request line, headers (Host included, so SigV4
signatures still verify at rclone) and bodies are forwarded as they come, streamed. rclone
listens on 127.0.0.1 only; the front is the endpoint clients see.

    python -m headrace.s3api.front --listen HOST:PORT --upstream URL --root FOLDER
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import os
import re
import signal
import sys
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape, unescape

from aiohttp import (
    ClientError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    TCPConnector,
    web,
)
from multidict import CIMultiDict
from yarl import URL

from headrace.s3api import checksums, folders, sigv4
from headrace.s3api.credentials import FRONT_KEY_ID_VARIABLE, FRONT_SECRET_VARIABLE

ETAG_ATTRIBUTE = "user.headrace.etag"
# how much of a body each side buffers before it stops reading: aiohttp's 64 KiB default
# meant a wakeup of the front per 64 KiB, which on a busy machine made 1 MB PUTs 1.6x slower
_BUFFER = 1 << 22
# a body sent without a length is read whole before it goes on; past this, to a temp file
_SPOOL_MEMORY = 8 << 20
# hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, not to the request;
# `Expect` is answered by the front's own server (SigV4 never signs it)
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Expect",
    )
)
_MARKER = folders.MARKER.encode()
_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_ERROR_ELEMENT = re.compile(rb"<Error>.*?</Error>", re.S)
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)
_ETAG_ELEMENT = re.compile(rb"<ETag>(.*?)</ETag>", re.S)
_COMPLETED_ETAG = re.compile(rb"<ETag>(.*?)</ETag>", re.S)


# -- conditions ---------------------------------------------------------------------------


def _etags(value: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in value.split(",") if t.strip()]


def _matches(value: str, etag: str | None) -> bool:
    tags = _etags(value)
    if "*" in tags:
        return etag is not None
    return etag is not None and etag.strip('"') in tags


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # an unparsable date is ignored, as RFC 9110 says


def evaluate(
    request_headers: CIMultiDict[str] | dict[str, str],
    etag: str | None,
    last_modified: str | None,
) -> tuple[int, str] | None:
    """(412 or 304, the condition that failed) for a GET/HEAD, or None to answer normally."""
    headers = CIMultiDict(request_headers)
    modified = _date(last_modified)
    unmodified_since = _date(headers.get("If-Unmodified-Since"))
    modified_since = _date(headers.get("If-Modified-Since"))
    if "If-Match" in headers:
        if not _matches(headers["If-Match"], etag):
            return 412, "If-Match"
    elif unmodified_since and modified and modified > unmodified_since:
        return 412, "If-Unmodified-Since"
    if "If-None-Match" in headers:
        if _matches(headers["If-None-Match"], etag):
            return 304, "If-None-Match"
    elif modified_since and modified and modified <= modified_since:
        return 304, "If-Modified-Since"
    return None


# -- multipart ETags ----------------------------------------------------------------------


class Etags:
    """Multipart ETags kept on the objects' files under `root` (bucket/key)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, bucket: str, key: str) -> Path | None:
        if not bucket or not key or bucket.startswith("."):
            return None
        path = (self.root / bucket / key).resolve()
        # a key like "../x" must not reach outside its bucket
        if not path.is_relative_to(self.root / bucket):
            return None
        return path

    def remember(self, bucket: str, key: str, etag: str) -> None:
        path = self.path(bucket, key)
        if path is None:
            return
        with contextlib.suppress(OSError):
            st = path.stat()
            value = {"etag": etag.strip('"'), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            os.setxattr(path, ETAG_ATTRIBUTE, json.dumps(value).encode())

    def lookup(self, bucket: str, key: str) -> str | None:
        """The multipart ETag (quoted) kept for this object as it is now, else None."""
        path = self.path(bucket, key)
        if path is None:
            return None
        try:
            raw = os.getxattr(path, ETAG_ATTRIBUTE)
            st = path.stat()
            value = json.loads(raw)
        except (OSError, ValueError):
            return None
        if value.get("size") != st.st_size or value.get("mtime_ns") != st.st_mtime_ns:
            return None  # rewritten in place since
        return f'"{value["etag"]}"'


def _bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


def _relist(body: bytes, bucket: str, etags: Etags, url_encoded: bool) -> bytes:
    """A ListObjects(V2) answer with the kept multipart ETags put in, and every ETag quoted
    as S3 quotes it (rclone 1.75.2 lists them bare)."""

    def one(contents: re.Match[bytes]) -> bytes:
        block = _marker_key(contents.group(0))
        found, listed = _KEY.search(block), _ETAG_ELEMENT.search(block)
        if found is None or listed is None:
            return block
        key = _xml_unescape(found.group(1).decode())
        if url_encoded:
            key = urllib.parse.unquote(key)
        etag = etags.lookup(bucket, key) or _xml_unescape(listed.group(1).decode())
        quoted = escape('"' + etag.strip('"') + '"', {'"': "&quot;"}).encode()
        return block[: listed.start(1)] + quoted + block[listed.end(1) :]

    return _CONTENTS.sub(one, body)


def _marker_key(block: bytes) -> bytes:
    """A listed folder marker's file (`newdir/.headrace-folder`) as its key (`newdir/`)."""
    found = _KEY.search(block)
    if found is None:
        return block
    raw = found.group(1)
    for suffix in (b"/" + _MARKER, b"%2F" + _MARKER):
        if raw.endswith(suffix):
            raw = raw[: -len(_MARKER)]
            return block[: found.start(1)] + raw + block[found.end(1) :]
    return block


def _xml_unescape(text: str) -> str:
    return unescape(text, {"&#34;": '"', "&quot;": '"', "&#39;": "'", "&apos;": "'"})


# -- the server ---------------------------------------------------------------------------


class Front:
    def __init__(self, upstream: str, root: Path, keys: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.root = root.resolve()
        self.etags = Etags(root)
        # (access key ID, secret) to check the requests the front answers itself; None: any
        self.keys = keys
        self.session: ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = ClientSession(
            connector=TCPConnector(limit=0, force_close=False),
            auto_decompress=False,
            timeout=ClientTimeout(total=None, sock_connect=10),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type", "Accept"),
            read_bufsize=_BUFFER,
        )

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        bucket, key = _bucket_key(request.path)
        if key and folders.is_marker_key(key):
            return await self._folder(request, bucket, key)
        resource = f"/{bucket}/{key}"
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        body: object = request.content if request.body_exists else None
        url = URL(self.upstream + request.raw_path, encoded=True)
        verifier = None
        if body is not None and key and _is_upload(request):
            try:
                verifier = checksums.verifier(request.headers)
            except checksums.ChecksumError as e:
                return _error(
                    request, 400, e.code, f"{resource}: {e.message}", resource, bucket, key
                )
        # rclone answers a body without a length 411 (pyarrow's SDK streams checksummed
        # uploads chunked): the front reads it whole, to memory or a temp file, and sends it
        # on with its length. Content-Length is not among the headers such a request signed,
        # so the signature still verifies. A part with a checksum is read whole too: rclone
        # streams a multipart upload's parts into one file, and a part cut short (as a PUT
        # that does not match is) would fail the whole upload, where S3 refuses the part
        # alone and the client may send it again.
        whole = "Content-Length" not in headers or (
            verifier is not None and "partNumber" in request.query
        )
        with contextlib.ExitStack() as cleanup:
            if body is not None and whole:
                try:
                    body, length = await _spool(request.content, cleanup, verifier)
                    if verifier is not None:
                        verifier.finish()
                except checksums.ChecksumError as e:
                    return _refused(request, e, resource, bucket, key)
                headers["Content-Length"] = str(length)
            elif verifier is not None:
                # a PutObject: checked as it passes, its last piece sent only once it
                # matched; rclone drops a PUT cut short
                body = _checked(request.content, verifier)
            try:
                async with self.session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    chunked=None,
                ) as upstream:
                    return await self._answer(request, upstream, verifier)
            except (ClientError, checksums.ChecksumError):
                # a body that did not match was cut short before its end: rclone drops a
                # cut upload, so nothing is stored
                if verifier is None or verifier.refused is None:
                    raise
                return _refused(request, verifier.refused, resource, bucket, key)

    async def _folder(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        """A folder marker (`key/`), answered here: rclone would drop the slash."""
        resource = f"/{bucket}/{key}"
        if self.keys is not None:
            refused = sigv4.check(request.method, request.raw_path, request.headers, *self.keys)
            if refused is not None:
                return _error(request, 403, *refused, resource, bucket, key)
        method = request.method
        try:
            if method == "PUT" and "partNumber" not in request.query:
                if "x-amz-copy-source" in request.headers:
                    raise folders.FolderError(
                        400, "InvalidArgument", _data_refused(key, "a copy of another object")
                    )
                size = await _body_size(request)
                if size:
                    raise folders.FolderError(
                        400, "InvalidArgument", _data_refused(key, f"{size} bytes")
                    )
                await asyncio.to_thread(folders.create, self.root, bucket, key)
                return web.Response(status=200, headers={"ETag": folders.ETAG})
            if method in ("GET", "HEAD"):
                mtime = await asyncio.to_thread(folders.stat, self.root, bucket, key)
                headers = CIMultiDict(
                    {
                        "ETag": folders.ETAG,
                        "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
                        "Content-Type": "application/octet-stream",
                        "Content-Length": "0",
                    }
                )
                if any(c in request.headers for c in _CONDITIONS):
                    failed = evaluate(request.headers, folders.ETAG, headers["Last-Modified"])
                    if failed is not None:
                        return self._failed(*failed, headers, resource, request)
                return web.Response(status=200, headers=headers, body=b"")
            if method == "DELETE" and "uploadId" not in request.query:
                await asyncio.to_thread(folders.delete, self.root, bucket, key)
                return web.Response(status=204)
            raise folders.FolderError(
                400, "InvalidArgument", _data_refused(key, "a multipart upload")
            )
        except folders.FolderError as e:
            return _error(request, e.status, e.code, e.message, resource, bucket, key)

    async def _answer(
        self,
        request: web.Request,
        upstream: ClientResponse,
        verifier: checksums.Verifier | None = None,
    ) -> web.StreamResponse:
        bucket, key = _bucket_key(request.path)
        query = request.query
        method = request.method
        out_headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP
        )
        ok = upstream.status in (200, 206)
        if ok and "Content-Range" in upstream.headers:
            # rclone sends the whole object's stored checksum with a range of it (and 200,
            # not 206), which SDKs validating responses (boto3's default since 1.36) check
            # the range against and reject; S3 sends none with a range
            for name in {k for k in out_headers if k.lower().startswith("x-amz-checksum-")}:
                out_headers.popall(name)
        if ok and verifier is not None and verifier.value is not None:
            # S3 answers PutObject and UploadPart with the checksum it verified; rclone
            # does not (SDKs put UploadPart's in CompleteMultipartUpload)
            out_headers.setdefault(verifier.header, verifier.value)
        if ok and key and method == "POST" and "uploadId" in query:
            # CompleteMultipartUpload: the object is in place, keep the ETag it was given
            data = await upstream.read()
            found = _COMPLETED_ETAG.search(data)
            if found:
                etag = _xml_unescape(found.group(1).decode())
                await asyncio.to_thread(self.etags.remember, bucket, key, etag)
            return self._whole(upstream.status, out_headers, data)
        if ok and key and method in ("GET", "HEAD"):
            kept = await asyncio.to_thread(self.etags.lookup, bucket, key)
            if kept is not None:
                out_headers["ETag"] = kept
            if any(c in request.headers for c in _CONDITIONS):
                failed = evaluate(
                    request.headers, out_headers.get("ETag"), out_headers.get("Last-Modified")
                )
                if failed is not None:
                    return self._failed(*failed, out_headers, f"/{bucket}/{key}", request)
        if ok and bucket and not key and method == "POST" and "delete" in query:
            # DeleteObjects: rclone refuses the folder markers' keys; they are deleted here,
            # the request's signature having been checked by rclone for the whole batch
            data = await upstream.read()
            data = await asyncio.to_thread(self._delete_markers, bucket, data)
            return self._whole(upstream.status, out_headers, data)
        if ok and bucket and not key and method == "GET" and _is_listing(query):
            data = await upstream.read()
            url_encoded = query.get("encoding-type") == "url"
            data = await asyncio.to_thread(_relist, data, bucket, self.etags, url_encoded)
            return self._whole(upstream.status, out_headers, data)
        return await self._stream(request, upstream, out_headers)

    def _delete_markers(self, bucket: str, answer: bytes) -> bytes:
        def one(error: re.Match[bytes]) -> bytes:
            found = _KEY.search(error.group(0))
            if found is None:
                return error.group(0)
            key = _xml_unescape(found.group(1).decode())
            if not folders.is_marker_key(key):
                return error.group(0)
            try:
                folders.delete(self.root, bucket, key)
            except folders.FolderError:
                return error.group(0)
            return b"<Deleted><Key>" + found.group(1) + b"</Key></Deleted>"

        return _ERROR_ELEMENT.sub(one, answer)

    @staticmethod
    def _whole(status: int, headers: CIMultiDict[str], data: bytes) -> web.Response:
        headers.pop("Content-Length", None)
        return web.Response(status=status, headers=headers, body=data)

    @staticmethod
    def _failed(
        status: int,
        condition: str,
        upstream_headers: CIMultiDict[str],
        resource: str,
        request: web.Request,
    ) -> web.Response:
        keep = ("ETag", "Last-Modified", "x-amz-request-id", "Server", "Date")
        headers = CIMultiDict((k, upstream_headers[k]) for k in keep if k in upstream_headers)
        if status == 304 or request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        headers["Content-Type"] = "application/xml"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>'
            "<Message>At least one of the pre-conditions you specified did not hold</Message>"
            f"<Condition>{condition}</Condition><Resource>{escape(resource)}</Resource></Error>"
        )
        return web.Response(status=status, headers=headers, text=body)

    @staticmethod
    async def _stream(
        request: web.Request, upstream: ClientResponse, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        length = upstream.headers.get("Content-Length")
        if length is not None:
            response.content_length = int(length)
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        return response


async def _spool(
    content: web.StreamReader,
    cleanup: contextlib.ExitStack,
    verifier: checksums.Verifier | None = None,
) -> tuple[bytes | BinaryIO, int]:
    """A streamed request body read whole: bytes up to _SPOOL_MEMORY, else a temp file; each
    piece fed to `verifier` as it comes."""
    parts: list[bytes] = []
    size = 0
    spill: BinaryIO | None = None
    async for chunk in content.iter_any():
        size += len(chunk)
        if verifier is not None:
            verifier.feed(chunk)
        if spill is None and size > _SPOOL_MEMORY:
            # closed by the caller's stack, once the body has gone on
            spill = cleanup.enter_context(tempfile.TemporaryFile(prefix="headrace-s3-"))  # noqa: SIM115
            await asyncio.to_thread(spill.writelines, parts)
            parts = []
        if spill is None:
            parts.append(chunk)
        else:
            await asyncio.to_thread(spill.write, chunk)
    if spill is None:
        return b"".join(parts), size
    spill.seek(0)
    return spill, size


async def _checked(content: web.StreamReader, verifier: checksums.Verifier) -> AsyncIterator[bytes]:
    """The body, fed to `verifier` on its way, always one piece behind: the last piece is
    sent only once the checksum matched. When it does not, the verifier keeps why
    (`refused`) and the body ends short of its Content-Length, so rclone drops the upload."""
    held: bytes | None = None
    try:
        async for chunk in content.iter_any():
            verifier.feed(chunk)
            if held is not None:
                yield held
            held = chunk
        verifier.finish()
    except checksums.ChecksumError as e:
        verifier.refused = e
        raise
    if held is not None:
        yield held


def _refused(
    request: web.Request, error: checksums.ChecksumError, resource: str, bucket: str, key: str
) -> web.Response:
    message = f"{resource}: {error.message}; the upload was not stored: send it again"
    return _error(request, 400, error.code, message, resource, bucket, key)


def _is_upload(request: web.Request) -> bool:
    """PutObject or UploadPart: a PUT whose body is the object's (or the part's) data."""
    return request.method == "PUT" and "x-amz-copy-source" not in request.headers


def _data_refused(key: str, what: str) -> str:
    return (
        f"key {key!r} ends in '/': here that is a folder marker, which holds no data "
        f"(got {what}); drop the trailing '/' or put the object under the folder"
    )


async def _body_size(request: web.Request) -> int:
    """How many bytes the request's body holds, decoded (aws-chunked gives its own count);
    a body that says nothing of its size is read, up to one byte past empty."""
    decoded = request.headers.get("x-amz-decoded-content-length")
    if decoded is not None and decoded.isdigit():
        return int(decoded)
    if request.content_length is not None:
        return request.content_length
    return len(await request.content.read(1)) if request.body_exists else 0


def _error(
    request: web.Request, status: int, code: str, message: str, resource: str, bucket: str, key: str
) -> web.Response:
    if request.method == "HEAD":
        return web.Response(status=status)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<BucketName>{escape(bucket)}</BucketName><Key>{escape(key)}</Key>"
        f"<Resource>{escape(resource)}</Resource></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _is_listing(query: Mapping[str, str]) -> bool:
    # a bucket GET with none of the sub-resources that are not object listings
    others = ("uploads", "location", "versioning", "acl", "policy", "cors", "lifecycle", "tagging")
    return not any(name in query for name in others)


def make_app(upstream: str, root: Path, keys: tuple[str, str] | None = None) -> web.Application:
    front = Front(upstream, root, keys)
    # no size limit: bodies are streamed, never read whole (except small XML answers)
    app = web.Application(client_max_size=0)
    app.on_startup.append(front.start)
    app.on_cleanup.append(front.close)
    app.router.add_route("*", "/{tail:.*}", front.handle)
    return app


async def serve(
    host: str, port: int, upstream: str, root: Path, keys: tuple[str, str] | None = None
) -> None:
    app = make_app(upstream, root, keys)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, read_bufsize=_BUFFER)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    # the parent reads this one line to learn the port (port 0: any free one)
    sys.stdout.write(f"listening on http://{shown}:{bound[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m headrace.s3api.front")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="rclone's URL; -: a line of stdin")
    parser.add_argument("--root", required=True, type=Path, help="the bucket folders")
    args = parser.parse_args(argv)
    # the keys come through the environment, as rclone's do: argv is readable by anyone (ps)
    key_id = os.environ.pop(FRONT_KEY_ID_VARIABLE, "")
    secret = os.environ.pop(FRONT_SECRET_VARIABLE, "")
    keys = (key_id, secret) if key_id and secret else None
    upstream = sys.stdin.readline().strip() if args.upstream == "-" else args.upstream
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(args.host, args.port, upstream, args.root, keys))


if __name__ == "__main__":
    main()
