"""Overload is shed with 503 + Retry-After instead of queueing without end."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from mlops_operator.runtime.batching import Batcher, Overloaded, admits
from mlops_operator.runtime.sensor import parse_metrics

from .test_server_support import Server, make_store

ONE = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
PREDICT = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(ONE), ONE)


def test_admission_rule() -> None:
    assert admits(0, 5000, 10)  # an empty queue takes anything: a request larger than the bound still runs, alone
    assert admits(6, 4, 10) and not admits(7, 4, 10)


def test_the_batcher_refuses_past_its_queue_bound_and_serves_what_it_admitted() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray, proba: bool) -> tuple[np.ndarray, None]:
        calls.append(rows.shape[0])
        return rows[:, 0].copy(), None

    async def scenario() -> tuple[list[object], int]:
        b = Batcher(predict, max_batch_size=4, max_batch_delay=0.0, max_queue_rows=3)
        b.start()
        futures: list[object] = []
        for i in range(6):  # all queued before the worker runs: three fit, three do not
            try:
                futures.append(b.submit(np.array([[float(i)]])))
            except Overloaded:
                futures.append(None)
        assert b.full  # a usual (one-row) request would not fit either: refused before it is parsed
        with pytest.raises(Overloaded):
            b.check_room()
        results = [None if f is None else (await f)[0].tolist() for f in futures]  # type: ignore[misc]
        assert not b.full
        await b.close()
        return results, b.shed

    results, shed = asyncio.run(scenario())
    assert results == [[0.0], [1.0], [2.0], None, None, None] and shed == 4
    assert sum(calls) == 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    make_store(root)
    return root


def test_a_burst_past_the_queue_gets_503_with_retry_after_and_is_counted(store: Path) -> None:
    s = Server("--store", str(store), "--model", "iris", "--max-batch-size", "1", "--max-queue-rows", "2")
    try:
        before = parse_metrics(s.metrics()).requests
        with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
            sock.sendall(PREDICT * 10)  # one write: all ten reach the queue before the model runs once
            data = b""
            deadline = time.monotonic() + 30
            while data.count(b"HTTP/1.1 ") < 10 and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        statuses = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3})", data)]
        assert len(statuses) == 10 and set(statuses) <= {200, 503}, statuses
        assert statuses[0] == 200 and statuses.count(503) >= 1, statuses
        for answer in data.split(b"HTTP/1.1 ")[1:]:
            if answer.startswith(b"503"):
                assert b"Retry-After: 1\r\n" in answer and b'"field":"body"' in answer
        text = s.metrics()
        after = parse_metrics(text).requests
        assert after.get(("v1", "503"), 0) - before.get(("v1", "503"), 0) == statuses.count(503)
        shed = [float(line.split()[-1]) for line in text.splitlines() if line.startswith('mlops_requests_shed_total{protocol="v1"}')]
        assert shed == [statuses.count(503)]
        # Once the burst is through, the server serves again.
        assert s.request("POST", "/v1/models/iris:predict", raw=ONE)[0] == 200
    finally:
        assert s.stop() == 0
