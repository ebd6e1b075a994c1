"""A replica: one process that imports the handlers once and answers the front's frames.

Started by the front (`python -m headrace.serving.replica CONFIG FD`). It dies with the front
(the kernel's parent-death signal) and ignores the terminal's and group's signals: the front
decides when it stops, by closing its socket. Requests that arrived together and whose route
opts into batching go to the handler as one list.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.executors import lifetime
from headrace.executors.calls import resolve_target
from headrace.functions.context import Context
from headrace.serving import protocol
from headrace.serving.apigateway import (
    MalformedResponse,
    Request,
    Response,
    error_response,
    http_api_event,
    internal_error,
    new_request_id,
    proxy_response,
    rest_event,
)

logger = logging.getLogger("headrace.serving.replica")
_JSON = [("content-type", "application/json")]
#: Lambda refuses a response payload over 6 MB; a handler that works here would fail there
MAX_RESPONSE = 6 * 1024 * 1024


class Route:
    """One route as a replica runs it."""

    def __init__(self, spec: dict[str, Any], handler: Callable[..., Any]) -> None:
        self.function: str = spec["function"]
        self.payload: str = spec["payload"]
        self.key: str = spec["key"]
        self.resource: str = spec["resource"]
        self.batch: int = spec["max_batch_size"]
        self.wait: float = spec["max_wait_ms"] / 1000.0
        self.timeout: float = spec["timeout"]
        self.memory: int = spec["memory"]
        self.arn: str = spec["arn"]
        self.handler = handler


class Replica:
    """The handlers of one replica. `sock` is the front's socket (`run` answers its frames);
    without one, `answer_payloads` answers request payloads handed over another way (a Ray
    Serve deployment's method call)."""

    def __init__(self, config: dict[str, Any], sock: socket.socket | None = None) -> None:
        self.sock: Any = sock
        self._poller: Any = None  # select.poll on sock, made on first use
        # inside the front's serve folder when given, so the front removes it even after a kill
        scratch = config.get("scratch")
        if scratch:
            self.tmp_root = Path(scratch)
            self.tmp_root.mkdir(parents=True, exist_ok=True)
        else:
            self.tmp_root = Path(tempfile.mkdtemp(prefix="headrace-replica-"))
        self.storage_url: str = config["storage_url"]
        self.routes = [
            Route(spec, resolve_target(spec["handler"], config["sys_path"]))
            for spec in config["routes"]
        ]
        self.buffer = bytearray()

    def context(self, route: Route) -> Context:
        request_id = new_request_id()
        return Context(
            function_name=route.function,
            function_version="$LATEST",
            invoked_function_arn=route.arn,
            memory_limit_in_mb=route.memory,
            aws_request_id=request_id,
            log_stream_name=f"serve/{os.getpid()}",
            deadline=time.time() + route.timeout,
            tmp_root=self.tmp_root,
            tmp_size_mb=512,
            storage_url=self.storage_url,
        )

    def answer_payloads(self, payloads: list[bytes]) -> list[bytes]:
        """Encoded responses to encoded requests (`protocol.encode_request`), in their order;
        requests of a route that opts into batching go to its handler together."""
        requests: dict[int, list[tuple[int, Request]]] = {}
        for position, payload in enumerate(payloads):
            index, request = protocol.decode_request(payload)
            requests.setdefault(index, []).append((position, request))
        out: list[bytes] = [b""] * len(payloads)
        for index, items in requests.items():
            route = self.routes[index]
            if route.batch > 1:
                for start in range(0, len(items), route.batch):
                    chunk = items[start : start + route.batch]
                    for (position, _), data in zip(
                        chunk, self.answer_batch(route, chunk), strict=True
                    ):
                        out[position] = data[protocol.HEADER_SIZE :]
            else:
                for position, request in items:
                    data = self.answer(route, position, request)
                    out[position] = data[protocol.HEADER_SIZE :]
        return out

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            frames = self.read(block=True)
            if frames is None:
                return
            out: list[bytes] = []
            requests: dict[int, list[tuple[int, Request]]] = {}
            for request_id, kind, payload in frames:
                if kind == protocol.PING:
                    out.append(protocol.frame(protocol.PONG, request_id))
                elif kind == protocol.REQUEST:
                    index, request = protocol.decode_request(payload)
                    requests.setdefault(index, []).append((request_id, request))
            # each answer (or batch of answers) leaves as soon as it is ready, with whatever
            # waited before it: the first of 30 queued requests is not held until the 30th is
            # done, so a request waits for the ones ahead of it, not for the whole read
            # each run begins by telling the front which requests it starts (with the answer
            # before it, in one send): if the replica then hangs or dies, the others go to
            # another replica
            for index, items in requests.items():
                route = self.routes[index]
                if route.batch > 1:
                    self.fill(route, index, items, out)
                    for start in range(0, len(items), route.batch):
                        chunk = items[start : start + route.batch]
                        self.starting([request_id for request_id, _ in chunk], out)
                        out.extend(self.answer_batch(route, chunk))
                else:
                    for request_id, request in items:
                        self.starting([request_id], out)
                        out.append(self.answer(route, request_id, request))
            if out:
                self.sock.sendall(b"".join(out))

    def starting(self, request_ids: list[int], out: list[bytes]) -> None:
        """Send what is ready in `out` and the START of these requests."""
        out.extend(protocol.frame(protocol.START, request_id) for request_id in request_ids)
        self.sock.sendall(b"".join(out))
        out.clear()

    def read(self, *, block: bool) -> list[tuple[int, int, bytes]] | None:
        """Frames that arrived: waits for one when `block`, then takes whatever else is there
        without waiting. None when the front closed the socket."""
        frames = self._parse()
        while True:
            wait = block and not frames
            try:
                data = self.sock.recv(1 << 20, 0 if wait else socket.MSG_DONTWAIT)
            except BlockingIOError:
                data = None
            if data == b"":
                return frames or None
            if data:
                self.buffer += data
                frames += self._parse()
                if len(data) == 1 << 20 or (block and not frames):
                    continue
            return frames

    def _parse(self) -> list[tuple[int, int, bytes]]:
        frames = []
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= protocol.HEADER_SIZE:
            size, request_id, kind = protocol.HEADER.unpack_from(buf, pos)
            end = pos + protocol.HEADER_SIZE + size
            if len(buf) < end:
                break
            frames.append((request_id, kind, bytes(buf[pos + protocol.HEADER_SIZE : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    def _readable(self, timeout: float) -> bool:
        """Whether the front's socket has data within `timeout` seconds (poll: select fails on
        descriptors past 1023, which a handler that opens many files takes us to)."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        return bool(self._poller.poll(1000 * timeout))

    def fill(self, route: Route, index: int, items: list, out: list[bytes]) -> None:
        """Adaptive batching: a batch that is not full waits up to max_wait_ms for more
        requests of its route; under load the batch is whatever queued meanwhile."""
        deadline = time.monotonic() + route.wait
        while len(items) < route.batch:
            left = deadline - time.monotonic()
            if left <= 0 or not self._readable(left):
                return
            frames = self.read(block=False)
            if frames is None:
                return
            for request_id, kind, payload in frames:
                if kind == protocol.PING:
                    out.append(protocol.frame(protocol.PONG, request_id))
                elif kind == protocol.REQUEST:
                    other, request = protocol.decode_request(payload)
                    if other == index:
                        items.append((request_id, request))
                    else:
                        self.starting([request_id], out)
                        out.append(self.answer(self.routes[other], request_id, request))

    # -- one request, or a batch ---------------------------------------------------------------

    def _input(self, route: Route, request: Request) -> Any:
        request.route_key = route.key
        request.resource = route.resource
        if route.payload == "v1":
            return rest_event(request)
        if route.payload == "v2":
            return http_api_event(request)
        if request.body:
            return json.loads(request.body)
        if request.method in ("POST", "PUT", "PATCH"):  # a body was meant: not JSON, not None
            raise ValueError("it is empty")
        return None

    def _output(self, route: Route, result: Any) -> Response:
        if route.payload == "json":
            return Response(200, _JSON, json.dumps(result).encode())
        return proxy_response(result, route.payload)

    def answer(self, route: Route, request_id: int, request: Request) -> bytes:
        try:
            value = self._input(route, request)
        except ValueError as exc:
            response = error_response(400, f"the body is not JSON: {exc}")
        else:
            context = self.context(route)
            try:
                response = self._call(route, lambda: route.handler(value, context))
            finally:
                context.cleanup()  # the request's scratch folder goes with it
        return protocol.frame(protocol.RESPONSE, request_id, protocol.encode_response(response))

    def _call(self, route: Route, call: Callable[[], Any]) -> Response:
        try:
            response = self._output(route, call())
            if len(response.body) > MAX_RESPONSE:
                raise MalformedResponse(
                    f"the body is {len(response.body):,} bytes, over Lambda's 6 MB response "
                    "limit; return a smaller answer (or a link to the data)"
                )
            return response
        except MalformedResponse as exc:
            logger.error("%s: malformed handler response: %s", route.function, exc)
        except Exception:
            logger.error("%s failed:\n%s", route.function, traceback.format_exc())
        return internal_error()

    def _call_one(self, route: Route, value: Any) -> Response:
        """A batched handler called with a batch of one."""
        context = self.context(route)

        def call() -> Any:
            results = route.handler([value], context)
            if not isinstance(results, list | tuple) or len(results) != 1:
                raise MalformedResponse(f"a batch of 1 returned {results!r:.40}")
            return results[0]

        try:
            return self._call(route, call)
        finally:
            context.cleanup()

    def answer_batch(self, route: Route, items: list[tuple[int, Request]]) -> list[bytes]:
        values: list[Any] = []
        ready: list[tuple[int, Response | None]] = []
        for request_id, request in items:
            try:
                values.append(self._input(route, request))
                ready.append((request_id, None))
            except ValueError as exc:
                ready.append((request_id, error_response(400, f"the body is not JSON: {exc}")))
        responses: list[Response] = []
        if values:
            context = self.context(route)
            try:
                results = route.handler(values, context)
                if not isinstance(results, list | tuple) or len(results) != len(values):
                    got = len(results) if isinstance(results, list | tuple) else results
                    raise MalformedResponse(f"a batch of {len(values)} returned {got!r:.40}")
                responses = [self._call(route, lambda r=r: r) for r in results]
            except MalformedResponse as exc:
                logger.error("%s: malformed batch response: %s", route.function, exc)
                responses = [internal_error()] * len(values)
            except Exception:
                logger.error("%s failed:\n%s", route.function, traceback.format_exc())
                if len(values) == 1:
                    responses = [internal_error()]
                else:  # one bad body must not fail the others batched with it: one at a time
                    logger.info(
                        "%s: retrying a batch of %d one by one", route.function, len(values)
                    )
                    responses = [self._call_one(route, value) for value in values]
            finally:
                context.cleanup()
        it = iter(responses)
        return [
            protocol.frame(
                protocol.RESPONSE, request_id, protocol.encode_response(resp or next(it))
            )
            for request_id, resp in ready
        ]


def main() -> None:
    config_path, fd = sys.argv[1], int(sys.argv[2])
    config = json.loads(Path(config_path).read_text())
    lifetime.die_with_parent(config["parent"])
    lifetime.shield_from_group_signals()
    logging.basicConfig(
        level=logging.INFO, format=f"replica {os.getpid()} %(levelname)s %(message)s"
    )
    sys.stdout = sys.stderr  # what handlers print goes to the front's log
    for name, value in config.get("environment", {}).items():
        os.environ[name] = value
    sock = socket.socket(fileno=fd)
    try:
        replica = Replica(config, sock)
    except BaseException as exc:
        # the front's "did not start" names the cause; the traceback still goes to stderr
        with contextlib.suppress(OSError):
            Path(config_path + ".error").write_text(
                traceback.format_exception_only(exc)[-1].strip()
            )
        raise
    # what importing the handlers and loading the model made stays for the replica's life:
    # out of the collector's sight, so that no full collection walks it in a request's time
    gc.collect()
    gc.freeze()
    ready = json.dumps({"pid": os.getpid(), "model": config.get("environment", {})}).encode()
    try:
        # the front went away, or cancelled this replica while it started: nothing to report
        with contextlib.suppress(ConnectionError, OSError):
            sock.sendall(protocol.frame(protocol.READY, 0, ready))
            replica.run()
    finally:
        shutil.rmtree(replica.tmp_root, ignore_errors=True)


if __name__ == "__main__":
    main()
