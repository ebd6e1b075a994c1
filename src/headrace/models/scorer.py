"""`ModelScorer`: a registered model as a batch function that can be shipped to workers.

Give it to an actor pool (`map_batches(ModelScorer, fn_constructor_args=...)`), call it inside
a pandas UDF, or use it in a loop. An alias is resolved to a version number where the scorer is
made, so every worker of one job scores with the same version even if the alias moves while it
runs. The model itself loads in the worker, once, on the first batch; pickling the scorer sends
only the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headrace.models.batch import predict_batch
from headrace.models.registry import default_registry


class ModelScorer:
    """Scores batches with `name` at `version`, or at the version `alias` points at now, or the
    latest. Workers find the registry from the project settings (`HEADRACE_*` variables or
    the project folder), as `headrace.models.load` does."""

    def __init__(
        self,
        name: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        features: Sequence[str] | None = None,
        output: str = "prediction",
        method: str = "predict",
    ) -> None:
        found = default_registry().get(name, version, alias=alias)
        self.name = found.name
        self.version = found.version
        self.sha256 = found.sha256
        self.features = list(features) if features is not None else found.features
        self.output = output
        self.method = method
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = default_registry().load(self.name, self.version)
        return self._model

    def __call__(self, batch: Any) -> Any:
        return predict_batch(
            self.model, batch, features=self.features, output=self.output, method=self.method
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None  # workers load it themselves, checked by its SHA-256
        return state

    def __repr__(self) -> str:
        return f"ModelScorer({self.name}:{self.version})"
