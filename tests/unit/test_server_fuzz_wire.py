"""Fuzz the binary data extension, gzip bodies and gRPC messages against a real server: no 5xx, no crash.

Hypothesis builds V2 bodies whose JSON header declares binary inputs
(``binary_data_size`` right, wrong, negative, not a number) followed by raw
bytes (random, or laid out for the declared datatype and shape), with an
``Inference-Header-Content-Length`` header that fits or not, sometimes gzip
compressed or with an unknown encoding; and gRPC ``ModelInferRequest``
messages with random shapes, datatypes, typed contents and raw contents, plus
random bytes that are not a message at all.  Every answer must be a 4xx (or
200) naming a field, every gRPC status a client error, and the servers must
still serve afterwards.
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2 as pb
from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from .test_server_support import GrpcServer, make_store, serving

DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES", "FP8"]
ITEMSIZE = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "INT32": 4, "UINT32": 4, "FP32": 4,
            "INT64": 8, "UINT64": 8, "FP64": 8}
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
                 grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("store")
    make_store(root)
    with serving(GrpcServer, root, ("iris", "shop"), "--grpc-port", "0", "--max-body-bytes", "20000") as started:
        yield started


@st.composite
def tensor_bytes(draw: st.DrawFn, datatype: str, count: int) -> bytes:
    """Raw bytes laid out right for the datatype (most of the time), or anything."""
    if draw(st.integers(0, 3)) == 0 or count > 200:
        return draw(st.binary(max_size=64))
    if datatype == "BYTES":
        words = draw(st.lists(st.text(max_size=6) | st.sampled_from(["4.9", "red", "1", "nan", "1e400"]), min_size=count, max_size=count))
        return b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    return draw(st.binary(min_size=count * ITEMSIZE.get(datatype, 1), max_size=count * ITEMSIZE.get(datatype, 1)))


@st.composite
def binary_request(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    inputs, tail = [], []
    for _ in range(draw(st.integers(1, 3))):
        dt = draw(st.sampled_from(DATATYPES))
        shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=2) | st.lists(st.integers(-3, 2**40), max_size=3))
        count = int(np.prod(shape)) if shape and all(0 <= s <= 50 for s in shape) else 1
        raw = draw(tensor_bytes(dt, count))
        size: Any = draw(st.sampled_from(["right", "right", "off", "junk"]))
        size = {"right": len(raw), "off": len(raw) + draw(st.integers(-5, 5)), "junk": draw(st.sampled_from([-1, "8", None, 1.5, 2**70]))}[size]
        t: dict[str, Any] = {"name": draw(st.sampled_from(["x", "age", "colour", "size", "sepal_length"])), "shape": shape, "datatype": dt}
        if draw(st.booleans()):
            t["parameters"] = {"binary_data_size": size}
            tail.append(raw)
        else:
            t["data"] = draw(st.lists(st.floats(allow_nan=False) | st.integers() | st.text(max_size=4), max_size=8))
        inputs.append(t)
    head: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        head["parameters"] = {"binary_data_output": draw(st.booleans() | st.integers())}
    if draw(st.booleans()):
        head["outputs"] = [{"name": draw(st.sampled_from(["predict", "predict_proba", "x"])),
                            "parameters": {"binary_data": draw(st.booleans() | st.text(max_size=2))}}]
    js = json.dumps(head).encode()
    body = js + b"".join(tail)
    headers = {"Inference-Header-Content-Length": str(len(js))}
    length = draw(st.sampled_from(["right", "right", "zero", "past", "junk", "none"]))
    if length == "zero":
        headers["Inference-Header-Content-Length"] = "0"
    elif length == "past":
        headers["Inference-Header-Content-Length"] = str(len(body) + draw(st.integers(1, 10)))
    elif length == "junk":
        headers["Inference-Header-Content-Length"] = draw(st.sampled_from(["-4", "x", "", "1e3", " 12 "]))
    elif length == "none":
        del headers["Inference-Header-Content-Length"]
    encoding = draw(st.sampled_from([None, None, "gzip", "gzip-broken", "br", "identity"]))
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "gzip-broken":
        body, headers["Content-Encoding"] = gzip.compress(body)[:-5], "gzip"
    elif encoding is not None:
        headers["Content-Encoding"] = encoding
    return body, headers


@st.composite
def valid_binary_request(draw: st.DrawFn, model: str) -> tuple[bytes, dict[str, str]]:
    """A request the model can answer (finite values, right layout), so the fuzz also runs the answering path."""
    n = draw(st.integers(1, 4))
    values = st.floats(-1e6, 1e6, allow_nan=False)
    if model == "iris":
        dt = draw(st.sampled_from(["FP32", "FP64"]))
        raw = np.array(draw(st.lists(values, min_size=4 * n, max_size=4 * n)), dtype="<f4" if dt == "FP32" else "<f8").tobytes()
        inputs = [{"name": "x", "shape": [n, 4], "datatype": dt, "parameters": {"binary_data_size": len(raw)}}]
        tail = [raw]
    else:
        age = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype="<f8").tobytes()
        words = [w.encode() for w in draw(st.lists(st.sampled_from(["red", "green", "blue", "purple", ""]), min_size=n, max_size=n))]
        colour = b"".join(struct.pack("<I", len(w)) + w for w in words)
        inputs = [{"name": "age", "shape": [n], "datatype": "FP64", "parameters": {"binary_data_size": len(age)}},
                  {"name": "colour", "shape": [n], "datatype": "BYTES", "parameters": {"binary_data_size": len(colour)}},
                  {"name": "size", "shape": [n], "datatype": "BYTES", "data": draw(st.lists(st.sampled_from(["1", "2", "3"]), min_size=n, max_size=n))}]
        tail = [age, colour]
    js = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": draw(st.booleans())}}).encode()
    return js + b"".join(tail), {"Inference-Header-Content-Length": str(len(js))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(model=st.sampled_from(["iris", "shop"]), data=st.data())
def test_fuzz_binary_bodies(servers: dict[str, GrpcServer], model: str, data: st.DataObject) -> None:
    body, headers = data.draw(binary_request() | valid_binary_request(model))
    s = servers[model]
    c = s.conn()
    try:
        c.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        r = c.getresponse()
        payload = r.read()
    finally:
        c.close()
    assert r.status in (200, 400, 413, 415), (r.status, payload[:300])
    if r.status != 200:
        assert set(json.loads(payload)) == {"error", "field"}
    else:
        n = int(r.getheader("Inference-Header-Content-Length") or len(payload))
        head = json.loads(payload[:n])
        assert {o["name"] for o in head["outputs"]} <= {"predict", "predict_proba"}


@st.composite
def infer_message(draw: st.DrawFn) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=draw(st.sampled_from(["iris", "iris", "iris", "shop", "", "zz"])),
                               model_version=draw(st.sampled_from(["", "", "", "v1", "v2"])), id=draw(st.text(max_size=4)))
    if req.model_name == "iris" and draw(st.booleans()):  # one the model can answer, typed or raw
        n = draw(st.integers(1, 4))
        values = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4 * n, max_size=4 * n))
        t = req.inputs.add(name="x", datatype="FP64", shape=[n, 4])
        if draw(st.booleans()):
            t.contents.fp64_contents.extend(values)
        else:
            req.raw_input_contents.append(np.array(values, dtype="<f8").tobytes())
        return req
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        dt = draw(st.sampled_from(DATATYPES))
        shape = draw(st.lists(st.integers(-2, 6), max_size=3) | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2))
        t = req.inputs.add(name=draw(st.sampled_from(["x", "age", "colour", "size", "sepal_length"])), datatype=dt, shape=shape)
        if use_raw:
            count = int(np.prod(shape)) if shape and all(0 <= s < 50 for s in shape) else 1
            req.raw_input_contents.append(draw(tensor_bytes(dt, count)))
        else:
            field = draw(st.sampled_from(["bool_contents", "int_contents", "int64_contents", "uint_contents", "fp32_contents",
                                          "fp64_contents", "bytes_contents"]))
            n = draw(st.integers(0, 10))
            values: Any = {
                "bool_contents": st.booleans(), "int_contents": st.integers(-(2**31), 2**31 - 1),
                "int64_contents": st.integers(-(2**63), 2**63 - 1), "uint_contents": st.integers(0, 2**32 - 1),
                "fp32_contents": st.floats(width=32), "fp64_contents": st.floats(), "bytes_contents": st.binary(max_size=6),
            }[field]
            getattr(t.contents, field).extend(draw(st.lists(values, min_size=n, max_size=n)))
    if draw(st.booleans()):
        req.raw_input_contents.append(draw(st.binary(max_size=16)))  # one entry too many, sometimes
    for name in draw(st.lists(st.sampled_from(["predict", "predict_proba", "nope"]), max_size=2)):
        req.outputs.add(name=name)
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(req=infer_message(), junk=st.binary(max_size=60), send_junk=st.integers(0, 5))
def test_fuzz_grpc_messages(servers: dict[str, GrpcServer], req: pb.ModelInferRequest, junk: bytes, send_junk: int) -> None:
    s = servers["shop" if req.model_name == "shop" else "iris"]
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
        try:
            if send_junk == 0:  # bytes that need not be a ModelInferRequest at all
                ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)(junk, timeout=30)
            else:
                resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
                assert {o.name for o in resp.outputs} <= {"predict", "predict_proba"}
                assert len(resp.raw_output_contents) == len(resp.outputs)
        except grpc.RpcError as exc:
            assert exc.code() in CLIENT_ERRORS, (exc.code(), exc.details())
            assert ": " in (exc.details() or ""), exc.details()


def test_still_serving_after_the_fuzz(servers: dict[str, GrpcServer]) -> None:
    for s in servers.values():
        assert s.proc.poll() is None
        assert s.request("GET", "/v2/health/ready")[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            assert pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert not any("Traceback" in line for line in s.lines), "".join(s.lines)[-3000:]


def test_the_fuzz_reached_the_model_and_the_checks(servers: dict[str, GrpcServer]) -> None:
    """Both kinds of answers happened: the generators are not all refused at the door, nor all accepted."""
    from mlops_operator.runtime.sensor import parse_metrics

    seen: dict[tuple[str, str], int] = {}
    for s in servers.values():
        for k, n in parse_metrics(s.metrics()).requests.items():
            seen[k] = seen.get(k, 0) + n
    assert seen.get(("grpc", "200"), 0) > 0 and seen.get(("grpc", "400"), 0) > 0
    assert seen.get(("v2", "200"), 0) > 0 and seen.get(("v2", "400"), 0) > 0
    assert not any(code.startswith("5") for (_, code) in seen)
