"""The model server over real HTTP on 127.0.0.1, in a subprocess."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.drift.profile import Reference
from mlops_operator.runtime.sensor import parse_metrics
from mlops_operator.store import ModelStore

from .test_server_support import NS, Server, make_store, run_serve, serving


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("store")
    return root, make_store(root)


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def servers(store: tuple[Path, dict[str, Any]], feedback_dir: Path):  # type: ignore[no-untyped-def]
    with serving(Server, store[0], ("iris", "diabetes", "shop"), "--feedback-dir", str(feedback_dir),
                 "--max-body-bytes", "200000") as started:
        yield started


def _col(x: np.ndarray) -> list[list[Any]]:
    return [[v.item() if isinstance(v, np.generic) else v for v in row] for row in x.tolist()]


@pytest.mark.parametrize("name", ["iris", "diabetes", "shop"])
def test_both_protocols_predict_like_the_model(name: str, store: tuple[Path, dict[str, Any]], servers: dict[str, Server]) -> None:
    root, models = store
    pipe, X, names = models[name]
    s = servers[name]
    rows = X[::7][:20]
    expected = pipe.predict(rows).tolist()

    status, headers, body = s.request("POST", f"/v1/models/{name}:predict", {"instances": _col(rows)})
    assert status == 200, body
    assert headers["x-model-version"] == "v1"
    assert body["predictions"] == pytest.approx(expected) if name == "diabetes" else body["predictions"] == expected
    assert len(body["ids"]) == len(expected) and len(set(body["ids"])) == len(expected)

    named = [dict(zip(names, r)) for r in _col(rows)]
    status, _, body = s.request("POST", f"/v1/models/{name}:predict", {"instances": named})
    assert status == 200 and len(body["predictions"]) == len(expected)

    if name != "shop":
        v2 = {"id": "req-1", "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}]}
    else:
        v2 = {"id": "req-1", "inputs": [
            {"name": n, "shape": [rows.shape[0]], "datatype": "FP64" if j == 0 else "BYTES", "data": [r[j] for r in _col(rows)]}
            for j, n in enumerate(names)
        ]}
    if name != "diabetes":
        v2["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    status, headers, body = s.request("POST", f"/v2/models/{name}/infer", v2)
    assert status == 200, body
    assert headers["x-model-version"] == "v1"
    assert body["model_name"] == name and body["model_version"] == "v1" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["predict"]["shape"] == [len(expected)]
    if name == "diabetes":
        assert out["predict"]["datatype"] == "FP64"
        assert out["predict"]["data"] == pytest.approx(expected)
    else:
        assert out["predict"]["data"] == expected
        proba = np.array(out["predict_proba"]["data"]).reshape(out["predict_proba"]["shape"])
        assert np.allclose(proba, pipe.predict_proba(rows))


def test_metadata_health_and_listing(servers: dict[str, Server]) -> None:
    s = servers["iris"]
    assert s.request("GET", "/v2/health/live")[0] == 200
    assert s.request("GET", "/v2/health/ready")[2] == {"ready": True}
    assert s.request("GET", "/v2/models/iris/ready")[0] == 200
    assert s.request("GET", "/v1/models/iris")[2] == {"name": "iris", "ready": True}
    assert s.request("GET", "/v1/models")[2] == {"models": ["iris"]}
    assert s.request("GET", "/")[2] == {"status": "alive"}  # what KServe's SDK reads as V1 liveness
    status, headers, meta = s.request("GET", "/v2/models/iris")
    assert status == 200 and headers["x-model-version"] == "v1"
    assert meta["name"] == "iris" and meta["versions"] == ["v1"] and meta["platform"] == "sklearn"
    assert [i["name"] for i in meta["inputs"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}
    assert s.request("GET", "/v2/models/iris/versions/v1")[0] == 200
    assert s.request("GET", "/v2/models/iris/versions/v9")[0] == 404
    shop = servers["shop"].request("GET", "/v2/models/shop")[2]
    assert [i["datatype"] for i in shop["inputs"]] == ["FP64", "BYTES", "BYTES"]


def test_serves_the_drift_reference_of_its_version(servers: dict[str, Server], store: tuple[Path, dict[str, Any]]) -> None:
    """The operator does not mount the store: the DriftPolicy reads the reference from a serving pod."""
    root, _ = store
    status, _, body = servers["iris"].request("GET", "/v2/models/iris/versions/v1/reference")
    assert status == 200
    assert body["reference"] == ModelStore(root).read_reference(NS, "iris", "v1")
    assert body["metadata"]["task"] == "classification" and "baseline" in body["metadata"]
    assert servers["iris"].request("GET", "/v2/models/iris/versions/v9/reference")[0] == 404
    assert servers["iris"].request("POST", "/v2/models/iris/reference", raw=b"{}")[0] == 405


@pytest.mark.parametrize(
    "method,path,raw,status,field",
    [
        ("POST", "/v1/models/iris:predict", b"{nope", 400, "body"),
        ("POST", "/v1/models/iris:predict", b'{"instances": []}', 400, "instances"),
        ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3]]}', 400, "instances[0]"),
        ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, "x", 3, 4]]}', 400, "instances[3][1]"),
        ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3, Infinity]]}', 400, "instances[0][3]"),
        ("POST", "/v1/models/iris:predict", b'{"instances": [{"sepal_length": 1}]}', 400, "instances[0]"),
        ("POST", "/v2/models/iris/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2]}]}', 400, "inputs[0].data"),
        ("POST", "/v1/models/nope:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "name"),
        ("POST", "/v2/models/nope/infer", b"{}", 404, "name"),
        ("GET", "/v1/models/iris:predict", None, 405, "method"),
        ("PUT", "/v2/models/iris/infer", b"{}", 405, "method"),
        ("POST", "/v2/health/live", b"{}", 405, "method"),
        ("GET", "/nothing/here", None, 404, "path"),
    ],
)
def test_bad_requests(servers: dict[str, Server], method: str, path: str, raw: bytes | None, status: int, field: str) -> None:
    got, headers, body = servers["iris"].request(method, path, raw=raw)
    assert got == status, body
    assert body["field"] == field and body["error"]
    assert headers["x-model-version"] == "v1"


def test_missing_values_follow_the_pipeline(servers: dict[str, Server]) -> None:
    # iris imputes numeric NaN: null is accepted and predicted; diabetes has no imputer: refused.
    ok = servers["iris"].request("POST", "/v1/models/iris:predict", {"instances": [[5.1, None, 1.4, 0.2]]})
    assert ok[0] == 200, ok
    bad = servers["diabetes"].request("POST", "/v1/models/diabetes:predict", {"instances": [[None] + [0.0] * 9]})
    assert bad[0] == 400 and bad[2]["field"] == "instances[0][0]"
    unseen = servers["shop"].request("POST", "/v1/models/shop:predict", {"instances": [[30, "purple", "1"]]})
    assert unseen[0] == 200


def test_body_limit_and_broken_http(servers: dict[str, Server]) -> None:
    s = servers["iris"]
    big = b'{"instances": [' + b",".join([b"[1, 2, 3, 4]"] * 20000) + b"]}"
    status, _, body = s.request("POST", "/v1/models/iris:predict", raw=big)
    assert status == 413 and body["field"] == "body"
    # chunked body over the limit
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 100000
        try:
            for _ in range(3):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass
        assert sock.recv(200).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 400")
    # pipelined requests are answered in order on one connection
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        one = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
        req = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
        sock.sendall(req + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + req)
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
            data += sock.recv(65536)
        parts = data.split(b"HTTP/1.1 200")
        assert len(parts) == 4 and b"predictions" in parts[1] and b"live" in parts[2] and b"predictions" in parts[3]
    assert s.request("GET", "/v2/health/live")[0] == 200


def test_feedback_moves_counters_and_writes_csv(servers: dict[str, Server], feedback_dir: Path, store: tuple[Path, dict[str, Any]]) -> None:
    s = servers["iris"]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    _, _, body = s.request("POST", "/v1/models/iris:predict", {"instances": rows})
    ids, preds = body["ids"], body["predictions"]
    before_snap = parse_metrics(s.metrics())
    before = before_snap.feedback
    labels = [preds[0], (preds[1] + 1) % 3]
    fb = {"feedback": [{"id": ids[0], "label": labels[0]}, {"id": ids[1], "label": labels[1]}, {"id": "nope:0", "label": 1}]}
    status, _, resp = s.request("POST", "/v1/models/iris/feedback", fb)
    assert status == 200 and resp["accepted"] == 2 and resp["unknown"] == ["nope:0"]
    status, _, resp = s.request("POST", "/v1/models/iris/feedback", {"feedback": [{"id": ids[0], "label": 0}, {"id": ids[2], "label": 7}]})
    assert resp["accepted"] == 0 and resp["duplicate"] == [ids[0]] and resp["invalid"] == [ids[2]]
    after_snap = parse_metrics(s.metrics())
    after = after_snap.feedback
    assert after.labels - before.labels == 2
    # Label drift counts the accepted labels themselves, by class; rejected ones never.
    moved = {k: v - (before_snap.labels or {}).get(k, 0) for k, v in (after_snap.labels or {}).items()}
    expected_labels: dict[str, int] = {}
    for lab in labels:
        expected_labels[str(lab)] = expected_labels.get(str(lab), 0) + 1
    assert {k: v for k, v in moved.items() if v} == expected_labels
    assert after.correct - before.correct == 1 and after.errors - before.errors == 1
    assert after.rejected["unknown"] - before.rejected.get("unknown", 0) == 1
    assert after.rejected["duplicate"] >= 1 and after.rejected["invalid"] >= 1
    # V2 ids: "<request id>:<row>"
    v2 = {"id": "fb-req", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows[2]}]}
    assert s.request("POST", "/v2/models/iris/infer", v2)[0] == 200
    assert s.request("POST", "/v1/models/iris/feedback", {"feedback": [{"id": "fb-req:0", "label": 1}]})[2]["accepted"] == 1
    files = list((feedback_dir / NS / "iris").glob("feedback-*.csv"))
    assert len(files) == 1
    with open(files[0]) as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert [float(v) for v in table[1][:4]] == rows[0] and int(table[1][4]) == labels[0]
    assert len(table) == 4

    d = servers["diabetes"]
    _, models = store
    x = models["diabetes"][1][:2]
    _, _, body = d.request("POST", "/v1/models/diabetes:predict", {"instances": x.tolist()})
    status, _, resp = d.request("POST", "/v1/models/diabetes/feedback", {"feedback": [{"id": body["ids"][0], "label": body["predictions"][0] + 3.0}]})
    assert resp["accepted"] == 1
    snap = parse_metrics(d.metrics())
    assert snap.feedback.labels == 1 and snap.feedback.squared_error == pytest.approx(9.0)
    # A regression target's labels land in the reference's label bins.
    ref = Reference.from_dict(ModelStore(store[0]).read_reference(NS, "diabetes", "v1"))
    assert ref.label is not None
    assert isinstance(snap.labels, np.ndarray)
    assert snap.labels.tolist() == ref.label.count([body["predictions"][0] + 3.0]).tolist()


def test_feedback_that_carries_its_row_needs_no_id(servers: dict[str, Server], feedback_dir: Path) -> None:
    """Behind a Service a label may reach a replica that never saw the prediction: the row travels with it."""
    s = servers["iris"]
    before = parse_metrics(s.metrics())
    _, _, pred = s.request("POST", "/v1/models/iris:predict", {"instances": [[6.7, 3.0, 5.2, 2.3]]})
    right = pred["predictions"][0]
    wrong = (right + 1) % 3
    fb = {"feedback": [{"instance": [6.7, 3.0, 5.2, 2.3], "label": right},
                       {"instance": {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}, "label": wrong}]}
    status, _, resp = s.request("POST", "/v1/models/iris/feedback", fb)
    assert status == 200 and resp["accepted"] == 2, resp
    (csv_file,) = (feedback_dir / NS / "iris").glob("feedback-*.csv")
    with open(csv_file) as fh:
        assert list(csv.reader(fh))[-2:] == [["6.7", "3.0", "5.2", "2.3", str(right)], ["6.7", "3.0", "5.2", "2.3", str(wrong)]]
    after = parse_metrics(s.metrics())
    assert after.feedback.correct - before.feedback.correct == 1 and after.feedback.errors - before.feedback.errors == 1
    # Scoring a label is not traffic: the drift sensor counted only the one predict call.
    assert after.rows - before.rows == 1
    bad = {"feedback": [{"instance": [6.7, 3.0, "x", 2.3], "label": right}]}
    status, _, err = s.request("POST", "/v1/models/iris/feedback", bad)
    assert status == 400 and err["field"] == "feedback[0].instance[2]", err
    both = {"feedback": [{"id": "a:0", "instance": [1, 2, 3, 4], "label": right}]}
    assert s.request("POST", "/v1/models/iris/feedback", both)[2]["field"] == "feedback[0]"


def test_parse_metrics_round_trip(servers: dict[str, Server], store: tuple[Path, dict[str, Any]]) -> None:
    root, models = store
    for name in ("iris", "shop"):
        s = servers[name]
        before = parse_metrics(s.metrics())
        pipe, X, names = models[name]
        rows = X[:25]
        assert s.request("POST", f"/v1/models/{name}:predict", {"instances": _col(rows)})[0] == 200
        after = parse_metrics(s.metrics())
        assert after.model == name and after.version == "v1" and after.namespace == NS and after.sensor_enabled
        delta = after.delta(before)
        assert delta.rows == 25 and delta.prediction_rows == 25
        ref = Reference.from_dict(ModelStore(root).read_reference(NS, name, "v1"))
        expected = ref.count_window({n: rows[:, j] for j, n in enumerate(names)}, pipe.predict(rows))
        window = delta.window(ref)
        for n in names:
            got, want = window.features[n], expected.features[n]
            if isinstance(want, dict):
                assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
            else:
                assert np.array_equal(got, want)
        assert {k: v for k, v in delta.predictions.items() if v} == {k: v for k, v in expected.predictions.items() if v}
        # The pair projections of the numeric inputs, counted by the server as the trainer's code counts them.
        assert set(window.projections) == set(expected.projections) == (set(ref.multivariate.names) if ref.multivariate else set())
        for n, want in expected.projections.items():
            assert np.array_equal(window.projections[n], want) and want.sum() == 25
        assert delta.requests[("v1", "200")] == 1
    snap = parse_metrics(servers["diabetes"].metrics())
    assert isinstance(snap.predictions, np.ndarray) and snap.predictions.sum() == snap.prediction_rows


def _batch_requests(text: str) -> tuple[float, float]:
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("mlops_batch_requests_count"):
            count = float(line.split()[-1])
        elif line.startswith("mlops_batch_requests_sum"):
            total = float(line.split()[-1])
    return count, total


def test_batching_combines_concurrent_requests(servers: dict[str, Server]) -> None:
    s = servers["iris"]
    count0, total0 = _batch_requests(s.metrics())
    # A burst of 8 requests in one write: all are queued before the worker wakes, one predict call.
    one = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    req = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(req * 8)
        data = b""
        deadline = time.monotonic() + 20
        while data.count(b"predictions") < 8 and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 8
    count1, total1 = _batch_requests(s.metrics())
    assert total1 - total0 == 8 and count1 - count0 < 8, (count1 - count0, total1 - total0)

    # Concurrent clients on their own connections all get answers.
    results: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        c = s.conn()
        for _ in range(5):
            c.request("POST", "/v1/models/iris:predict", body=one)
            r = c.getresponse()
            r.read()
            with lock:
                results.append(r.status)
        c.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 40
    count2, total2 = _batch_requests(s.metrics())
    assert total2 - total1 == 40
    # A request larger than the batch size runs alone.
    big = s.request("POST", "/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 200})
    assert big[0] == 200 and len(big[2]["predictions"]) == 200


def test_sigterm_finishes_requests_in_flight(store: tuple[Path, dict[str, Any]]) -> None:
    root, _ = store
    digest = json.loads((root / NS / "iris" / "v1" / "metadata.json").read_text())["sha256"]["model.skops"]
    s = Server("--store", str(root), "--model", "iris", "--version", "v1", "--sha256", digest, "--no-drift-sensor",
               "--max-batch-delay-ms", "800")
    snap = parse_metrics(s.metrics())
    assert snap.version == "v1" and not snap.sensor_enabled and snap.sha256 == digest
    results: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        c = s.conn()
        c.request("POST", "/v1/models/iris:predict", body=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
        r = c.getresponse()
        json.loads(r.read())
        with lock:
            results.append(r.status)

    # Two rounds: the first shows the batcher requests come concurrently, so it holds the second for the delay.
    for _ in range(2):
        results.clear()
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        if _ == 1:
            s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert results == [200] * 4
    assert s.proc.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    assert any("drift sensor off" in line for line in s.lines)


def test_refuses_a_digest_mismatch(store: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = store
    r = run_serve("--store", str(root), "--model", "iris", "--sha256", "0" * 64)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "sha256" in lines[0] and lines[0].startswith("error:")
    copy = tmp_path / "store"
    shutil.copytree(root / NS / "iris", copy / NS / "iris")
    model = copy / NS / "iris" / "v1" / "model.skops"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes() + b"\0")
    r = run_serve("--store", str(copy), "--model", "iris")
    assert r.returncode == 2 and "sha256" in r.stderr
    r = run_serve("--store", str(root), "--model", "absent")
    assert r.returncode == 2 and "no version" in r.stderr


# -- fuzz: no body or path makes the server answer 5xx or die -------------------

from urllib.parse import quote  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=6), c, max_size=5),
    max_leaves=25,
)
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "colour", "age", "size"]) | _json, "shape": st.lists(st.integers(-2, 4), max_size=3) | _json,
     "datatype": st.sampled_from(["FP64", "INT64", "BYTES", "BOOL", "?"]), "data": _json}
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({"instances": _json}),
    st.fixed_dictionaries({"instances": st.lists(st.lists(_json, min_size=3, max_size=3) | st.dictionaries(st.sampled_from(["age", "colour", "size", "x"]), _json), max_size=4)}),
    st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=3)}, optional={"outputs": _json, "id": _json, "parameters": _json}),
    st.fixed_dictionaries({"feedback": st.lists(st.fixed_dictionaries({"id": _json | st.text(max_size=12), "label": _json}), max_size=3) | _json}),
)
_paths = st.one_of(
    st.sampled_from(["/v1/models/shop:predict", "/v2/models/shop/infer", "/v1/models/shop/feedback", "/v2/models/shop",
                     "/v1/models/shop", "/v2/health/ready", "/metrics", "/", "/v2/models/shop/versions/v1/infer"]),
    st.text(max_size=30).map(lambda t: "/" + t),
    st.sampled_from(["/v1/models/", "/v2/models/"]).flatmap(lambda p: st.text(max_size=20).map(lambda t: p + t)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE"]), path=_paths, body=_bodies,
       raw=st.booleans(), junk=st.binary(max_size=40))
def test_fuzz_http(servers: dict[str, Server], method: str, path: str, body: Any, raw: bool, junk: bytes) -> None:
    s = servers["shop"]
    data = junk if raw else json.dumps(body).encode()
    status, headers, payload = s.request(method, quote(path, safe="/:?=&"), raw=data)
    assert status < 500 or (status == 503 and path.endswith("ready")), (status, payload)
    if status >= 400:
        assert isinstance(payload, dict) and set(payload) == {"error", "field"}
    assert headers["x-model-version"] == "v1"


def test_still_serving_after_the_fuzz(servers: dict[str, Server]) -> None:
    for s in servers.values():
        assert s.proc.poll() is None
        assert s.request("GET", "/v2/health/ready")[0] == 200
