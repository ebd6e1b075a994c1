"""Checking an S3 request's SigV4 signature (Authorization header or presigned query), for
the few requests the front answers itself rather than forwarding to rclone, which checks
all the others. The algorithm is AWS's: a canonical request, a string to sign over its hash,
an HMAC chain from the secret down to the request's date, region and service."""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"
#: how far a header-signed request's X-Amz-Date may be from now (S3's own tolerance)
SKEW = timedelta(minutes=15)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_query(raw_query: str, skip: str | None) -> str:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = urllib.parse.unquote(name), urllib.parse.unquote(value)
        if name == skip:
            continue
        quote = urllib.parse.quote
        pairs.append((quote(name, safe=_UNRESERVED), quote(value, safe=_UNRESERVED)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _fields(authorization: str) -> dict[str, str]:
    _, _, rest = authorization.partition(" ")
    out = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        out[name] = value
    return out


def check(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    access_key_id: str,
    secret_access_key: str,
) -> tuple[str, str] | None:
    """None when the request is signed with these keys, else (S3 error code, message).

    `raw_path` is the path and query as sent; `headers` a case-insensitive mapping."""
    path, _, raw_query = raw_path.partition("?")
    query = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
    authorization = headers.get("Authorization", "")
    if authorization.startswith(ALGORITHM + " "):
        fields = _fields(authorization)
        credential, signed, given = (
            fields.get("Credential", ""),
            fields.get("SignedHeaders", ""),
            fields.get("Signature", ""),
        )
        amz_date = headers.get("X-Amz-Date", "")
        payload = headers.get("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")
        canonical_query = _canonical_query(raw_query, None)
    elif query.get("X-Amz-Algorithm") == [ALGORITHM]:
        credential = query.get("X-Amz-Credential", [""])[0]
        signed = query.get("X-Amz-SignedHeaders", [""])[0]
        given = query.get("X-Amz-Signature", [""])[0]
        amz_date = query.get("X-Amz-Date", [""])[0]
        payload = "UNSIGNED-PAYLOAD"
        canonical_query = _canonical_query(raw_query, "X-Amz-Signature")
    else:
        return "AccessDenied", "the request is not signed (SigV4)"
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "AccessDenied", "X-Amz-Date is missing or not a date"
    now = datetime.now(UTC)
    if "X-Amz-Expires" in query:
        expires = query["X-Amz-Expires"][0]
        if not expires.isdigit() or now > signed_at + timedelta(seconds=int(expires)):
            return "AccessDenied", "Request has expired"
    elif abs(now - signed_at) > SKEW:
        return "RequestTimeTooSkewed", "the request time is too far from the server's"
    key_id, _, scope = credential.partition("/")
    if key_id != access_key_id:
        return "InvalidAccessKeyId", "the access key ID does not exist in our records"
    date, region, service, terminal = ([*scope.split("/"), "", "", "", ""])[:4]
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed.split(";")
    )
    canonical = "\n".join((method, path, canonical_query, canonical_headers, signed, payload))
    to_sign = "\n".join(
        (ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, terminal):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        return "SignatureDoesNotMatch", "the request signature does not match"
    return None
