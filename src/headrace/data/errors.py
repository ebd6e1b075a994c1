"""The errors a Dataset raises: each names the dataset operation or file, the reason and the fix."""

from __future__ import annotations

from headrace.errors import HeadraceError


class DatasetError(HeadraceError):
    """A dataset cannot be read, transformed or written as asked."""


class UserFunctionError(DatasetError):
    """A function given to map_batches, add_column, map, flat_map or filter raised.

    `operator` names the operation, `where` the input (file and row range), and
    `user_traceback` is the traceback of the function, as printed in the worker."""

    def __init__(
        self,
        subject: str,
        reason: str,
        fix: str | None = None,
        user_traceback: str = "",
    ) -> None:
        self.user_traceback = user_traceback
        super().__init__(subject, reason, fix)
        if user_traceback:
            self.args = (f"{self.args[0]}\n\nthe function's traceback:\n{user_traceback}",)

    def __reduce__(self):
        return (self.__class__, (self.subject, self.reason, self.fix, self.user_traceback))


class WorkerLost(DatasetError):
    """A worker process running dataset operations exited without answering.

    `memory` is True when memory may be why (killed by SIGKILL, the OOM killer's signal, or
    for passing memory=), False when its code says the process ended itself."""

    memory = True
