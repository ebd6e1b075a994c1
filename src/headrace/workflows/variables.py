"""Workflow variables (``Assign``), as AWS's "Passing data between states with variables"
describes them.

* A state's ``Assign`` is evaluated once, when the state finishes, against the state's input
  and result and the variable values it *entered* with: every value is computed before any is
  assigned, so ``{"a.$": "$b", "b.$": "$a"}`` swaps two variables, and the state's own
  ``Output``/``OutputPath`` still sees the old values. The new values are visible from the next
  state on. They are recorded in the state's exit event, so a replayed or resumed execution
  sees exactly the values it had.
* Scopes: the top-level states share one; each Parallel branch and Map iteration has its own,
  which reads the enclosing scopes' variables but never changes them (its assignments end with
  it). A DISTRIBUTED Map iteration, a child execution on AWS, sees no outer variables.
  Validation rejects an inner ``Assign`` to a name an enclosing scope assigns.
* Names: a letter or underscore, then letters, digits or underscores (Unicode allowed), at most
  80 characters; ``states`` is reserved (``$states`` in JSONata).
* Sizes: one variable's value at most 256 KiB, one ``Assign`` at most 256 KiB in all, and the
  variables a state can see (its scope's and the enclosing ones') at most 10 MiB, AWS's limit
  per execution; over any of these the execution fails with ``States.DataLimitExceeded``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from headrace.workflows.errors import DATA_LIMIT_EXCEEDED, StatesError

MAX_NAME = 80
MAX_VALUE_BYTES = 256 * 1024
MAX_ASSIGN_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 10 * 1024 * 1024
RESERVED = frozenset({"states"})

_NAME = re.compile(r"[^\W\d]\w*")


def name_problem(name: Any) -> str | None:
    """Why ``name`` (an ``Assign`` key, ``.$`` removed) cannot be a variable, or None."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (
            f"{name!r} is not a valid variable name: it starts with a letter or underscore "
            "and has only letters, digits and underscores"
        )
    if len(name) > MAX_NAME:
        return f"variable name {name!r} is longer than {MAX_NAME} characters"
    if name in RESERVED:
        return f"${name} is reserved by Step Functions and cannot be assigned"
    return None


def assigned_names(assign: Any) -> list[str]:
    """The variable names an ``Assign`` object sets (JSONPath ``.$`` suffixes removed)."""
    if not isinstance(assign, dict):
        return []
    return [k[:-2] if isinstance(k, str) and k.endswith(".$") else k for k in assign]


# one encoder for every size check: json.dumps with options builds a new encoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def size(value: Any) -> int:
    """The size of ``value`` as compact UTF-8 JSON, as AWS counts its payload quotas."""
    return len(_ENCODER.encode(value).encode())


def check_sizes(state: str, values: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ``States.DataLimitExceeded`` if ``values`` (about to be assigned over ``current``,
    the variables the state sees) break a size limit."""
    total = 0
    for name, value in values.items():
        n = size(value)
        if n > MAX_VALUE_BYTES:
            raise StatesError(
                DATA_LIMIT_EXCEEDED,
                f"State {state!r}: the value assigned to variable '{name}' is {n} bytes, "
                f"over the {MAX_VALUE_BYTES} byte limit of one variable",
            )
        total += n
    if total > MAX_ASSIGN_BYTES:
        raise StatesError(
            DATA_LIMIT_EXCEEDED,
            f"State {state!r}: its Assign sets {total} bytes of variables, over the "
            f"{MAX_ASSIGN_BYTES} byte limit of one Assign",
        )
    merged = dict(current, **values)
    if len(merged) > len(values) and size(merged) > MAX_TOTAL_BYTES:
        raise StatesError(
            DATA_LIMIT_EXCEEDED,
            f"State {state!r}: the variables stored would exceed {MAX_TOTAL_BYTES} bytes",
        )
