"""JSONata states against JSONPath ones, and the JSONata libraries against each other.

1. State transitions per second through the durable driver of a running `headrace up` (SQLite
   ledger, 2 workers): 100 executions of a 100-state chain, JSONata (Pass with Output, Choice
   with Condition) against the JSONPath Pass chain of workflow_throughput.py, rounds
   interleaved in the same run.
2. The interpreter alone (no ledger, no coordinator): the same chains folded and decided in
   process, in CPU seconds (time.process_time), which a loaded machine disturbs less than wall
   time.
3. The JSONata libraries on the expressions those states evaluate (and two heavier ones):
   evaluations per second, jsonatapy (the one headrace uses) against jsonata-python, when it
   is installed (`pip install jsonata-python`; not a headrace dependency).

    .venv/bin/python benchmarks/workflow_jsonata.py [--runs 3] [--chains 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_throughput import run

HERE = Path(__file__).resolve().parent

EXPRESSIONS = [
    "$states.input.last >= 0",
    "$count($keys($states.input))",
    '{"k": $states.input.a[1], "s": $sum($states.input.a)}',
    "$map($states.input.a, function($x){ $x * 2 })",
]
STATES = {"input": {"last": 3, "input": {"x": 1}, "a": [1, 2, 3]}, "context": {}}


def per_second(fn, seconds: float = 0.5) -> float:
    fn()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - started)


def libraries() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    import jsonatapy

    for text in EXPRESSIONS:
        compiled = jsonatapy.compile(text)
        out.setdefault(text, {})["jsonatapy"] = per_second(
            lambda c=compiled: c.evaluate_json_or_none(None, {"states": STATES})
        )
    try:
        import jsonata  # jsonata-python
    except ImportError:
        return out
    for text in EXPRESSIONS:
        compiled = jsonata.Jsonata(text)

        def once(c=compiled):
            frame = c.create_frame()
            frame.bind("states", STATES)
            return c.evaluate(None, frame)

        out[text]["jsonata-python"] = per_second(once)
    return out


def interpreter_cpu(machine: dict, executions: int = 50) -> float:
    """Transitions per CPU second of the pure interpreter on ``machine`` (a 100-state chain)."""
    from headrace.workflows.history import Event
    from headrace.workflows.interpreter import Interpreter

    started = time.process_time()
    for n in range(executions):
        interp = Interpreter(machine, {"Id": f"x{n}", "Name": f"x{n}"})
        interp.apply(Event(1, "ExecutionStarted", 0.0, "", {"input": {}}))
        while decisions := interp.decide(0.0):
            for kind, scope, details in decisions:
                interp.apply(Event(interp.length + 1, kind, 0.0, scope, details))
        assert interp.status == "SUCCEEDED", (interp.error, interp.cause)
    return executions * 100 / (time.process_time() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chains", type=int, default=100)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"jsonpath": [], "jsonata": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for kind, machine in (("jsonpath", "chain"), ("jsonata", "chain_jsonata")):
                elapsed, _ = run(machine, Path(tmp) / f"{kind}{i}", executions=args.chains)
                results[kind].append(args.chains * 100 / elapsed)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nState transitions/s through the durable driver, {args.runs} interleaved runs")
    print("| chain | median | min | max |\n|---|---:|---:|---:|")
    for k, v in results.items():
        print(f"| {k} | {med[k]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    print(f"JSONata / JSONPath: {med['jsonata'] / med['jsonpath']:.2f}")
    from flows_app.bench_flows import jsonata_chain, pass_chain

    cpu: dict[str, list[float]] = {"jsonpath": [], "jsonata": []}
    for _ in range(5):
        cpu["jsonpath"].append(interpreter_cpu(pass_chain(100)))
        cpu["jsonata"].append(interpreter_cpu(jsonata_chain(100)))
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print("\nInterpreter alone, transitions per CPU second, 5 interleaved rounds")
    print("| chain | median | min | max |\n|---|---:|---:|---:|")
    for k, v in cpu.items():
        print(f"| {k} | {cmed[k]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    print(f"JSONata / JSONPath: {cmed['jsonata'] / cmed['jsonpath']:.2f}")
    libs = libraries()
    print("\nJSONata evaluations/s\n| expression | jsonatapy | jsonata-python | ratio |")
    print("|---|---:|---:|---:|")
    for text, row in libs.items():
        other = row.get("jsonata-python")
        ratio = f"{row['jsonatapy'] / other:.1f}x" if other else "-"
        shown = f"{other:,.0f}" if other else "-"
        print(f"| `{text}` | {row['jsonatapy']:,.0f} | {shown} | {ratio} |")
    out = HERE / "results" / "workflow_jsonata.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "runs": results,
                "interpreter_cpu": cpu,
                "libraries": libs,
                "date": time.strftime("%F"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
