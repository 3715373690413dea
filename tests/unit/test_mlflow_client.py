"""The MLflow REST client's transport: which credentials it sends, what it never repeats, how long it waits.

A bearer token (what MLflow's client sends for MLFLOW_TRACKING_TOKEN, as on
Databricks) cannot be checked by any MLflow server that runs here, so a small
real HTTP server on 127.0.0.1 records the headers it gets and answers like a
server refusing them.  The end-to-end runs against a real MLflow server are in
tests/e2e/test_mlflow_*.py and tests/integration/test_mlflow_champion.py.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_operator.runtime.tracking import MlflowClient, TrackingError, credentials_from

TOKEN = "tok-0123456789abcdef"


@contextmanager
def refusing_server() -> Iterator[tuple[str, list[str]]]:
    """Answers every request 401 with an MLflow-style error body; records each Authorization header."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("credentials, header", [
    ({"MLFLOW_TRACKING_TOKEN": TOKEN}, f"Bearer {TOKEN}"),
    ({"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": TOKEN},
     "Basic " + base64.b64encode(f"ann:{TOKEN}".encode()).decode()),
    ({}, ""),
])
def test_mlflow_client_sends_the_credentials_mlflow_expects_and_never_repeats_them(credentials, header) -> None:
    with refusing_server() as (url, seen):
        with pytest.raises(TrackingError) as caught:
            MlflowClient(url, credentials).experiment_id("iris")
    assert seen == [header]
    assert caught.value.reason == "Unauthorized" and "MLFLOW_TRACKING_*" in caught.value.message
    assert TOKEN not in str(caught.value) and "ann" not in str(caught.value)


def test_mlflow_credentials_from_an_environment_take_only_mlflow_keys() -> None:
    env = {"MLFLOW_TRACKING_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": "x", "MLFLOW_TRACKING_USERNAME": "", "HOME": "/tmp"}
    assert credentials_from(env) == {"MLFLOW_TRACKING_TOKEN": TOKEN}


def test_mlflow_silent_server_costs_at_most_the_budget() -> None:
    """A server that accepts connections and never answers: the client gives up within its budget."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever reads or answers them
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        client = MlflowClient(url, budget_seconds=1.0, timeout=0.5)
        with pytest.raises(TrackingError) as first:
            client.experiment_id("iris")
        with pytest.raises(TrackingError) as later:
            for _ in range(5):
                client.call("GET", "experiments/get-by-name", query={"experiment_name": "iris"})
        elapsed = time.monotonic() - started
    assert first.value.reason == "Timeout" and later.value.reason == "Timeout"
    assert elapsed < 2.5, elapsed  # 1 s budget (+ scheduling slack), not 6 x 0.5 s
