"""Errors of topics and subscriptions, with the names SNS gives the same failures (what a
workflow's `Catch` on an `sns:publish` task matches)."""

from __future__ import annotations

from headrace.errors import HeadraceError


class NotifyError(HeadraceError):
    """A topic, subscription or message is not valid."""

    error_name = "SNS.InvalidParameterException"


class UnknownTopic(NotifyError):
    """No topic of that name is configured."""

    error_name = "SNS.NotFoundException"


class DeliveryFailed(Exception):
    """One delivery attempt failed. Recorded in the ledger and retried; never raised to the
    caller of `publish`."""
