"""Open Inference Protocol V2 over gRPC: a real server subprocess, called with grpcio and the committed stubs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlops_operator.runtime.sensor import parse_metrics
from mlops_operator.runtime.tensors import decode, encode
from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2 as pb
from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from .test_server_support import ROOT, GrpcServer, make_store, run_serve, serving

PROTO = "mlops_operator/runtime/v2grpc/grpc_predict_v2.proto"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("store")
    return root, make_store(root)




@pytest.fixture(scope="module")
def servers(models: tuple[Path, dict[str, Any]]):  # type: ignore[no-untyped-def]
    with serving(GrpcServer, models[0], ("iris", "shop"), "--grpc-port", "0", "--max-body-bytes", "100000") as started:
        yield started


@pytest.fixture(scope="module")
def stubs(servers: dict[str, GrpcServer]):  # type: ignore[no-untyped-def]
    channels = {n: grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") for n, s in servers.items()}
    try:
        yield {n: pb_grpc.GRPCInferenceServiceStub(c) for n, c in channels.items()}
    finally:
        for c in channels.values():
            c.close()


def outputs(resp: pb.ModelInferResponse) -> dict[str, np.ndarray | list[Any]]:
    out: dict[str, Any] = {}
    for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True):
        v = decode(raw, o.datatype, int(np.prod(o.shape)))
        out[o.name] = v if isinstance(v, list) else v.reshape(list(o.shape))
    return out


def test_health_and_metadata(stubs: dict[str, Any]) -> None:
    s = stubs["iris"]
    assert s.ServerLive(pb.ServerLiveRequest()).live
    assert s.ServerReady(pb.ServerReadyRequest()).ready
    assert s.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    assert "binary_tensor_data" in s.ServerMetadata(pb.ServerMetadataRequest()).extensions
    meta = s.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert meta.versions == ["v1"] and [i.name for i in meta.inputs] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert [o.name for o in meta.outputs] == ["predict", "predict_proba"]
    with pytest.raises(grpc.RpcError) as info:
        s.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "name:" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        s.ModelReady(pb.ModelReadyRequest(name="iris", version="v9"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_typed_and_raw_contents_predict_like_the_model(models: Any, stubs: dict[str, Any], servers: dict[str, GrpcServer]) -> None:
    _, m = models
    pipe, X, _ = m["iris"]
    rows = X[::15]
    before = parse_metrics(servers["iris"].metrics())
    typed = pb.ModelInferRequest(model_name="iris", id="g-1")
    typed.inputs.add(name="x", datatype="FP64", shape=list(rows.shape)).contents.fp64_contents.extend(rows.reshape(-1).tolist())
    resp = stubs["iris"].ModelInfer(typed)
    assert resp.id == "g-1" and resp.model_version == "v1"
    out = outputs(resp)
    assert out["predict"].tolist() == pipe.predict(rows).tolist()
    assert np.allclose(out["predict_proba"], pipe.predict_proba(rows))

    raw = pb.ModelInferRequest(model_name="iris", model_version="v1", outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="predict")])
    raw.inputs.add(name="x", datatype="FP32", shape=list(rows.shape))
    raw.raw_input_contents.append(rows.astype("<f4").tobytes())
    out = outputs(stubs["iris"].ModelInfer(raw))
    assert list(out) == ["predict"] and out["predict"].tolist() == pipe.predict(rows.astype(np.float32).astype(np.float64)).tolist()

    after = parse_metrics(servers["iris"].metrics())
    assert after.requests[("grpc", "200")] - before.requests.get(("grpc", "200"), 0) == 2
    assert after.rows - before.rows == 2 * len(rows)  # the drift sensor counted both


def test_bytes_columns(models: Any, stubs: dict[str, Any]) -> None:
    _, m = models
    pipe, X, _ = m["shop"]
    rows = X[:4]
    req = pb.ModelInferRequest(model_name="shop")
    req.inputs.add(name="age", datatype="FP64", shape=[4]).contents.fp64_contents.extend(rows[:, 0].tolist())
    req.inputs.add(name="colour", datatype="BYTES", shape=[4]).contents.bytes_contents.extend(v.encode() for v in rows[:, 1])
    req.inputs.add(name="size", datatype="BYTES", shape=[4, 1]).contents.bytes_contents.extend(v.encode() for v in rows[:, 2])
    out = outputs(stubs["shop"].ModelInfer(req))
    assert out["predict"] == pipe.predict(rows).tolist()


def _matrix(datatype: str, field: str, values: list[Any], shape: tuple[int, int] = (2, 4)) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="iris")
    getattr(req.inputs.add(name="x", datatype=datatype, shape=list(shape)).contents, field).extend(values)
    return req


@pytest.mark.parametrize("req,code,where", [
    (_matrix("INT8", "int_contents", [1, 2, 3, 4, 5, 300, 7, 8]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].data[5]"),
    (_matrix("UINT8", "uint_contents", [1, 2, 3, 4, 5, 256, 7, 8]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].data[5]"),
    (_matrix("FP64", "fp64_contents", [1.0] * 7), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].data"),
    (_matrix("FP64", "fp64_contents", [1.0] * 6, (2, 3)), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].shape"),
    (_matrix("FP64", "fp64_contents", [1.0, float("inf")] * 4), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].data[1]"),
    (_matrix("FP16", "fp32_contents", [1.0] * 8), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].contents"),
    (_matrix("FP99", "fp32_contents", [1.0] * 8), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].datatype"),
    (pb.ModelInferRequest(model_name="iris"), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
    (pb.ModelInferRequest(model_name="other"), grpc.StatusCode.NOT_FOUND, "name"),
    (pb.ModelInferRequest(model_name="iris", model_version="v0"), grpc.StatusCode.NOT_FOUND, "version"),
])
def test_refusals_map_to_grpc_status_codes(req: pb.ModelInferRequest, code: grpc.StatusCode, where: str,
                                           stubs: dict[str, Any], servers: dict[str, GrpcServer]) -> None:
    before = parse_metrics(servers["iris"].metrics()).requests
    with pytest.raises(grpc.RpcError) as info:
        stubs["iris"].ModelInfer(req)
    assert info.value.code() == code and info.value.details().startswith(where + ":"), info.value.details()
    after = parse_metrics(servers["iris"].metrics()).requests
    http = "404" if code == grpc.StatusCode.NOT_FOUND else "400"
    assert after[("grpc", http)] == before.get(("grpc", http), 0) + 1


def test_raw_contents_errors(stubs: dict[str, Any]) -> None:
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    req.raw_input_contents.append(np.zeros(7, dtype="<f4").tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stubs["iris"].ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "binary_data_size" in info.value.details()
    req.raw_input_contents.append(b"")
    with pytest.raises(grpc.RpcError) as info:
        stubs["iris"].ModelInfer(req)
    assert info.value.details().startswith("raw_input_contents:")


def test_model_repository_rpcs_are_unimplemented(servers: dict[str, GrpcServer]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{servers['iris'].grpc_port}") as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            call(b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_beyond_the_body_limit_is_refused(servers: dict[str, GrpcServer], stubs: dict[str, Any]) -> None:
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="x", datatype="FP32", shape=[40_000, 4])
    req.raw_input_contents.append(np.zeros((40_000, 4), dtype="<f4").tobytes())  # 640 KB > --max-body-bytes 100000
    with pytest.raises(grpc.RpcError) as info:
        stubs["iris"].ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stubs["iris"].ServerLive(pb.ServerLiveRequest()).live  # and the server goes on


def test_grpc_port_flags(models: Any) -> None:
    root, _ = models
    r = run_serve("--store", str(root), "--model", "iris", "--port", "9000", "--grpc-port", "9000")
    assert r.returncode == 2 and "--grpc-port must differ" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_serve("--store", str(root), "--model", "iris", "--grpc-port", str(port))
    assert r.returncode == 2 and "cannot listen for gRPC" in r.stderr, r.stderr


def test_raw_output_encoding_round_trips() -> None:
    assert decode(encode(np.array(["a", "bc"], dtype=object), "BYTES"), "BYTES", 2) == ["a", "bc"]


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """The generated code is committed (no code generator in the image); it must describe the .proto as it is."""
    from google.protobuf import descriptor_pb2

    out = tmp_path / "set.pb"
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "operator"),
                        f"--descriptor_set_out={out}", PROTO], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]

    def drop_json_names(m: Any) -> None:  # protoc adds them to descriptor sets, python code generation does not
        for f in m.field:
            f.ClearField("json_name")
        for n in m.nested_type:
            drop_json_names(n)

    for m in fresh.message_type:
        drop_json_names(m)
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "regenerate runtime/v2grpc with the command at the top of grpc_predict_v2.proto"
    methods = {m.name for m in fresh.service[0].method}
    assert {n for n in dir(pb_grpc.GRPCInferenceServiceServicer) if not n.startswith("_")} == methods
