"""What the SAM-style path costs a replica per request, next to the plain JSON route: the CPU
time of answering one request frame, measured in one process, the two routes alternated in
blocks (so that the machine's other load weighs on both alike), and each step of the SAM
path timed alone.

The routes are examples/digits_api's, with the anchor's model (SVC(gamma=0.001, C=10) on the
digits) and the anchor's body (a JSON list of 64 floats):

- plain: POST /predict_one, payload="json": the body is parsed and the answer encoded by the
  replica; the handler predicts;
- SAM: POST /classify_digit, the SAM handler unchanged: the replica builds an API Gateway v1
  proxy event and maps the proxy response back; the handler parses the body, predicts and
  encodes its answer.

Both do one predict call on the same features; what differs is the event, the context, and the
response mapping. Wall-clock throughput of the same two routes under wrk is in serving.py.

Usage: python benchmarks/serving_sam_path.py [BLOCKS=20] [PER_BLOCK=500]
Prints JSON lines and a summary: µs per request for each route (median over blocks) and the
SAM/plain ratio of the CPU time per request (1.0 = no overhead).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from serving import POST_LUA, headrace_project

from headrace.app import load_app
from headrace.config import load_settings
from headrace.serving import protocol
from headrace.serving.apigateway import proxy_response, rest_event
from headrace.serving.replica import Replica
from headrace.serving.routes import RouteTable
from headrace.serving.server import ModelBinding, replica_config


def body() -> bytes:
    text = POST_LUA.read_text()
    return text.split('wrk.body = "', 1)[1].split('"', 1)[0].encode()


def main() -> None:
    blocks = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    per_block = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(f"load average before: {os.getloadavg()}", flush=True)
    folder = headrace_project()
    try:
        os.chdir(folder)
        sys.path.insert(0, str(folder))
        settings = load_settings(folder)
        app = load_app(settings)

        def registry():  # type: ignore[no-untyped-def]
            from headrace.models import ModelRegistry

            return ModelRegistry.from_settings(settings)

        binding = ModelBinding(app.routes, registry)
        os.environ.update(binding.generation(binding.target()))
        ordered = RouteTable(app.routes).routes
        config = replica_config(ordered, app.functions, [str(folder)], settings.storage_url)
        replica = Replica(config)
        index = {r.key: i for i, r in enumerate(ordered)}
        data = body()
        headers = [
            b"Host",
            b"127.0.0.1:8303",
            b"Content-Type",
            b"application/json",
            b"Content-Length",
            str(len(data)).encode(),
        ]

        def payload(key: str) -> bytes:
            path = key.split(" ", 1)[1].encode()
            ms = int(time.time() * 1000)
            return protocol.encode_request(
                index[key], b"POST", path, b"", b"127.0.0.1", ms, [], headers, data
            )

        plain, sam = payload("POST /predict_one"), payload("POST /classify_digit")
        answers = {
            name: protocol.decode_response(replica.answer_payloads([p])[0])
            for name, p in (("plain", plain), ("sam", sam))
        }
        assert answers["plain"][0] == answers["sam"][0] == 200, answers
        assert json.loads(answers["plain"][2]) == json.loads(answers["sam"][2]), answers

        def run(p: bytes) -> float:
            answer = replica.answer_payloads
            start = time.process_time()
            for _ in range(per_block):
                answer([p])
            return (time.process_time() - start) / per_block * 1e6

        for _ in range(3):  # warm-up
            run(plain), run(sam)
        rounds: dict[str, list[float]] = {"plain": [], "sam": []}
        for i in range(blocks):
            order = [("plain", plain), ("sam", sam)]
            for name, p in order if i % 2 == 0 else order[::-1]:
                rounds[name].append(run(p))
        # the SAM path's steps alone, on the same request
        route_index, request = protocol.decode_request(sam)
        route = replica.routes[route_index]
        request.route_key, request.resource = route.key, route.resource
        event = rest_event(request)
        result = route.handler(event, replica.context(route))
        steps = {
            "decode the frame": lambda: protocol.decode_request(sam),
            "build the v1 event": lambda: rest_event(request),
            "the Lambda context": lambda: replica.context(route).cleanup(),
            "the handler (json, predict, json)": lambda: route.handler(event, None),
            "map the proxy response": lambda: proxy_response(result, "v1"),
            "encode the answer frame": lambda: protocol.encode_response(
                proxy_response(result, "v1")
            ),
        }
        step_us = {}
        for name, fn in steps.items():
            n = per_block * 4
            start = time.process_time()
            for _ in range(n):
                fn()
            step_us[name] = round((time.process_time() - start) / n * 1e6, 2)
        med = {k: statistics.median(v) for k, v in rounds.items()}
        ratios = sorted(s / p for p, s in zip(rounds["plain"], rounds["sam"], strict=True))
        summary = {
            "blocks": blocks,
            "per_block": per_block,
            "plain_us": round(med["plain"], 1),
            "sam_us": round(med["sam"], 1),
            "sam_over_plain_cpu": round(statistics.median(ratios), 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "steps_us": step_us,
            "load_after": os.getloadavg(),
        }
        print(json.dumps(summary), flush=True)
        print(
            f"\nCPU per request: plain {med['plain']:.0f} µs, SAM {med['sam']:.0f} µs, "
            f"SAM/plain {summary['sam_over_plain_cpu']:.3f} "
            f"(blocks {ratios[0]:.3f}..{ratios[-1]:.3f}); "
            f"throughput SAM/plain ≈ {1 / summary['sam_over_plain_cpu']:.3f}"
        )
        for name, us in step_us.items():
            print(f"  {name:38} {us:8.2f} µs")
    finally:
        shutil.rmtree(Path(folder).parent, ignore_errors=True)


if __name__ == "__main__":
    main()
