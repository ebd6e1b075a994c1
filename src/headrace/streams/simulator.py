"""A local stand-in for a public blockchain "unconfirmed transactions" API.

It serves `GET /unconfirmed-transactions?format=json` shaped like blockchain.info's endpoint:
`{"txs": [...]}` with the newest 100 transactions first. Transactions arrive as a Poisson
process at `rate_per_s`; arrival times and every transaction's content are a pure function of
the seed and the transaction's index, so two simulators with the same seed and clock serve the
same bytes. Consecutive polls overlap (the newest 100 shift by whatever arrived in between), so
a consumer sees duplicates and has to deduplicate, as with the real API.

Faults for tests: `fail_next(n, status=500 | 429, retry_after=...)` and `malformed_next(n)` make
the next n requests fail, and `serve_next(records)` answers the next one with exactly those
records, in the order they were asked for.

The server is the standard library's ThreadingHTTPServer on a background thread rather than
uvicorn: it binds in the constructor (so `port=0` gives a known port before any request), has
no event loop or signal handlers to manage from a non-main thread, and `stop()` is a plain
shutdown and join. It serves a few requests per second to one test or demo; nothing here needs
ASGI.

Run it for a demo: `python -m headrace.streams.simulator --port 8765`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PATH = "/unconfirmed-transactions"
WINDOW = 100  # how many of the newest transactions one response holds, like the real API

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_TRUNCATED_BODY = b'{"txs": [{"hash": "0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1e'


class _Fault:
    __slots__ = ("body", "retry_after", "status")

    def __init__(
        self, status: int | None, retry_after: float | str | None, body: bytes | None = None
    ) -> None:
        self.status = status  # None: a malformed 200 body
        self.retry_after = retry_after
        self.body = body  # a 200 with this body instead of the window


def make_transaction(seed: int, index: int, arrived_at: float) -> dict[str, Any]:
    """Transaction `index` of the stream seeded by `seed`; the same inputs give the same dict.

    Sizes and fee rates are lognormal (median about 10 sat/vB, a long tail of urgent payers),
    inputs and outputs follow the usual mix of one-to-three inputs and two outputs (payment and
    change), and the outputs add up to the inputs less the fee.
    """
    rng = random.Random(f"headrace-simulator/{seed}/{index}")
    vin = min(1 + int(rng.expovariate(1.2)), 20)
    vout = rng.choices((1, 2, 3, 4, 8), weights=(20, 62, 10, 5, 3))[0]
    size = round((12 + 105 * vin + 34 * vout) * rng.lognormvariate(0.0, 0.25))
    witness = round(size * rng.uniform(0.25, 0.6))
    weight = 4 * size - 3 * witness
    fee_rate = rng.lognormvariate(math.log(10.0), 1.0)  # sat/vB
    fee = max(weight // 4, round(fee_rate * weight / 4))

    in_values = [max(546, round(rng.lognormvariate(math.log(1_000_000), 2.0))) for _ in range(vin)]
    spendable = sum(in_values) - fee
    if spendable < 546 * vout:  # dust inputs: top up the first one so every output is spendable
        in_values[0] += 546 * vout - spendable
        spendable = 546 * vout
    cuts = sorted(rng.random() for _ in range(vout - 1))
    shares = [b - a for a, b in zip([0.0, *cuts], [*cuts, 1.0], strict=True)]
    out_values = [546 + int((spendable - 546 * vout) * share) for share in shares]
    out_values[-1] += spendable - sum(out_values)  # rounding remainder goes to the change output

    def address() -> str:
        return "bc1q" + "".join(rng.choices(_BECH32, k=38))

    return {
        "hash": hashlib.sha256(f"{seed}:{index}".encode()).hexdigest(),
        "ver": 2,
        "vin_sz": vin,
        "vout_sz": vout,
        "size": size,
        "weight": weight,
        "fee": fee,
        "relayed_by": "0.0.0.0",
        "lock_time": 0,
        "tx_index": index,
        "double_spend": False,
        "time": int(arrived_at),
        "block_index": None,
        "block_height": None,
        "inputs": [
            {"sequence": 4294967293, "prev_out": {"value": v, "addr": address(), "type": 0}}
            for v in in_values
        ],
        "out": [{"value": v, "addr": address(), "type": 0, "spent": False} for v in out_values],
    }


class Simulator:
    """An HTTP server on 127.0.0.1 serving a seeded stream of unconfirmed transactions.

    The server starts in the constructor; use it as a context manager or call `stop()`.
    `clock` (default `time.time`) sets when transactions arrive; a test can pass its own.
    """

    def __init__(
        self,
        rate_per_s: float = 5.0,
        seed: int = 0,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
        self.rate_per_s = float(rate_per_s)
        self.seed = int(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: collections.deque[_Fault] = collections.deque()
        #: (time.monotonic() when the request arrived, HTTP status sent) for every request.
        self.request_log: list[tuple[float, int]] = []

        # Start the arrival process early enough that about a full window is already waiting.
        self._arrivals = random.Random(f"headrace-simulator/{self.seed}/arrivals")
        self._next_index = 0
        self._next_arrival = clock() - WINDOW / self.rate_per_s
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=WINDOW)

        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"headrace-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    # ---------------------------------------------------------------- public API

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The unconfirmed-transactions endpoint, with `?format=json` like the real one."""
        return f"{self.base_url}{PATH}?format=json"

    @property
    def requests(self) -> int:
        """How many requests the server has answered (faulted ones included)."""
        with self._lock:
            return len(self.request_log)

    def fail_next(self, n: int, status: int = 500, retry_after: float | str | None = None) -> None:
        """Answer the next `n` requests with `status` (and a Retry-After header if given)."""
        if status < 400:
            raise ValueError(f"fail_next needs an error status (4xx/5xx), got {status}")
        with self._lock:
            self._faults.extend(_Fault(status, retry_after) for _ in range(n))

    def malformed_next(self, n: int) -> None:
        """Answer the next `n` requests with 200 and a truncated JSON body."""
        with self._lock:
            self._faults.extend(_Fault(None, None) for _ in range(n))

    def serve_next(self, records: list[Any]) -> None:
        """Answer the next request with 200 and `{"txs": records}` exactly (records a test
        wrote: a bad id, a field only one record has, a value of the wrong kind)."""
        with self._lock:
            self._faults.append(_Fault(200, None, body=json.dumps({"txs": records}).encode()))

    def transactions(self) -> list[dict[str, Any]]:
        """The newest (up to) 100 transactions as of now, newest first, as the endpoint serves."""
        with self._lock:
            return self._window()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Simulator(url={self.url!r}, rate_per_s={self.rate_per_s}, seed={self.seed})"

    # ---------------------------------------------------------------- internals

    def _window(self) -> list[dict[str, Any]]:
        now = self._clock()
        while self._next_arrival <= now:
            tx = make_transaction(self.seed, self._next_index, self._next_arrival)
            self._recent.append(tx)
            self._next_index += 1
            self._next_arrival += self._arrivals.expovariate(self.rate_per_s)
        return list(reversed(self._recent))

    def _respond(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if urlsplit(path).path.rstrip("/") != PATH:
                return 404, {}, b'{"error": "not found"}'
            fault = self._faults.popleft() if self._faults else None
            if fault is None:
                return 200, {}, json.dumps({"txs": self._window()}).encode()
        if fault.status is None:
            return 200, {}, _TRUNCATED_BODY
        if fault.body is not None:
            return 200, {}, fault.body
        headers = {}
        if fault.retry_after is not None:
            value = fault.retry_after
            headers["Retry-After"] = (
                str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            )
        body = json.dumps({"error": f"simulated {fault.status}"}).encode()
        return fault.status, headers, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a polling client expects
            timeout = 5  # idle keep-alive connections end, so their threads do too

            def do_GET(self) -> None:
                arrived = time.monotonic()
                status, headers, body = simulator._respond(self.path)
                with simulator._lock:
                    simulator.request_log.append((arrived, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a poller hitting it 5 times a second would drown the test output

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m headrace.streams.simulator",
        description="Serve simulated unconfirmed blockchain transactions on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=5.0, help="transactions per second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with Simulator(rate_per_s=args.rate, seed=args.seed, port=args.port) as sim:
        print(f"serving {sim.url} ({args.rate:g} tx/s, seed {args.seed}); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
