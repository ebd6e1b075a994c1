"""Storage change notifications: a store's own event feed, used only as a wake-up.

Listing stays the source of truth for change detection (`headrace.storage.watch`). A notifier
tells the watcher "something changed in this bucket" so that it re-lists that bucket at once
instead of at its next poll. Events that are lost, duplicated or late change nothing but the
latency: the listing finds every object, and the watcher's de-duplication (with the ledger
across restarts) reports each version once.

One backend per store kind, picked by the setting's URL scheme (`open_notifier`):
`seaweedfs://filer-host:port[/buckets-folder]` (`notifications_seaweedfs`, the filer's
metadata log through `weed filer.meta.tail`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from urllib.parse import urlparse

from headrace.errors import ConfigError

#: Called with a bucket's name when something in it may have changed ("": any bucket may have).
OnChange = Callable[[str], None]

#: What a notifier's child process runs first (for example: die with the coordinator).
ChildSetup = Callable[[], None]


class ChangeNotifier(ABC):
    """A feed of "this bucket changed" wake-ups for an object store's root."""

    @abstractmethod
    def start(self, on_change: OnChange) -> None:
        """Start delivering wake-ups; returns at once. `on_change` runs on the notifier's thread
        and must return quickly. Each (re)connection also wakes every bucket once, since
        whatever happened while the feed was down is not announced."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering; safe to call more than once."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """True while the feed is connected."""


def open_notifier(
    url: str, store_root: str, *, child_setup: ChildSetup | None = None
) -> ChangeNotifier:
    """The notifier the setting `storage_notifications` names, for the store rooted at
    `store_root` (the fsspec root of `storage`, for example `my-root` for `s3://my-root`)."""
    scheme = urlparse(url).scheme
    if scheme == "seaweedfs":
        from headrace.storage.notifications_seaweedfs import SeaweedNotifier

        return SeaweedNotifier.from_url(url, store_root, child_setup=child_setup)
    raise ConfigError(
        "setting 'storage_notifications'",
        f"{url!r} names no notification source headrace knows",
        "use seaweedfs://FILER_HOST:PORT (the SeaweedFS filer behind the S3 gateway), or leave"
        " it empty to detect changes by listing only",
    )
