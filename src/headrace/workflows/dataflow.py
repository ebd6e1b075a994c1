"""Input and output processing for JSONPath states (AWS "Input and Output Processing").

The order is: ``InputPath`` → ``Parameters`` (the effective input) → the state's work →
``ResultSelector`` → ``ResultPath`` (merged into the *raw* input) → ``OutputPath``.

* ``InputPath``/``OutputPath`` default to ``"$"``; JSON null makes them ``{}``.
* ``ResultPath`` defaults to ``"$"``; JSON null discards the result and keeps the raw input.
* A ``.$`` key in a template (Parameters, ItemSelector, ResultSelector) takes a path or an
  intrinsic function; the ``.$`` is dropped from the output key.
* Map's ``Parameters`` is the legacy name of ``ItemSelector``, so it is applied per item
  (:func:`item_input`), never to the Map state's own input.

Where AWS is silent or its documentation and its service differ:

* A ``.$`` path that matches nothing raises ``States.ParameterPathFailure`` (the documented
  name) with the service's wording as the cause: "The JSONPath '$.x' specified for the field
  'y.$' could not be found in the input '...'". InputPath/OutputPath/ItemsPath that match
  nothing raise ``States.Runtime``, which AWS documents as uncatchable.
* A ``.$`` value that is not a string is ``States.Runtime``; validation rejects it earlier.
* Outputs never share objects with inputs: every function returns fresh data.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from headrace.workflows.errors import PARAMETER_PATH_FAILURE, RUNTIME, StatesError
from headrace.workflows.intrinsics import evaluate_intrinsic, is_intrinsic
from headrace.workflows.paths import (
    PathError,
    UnassignedVariable,
    evaluate_path,
    set_result_path,
)

_MISSING = object()


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)[:1000]


def resolve_template(
    template: Any, data: Any, context: dict | None = None, **intrinsic_opts: Any
) -> Any:
    """Build a payload from a Parameters-style template against ``data``."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if isinstance(key, str) and key.endswith(".$"):
                out[key[:-2]] = _resolve_dynamic(key, value, data, context, intrinsic_opts)
            else:
                out[key] = resolve_template(value, data, context, **intrinsic_opts)
        return out
    if isinstance(template, list):
        return [resolve_template(v, data, context, **intrinsic_opts) for v in template]
    return copy.deepcopy(template)


def _resolve_dynamic(key: str, value: Any, data: Any, context: dict | None, opts: dict) -> Any:
    if not isinstance(value, str):
        raise StatesError(
            RUNTIME, f"The value of the field '{key}' must be a path or an intrinsic function"
        )
    if is_intrinsic(value):
        return evaluate_intrinsic(value, data, context, **opts)
    try:
        return copy.deepcopy(evaluate_path(value, data, context))
    except UnassignedVariable:
        raise
    except PathError:
        source = context if value.startswith("$$") else data
        raise StatesError(
            PARAMETER_PATH_FAILURE,
            f"The JSONPath '{value}' specified for the field '{key}' could not be found "
            f"in the input '{_show(source)}'",
        ) from None


def _apply_path(state: dict, field: str, data: Any, context: dict | None) -> Any:
    path = state.get(field, "$")
    if path is None:
        return {}
    return copy.deepcopy(evaluate_path(path, data, context))


def state_input(state: dict, raw_input: Any, context: dict, **intrinsic_opts: Any) -> Any:
    """The effective input: InputPath, then Parameters (except Map, where it is per item)."""
    effective = _apply_path(state, "InputPath", raw_input, context)
    if "Parameters" in state and state.get("Type") != "Map":
        effective = resolve_template(state["Parameters"], effective, context, **intrinsic_opts)
    return effective


def select_result(state: dict, result: Any, context: dict) -> Any:
    """A Task/Map/Parallel result after ResultSelector (what ``Assign`` sees as ``$``)."""
    if "ResultSelector" in state and state.get("Type") in ("Task", "Map", "Parallel"):
        return resolve_template(state["ResultSelector"], result, context)
    return result


def state_output(
    state: dict,
    raw_input: Any,
    result: Any,
    context: dict,
    *,
    selected: bool = False,
    **intrinsic_opts: Any,
) -> Any:
    """The state output: ResultSelector (Task/Map/Parallel), ResultPath, then OutputPath.

    For Choice, Wait and Succeed, which have no result, pass the effective input as ``result``:
    it becomes the output before OutputPath, as AWS describes for those states.
    """
    kind = state.get("Type")
    if kind in ("Choice", "Wait", "Succeed"):
        combined = copy.deepcopy(result)
    else:
        if not selected and "ResultSelector" in state and kind in ("Task", "Map", "Parallel"):
            result = resolve_template(state["ResultSelector"], result, context, **intrinsic_opts)
        combined = set_result_path(raw_input, state.get("ResultPath", "$"), result)
    return _apply_path(state, "OutputPath", combined, context)


def pass_result(state: dict, effective_input: Any) -> Any:
    """A Pass state's result: its ``Result`` if present, else its effective input."""
    if "Result" in state:
        return copy.deepcopy(state["Result"])
    return copy.deepcopy(effective_input)


def catch_output(catcher: dict, raw_input: Any, error: StatesError | dict) -> Any:
    """What a matching catcher passes to its ``Next``: the error object at its ResultPath."""
    error_output = error.to_output() if isinstance(error, StatesError) else error
    return set_result_path(raw_input, catcher.get("ResultPath", "$"), error_output)


def map_items(state: dict, effective_input: Any, context: dict | None = None) -> list:
    """The array a Map state iterates: ItemsPath (default ``$``) of its effective input."""
    path = state.get("ItemsPath", "$")
    items = evaluate_path(path, effective_input, context)
    if not isinstance(items, list):
        raise StatesError(
            RUNTIME,
            f"Invalid path '{path}': the ItemsPath must point to a JSON array, "
            f"got '{_show(items)}'",
        )
    return copy.deepcopy(items)


def item_input(
    state: dict,
    effective_input: Any,
    item: Any,
    index: int,
    context: dict,
    **intrinsic_opts: Any,
) -> Any:
    """One Map iteration's input: ItemSelector (or legacy Parameters) with ``$$.Map.Item``."""
    template = state.get("ItemSelector", state.get("Parameters", _MISSING))
    if template is _MISSING:
        return copy.deepcopy(item)
    item_context = dict(context or {})
    item_context["Map"] = {"Item": {"Index": index, "Value": item}}
    return resolve_template(template, effective_input, item_context, **intrinsic_opts)


def fail_error_cause(
    state: dict, effective_input: Any, context: dict | None = None
) -> tuple[str | None, str | None]:
    """A Fail state's Error and Cause, from the fixed fields or ErrorPath/CausePath."""
    out: list[str | None] = []
    for field in ("Error", "Cause"):
        if field + "Path" in state:
            value = state[field + "Path"]
            result = (
                evaluate_intrinsic(value, effective_input, context)
                if is_intrinsic(value)
                else evaluate_path(value, effective_input, context)
            )
            if not isinstance(result, str):
                raise StatesError(
                    RUNTIME,
                    f"The {field}Path '{value}' must resolve to a string, got '{_show(result)}'",
                )
            out.append(result)
        else:
            out.append(state.get(field))
    return out[0], out[1]
