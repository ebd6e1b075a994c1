"""Which keys sign requests to the S3 endpoint, and the environment a client needs to reach it.

Keys come from the settings (`s3_access_key_id`, `s3_secret_access_key`). On 127.0.0.1 they
are optional: without them the endpoint accepts any signature, like the metrics endpoint's
missing token, and clients get placeholder keys (the SDKs refuse to send a request without
some). Any other address needs them, since SigV4 is then the only thing keeping others out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headrace.addresses import is_loopback
from headrace.config import Settings
from headrace.errors import ConfigError

#: What clients sign with when the endpoint takes any signature (loopback without keys).
PLACEHOLDER_KEY = "headrace"
_KEY = re.compile(r"^[A-Za-z0-9+/=._~-]{3,128}$")
MIN_SECRET_LENGTH = 16
# the keys handed to the front (headrace.s3api.front), through its environment as to rclone
FRONT_KEY_ID_VARIABLE = "HEADRACE_S3_FRONT_ACCESS_KEY_ID"
FRONT_SECRET_VARIABLE = "HEADRACE_S3_FRONT_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class S3Keys:
    access_key_id: str
    secret_access_key: str
    verified: bool
    """True when the endpoint checks signatures against these keys."""


def keys_from_settings(settings: Settings, host: str) -> S3Keys:
    """The endpoint's keys; ConfigError when they are malformed, or missing off loopback."""
    key, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    if not key and not secret:
        if not is_loopback(host):
            raise ConfigError(
                f"s3 endpoint address {host!r}",
                "listens beyond this machine, and no keys are set to verify signatures with",
                "set s3_access_key_id and s3_secret_access_key (or HEADRACE_S3_ACCESS_KEY_ID "
                "and HEADRACE_S3_SECRET_ACCESS_KEY), or bind 127.0.0.1",
            )
        return S3Keys(PLACEHOLDER_KEY, PLACEHOLDER_KEY, verified=False)
    if not key or not secret:
        missing = "s3_secret_access_key" if key else "s3_access_key_id"
        raise ConfigError(
            "the S3 endpoint's keys", f"{missing} is not set", "set both keys, or neither"
        )
    if not _KEY.match(key):
        raise ConfigError(
            "setting 's3_access_key_id'",
            "must be 3 to 128 letters, digits or +/=._~- (no commas or spaces)",
            "choose another access key id",
        )
    if not _KEY.match(secret) or len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            "setting 's3_secret_access_key'",
            f"must be {MIN_SECRET_LENGTH} to 128 letters, digits or +/=._~- (no commas or spaces)",
            "generate one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(30))'",
        )
    return S3Keys(key, secret, verified=True)


def client_environment(url: str, keys: S3Keys, region: str) -> dict[str, str]:
    """Variables that point boto3, s3fs, pyarrow and the aws CLI at the endpoint at `url`."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": keys.access_key_id,
        "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        # Checksums only where an operation requires them (the SDKs' behaviour before 2025).
        # Sent by default, they reach the server as aws-chunked bodies that pyarrow's AWS SDK
        # streams without a Content-Length, which the front then reads whole before passing
        # them on (rclone refuses them, 411). Clients that ask for a checksum still get one
        # verified; the defaults (when_supported) work too, at that cost.
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }
