"""The `context` a handler receives: Lambda's attributes plus scratch space and storage."""

from __future__ import annotations

import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace.storage import ObjectStore

_stores: dict[str, Any] = {}


def scratch_path(tmp_root: Path, invocation_id: str, attempt: int) -> Path:
    """The scratch folder of one attempt: the coordinator measures and removes it from outside."""
    return tmp_root / f"{invocation_id}-{attempt}"


def scratch_owner(folder_name: str) -> tuple[str, int] | None:
    """(invocation id, attempt) of a scratch folder's name, None for anything else."""
    invocation_id, _, attempt = folder_name.rpartition("-")
    return (invocation_id, int(attempt)) if invocation_id and attempt.isdigit() else None


class Context:
    """Attributes match AWS Lambda's Python context, so handlers written for Lambda run as-is."""

    def __init__(
        self,
        *,
        function_name: str,
        function_version: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        aws_request_id: str,
        log_stream_name: str,
        deadline: float,
        tmp_root: Path,
        tmp_size_mb: int,
        storage_url: str,
        attempt: int = 1,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self.attempt = attempt
        self.tmp_size_mb = tmp_size_mb
        self._deadline = deadline
        self._tmp_root = tmp_root
        self._storage_url = storage_url

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))

    @cached_property
    def tmp_dir(self) -> Path:
        """A scratch folder for this invocation only; removed when the invocation ends."""
        path = scratch_path(self._tmp_root, self.aws_request_id, self.attempt)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def storage(self) -> ObjectStore:
        """The project's object store (buckets), shared by invocations in this worker."""
        store = _stores.get(self._storage_url)
        if store is None:
            from headrace.storage import ObjectStore

            store = _stores[self._storage_url] = ObjectStore(self._storage_url)
        return store

    def tmp_used_bytes(self) -> int:
        if "tmp_dir" not in self.__dict__:
            return 0
        return sum(p.stat().st_size for p in self.tmp_dir.rglob("*") if p.is_file())

    def cleanup(self) -> None:
        if "tmp_dir" in self.__dict__:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
