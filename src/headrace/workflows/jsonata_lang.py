"""The JSONata query language of Step Functions (``"QueryLanguage": "JSONata"``).

Expressions are JSONata (evaluated by ``jsonatapy``, a Rust implementation; see
docs/benchmarks.md for why it was chosen) written as ``"{% ... %}"`` strings anywhere in a
field's value: a string that starts with ``{%`` and ends with ``%}`` is an expression, any
other string is literal text. Expressions see:

* ``$states.input`` (the state's raw input), ``$states.result`` (a Task/Map/Parallel result),
  ``$states.errorOutput`` (in a Catch), ``$states.context`` (the context object);
* the workflow variables in scope, as ``$name``;
* AWS's added functions: ``$partition(array, size)``, ``$range(start, end, step)`` (inclusive
  end, as ``States.ArrayRange``), ``$hash(text, algorithm)`` (MD5, SHA-1, SHA-256, SHA-384,
  SHA-512; hex digest), ``$random([seed])``, ``$uuid()`` (version 4) and ``$parse(text)`` (JSON
  text to a value).

Errors, as AWS names them: an expression that does not parse, throws, or returns nothing
(JSONata's *undefined*) where a value is needed fails the state with
``States.QueryEvaluationError``, which Retry and Catch can handle; the cause names the field.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from typing import Any

from headrace.errors import HeadraceError
from headrace.workflows.errors import QUERY_EVALUATION_ERROR, StatesError

# compiled expressions are bound to the thread that compiled them (the library's objects are
# not sendable between threads), so each thread keeps its own cache
_LOCAL = threading.local()
_CACHE_LIMIT = 4096
# AWS stops an expression after 1 s ("Expression evaluation timeout") and on deep recursion
TIMEOUT_MS = 1000
MAX_DEPTH = 500
# longest string $pad builds: a state's whole payload is at most 256 KiB
MAX_STRING = 256 * 1024
_HASHES = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


def is_expression(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("{%")
        and value.endswith("%}")
        and len(value) >= 4
    )


def _body(value: str) -> str:
    return value[2:-2].strip()


def _fail(cause: str) -> StatesError:
    return StatesError(QUERY_EVALUATION_ERROR, cause)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()


def _partition(items: Any, size: Any) -> list:
    if not isinstance(items, list):
        raise ValueError("$partition: the first argument must be an array")
    if not _is_int(size) or size <= 0:
        raise ValueError("$partition: the chunk size must be a positive integer")
    n = int(size)
    return [items[i : i + n] for i in range(0, len(items), n)]


def _range(start: Any, end: Any, step: Any) -> list:
    if not (_is_int(start) and _is_int(end) and _is_int(step)):
        raise ValueError("$range: start, end and step must be integers")
    start, end, step = int(start), int(end), int(step)
    if step == 0:
        raise ValueError("$range: the step must not be 0")
    count = max(0, (end - start) // step + 1)
    if count > 1000:
        raise ValueError(f"$range would return {count} items; the maximum is 1000")
    return [start + i * step for i in range(count)]


def _pad(text: Any, width: Any, char: Any = None) -> Any:
    """JSONata's $pad, refusing a width whose result could never fit in a payload: the
    library would build the whole string first, past the 1 s limit and any memory."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("$pad: the first argument must be a string")
    if not _is_int(width):
        raise ValueError("$pad: the width must be an integer")
    if abs(width) > MAX_STRING:
        raise ValueError(
            f"$pad: a width of {int(width)} is over the maximum of {MAX_STRING} characters"
        )
    if char is None or char == "":
        char = " "
    if not isinstance(char, str):
        raise ValueError("$pad: the padding character must be a string")
    missing = abs(int(width)) - len(text)
    if missing <= 0:
        return text
    padding = (char * (missing // len(char) + 1))[:missing]
    return text + padding if width > 0 else padding + text


def _hash(value: Any, algorithm: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("$hash: the value to hash must be a string")
    name = _HASHES.get(algorithm) if isinstance(algorithm, str) else None
    if name is None:
        raise ValueError(f"$hash: the algorithm must be one of {', '.join(_HASHES)}")
    return hashlib.new(name, value.encode()).hexdigest()


def _random(seed: Any = None) -> float:
    if seed is None:
        return random.random()
    if not _is_int(seed):
        raise ValueError("$random: the seed must be an integer")
    return random.Random(int(seed)).random()


def _uuid() -> str:
    return str(uuid.uuid4())


def _parse(text: Any) -> Any:
    if not isinstance(text, str):
        raise ValueError("$parse: the argument must be a JSON string")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"$parse: not valid JSON ({exc})") from None


def _no_eval(*_args: Any) -> Any:
    raise ValueError("$eval is not supported in Step Functions; use $parse for JSON text")


def compile_expression(text: str) -> Any:
    """The compiled expression for ``text`` (an expression body), cached; ValueError if it
    does not parse."""
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = {}
    compiled = cache.get(text)
    if compiled is None:
        try:  # the optional "jsonata" extra, imported when a JSONata state is first met
            import jsonatapy
        except ImportError:
            raise HeadraceError(
                "a JSONata state (QueryLanguage: JSONata)",
                "needs the jsonatapy package, which is not installed",
                "pip install 'headrace[jsonata]'",
            ) from None

        compiled = jsonatapy.compile(text)
        compiled.register("partition", _partition)
        compiled.register("range", _range)
        compiled.register("hash", _hash)
        compiled.register("uuid", _uuid)
        compiled.register("parse", _parse)
        compiled.register_override("random", _random)
        compiled.register_override("pad", _pad)
        compiled.register_override("eval", _no_eval)
        if len(cache) < _CACHE_LIMIT:
            cache[text] = compiled
    return compiled


def delimiter_problem(value: Any) -> str | None:
    """Why a string that opens or closes like an expression is not one (AWS's validation:
    ``{%`` first and ``%}`` last, with no space outside them), or None."""
    if not isinstance(value, str) or is_expression(value):
        return None
    text = value.strip()
    if text.startswith("{%") or text.endswith("%}"):
        return (
            f"{value[:60]!r} is not a JSONata expression: it must start with '{{%' and end "
            "with '%}', with nothing before or after them"
        )
    return None


def syntax_problem(value: str) -> str | None:
    """Why the ``{% %}`` string ``value`` is not a valid JSONata expression, or None."""
    body = _body(value)
    if not body:
        return "the JSONata expression is empty"
    try:
        compile_expression(body)
    except ValueError as exc:
        return f"invalid JSONata expression {body!r}: {exc}"
    except BaseException as exc:  # pyo3's PanicException: see evaluate()
        if type(exc).__name__ != "PanicException":
            raise
        return f"invalid JSONata expression {body!r}: {exc}"
    return None


def _used(bindings: dict[str, Any], body: str) -> dict[str, Any]:
    """The bindings ``body`` can name: the library converts every binding it is given on every
    evaluation, and the context object (with the execution's input) or a large variable would
    cost that each time. JSONata names variables only literally (``$name``), so a binding whose
    name does not occur in the text cannot be read."""
    used = {k: v for k, v in bindings.items() if k != "states" and "$" + k in body}
    if "$states" in body:
        states = bindings["states"]
        if "context" not in body:
            states = {k: v for k, v in states.items() if k != "context"}
        used["states"] = states
    return used


def evaluate(value: str, bindings: dict[str, Any], field: str) -> Any:
    """The value of the ``{% %}`` string ``value``; ``field`` names it in errors."""
    body = _body(value)
    try:
        text = compile_expression(body).evaluate_json_or_none(
            None, _used(bindings, body), timeout=TIMEOUT_MS, max_stack_depth=MAX_DEPTH
        )
    except ValueError as exc:
        raise _fail(
            f"The JSONata expression '{body}' specified for the field '{field}' threw an "
            f"error during evaluation. {exc}"
        ) from None
    except BaseException as exc:
        # a panic inside the Rust library arrives as pyo3's PanicException, which is not an
        # Exception: it must fail the state, never the coordinator's turn
        if type(exc).__name__ != "PanicException":
            raise
        raise _fail(
            f"The JSONata expression '{body}' specified for the field '{field}' could not be "
            f"evaluated: {exc}"
        ) from None
    if text is None:
        raise _fail(
            f"The JSONata expression '{body}' specified for the field '{field}' returned "
            "nothing (undefined)."
        )
    return json.loads(text)


def resolve(template: Any, bindings: dict[str, Any], field: str) -> Any:
    """``template`` with every ``{% %}`` string replaced by its value (Arguments, Output,
    Assign, ItemSelector...)."""
    if isinstance(template, str):
        return evaluate(template, bindings, field) if is_expression(template) else template
    if isinstance(template, dict):
        return {k: resolve(v, bindings, f"{field}/{k}") for k, v in template.items()}
    if isinstance(template, list):
        return [resolve(v, bindings, f"{field}[{i}]") for i, v in enumerate(template)]
    return template


def bindings(
    variables: dict[str, Any],
    context: dict[str, Any],
    state_input: Any,
    **extra: Any,
) -> dict[str, Any]:
    """The variables an expression sees: the workflow's, and ``$states``."""
    states: dict[str, Any] = {"input": state_input, "context": dict(context)}
    for key, value in extra.items():
        states[key] = value
    return {**variables, "states": states}
