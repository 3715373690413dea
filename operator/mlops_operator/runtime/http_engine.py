"""The model server's HTTP/1.1 engine: a bare ``asyncio.Protocol`` on the ``httptools`` parser.

Kept instead of an ASGI server because it measured about 1.5x uvicorn's
req/s with the same handlers on the deciding benchmark (``bench/README.md``).
It does keep-alive, pipelining (answers in request order; reading pauses
beyond 32 requests in flight), chunked bodies and ``Expect: 100-continue``,
and it bounds what a client can hold:

* the request line and header block: at most ``max_header_bytes``, else 431;
* the body: at most ``max_body_bytes``, else 413;
* time: a request must arrive in full within ``read_seconds`` of its first
  byte, else 408; an idle connection is closed after ``keep_alive_seconds``;
* connections: at most ``max_connections`` open; one more is answered 503
  with ``Retry-After`` and closed, the others keep being served.

Every refusal closes the connection (after the answers it is owed) and is
counted in the request metrics.  Routing and handlers live in
:mod:`.routing` and :mod:`.handlers`; this module knows only bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from .handlers import SERVER_NAME, Response, ServerApp, complete, error, internal_error
from .routing import NO_HEADERS, BodyHeaders, dispatch

MAX_URL_BYTES = 8192
MAX_PIPELINED = 32  # requests in flight on one connection before reading pauses
RESUME_BELOW = 8


@dataclass(frozen=True)
class Limits:
    """What one client may hold; see the module docstring and ``docs/serving.md``."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    read_seconds: float = 30.0
    keep_alive_seconds: float = 75.0
    max_connections: int = 1000


def _status_line(code: int) -> bytes:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {code} {reason}\r\n".encode()


_STATUS = {c: _status_line(c) for c in (100, 200, 400, 404, 405, 408, 413, 414, 415, 422, 431, 500, 503)}
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nServer: " + SERVER_NAME.encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class HttpConnection(asyncio.Protocol):
    """One client connection: parse with httptools, answer in request order."""

    __slots__ = (
        "server", "app", "limits", "transport", "parser", "url", "body", "size", "expect", "slots",
        "closing", "closed", "t0", "started", "paused", "in_message", "in_head", "head_exact", "head_stream",
        "begun", "last_active", "counted", "encoding", "json_length", "request_id",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.expect = False
        self.encoding: bytes | None = None
        self.json_length: bytes | None = None
        self.request_id: bytes | None = None
        self.slots: deque[list[Any]] = deque()
        self.closing = False  # no more requests are read from this connection
        self.closed = False  # the transport was closed after the last answer
        self.paused = False
        self.in_message = False  # between a request's first byte and its last
        self.in_head = True  # its request line and headers are not complete yet
        self.head_exact = 0  # header bytes the parser handed over
        self.head_stream = 0  # bytes received while the head was incomplete (a lower bound too)
        self.begun = False
        self.counted = False
        self.t0 = 0.0
        self.started = 0.0
        self.last_active = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        conns = self.server.connections
        if len(conns) >= self.limits.max_connections:
            self.closing = self.closed = True
            body = b'{"error":"too many open connections; retry later","field":"connection"}'
            transport.write(_TOO_MANY % (len(body), body))  # type: ignore[attr-defined]
            transport.close()
            self.app.metrics.observe_request("other", 503)
            return
        conns.add(self)
        self.counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        # Requests still running finish on their own; their answers are dropped.
        if self.counted:
            self.server.connections.discard(self)
        self.transport = None
        self.closing = self.closed = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        self.begun = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserCallbackError as exc:  # a bug of ours in a callback, not the client's bytes
            self._refuse(internal_error(exc.__context__ or exc, "reading a request"))
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.in_message and self.in_head:
            # httptools buffers a header until it is complete, so count the bytes as they come
            # (one chunk of slack at the start of the message: never more than the limit + 256 KiB held).
            self.head_stream = self.head_exact if self.begun else self.head_stream + len(data)
            if self.head_stream > self.limits.max_header_bytes:
                self._head_too_large()

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.size = 0
        self.expect = False
        self.encoding = self.json_length = self.request_id = None
        self.in_message = self.in_head = self.begun = True
        self.head_exact = self.head_stream = 0
        self.t0 = time.perf_counter()
        self.started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_exact += len(url)
        if len(self.url) > MAX_URL_BYTES:
            self._fail(414, f"URL longer than {MAX_URL_BYTES} bytes", "path")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.closing:
            return
        self.head_exact += len(name) + len(value) + 4
        if self.head_exact > self.limits.max_header_bytes:
            self._head_too_large()
            return
        n = name.lower()
        if n == b"content-length":
            try:
                if int(value) > self.limits.max_body_bytes:
                    self._too_large()
            except ValueError:
                pass  # the parser rejects it
        elif n == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        elif n == b"content-encoding":
            self.encoding = value
        elif n == b"inference-header-content-length":
            self.json_length = value
        elif n == b"x-mlops-request-id":
            self.request_id = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.expect and not self.closing and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.size += len(body)
        if self.size > self.limits.max_body_bytes:
            self._too_large()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.in_head = True
        if self.closing:
            return
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body = []
        headers = (NO_HEADERS if self.encoding is None and self.json_length is None and self.request_id is None
                   else BodyHeaders(self.encoding, self.json_length, self.request_id))
        proto, result = dispatch(self.app, method, self.url, body, headers)
        t0 = self.t0
        head_only = method == b"HEAD"
        if isinstance(result, Response):
            self._queue(result, keep_alive, proto, t0, head_only)
        else:
            slot = self._queue(None, keep_alive, proto, t0, head_only)
            what = f"{method.decode('latin-1')} {self.url.decode('latin-1')[:200]}"
            task = asyncio.ensure_future(complete(result, what))
            self.server.inflight += 1
            task.add_done_callback(lambda t, s=slot: self._done(s, t))

    # -- responses ---------------------------------------------------------

    def _queue(self, resp: Response | None, keep_alive: bool, proto: str, t0: float, head_only: bool = False) -> list[Any]:
        slot = [resp, keep_alive, proto, t0, head_only]
        self.slots.append(slot)
        if resp is not None:
            self._flush()
        elif len(self.slots) > MAX_PIPELINED and not self.paused and self.transport is not None:
            self.paused = True  # too many pipelined requests in flight: stop reading for now
            self.transport.pause_reading()
        return slot

    def _done(self, slot: list[Any], task: asyncio.Task[Response]) -> None:
        self.server.inflight -= 1
        slot[0] = task.result()  # complete() turned every exception into a response
        self._flush()
        self.server.idle_check()

    def _flush(self) -> None:
        server = self.server
        metrics = self.app.metrics
        while self.slots and self.slots[0][0] is not None:
            resp, keep_alive, proto, t0, head_only = self.slots.popleft()
            close = not keep_alive or self.app.shutting_down
            if self.transport is not None and not self.closed:
                self.transport.write(server.encode(resp, close, head_only))
                if close:
                    self.closing = self.closed = True
                    self.transport.close()
            metrics.observe_request(proto, resp.status, time.perf_counter() - t0)
            self.last_active = time.monotonic()  # idle time counts from the last answer, not the last request
        if self.paused and len(self.slots) <= RESUME_BELOW and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _fail(self, status: int, message: str, field: str = "body") -> None:
        """Refuse the request being read and close the connection (after earlier answers)."""
        self._refuse(error(status, message, field))

    def _refuse(self, resp: Response) -> None:
        if self.closing:
            return
        self.in_message = False
        self.closing = True
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self.slots.append([resp, False, "other", self.t0 or time.perf_counter(), False])
        self._flush()

    def _too_large(self) -> None:
        self._fail(413, f"request body larger than {self.limits.max_body_bytes} bytes")

    def _head_too_large(self) -> None:
        self._fail(431, f"request line and headers larger than {self.limits.max_header_bytes} bytes", "headers")

    # -- time limits (checked by HttpServer's sweeper) ----------------------

    def check_time(self, now: float) -> None:
        if self.closing or self.transport is None:
            return
        if self.in_message:
            if now - self.started > self.limits.read_seconds:
                self._fail(408, f"request not received in full within {self.limits.read_seconds:g} s", "request")
        elif not self.slots and now - self.last_active > self.limits.keep_alive_seconds:
            self.close_if_idle()

    @property
    def idle(self) -> bool:
        return not self.slots and not self.in_message

    def close_if_idle(self) -> None:
        if self.idle and self.transport is not None:
            self.closing = self.closed = True
            self.transport.close()


def _room_for(connections: int) -> None:
    """Raise the soft open-file limit towards the hard one, so the connection cap, not EMFILE, is what refuses."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connections + 64  # the store, the feedback file, the listener, the loop's own
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    except (ImportError, ValueError, OSError):
        pass  # not raisable here: the kernel's limit applies


class HttpServer:
    """Listens, owns the connections and their limits, and drains them on shutdown."""

    def __init__(self, app: ServerApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[HttpConnection] = set()
        self.inflight = 0
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_waiter: asyncio.Future[None] | None = None
        self._heads: dict[tuple[int, bytes, bool, str], bytes] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen (raises OSError when the address cannot be bound); returns the port."""
        _room_for(self.limits.max_connections)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, backlog=1024, reuse_address=True
        )
        self._sweeper = asyncio.ensure_future(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sweep_seconds(self) -> float:
        lim = self.limits
        return max(0.05, min(1.0, lim.read_seconds / 4, lim.keep_alive_seconds / 4))

    async def _sweep(self) -> None:
        """Enforce the read deadline and the keep-alive timeout (runs until cancelled)."""
        while True:
            await asyncio.sleep(self.sweep_seconds)
            now = time.monotonic()
            for c in list(self.connections):
                c.check_time(now)

    def idle_check(self) -> None:
        if self.inflight == 0 and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def encode(self, resp: Response, close: bool, head_only: bool = False) -> bytes:
        """Status line, headers and body; a HEAD answer has the GET's headers (and Content-Length) but no body."""
        version = resp.version or self.app.version
        key = (resp.status, resp.content_type, close, version)
        head = self._heads.get(key) if not resp.headers else None
        if head is None:
            parts = [
                _STATUS.get(resp.status) or _status_line(resp.status),
                b"Content-Type: " + resp.content_type + b"\r\n",
                b"Server: " + SERVER_NAME.encode() + b"\r\n",
                b"X-Model-Version: " + version.encode() + b"\r\n",
            ]
            if close:
                parts.append(b"Connection: close\r\n")
            for k, v in resp.headers:
                parts.append(k + b": " + v + b"\r\n")
            head = b"".join(parts)
            if not resp.headers:
                self._heads[key] = head
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(resp.body), b"" if head_only else resp.body)

    async def close(self) -> None:
        """Stop at once (start-up failed): no listener, no connections."""
        await self.shutdown(0.0)

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop accepting, close idle connections, wait (bounded) for requests in flight, close the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_seconds
        for c in list(self.connections):
            c.close_if_idle()
        while self.inflight > 0 and time.monotonic() < deadline:
            self._idle_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._idle_waiter, max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        # Give the last responses a moment to leave, then close the rest.
        for _ in range(50):
            if not any(c.slots for c in self.connections):
                break
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
