"""The errors `headrace.models` raises; each names the model, version or alias, the reason and
the fix."""

from __future__ import annotations

from headrace.errors import HeadraceError


class ModelError(HeadraceError):
    """Base of the model registry's errors."""


class InvalidModel(ModelError):
    """A name, alias, file or argument given to the registry is not usable."""


class ModelNotFound(ModelError):
    """No model, version or alias by that name."""


class ModelInUse(ModelError):
    """The version cannot be deleted: an alias points at it."""


class ChecksumMismatch(ModelError):
    """A model artifact's bytes are not the ones recorded when it was pushed."""
