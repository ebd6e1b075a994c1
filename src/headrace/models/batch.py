"""`predict_batch`: apply a model to one batch of rows, whatever holds them.

Datasets, Ray's `map_batches` and Spark's pandas UDFs hand a model batches of different kinds;
this takes any of them (pandas DataFrame, Arrow table or record batch, or Ray's dict of numpy
arrays) and gives back the same kind with the prediction added, so one scoring function serves
every engine. No engine is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from headrace.models.errors import ModelError


class PredictionError(ModelError):
    """A batch cannot be scored: missing feature columns, or the model's output does not fit."""


def _is_pandas(batch: Any) -> bool:
    return type(batch).__module__.startswith("pandas") and type(batch).__name__ == "DataFrame"


def _columns(batch: Any) -> list[str]:
    if _is_pandas(batch):
        return [str(c) for c in batch.columns]
    if isinstance(batch, Mapping):
        return [str(c) for c in batch]
    names = getattr(batch, "column_names", None)
    if names is None:
        raise PredictionError(
            f"batch of type {type(batch).__qualname__}",
            "is not a pandas DataFrame, an Arrow table or record batch, or a dict of arrays",
            "convert it to one of those (Dataset.map_batches gives them with batch_format=)",
        )
    return list(names)


def feature_columns(model: Any, batch: Any, features: Sequence[str] | None) -> list[str]:
    """The columns the model reads: `features`, else the names a scikit-learn estimator fitted
    on a DataFrame remembers."""
    if features is None:
        known = getattr(model, "feature_names_in_", None)
        if known is None:
            raise PredictionError(
                f"model of type {type(model).__qualname__}",
                "does not say which columns it reads",
                "pass features=[...] (ModelVersion.features holds the pushed signature's)",
            )
        features = [str(n) for n in known]
    features = list(features)
    present = set(_columns(batch))
    missing = [f for f in features if f not in present]
    if missing:
        shown = ", ".join(sorted(present)[:20]) + (" ..." if len(present) > 20 else "")
        raise PredictionError(
            "batch",
            f"lacks the feature column(s) {', '.join(missing)} (it has: {shown or 'none'})",
            "select or rename the columns before scoring, or pass the right features=[...]",
        )
    return features


def _inputs(model: Any, batch: Any, features: list[str]) -> Any:
    """What the model's method is given: a DataFrame when it was fitted on one (scikit-learn
    checks the names), else a 2-D numpy array."""
    import numpy as np

    wants_frame = getattr(model, "feature_names_in_", None) is not None
    if _is_pandas(batch):
        frame = batch[features]
        return frame if wants_frame else frame.to_numpy()
    if isinstance(batch, Mapping):
        columns = [np.asarray(batch[f]) for f in features]
        if wants_frame:
            import pandas as pd

            return pd.DataFrame(dict(zip(features, columns, strict=True)))
        return np.column_stack(columns) if columns else np.empty((0, 0))
    selected = batch.select(features)
    if wants_frame:
        return selected.to_pandas()
    return np.column_stack(
        [selected.column(i).to_numpy(zero_copy_only=False) for i in range(len(features))]
    )


def _num_rows(batch: Any) -> int:
    if _is_pandas(batch):
        return len(batch)
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values()))) if batch else 0
    return batch.num_rows


def predict_batch(
    model: Any,
    batch: Any,
    *,
    features: Sequence[str] | None = None,
    output: str = "prediction",
    method: str = "predict",
) -> Any:
    """`batch` with `model.<method>(features)` added as the column `output`; a 2-D result (say
    `predict_proba`) becomes the columns `output_0`, `output_1`, ... The batch given is not
    changed; the result is a new batch of the same kind."""
    import numpy as np

    columns = feature_columns(model, batch, features)
    rows = _num_rows(batch)
    call = getattr(model, method, None)
    if not callable(call):
        raise PredictionError(
            f"model of type {type(model).__qualname__}",
            f"has no method {method!r}",
            "pass method= one it has (predict, predict_proba, transform, ...)",
        )
    if rows == 0:  # estimators refuse empty input; an empty batch scores to an empty column
        return _with_columns(batch, {output: np.empty(0, dtype=object)})
    result = np.asarray(call(_inputs(model, batch, columns)))
    if result.ndim == 0 or len(result) != rows:
        raise PredictionError(
            f"{type(model).__qualname__}.{method}",
            f"returned {result.shape[0] if result.ndim else 'a scalar'} value(s) for a batch of"
            f" {rows} rows",
            "score with a method that returns one value (or one row) per input row",
        )
    if result.ndim == 1:
        added = {output: result}
    elif result.ndim == 2:
        added = {f"{output}_{i}": result[:, i] for i in range(result.shape[1])}
    else:
        raise PredictionError(
            f"{type(model).__qualname__}.{method}",
            f"returned an array of {result.ndim} dimensions",
            "score with a method that returns one value or one row of values per input row",
        )
    return _with_columns(batch, added)


def _with_columns(batch: Any, added: dict[str, Any]) -> Any:
    if _is_pandas(batch):
        return batch.assign(**{name: values for name, values in added.items()})
    if isinstance(batch, Mapping):
        return {**batch, **added}
    import pyarrow as pa

    out = batch
    for name, values in added.items():
        array = pa.nulls(0) if len(values) == 0 else pa.array(values)
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, array)
        else:
            out = out.append_column(name, array)
    return out
