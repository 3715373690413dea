"""Request parsing and validation of the model server (pure, no HTTP)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_operator.runtime.protocol import (
    ProtocolError,
    Schema,
    parse_feedback,
    parse_v1,
    parse_v2,
    v2_response,
)

NUM = Schema.from_metadata(
    {"task": "classification", "features": [{"name": n, "kind": "numeric", "dtype": "float64"} for n in "abcd"], "classes": [0, 1]}
)
NUM_MISSING = NUM.with_policy(allow_missing=True, allow_unseen=True)
MIXED = Schema.from_metadata(
    {
        "task": "regression",
        "features": [
            {"name": "age", "kind": "numeric", "dtype": "float64"},
            {"name": "colour", "kind": "categorical", "dtype": "object", "categories": ["blue", "red"]},
            {"name": "size", "kind": "categorical", "dtype": "int64", "categories": ["1", "2"]},
        ],
    }
)


def b(obj: object) -> bytes:
    return json.dumps(obj).encode()


def err(fn, *args) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


# -- V1 ---------------------------------------------------------------------


def test_v1_positional_and_named_rows() -> None:
    x = parse_v1(b({"instances": [[1, 2.5, 3, 4], {"a": 1, "b": 2, "c": 3, "d": 4}]}), NUM)
    assert x.dtype == np.float64 and x.shape == (2, 4)
    assert x.tolist() == [[1, 2.5, 3, 4], [1, 2, 3, 4]]
    fast = parse_v1(b({"instances": [[1, 2, 3, 4]] * 3}), NUM)
    assert fast.dtype == np.float64 and fast.shape == (3, 4)


def test_v1_mixed_rows_are_objects_with_floats_and_strings() -> None:
    x = parse_v1(b({"instances": [[30, "red", "1"], {"age": 31.5, "colour": "blue", "size": 2}]}), MIXED)
    assert x.dtype == object
    assert x.tolist() == [[30.0, "red", "1"], [31.5, "blue", "2"]]
    assert type(x[0, 0]) is float


@pytest.mark.parametrize(
    "body,field,status",
    [
        (b"", "body", 400),
        (b"{", "body", 400),
        (b"[1, 2]", "body", 400),
        (b'{"x": 1}', "instances", 400),
        (b'{"instances": []}', "instances", 400),
        (b'{"instances": 5}', "instances", 400),
        (b'{"instances": [[1, 2, 3]]}', "instances[0]", 400),
        (b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}', "instances[1]", 400),
        (b'{"instances": [[1, 2, 3, 4], [1, 2, "x", 4]]}', "instances[1][2]", 400),
        (b'{"instances": [[1, 2, 3, true]]}', "instances[0][3]", 400),
        (b'{"instances": [[1, 2, 3, null]]}', "instances[0][3]", 400),
        (b'{"instances": [[1, 2, 3, NaN]]}', "instances[0][3]", 400),
        (b'{"instances": [[1, 2, 3, 4], [1, Infinity, 3, 4]]}', "instances[1][1]", 400),
        (b'{"instances": [[1, 2, 3, -Infinity]]}', "instances[0][3]", 400),
        (b'{"instances": [[1, 2, 3, 1e999]]}', "instances[0][3]", 400),
        (b'{"instances": [{"a": 1, "b": 2, "c": 3, "e": 4}]}', "instances[0].e", 400),
        (b'{"instances": [{"a": 1, "b": 2, "c": 3}]}', "instances[0]", 400),
        (b'{"instances": [{"a": 1, "b": 2, "c": 3, "d": "4"}]}', "instances[0].d", 400),
        (b'{"instances": [7]}', "instances[0]", 400),
        (b'{"instances": [[1, 2, 3, [4]]]}', "instances[0][3]", 400),
        (b'{"instances": [[1, 2, 3, 4]], "inputs": [[5, 6, 7, 8]]}', "inputs", 400),  # which rows did the client mean?
    ],
)
def test_v1_rejects_with_field(body: bytes, field: str, status: int) -> None:
    e = err(parse_v1, body, NUM)
    assert (e.field, e.status) == (field, status), e.error
    assert e.error


def test_missing_values_only_when_the_pipeline_imputes() -> None:
    x = parse_v1(b({"instances": [[1, None, 3, 4]]}), NUM_MISSING)
    assert math.isnan(x[0, 1])
    x = parse_v1(b"{\"instances\": [[1, NaN, 3, 4], [1, 2, 3, 4]]}", NUM_MISSING)
    assert math.isnan(x[0, 1])
    assert err(parse_v1, b'{"instances": [[1, Infinity, 3, 4]]}', NUM_MISSING).field == "instances[0][1]"


def test_categorical_rules() -> None:
    assert err(parse_v1, b({"instances": [[30, 5, "1"]]}), MIXED).field == "instances[0][1]"
    assert err(parse_v1, b({"instances": [[30, None, "1"]]}), MIXED).field == "instances[0][1]"
    assert err(parse_v1, b({"instances": [["30", "red", "1"]]}), MIXED).field == "instances[0][0]"
    # integer columns declared categorical take integers, compared as str like the trainer does
    assert parse_v1(b({"instances": [[30, "red", 2]]}), MIXED)[0, 2] == "2"
    # unseen levels pass (the encoder ignores them) unless the probe said otherwise
    assert parse_v1(b({"instances": [[30, "purple", "1"]]}), MIXED)[0, 1] == "purple"
    strict = MIXED.with_policy(allow_missing=False, allow_unseen=False)
    assert err(parse_v1, b({"instances": [[30, "purple", "1"]]}), strict).field == "instances[0][1]"


# -- V2 ---------------------------------------------------------------------


def test_v2_matrix_flat_and_nested() -> None:
    flat = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    nested = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}
    for body in (flat, nested):
        r = parse_v2(b(body), NUM)
        assert r.rows.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
        assert r.outputs == ("predict", "predict_proba")  # no outputs asked: all the model produces
        assert parse_v2(b(body), NUM, outputs=("predict",)).outputs == ("predict",)
    r = parse_v2(b({**flat, "id": "abc", "outputs": [{"name": "predict_proba"}]}), NUM)
    assert r.id == "abc" and r.outputs == ("predict_proba",)
    r = parse_v2(b({**flat, "parameters": {"predict_proba": True}}), NUM)
    assert r.outputs == ("predict", "predict_proba")
    ints = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}
    assert parse_v2(b(ints), NUM).rows.tolist() == [[1, 2, 3, 4]]


def test_v2_one_tensor_per_feature() -> None:
    body = {
        "inputs": [
            {"name": "size", "shape": [2], "datatype": "BYTES", "data": ["1", "2"]},
            {"name": "age", "shape": [2, 1], "datatype": "FP64", "data": [[30], [40.5]]},
            {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
        ]
    }
    assert parse_v2(b(body), MIXED).rows.tolist() == [[30.0, "red", "1"], [40.5, "blue", "2"]]
    body["inputs"][0] = {"name": "size", "shape": [2], "datatype": "INT64", "data": [1, 2]}
    assert parse_v2(b(body), MIXED).rows[:, 2].tolist() == ["1", "2"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}, "inputs[0].datatype"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["1", "2", "x", "4"]}]}, "inputs[0].data[2]"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3.5, 4]}]}, "inputs[0].data[2]"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, "3", 4]}]}, "inputs[0].data[2]"),
        ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 1e999]}]}, "inputs[0].data[7]"),
        ({"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": [1, -4], "datatype": "FP64", "data": []}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": "1,4", "datatype": "FP64", "data": []}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs"),
        ({"inputs": [{"name": "zz", "shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [{"shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "inputs[0].name"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "id": 5}, "id"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], "outputs": [{"name": "explain"}]}, "outputs[0].name"),
        ({"inputs": "x"}, "inputs"),
    ],
)
def test_v2_rejects_with_field(body: dict, field: str) -> None:
    e = err(parse_v2, b(body), NUM)
    assert e.field == field, e.error


def test_v2_per_feature_errors() -> None:
    two = [
        {"name": "age", "shape": [2], "datatype": "FP64", "data": [1, 2]},
        {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        {"name": "size", "shape": [2], "datatype": "BYTES", "data": ["1", "2"]},
    ]
    assert err(parse_v2, b({"inputs": two}), MIXED).field == "inputs[1].shape"
    dup = [two[0], dict(two[0]), two[2]]
    assert err(parse_v2, b({"inputs": dup}), MIXED).field == "inputs[1].name"
    wrong = [two[0], {"name": "colour", "shape": [2], "datatype": "FP64", "data": [1, 2]}, two[2]]
    assert err(parse_v2, b({"inputs": wrong}), MIXED).field == "inputs[1].datatype"
    proba = {"inputs": [two[0]], "outputs": [{"name": "predict_proba"}]}
    assert err(parse_v2, b(proba), MIXED).field == "outputs[0].name"


def test_v2_response_shapes() -> None:
    r = v2_response("m", "v1", "id-1", np.array([0, 2]), np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]]), ("predict", "predict_proba"))
    assert r["model_version"] == "v1" and r["id"] == "id-1"
    assert r["outputs"][0] == {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    assert r["outputs"][1]["shape"] == [2, 3] and len(r["outputs"][1]["data"]) == 6
    s = v2_response("m", "v1", "x", np.array(["yes", "no"], dtype=object), None, ("predict",))
    assert s["outputs"][0]["datatype"] == "BYTES" and s["outputs"][0]["data"] == ["yes", "no"]


def test_feedback_parsing() -> None:
    items = parse_feedback(b({"feedback": [{"id": "a:0", "label": 1}, {"id": "a:1", "label": "x"}]}))
    assert [(i.id, i.label) for i in items] == [("a:0", 1), ("a:1", "x")]
    assert err(parse_feedback, b({"feedback": []})).field == "feedback"
    assert err(parse_feedback, b({"feedback": [{"label": 1}]})).field == "feedback[0].id"
    assert err(parse_feedback, b({"feedback": [{"id": "a"}]})).field == "feedback[0].label"
    assert err(parse_feedback, b({"feedback": [{"id": "a", "label": [1]}]})).field == "feedback[0].label"


# -- fuzz: any JSON is either rows that fit the schema or a ProtocolError -------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)
rowish = st.lists(
    st.lists(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3), st.none(), st.booleans()), min_size=3, max_size=5),
    max_size=4,
)


def _check_rows(x: np.ndarray, schema: Schema) -> None:
    assert x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == schema.width
    for j, f in enumerate(schema.features):
        col = x[:, j]
        if f.numeric:
            vals = np.asarray(col, dtype=np.float64)
            assert not np.isinf(vals).any()
            assert schema.allow_missing or not np.isnan(vals).any()
        else:
            assert all(type(v) is str for v in col)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"instances": json_values}), st.fixed_dictionaries({"instances": rowish})))
def test_fuzz_v1(body: object) -> None:
    raw = json.dumps(body).encode()
    for schema in (NUM, NUM_MISSING, MIXED):
        try:
            x = parse_v1(raw, schema)
        except ProtocolError as e:
            assert e.status in (400, 413, 422) and isinstance(e.field, str)
            continue
        _check_rows(x, schema)


tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "a", "b", "c", "d", "age", "colour", "size", "zz"]) | st.integers(),
        "shape": st.lists(st.integers(min_value=-1, max_value=5), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "FP8"]),
        "data": json_values | rowish,
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(json_values, st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=4)}, optional={"id": json_values, "outputs": json_values, "parameters": json_values})))
def test_fuzz_v2(body: object) -> None:
    raw = json.dumps(body).encode()
    for schema in (NUM, MIXED):
        try:
            r = parse_v2(raw, schema)
        except ProtocolError as e:
            assert e.status in (400, 413, 422) and isinstance(e.field, str)
            continue
        _check_rows(r.rows, schema)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_fuzz_raw_bytes(raw: bytes) -> None:
    for fn in (lambda: parse_v1(raw, NUM), lambda: parse_v2(raw, MIXED), lambda: parse_feedback(raw)):
        try:
            fn()
        except ProtocolError:
            pass


# -- raw tensor bytes (binary data extension, gRPC raw contents) ------------


def test_raw_tensor_bytes_round_trip_and_refuse_what_does_not_fit() -> None:
    from mlops_operator.runtime.tensors import TensorBytesError, decode, encode

    for dt, values in (("FP32", np.array([1.5, -2.0])), ("INT8", np.array([-128, 127])), ("UINT64", np.array([0, 2**64 - 1], dtype=np.uint64)),
                       ("BOOL", np.array([True, False])), ("FP16", np.array([0.5, 65504.0]))):
        assert decode(encode(values, dt), dt, 2).tolist() == values.tolist()
    words = np.array(["setosa", "", "virg\u00ednica"], dtype=object)
    raw = encode(words, "BYTES")
    assert raw[:4] == b"\x06\x00\x00\x00" and decode(raw, "BYTES", 3) == ["setosa", "", "virg\u00ednica"]
    for bad, dt, n in ((raw[:-1], "BYTES", 3), (raw, "BYTES", 2), (raw + b"\x01", "BYTES", 3), (b"\x01\x00", "BYTES", 1),
                       (b"\xff\xfe", "FP32", 1), (b"\x02", "BOOL", 1), (b"\x01\x00\x00\x00\xff", "BYTES", 1)):
        with pytest.raises(TensorBytesError):
            decode(bad, dt, n)


def test_binary_body_cut_by_binary_data_size() -> None:
    raw = np.array([[1, 2, 3, 4]], dtype="<f8").tobytes()
    head = b({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}],
              "parameters": {"binary_data_output": True}})
    r = parse_v2(head + raw, NUM, json_length=len(head))
    assert r.rows.tolist() == [[1, 2, 3, 4]] and r.binary_outputs == {"predict", "predict_proba"}
    nan = np.array([[1, np.inf, 3, 4]], dtype="<f8").tobytes()
    assert err(lambda x, s: parse_v2(x, s, json_length=len(head)), head + nan, NUM).field == "inputs[0].data[1]"


def test_gzip_bodies() -> None:
    import gzip

    from mlops_operator.runtime.protocol import decode_body

    assert decode_body(gzip.compress(b"abc"), b"gzip", 10) == b"abc"
    assert decode_body(b"abc", b"identity", 10) == b"abc"
    assert err(decode_body, gzip.compress(b"x" * 11), b"gzip", 10).status == 413
    assert err(decode_body, gzip.compress(b"abc")[:-3], b"gzip", 10).status == 400
    assert err(decode_body, gzip.compress(b"abc") + b"zz", b"gzip", 10).status == 400
    assert err(decode_body, b"abc", b"deflate", 10).status == 415
