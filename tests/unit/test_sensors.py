"""The HTTP sensors against real sockets on 127.0.0.1: a deadline bounds each scrape, failures say why.

The servers are real: one renders the model server's own ``/metrics`` for a
real reference, one accepts and then sends a byte every 0.1 s (a hung or
overloaded pod that never quite stops answering), one refuses.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest

from mlops_operator import sensors as sensors_mod
from mlops_operator.controllers.conditions import get_condition
from mlops_operator.controllers.reconcile.driftpolicy import WindowBaselines, reconcile_drift_policy
from mlops_operator.drift import Reference, build_reference
from mlops_operator.sensors import HttpSensors, Unreadable
from tests.unit.test_driftpolicy_controller import T0, _loop_world

VERSION = "iris-v1-g1"


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(0)
    cols = {"a": rng.normal(0, 1, 3000), "b": rng.normal(5, 2, 3000)}
    return Reference.from_dict(build_reference(cols, set(), None, "regression", bins=20))


def _metrics_text(reference: Reference, rows: int) -> bytes:
    from mlops_operator.runtime.serving_metrics import ServingMetrics

    m = ServingMetrics(model="iris", namespace="ml", version=VERSION, sha256="ab", task="regression", classes=None,
                       reference=reference, drift_sensor=True, feature_names=["a", "b"])
    rng = np.random.default_rng(rows)
    batch = np.column_stack([rng.normal(0, 1, rows), rng.normal(5, 2, rows)])
    m.observe_batch(batch, rng.normal(0, 1, rows), 1, rows, 0.001)
    return m.render()


@contextmanager
def metrics_server(pages: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering ``pages`` (404 otherwise); yields its address and the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def trickling_server(limit_seconds: float = 20.0) -> Iterator[tuple[str, threading.Event]]:
    """Accepts, sends 200 headers, then one body byte every 0.1 s, for at most ``limit_seconds``.

    Yields its address and an event set when the client hung up (the scrape was given up, its socket closed).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()
    hung_up = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
            deadline = time.monotonic() + limit_seconds
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    conn.sendall(b"#")
                    stop.wait(0.1)
            except OSError:
                hung_up.set()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", hung_up
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def _refused_address() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return f"127.0.0.1:{port}"


def _pod(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ml"}, "status": {"podIP": "127.0.0.1"}}


def test_a_trickling_pod_is_given_up_at_the_deadline() -> None:
    """The old per-socket-operation timeout never fired while bytes kept coming; the deadline covers the whole scrape."""
    with trickling_server() as (address, hung_up):
        sensors = HttpSensors(timeout=1.0, address_of=lambda pod: address)
        started = time.monotonic()
        with pytest.raises(Unreadable, match=r"no complete answer within 1s"):
            asyncio.run(sensors.snapshot(_pod("slow")))
        elapsed = time.monotonic() - started
        assert elapsed < 4.0, f"the scrape took {elapsed:.1f}s with a 1s deadline (the server trickles for 20s)"
        assert hung_up.wait(5), "the given-up scrape closed its connection"


def test_a_check_is_not_held_up_by_a_slow_pod_and_names_it(reference) -> None:
    cluster, _ = _loop_world(reference, shift=0.0)
    pages = {"/metrics": _metrics_text(reference, 300)}
    with metrics_server(pages) as (fast, _), trickling_server() as (slow, _):
        addresses = {"iris-a": fast, "iris-b": slow}
        sensors = HttpSensors(timeout=1.0, address_of=lambda pod: addresses[pod["metadata"]["name"]],
                              reference_loader=lambda ns, model, version: (reference.to_dict(), {}))
        started = time.monotonic()
        d = asyncio.run(reconcile_drift_policy(cluster, "ml", "iris", None, lambda: T0, sensors, baselines=WindowBaselines()))
        elapsed = time.monotonic() - started
    assert elapsed < 4.0, f"the check took {elapsed:.1f}s with a 1s scrape deadline"
    assert d.check.verdict == "NotEnoughData", "the pod that answered opened the window"
    assert [p["name"] for p in d.status["window"]["pods"]] == ["iris-a"]
    assert d.sensor_errors == 1 and d.unreadable_pods == ["iris-b"]
    cond = get_condition(d.status["conditions"], "SensorsReadable")
    assert cond["status"] == "False" and "iris-b (no complete answer within 1s)" in cond["message"]


def test_refused_and_erroring_pods_say_why() -> None:
    refused = HttpSensors(timeout=2.0, address_of=lambda pod: _refused_address())
    with pytest.raises(Unreadable, match=r"[Cc]onnect"):
        asyncio.run(refused.snapshot(_pod("gone")))
    with metrics_server({}) as (address, _):
        missing = HttpSensors(timeout=2.0, address_of=lambda pod: address)
        with pytest.raises(Unreadable, match=r"HTTP 404"):
            asyncio.run(missing.snapshot(_pod("no-metrics")))


def test_an_oversized_answer_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(sensors_mod, "MAX_RESPONSE_BYTES", 1000)
    with metrics_server({"/metrics": b"# " + b"x" * 5000 + b"\n"}) as (address, _):
        sensors = HttpSensors(timeout=2.0, address_of=lambda pod: address)
        with pytest.raises(Unreadable, match=r"larger than 1000 bytes"):
            asyncio.run(sensors.snapshot(_pod("big")))


def test_a_missing_reference_says_why_and_is_not_asked_for_again_at_once(reference) -> None:
    pages = {"/metrics": _metrics_text(reference, 10)}
    with metrics_server(pages) as (address, asked):
        sensors = HttpSensors(timeout=2.0, address_of=lambda pod: address, retry_seconds=60)

        async def scenario() -> list[str]:
            errors = []
            await sensors.snapshot(_pod("iris-a"))  # the pod says it serves the version
            for _ in range(2):
                try:
                    await sensors.reference("ml", "iris", VERSION)
                except Unreadable as exc:
                    errors.append(str(exc))
            return errors

        first, again = asyncio.run(scenario())
        unknown = HttpSensors(timeout=2.0, address_of=lambda pod: address)
        with pytest.raises(Unreadable, match=f"no serving pod has reported version {VERSION} yet"):
            asyncio.run(unknown.reference("ml", "iris", VERSION))
    assert first == "HTTP 404 Not Found" and again == "HTTP 404 Not Found (next try within 60s)"
    assert asked.count(f"/v2/models/iris/versions/{VERSION}/reference") == 1
