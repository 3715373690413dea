"""Open Inference Protocol V2 over gRPC: ``inference.GRPCInferenceService`` on its own port.

The same :class:`.handlers.ServerApp` answers as over REST: the same
validation (:func:`.protocol.parse_v2_object`), batcher, drift sensor and
prediction memory; requests are counted in the request metrics with
``protocol="grpc"`` and the HTTP status the same outcome has over REST, so
error-rate alerts see both.  Refusals map to gRPC status codes
(:data:`GRPC_CODES`) with the message ``"<field>: <error>"``.

Outputs always travel as ``raw_output_contents`` (as Triton answers; its
client reads nothing else); inputs may be typed ``contents`` or
``raw_input_contents``.  The model-repository RPCs are not served
(UNIMPLEMENTED): one server serves one model version.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import grpc
import numpy as np
from grpc import aio

from . import protocol
from .batching import Overloaded
from .handlers import EXTENSIONS, SERVER_NAME, ServerApp, internal_error, package_version
from .protocol import ProtocolError
from .tensors import encode
from .v2grpc import grpc_predict_v2_pb2 as pb
from .v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Which InferTensorContents field holds each datatype (FP16 has none: raw contents only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _bad(error: str, field: str) -> ProtocolError:
    return ProtocolError(400, error, field)


def _parameter(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


# Typed contents whose element type is exactly the datatype's: handed on as raw bytes, so they take the
# vectorised path of raw inputs (narrower types, e.g. INT8 in int_contents, are range-checked element by element).
_EXACT = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "UINT32": "<u4", "UINT64": "<u8"}


def request_object(req: pb.ModelInferRequest) -> tuple[dict[str, Any], list[bytes | None]]:
    """A ModelInferRequest as the JSON-shaped request :func:`.protocol.parse_v2_object` checks, plus raw inputs."""
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise _bad(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs", "raw_input_contents")
    inputs: list[dict[str, Any]] = []
    raws: list[bytes | None] = list(raw) if raw else [None] * len(req.inputs)
    for i, t in enumerate(req.inputs):
        shape = list(t.shape)
        d: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": shape}
        if raw:
            if t.HasField("contents"):
                raise _bad("give raw_input_contents or contents, not both", f"inputs[{i}].contents")
        else:
            values = _contents(t, i)
            exact = _EXACT.get(t.datatype)
            if exact and shape and all(s >= 0 for s in shape) and len(values) == math.prod(shape):
                raws[i] = np.asarray(values, dtype=exact).tobytes()
            else:
                d["data"] = values
        inputs.append(d)
    obj: dict[str, Any] = {"inputs": inputs}
    if req.id:
        obj["id"] = req.id
    if req.outputs:
        obj["outputs"] = [{"name": o.name} for o in req.outputs]
    return obj, raws


def _contents(t: pb.ModelInferRequest.InferInputTensor, i: int) -> list[Any]:
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        if t.datatype == "FP16":
            raise _bad("FP16 tensors travel as raw_input_contents", f"inputs[{i}].contents")
        return []  # the parser names the unknown datatype
    values = list(getattr(t.contents, field))
    if field != "bytes_contents":
        return values
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise _bad("a BYTES element is not UTF-8 text", f"inputs[{i}].contents") from None


def infer_response(app: ServerApp, rid: str, tensors: Sequence[protocol.OutputTensor]) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=app.name, model_version=app.version, id=rid)
    for t in tensors:
        resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        resp.raw_output_contents.append(encode(t.values, t.datatype))
    return resp


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The V2 gRPC service over one :class:`ServerApp`."""

    def __init__(self, app: ServerApp) -> None:
        self.app = app

    async def _answer(self, context: aio.ServicerContext, what: str, fn: Any) -> Any:
        """Run ``fn``; count it; turn every refusal into its gRPC status (and every bug into INTERNAL)."""
        t0 = time.perf_counter()
        code = 200
        try:
            return await fn()
        except ProtocolError as exc:
            code = exc.status
            message = f"{exc.field}: {exc.error}"
        except Overloaded:
            code = 503
            message = "body: the server is at capacity; retry later"
        except Exception as exc:
            code = 500
            message = protocol.loads(internal_error(exc, f"gRPC {what}").body)["error"]
        finally:
            self.app.metrics.observe_request("grpc", code, time.perf_counter() - t0)
        await context.abort(GRPC_CODES.get(code, grpc.StatusCode.INTERNAL), message)

    def _model(self, name: str, version: str) -> None:
        app = self.app
        if name != app.name:
            raise ProtocolError(404, f"model {name!r} not found; this server serves {app.name!r}", "name")
        if version and version != app.version:
            raise ProtocolError(404, f"model {name!r} has no version {version!r} here (serving {app.version!r})", "version")

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        async def run() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)
        return await self._answer(context, "ServerLive", run)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        async def run() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.app.ready)
        return await self._answer(context, "ServerReady", run)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        async def run() -> pb.ModelReadyResponse:
            self._model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.app.ready)
        return await self._answer(context, "ModelReady", run)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: aio.ServicerContext) -> pb.ServerMetadataResponse:
        async def run() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=package_version(), extensions=list(EXTENSIONS))
        return await self._answer(context, "ServerMetadata", run)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: aio.ServicerContext) -> pb.ModelMetadataResponse:
        async def run() -> pb.ModelMetadataResponse:
            self._model(request.name, request.version)
            meta = self.app.model_metadata()
            if not meta["versions"]:
                raise ProtocolError(503, "model is not ready", "name")
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
            )
        return await self._answer(context, "ModelMetadata", run)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        async def run() -> pb.ModelInferResponse:
            app = self.app
            self._model(request.model_name, request.model_version)
            if not app.ready or app.schema is None:
                raise ProtocolError(503, "model is not ready", "name")
            app.admit("grpc")
            obj, raws = request_object(request)
            bools = any(t.datatype == "BOOL" for t in request.inputs)
            req = protocol.parse_v2_object(obj, app.schema, raws, app.outputs, bools=bools)
            rid, tensors = await app.infer(req, "grpc")
            return infer_response(app, rid, tensors)
        return await self._answer(context, "ModelInfer", run)


class Malformed:
    """A request whose bytes are not the protobuf message of its RPC."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(message: Any) -> Any:
    """Parse a request, or return :class:`Malformed` so the RPC answers INVALID_ARGUMENT (grpcio's own parse failure is INTERNAL)."""
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception as exc:  # protobuf's DecodeError, or anything its parser raises
            return Malformed(f"not a valid {message.DESCRIPTOR.full_name}: {exc}")
    return parse


def service_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The RPCs of the .proto's service, each refusing malformed request bytes as INVALID_ARGUMENT."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(service, getattr(service, method.name)),
            request_deserializer=_lenient(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)


def _guarded(service: InferenceService, rpc: Any) -> Any:
    async def call(request: Any, context: aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            service.app.metrics.observe_request("grpc", 400)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"body: {request.error}")
        return await rpc(request, context)
    return call


class GrpcServer:
    """A ``grpc.aio`` server on the running event loop, sharing the HTTP server's application."""

    def __init__(self, app: ServerApp, *, max_message_bytes: int, max_concurrent_rpcs: int) -> None:
        self.app = app
        self.server = aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self.server.add_generic_rpc_handlers((service_handler(InferenceService(app)),))

    async def start(self, host: str, port: int) -> int:
        """Listen (OSError when the address cannot be bound); returns the port."""
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise OSError(str(exc)) from None
        if bound == 0:
            raise OSError(f"cannot bind {host}:{port}")
        await self.server.start()
        return bound

    async def stop(self, grace_seconds: float) -> None:
        """Refuse new RPCs, let those in flight finish for at most ``grace_seconds``."""
        await self.server.stop(grace_seconds)
