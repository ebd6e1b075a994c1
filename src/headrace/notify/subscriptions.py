"""Subscription kinds: webhook (HTTP POST), email (SMTP) and file (one JSON line per message).

Each `deliver(envelope)` either returns (delivered) or raises DeliveryFailed with the reason;
the notifier records it and retries. Network deliveries run under a total deadline: socket
timeouts alone bound each read, not the whole exchange, so a server that trickles one byte at a
time could otherwise hold a delivery forever.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import smtplib
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, ClassVar

from headrace.notify.errors import DeliveryFailed, NotifyError

__all__ = ["Email", "File", "Subscription", "Webhook", "subscription_from_dict"]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@contextmanager
def _deadline(seconds: float, sock: Callable[[], socket.socket | None]) -> Iterator[list[bool]]:
    """Shut the socket down when `seconds` pass, which unblocks any read or write on it."""
    fired = [False]

    def expire() -> None:
        s = sock()
        if s is not None:
            fired[0] = True
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _check_timeout(subject: str, timeout: float) -> None:
    if not (isinstance(timeout, int | float) and 0 < timeout <= 3600):
        raise NotifyError(subject, f"timeout {timeout!r} is not a number of seconds in (0, 3600]")


@dataclass(frozen=True)
class Webhook:
    """POST the SNS-style notification JSON (or, with `raw`, the message itself) to `url`."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    raw: bool = False
    name: str | None = None
    max_attempts: int | None = None

    kind: ClassVar[str] = "webhook"

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotifyError(
                f"webhook {self.url!r}", "is not an http:// or https:// URL with a host"
            )
        _check_timeout(f"webhook {self.url!r}", self.timeout)

    @property
    def id(self) -> str:
        # the readable part leaves out credentials and the query string, which may hold tokens
        parts = urllib.parse.urlsplit(self.url)
        return self.name or f"webhook:{parts.hostname}{parts.path}~{_short_hash(self.url)}"

    def deliver(self, envelope: Mapping[str, Any]) -> None:
        parts = urllib.parse.urlsplit(self.url)
        body = (
            envelope["Message"].encode()
            if self.raw
            else json.dumps(envelope, ensure_ascii=False).encode()
        )
        headers = {
            "Content-Type": "text/plain; charset=utf-8"
            if self.raw
            else "application/json; charset=utf-8",
            "User-Agent": "headrace-notify",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": envelope["MessageId"],
            "x-amz-sns-topic-arn": envelope["TopicArn"],
        }
        if parts.username:
            creds = f"{urllib.parse.unquote(parts.username)}:"
            creds += urllib.parse.unquote(parts.password or "")
            headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        headers.update(self.headers)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        try:
            with _deadline(self.timeout, lambda: conn.sock) as fired:
                try:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    detail = response.read(1024)
                    if fired[0]:
                        # the shutdown can look like a clean end of headers or body: a
                        # response cut by the deadline is not a delivery
                        raise TimeoutError
                except (OSError, http.client.HTTPException) as exc:
                    if fired[0] or isinstance(exc, TimeoutError):
                        raise DeliveryFailed(f"timed out after {self.timeout:g}s") from None
                    raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            text = detail.decode("utf-8", "replace").strip()[:300]
            raise DeliveryFailed(f"HTTP {response.status} {response.reason}: {text}".rstrip(": "))


@dataclass(frozen=True)
class Email:
    """Send the message as a plain-text email over SMTP."""

    host: str
    to: Sequence[str]
    port: int = 25
    sender: str = "headrace@localhost"
    starttls: bool = False
    ssl: bool = False  # SMTP over TLS from the first byte (port 465)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    name: str | None = None
    max_attempts: int | None = None

    kind: ClassVar[str] = "email"

    def __post_init__(self) -> None:
        to = (self.to,) if isinstance(self.to, str) else tuple(self.to)
        object.__setattr__(self, "to", to)
        subject = f"email subscription to {list(to)}"
        if not to or not all(isinstance(a, str) and "@" in a for a in to):
            raise NotifyError(subject, "`to` must be one or more email addresses")
        if self.starttls and self.ssl:
            raise NotifyError(subject, "starttls and ssl exclude each other", "pick one")
        if (self.username is None) != (self.password is None):
            raise NotifyError(subject, "username and password go together")
        _check_timeout(subject, self.timeout)

    @property
    def id(self) -> str:
        return self.name or f"email:{','.join(self.to)}"

    def deliver(self, envelope: Mapping[str, Any]) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = envelope.get("Subject") or f"headrace notification: {envelope['Topic']}"
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="headrace.local")
        msg["X-Headrace-Message-Id"] = envelope["MessageId"]
        msg["X-Headrace-Topic"] = envelope["Topic"]
        msg.set_content(envelope["Message"])
        context = ssl.create_default_context()
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(timeout=self.timeout, context=context)
            if self.ssl
            else smtplib.SMTP(timeout=self.timeout)
        )
        try:
            with _deadline(self.timeout, lambda: getattr(smtp, "sock", None)) as fired:
                try:
                    smtp.connect(self.host, self.port)
                    smtp.ehlo()
                    if self.starttls:
                        smtp.starttls(context=context)
                        smtp.ehlo()
                    if self.username is not None:
                        smtp.login(self.username, self.password or "")
                    refused = smtp.send_message(msg)
                    smtp.quit()
                except (OSError, smtplib.SMTPException) as exc:
                    if fired[0] or isinstance(exc, TimeoutError):
                        raise DeliveryFailed(f"timed out after {self.timeout:g}s") from None
                    raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            smtp.close()
        if refused:
            raise DeliveryFailed(f"recipients refused: {refused}")


@dataclass(frozen=True)
class File:
    """Append one JSON line per message to a local file."""

    path: str | os.PathLike[str]
    fsync: bool = True
    name: str | None = None
    max_attempts: int | None = None
    timeout: float = 10.0  # only sizes the delivery lease

    kind: ClassVar[str] = "file"

    @property
    def id(self) -> str:
        return self.name or f"file:{os.fspath(self.path)}"

    def deliver(self, envelope: Mapping[str, Any]) -> None:
        line = (json.dumps(envelope, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND with one write per line: concurrent writers (threads or processes)
            # never interleave within a line on a local file system
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise DeliveryFailed(f"short write to {path} ({written} of {len(line)} bytes)")
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


Subscription = Webhook | Email | File

_KINDS: dict[str, type[Webhook] | type[Email] | type[File]] = {
    "webhook": Webhook,
    "http": Webhook,
    "https": Webhook,
    "email": Email,
    "smtp": Email,
    "file": File,
}


def subscription_from_dict(spec: Mapping[str, Any]) -> Subscription:
    """A subscription from configuration, e.g. `{"kind": "email", "host": …, "to": […]}`."""
    fields = dict(spec)
    kind = str(fields.pop("kind", fields.pop("protocol", ""))).lower()
    if kind not in _KINDS:
        raise NotifyError(
            f"subscription {dict(spec)!r}", f"unknown kind {kind!r}", "use webhook, email or file"
        )
    if "from" in fields:
        fields["sender"] = fields.pop("from")
    if kind in ("http", "https") and "url" not in fields and "endpoint" in fields:
        fields["url"] = fields.pop("endpoint")
    try:
        return _KINDS[kind](**fields)
    except TypeError as exc:
        raise NotifyError(f"{kind} subscription", str(exc)) from None
