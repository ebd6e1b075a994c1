"""Whether an address a server is told to listen on stays on this machine.

Anything that listens binds 127.0.0.1 by default and needs a token (or keys) anywhere else; this
is the one test of "anywhere else" for the metrics/console port, the app's routes and the S3
endpoint.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (bracketed or not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
