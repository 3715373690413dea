"""What one client may hold: header size, read time, connections — raw sockets against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.runtime.sensor import parse_metrics

from .test_server_support import Server, make_store

HEADER_LIMIT = 4096
READ_SECONDS = 1.5
KEEP_ALIVE = 2.0
ONE = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
PREDICT = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(ONE), ONE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    make_store(root)
    return root


@pytest.fixture(scope="module")
def server(store: Path):  # type: ignore[no-untyped-def]
    s = Server("--store", str(store), "--model", "iris", "--max-header-bytes", str(HEADER_LIMIT),
               "--request-read-seconds", str(READ_SECONDS), "--keep-alive-seconds", str(KEEP_ALIVE),
               "--max-connections", "400")
    yield s
    assert s.stop() == 0


def _connect(s: Server) -> socket.socket:
    assert s.port is not None
    return socket.create_connection(("127.0.0.1", s.port), timeout=15)


def _read_all(sock: socket.socket, limit: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time)."""
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


def _status(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12])


def _body(data: bytes) -> dict[str, Any]:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def _requests(s: Server, code: str) -> int:
    return parse_metrics(s.metrics()).requests.get(("other", code), 0)


def test_a_header_block_over_the_limit_gets_431_and_the_connection_closes(server: Server) -> None:
    before = _requests(server, "431")
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * HEADER_LIMIT) + b"\r\n\r\n")
        data = _read_all(sock)
    assert _status(data) == 431 and _body(data)["field"] == "headers"
    assert b"Connection: close" in data
    assert _requests(server, "431") - before == 1


def test_a_header_that_never_ends_is_refused_without_buffering_it(server: Server) -> None:
    """A 50 MB header used to be read to the end; now the server answers and closes after a few kilobytes."""
    sent = 0
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 65536
        try:
            while sent < 50 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:  # the server closed the connection while we were still sending
            pass
        data = _read_all(sock)
    assert _status(data) == 431
    assert sent < 8 * 1024 * 1024, f"the server read {sent} bytes of one header before refusing"


def test_a_url_over_8_kib_gets_414(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/models/" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_all(sock)
    assert _status(data) == 414 and _body(data)["field"] == "path"


def test_headers_under_the_limit_are_served(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * (HEADER_LIMIT // 2)
                     + b"\r\nConnection: close\r\n\r\n")
        assert _status(_read_all(sock)) == 200


@pytest.mark.parametrize("partial", [
    b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\n",  # headers never finish
    b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"instances\"",  # body stops
])
def test_an_incomplete_request_gets_408_then_close(server: Server, partial: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(partial)
        t0 = time.monotonic()
        data = _read_all(sock)
        waited = time.monotonic() - t0
    assert _status(data) == 408 and _body(data)["field"] == "request"
    assert READ_SECONDS <= waited < READ_SECONDS + 10


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_time(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(PREDICT)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert _read_all(sock) == b""  # closed without a word
        waited = time.monotonic() - t0
    assert KEEP_ALIVE <= waited < KEEP_ALIVE + 10


def test_a_client_trickling_bytes_is_still_cut_at_the_deadline(server: Server) -> None:
    """The deadline counts from a request's first byte, so sending a byte now and then does not extend it."""
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - t0 < READ_SECONDS + 10 and not answer:
            try:
                sock.sendall(b"X")
            except OSError:
                break
            try:
                answer = sock.recv(65536)
            except socket.timeout:
                continue
        sock.settimeout(15)
        data = answer + _read_all(sock)
    assert _status(data) == 408


def test_the_connection_cap_refuses_the_extra_connection_and_keeps_serving_the_others(store: Path) -> None:
    s = Server("--store", str(store), "--model", "iris", "--max-connections", "3")
    try:
        held = [_connect(s) for _ in range(3)]
        for sock in held:  # each served once, so the server holds all three open
            sock.sendall(PREDICT)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with _connect(s) as extra:
            data = _read_all(extra)
        assert _status(data) == 503 and b"Retry-After: 1" in data
        held[0].sendall(PREDICT)  # the held connections still work
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        held.pop().close()
        deadline = time.monotonic() + 10
        status = 503
        while status == 503 and time.monotonic() < deadline:  # the server notices the close asynchronously
            with _connect(s) as again:
                again.sendall(PREDICT.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
                status = _status(_read_all(again))
        assert status == 200
        for sock in held:
            sock.close()
    finally:
        assert s.stop() == 0


def test_hundreds_of_slow_clients_do_not_starve_a_well_behaved_one(store: Path) -> None:
    s = Server("--store", str(store), "--model", "iris", "--request-read-seconds", "60", "--max-connections", "400")
    slow: list[socket.socket] = []
    try:
        for _ in range(300):  # each sends half a request and then nothing
            sock = _connect(s)
            sock.sendall(b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            slow.append(sock)
        statuses: list[int] = []
        served = threading.Event()

        def client() -> None:
            c = s.conn(timeout=15)
            for _ in range(20):
                c.request("POST", "/v1/models/iris:predict", body=ONE)
                r = c.getresponse()
                r.read()
                statuses.append(r.status)
            c.close()
            served.set()

        t = threading.Thread(target=client)
        t.start()
        assert served.wait(60)
        assert statuses == [200] * 20
        # ...while every slow client is still connected and unanswered.
        for sock in slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in slow:
            sock.close()
        assert s.stop() == 0
