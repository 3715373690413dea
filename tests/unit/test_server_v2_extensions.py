"""The V2 binary data extension, default outputs, BYTES, shape and range checks, HEAD and gzip, over real HTTP."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .test_server_support import Server, make_store, serving

LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("store")
    return root, make_store(root)


@pytest.fixture(scope="module")
def servers(models: tuple[Path, dict[str, Any]]):  # type: ignore[no-untyped-def]
    with serving(Server, models[0], ("iris", "shop", "diabetes"), "--max-body-bytes", "100000") as started:
        yield started


def post(s: Server, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    c = s.conn()
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def binary_body(head: dict[str, Any], *raws: bytes) -> tuple[bytes, dict[str, str]]:
    js = json.dumps(head).encode()
    return js + b"".join(raws), {LENGTH: str(len(js)), "Content-Type": "application/octet-stream"}


def split_answer(headers: dict[str, str], payload: bytes) -> dict[str, Any]:
    """A V2 answer with its binary outputs decoded into "data", as a client does."""
    n = int(headers.get(LENGTH.lower(), len(payload)))
    head, tail = json.loads(payload[:n]), payload[n:]
    pos = 0
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        raw, pos = tail[pos:pos + size], pos + size
        if o["datatype"] == "BYTES":
            vals, k = [], 0
            while k < len(raw):
                (m,) = struct.unpack_from("<I", raw, k)
                vals.append(raw[k + 4:k + 4 + m].decode())
                k += 4 + m
            o["data"] = vals
        else:
            o["data"] = np.frombuffer(raw, dtype={"FP64": "<f8", "INT64": "<i8"}[o["datatype"]]).tolist()
    assert pos == len(tail)
    return head


def bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


# -- binary data extension ------------------------------------------------------


def test_binary_fp32_request_and_binary_outputs_match_the_model(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["iris"]
    rows = X[::10].astype(np.float32)
    raw = rows.astype("<f4").tobytes()
    body, headers = binary_body({
        "id": "bin-1",
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }, raw)
    status, h, payload = post(servers["iris"], "/v2/models/iris/infer", body, headers)
    assert status == 200, payload[:300]
    assert int(h[LENGTH.lower()]) < len(payload)  # binary outputs follow the JSON header
    head = json.loads(payload[: int(h[LENGTH.lower()])])
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in head["outputs"])
    out = {o["name"]: o for o in split_answer(h, payload)["outputs"]}
    assert out["predict"]["data"] == pipe.predict(rows.astype(np.float64)).tolist()
    proba = np.array(out["predict_proba"]["data"]).reshape(out["predict_proba"]["shape"])
    assert np.allclose(proba, pipe.predict_proba(rows.astype(np.float64)))


def test_binary_bytes_columns_and_per_output_choice(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["shop"]
    rows = X[:5]
    age = np.array(rows[:, 0], dtype="<f8").tobytes()
    colour = bytes_tensor([str(v) for v in rows[:, 1]])
    body, headers = binary_body({
        "inputs": [
            {"name": "age", "shape": [5], "datatype": "FP64", "parameters": {"binary_data_size": len(age)}},
            {"name": "colour", "shape": [5], "datatype": "BYTES", "parameters": {"binary_data_size": len(colour)}},
            {"name": "size", "shape": [5], "datatype": "BYTES", "data": [str(v) for v in rows[:, 2]]},
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}],
    }, age, colour)
    status, h, payload = post(servers["shop"], "/v2/models/shop/infer", body, headers)
    assert status == 200, payload[:300]
    head = json.loads(payload[: int(h[LENGTH.lower()])])
    kinds = {o["name"]: ("data" in o) for o in head["outputs"]}
    assert kinds == {"predict": False, "predict_proba": True}  # only predict asked for binary
    out = {o["name"]: o for o in split_answer(h, payload)["outputs"]}
    assert out["predict"]["data"] == pipe.predict(rows).tolist()
    assert np.allclose(np.array(out["predict_proba"]["data"]).reshape(5, 2), pipe.predict_proba(rows))


def test_json_request_with_binary_outputs_only(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["diabetes"]
    rows = X[:3]
    body = json.dumps({"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, h, payload = post(servers["diabetes"], "/v2/models/diabetes/infer", body)
    assert status == 200 and h["content-type"] == "application/octet-stream"
    (out,) = split_answer(h, payload)["outputs"]
    assert np.allclose(out["data"], pipe.predict(rows))


@pytest.mark.parametrize("case,field", [
    ("size past the end", "inputs[0].parameters.binary_data_size"),
    ("bytes left over", "body"),
    ("wrong size for the shape", "inputs[0].parameters.binary_data_size"),
    ("no length header", "inputs[0].parameters.binary_data_size"),
    ("header not a number", LENGTH),
    ("header past the body", LENGTH),
    ("data and binary", "inputs[0].data"),
])
def test_binary_request_errors_name_the_field(case: str, field: str, servers: dict[str, Server]) -> None:
    raw = np.zeros((2, 4), dtype="<f4").tobytes()
    head = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}]}
    body, headers = binary_body(head, raw)
    if case == "size past the end":
        body, headers = binary_body(head, raw[:-4])
    elif case == "bytes left over":
        body, headers = binary_body(head, raw, b"\x00")
    elif case == "wrong size for the shape":
        head["inputs"][0]["shape"] = [1, 4]
        body, headers = binary_body(head, raw)
    elif case == "no length header":
        del headers[LENGTH]
        body = json.dumps(head).encode()
    elif case == "header not a number":
        headers[LENGTH] = "twelve"
    elif case == "header past the body":
        headers[LENGTH] = str(len(body) + 1)
    elif case == "data and binary":
        head["inputs"][0]["data"] = [0.0] * 8
        body, headers = binary_body(head, raw)
    status, _, payload = post(servers["iris"], "/v2/models/iris/infer", body, headers)
    assert status == 400, payload
    assert json.loads(payload)["field"] == field


# -- outputs, BYTES, shape, ranges ----------------------------------------------


def test_no_outputs_asked_returns_all_the_metadata_lists(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["iris"]
    status, _, meta = post(servers["iris"], "/v2/models/iris", b"", method="GET")
    listed = [o["name"] for o in json.loads(meta)["outputs"]]
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": X[:2].tolist()}]}).encode()
    status, _, payload = post(servers["iris"], "/v2/models/iris/infer", body)
    assert status == 200
    outs = {o["name"]: o for o in json.loads(payload)["outputs"]}
    assert list(outs) == listed == ["predict", "predict_proba"]
    assert np.allclose(np.array(outs["predict_proba"]["data"]).reshape(2, 3), pipe.predict_proba(X[:2]))


def test_bytes_matrix_converts_numeric_strings(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["shop"]
    rows = X[:2]
    data = [[str(r[0]), r[1], r[2]] for r in rows.tolist()]
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "BYTES", "data": data}]}).encode()
    status, _, payload = post(servers["shop"], "/v2/models/shop/infer", body)
    assert status == 200, payload
    assert json.loads(payload)["outputs"][0]["data"] == pipe.predict(rows).tolist()
    data[1][0] = "forty"
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "BYTES", "data": data}]}).encode()
    status, _, payload = post(servers["shop"], "/v2/models/shop/infer", body)
    err = json.loads(payload)
    assert status == 400 and err["field"] == "inputs[0].data[3]" and "'forty'" in err["error"]


@pytest.mark.parametrize("data", [
    [[1, 2, 3, 4], [5, 6, 7]],            # ragged
    [[1, 2], [3, 4], [5, 6], [7, 8]],     # transposed: [4, 2] sent for shape [2, 4]
    [[1, 2, 3, 4], [[5], 6, 7, 8]],       # deeper than the shape
])
def test_nested_data_must_match_the_shape(data: list[Any], servers: dict[str, Server]) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": data}]}).encode()
    status, _, payload = post(servers["iris"], "/v2/models/iris/infer", body)
    assert status == 400 and json.loads(payload)["field"] == "inputs[0].data", payload


@pytest.mark.parametrize("datatype,value", [
    ("UINT8", -2), ("INT8", 300), ("INT64", 2**70), ("FP16", 1e6), ("FP32", 1e300), ("UINT64", 2**64), ("INT32", -(2**31) - 1),
])
def test_each_element_within_its_datatype_range(datatype: str, value: Any, servers: dict[str, Server]) -> None:
    data = [1, 2, 3, 4, 5, value, 7, 8]
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": datatype, "data": data}]}).encode()
    status, _, payload = post(servers["iris"], "/v2/models/iris/infer", body)
    err = json.loads(payload)
    assert status == 400 and err["field"] == "inputs[0].data[5]" and datatype in err["error"], payload
    columns = [{"name": n, "shape": [1], "datatype": datatype, "data": [value if n == "petal_width" else 1]}
               for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
    status, _, payload = post(servers["iris"], "/v2/models/iris/infer", json.dumps({"inputs": columns}).encode())
    assert status == 400 and json.loads(payload)["field"] == "inputs[3].data[0]", payload


# -- HTTP: HEAD and Content-Encoding ----------------------------------------------


@pytest.mark.parametrize("path", ["/", "/v2/health/ready", "/v2/models/iris", "/v1/models/iris", "/metrics"])
def test_head_answers_get_routes_without_a_body(path: str, servers: dict[str, Server]) -> None:
    s = servers["iris"]
    get_status, get_headers, get_body = post(s, path, b"", method="GET")
    c = s.conn()
    try:
        c.request("HEAD", path)
        r = c.getresponse()
        assert r.status == get_status == 200
        assert r.read() == b""
        if path != "/metrics":  # the metrics text grows between two requests
            assert int(r.getheader("Content-Length")) == len(get_body)
        c.request("GET", "/v2/health/live")  # the connection is still in step after a HEAD
        assert c.getresponse().read() == b'{"live":true}'
    finally:
        c.close()


def test_head_on_a_post_route_is_405(servers: dict[str, Server]) -> None:
    status, h, _ = post(servers["iris"], "/v2/models/iris/infer", b"", method="HEAD")
    assert status == 405 and h["allow"] == "POST"
    status, h, _ = post(servers["iris"], "/v2/health/live", b"{}", method="POST")
    assert status == 405 and h["allow"] == "GET, HEAD"


def test_gzip_bodies_are_decompressed_within_the_body_limit(models: Any, servers: dict[str, Server]) -> None:
    _, m = models
    pipe, X, _ = m["iris"]
    plain = json.dumps({"instances": X[:3].tolist()}).encode()
    status, _, payload = post(servers["iris"], "/v1/models/iris:predict", gzip.compress(plain), {"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(payload)["predictions"] == pipe.predict(X[:3]).tolist()
    bomb = gzip.compress(b'{"instances": [' + b" " * 200_000 + b"]}")  # 200 KB inflated, limit 100 KB
    assert len(bomb) < 100_000
    status, _, payload = post(servers["iris"], "/v1/models/iris:predict", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and json.loads(payload)["field"] == "body"
    status, _, payload = post(servers["iris"], "/v1/models/iris:predict", plain, {"Content-Encoding": "br"})
    assert status == 415 and json.loads(payload)["field"] == "Content-Encoding"
    status, _, payload = post(servers["iris"], "/v1/models/iris:predict", plain, {"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in json.loads(payload)["error"]
