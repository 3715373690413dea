"""The model server's application: its state and one handler per endpoint.

Transport-free: handlers take the request body as bytes and return a
:class:`Response` (or an awaitable of one); :mod:`.routing` picks the handler
and :func:`answer` turns every outcome into a response with KServe's error
taxonomy — invalid input 400/422 naming the field, unknown model 404,
overload 503 with ``Retry-After``, anything else 500 with an error id that is
logged with its traceback.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable

import numpy as np

from . import protocol
from .batching import Batcher, ModelError, Overloaded
from .feedback import FeedbackProcessor, FeedbackWriter, IdFactory, PredictionMemory, row_ids
from .model_loading import LoadedModel
from .protocol import ProtocolError, Schema
from .serving_metrics import CONTENT_TYPE, ServingMetrics

SERVER_NAME = "mlops-operator"
JSON = b"application/json"
OCTETS = b"application/octet-stream"
JSON_LENGTH = protocol.JSON_LENGTH_HEADER.encode()
RETRY_AFTER_SECONDS = 1
EXTENSIONS = ("binary_tensor_data",)  # as Triton names the binary data extension in its server metadata


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    version: str | None = None
    """The model version that answered, when another server did (the router's challenger); else this server's."""


def error(status: int, message: str, field: str = "path", headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(status, protocol.dumps({"error": message, "field": field}), headers=headers)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, protocol.dumps(obj))


def protocol_error(exc: ProtocolError) -> Response:
    return Response(exc.status, protocol.dumps(exc.to_dict()))


def internal_error(exc: BaseException, what: str) -> Response:
    """A 500 whose id ties the client's answer to the traceback in the log."""
    eid = secrets.token_hex(6)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    print(f"error: {what} failed (error id {eid}): {type(exc).__name__}: {exc}\n{tb}", file=sys.stderr, flush=True)
    return Response(500, protocol.dumps({"error": f"internal server error; error id {eid}", "error_id": eid}))


def overloaded() -> Response:
    return error(503, "the server is at capacity; retry later", "body",
                 headers=((b"Retry-After", str(RETRY_AFTER_SECONDS).encode()),))


async def complete(result: Awaitable[Response], what: str) -> Response:
    """Await a handler's answer; every exception becomes the response it deserves."""
    try:
        return await result
    except ProtocolError as exc:
        return protocol_error(exc)
    except Overloaded:
        return overloaded()
    except Exception as exc:
        return internal_error(exc, what)


class ServerApp:
    """State of one serving process and its handlers."""

    def __init__(self, name: str, namespace: str, version: str | None, *, max_body_bytes: int) -> None:
        self.name = name
        self.namespace = namespace
        self.version = version or ""
        self.max_body_bytes = max_body_bytes
        self.ready = False
        self.shutting_down = False
        self.model: LoadedModel | None = None
        self.schema: Schema | None = None
        self.outputs: tuple[str, ...] = ("predict",)
        self.batcher: Batcher | None = None
        self.memory: PredictionMemory | None = None
        self.feedback: FeedbackProcessor | None = None
        self.writer: FeedbackWriter | None = None
        self.ids = IdFactory()
        self.router: Any = None
        """A :class:`.router.Router` during a shadow or canary rollout (``serve --route-to``)."""
        self.metrics = ServingMetrics(
            model=name, namespace=namespace, version=self.version, sha256="", task="classification",
            classes=None, reference=None, drift_sensor=False,
        )

    # -- lifecycle ---------------------------------------------------------

    def install(
        self, model: LoadedModel, schema: Schema, *, max_batch_size: int, max_batch_delay: float, max_queue_rows: int,
        drift_sensor: bool, feedback: bool, feedback_keep_seconds: float, feedback_max_pending: int,
        feedback_dir: str | None,
    ) -> None:
        """Start serving a loaded, warmed-up model (called once, on the event loop)."""
        self.model = model
        self.schema = schema
        self.outputs = protocol.model_outputs(schema, hasattr(model.pipeline, "predict_proba"))
        self.version = model.version
        classes = plain_list(getattr(model.pipeline, "classes_", ())) if schema.task == "classification" else None
        self.metrics = ServingMetrics(
            model=model.name, namespace=model.namespace, version=model.version, sha256=model.sha256,
            task=schema.task, classes=classes or schema.classes, reference=model.reference,
            drift_sensor=drift_sensor, feature_names=schema.names,
            version_mismatches=[m.to_dict() for m in model.version_mismatches], inference=model.inference,
        )
        self.batcher = Batcher(model.predict, max_batch_size, max_batch_delay, after=self.metrics.observe_batch,
                               max_queue_rows=max_queue_rows)
        self.batcher.start()
        if feedback:
            self.memory = PredictionMemory(feedback_keep_seconds, feedback_max_pending)
            self.metrics.prediction_memory = self.memory
            if feedback_dir:
                self.writer = FeedbackWriter(feedback_dir, model.namespace, model.name, list(schema.names) + [schema.target])
            self.feedback = FeedbackProcessor(schema, self.memory, self.metrics, self.writer)
        self.ready = True
        self.metrics.ready = True

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self.ready = False
        self.metrics.ready = False

    async def close(self) -> None:
        """After the last request: finish queued predictions, close the feedback file."""
        if self.batcher is not None:
            await self.batcher.close()
        if self.writer is not None:
            self.writer.close()
        if self.router is not None:
            await self.router.close()

    # -- handlers without a body ---------------------------------------------

    def model_ready(self) -> Response:
        """``GET /v1/models/{name}`` and ``GET /v2/models/{name}/ready``."""
        return json_response({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)

    def server_ready(self) -> Response:
        return json_response({"ready": self.ready}, 200 if self.ready else 503)

    def server_metadata(self) -> Response:
        return json_response({"name": SERVER_NAME, "version": package_version(), "extensions": list(EXTENSIONS)})

    def listing(self) -> Response:
        return json_response({"models": [self.name]})

    def prometheus(self) -> Response:
        text = self.metrics.render()
        if self.router is not None:
            text += self.router.render(self.name)
        return Response(200, text, CONTENT_TYPE.encode())

    def v2_metadata(self) -> Response:
        return json_response(self.model_metadata(), 200 if self.model is not None else 503)

    def model_metadata(self) -> dict[str, Any]:
        """The V2 model metadata (REST and gRPC): inputs, the outputs an infer returns by default, parameters."""
        if self.schema is None or self.model is None:
            return {"name": self.name, "versions": [], "platform": "sklearn", "inputs": [], "outputs": []}
        s = self.schema
        outputs: list[dict[str, Any]]
        if s.task == "classification":
            classes = self.metrics.class_counts.keys()
            outputs = [{"name": "predict", "datatype": class_datatype(self.model), "shape": [-1]}]
            if "predict_proba" in self.outputs:
                outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes)]})
        else:
            outputs = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        params: dict[str, Any] = {
            "task": s.task,
            "target": s.target,
            "namespace": self.model.namespace,
            "sha256": self.model.sha256,
            "allow_missing": s.allow_missing,
            "allow_unseen_categories": s.allow_unseen,
            "sklearn_version_mismatch": [m.to_dict() for m in self.model.version_mismatches],
            "inference": self.model.inference,
            "inference_reason": self.model.inference_reason,
        }
        if s.task == "classification":
            params["classes"] = plain_list(getattr(self.model.pipeline, "classes_", []))
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": [{"name": f.name, "datatype": f.v2_datatype, "shape": [-1]} for f in s.features],
            "outputs": outputs,
            "parameters": params,
        }

    def v2_reference(self) -> Response:
        """The drift reference of the serving version and its training baseline.

        The operator checks drift from counter deltas against this profile; it
        does not mount the model store, so the server that loaded the version
        hands it out (``/v2/models/{name}/versions/{version}/reference``).
        """
        model = self.model
        if model is None or model.reference is None:
            return error(404, "this server has no drift reference for its model", "reference")
        # The permutation importance lets the policy rank drifted features by what the model leans on.
        meta = {"baseline": model.metadata.get("baseline") or {}, "task": model.task}
        if model.metadata.get("importance"):
            meta["importance"] = model.metadata["importance"]
        return json_response({"reference": model.reference.to_dict(), "metadata": meta})

    # -- handlers with a body ------------------------------------------------

    async def _predict(self, rows: np.ndarray, want_proba: bool, proto: str) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.batcher is not None
        try:
            return await self.batcher.submit(rows, want_proba)
        except Overloaded:
            self.metrics.observe_shed(proto)
            raise
        except ModelError as exc:  # valid input the model raised on: the server's fault, not the client's
            raise exc.cause from None

    def admit(self, proto: str) -> None:
        """Refuse before parsing when the queue is already full: shed load costs as little as possible."""
        assert self.batcher is not None
        try:
            self.batcher.check_room()
        except Overloaded:
            self.metrics.observe_shed(proto)
            raise

    async def v1_predict(self, body: bytes, rid: str | None = None) -> Response:
        """``rid``: the request id to answer under (a shadow copy's, from the champion's router); else a new one."""
        assert self.schema is not None
        self.admit("v1")
        rows = protocol.parse_v1(body, self.schema)
        preds, _ = await self._predict(rows, False, "v1")
        rid = rid or self.ids()
        if self.memory is not None:
            self.memory.remember(rid, rows, preds)
        return json_response(protocol.v1_response(preds, row_ids(rid, rows.shape[0])))

    async def v2_infer(self, body: bytes, json_length: int | None = None, rid: str | None = None) -> Response:
        """V2 infer over REST; ``json_length`` (``Inference-Header-Content-Length``): binary tensors follow the JSON."""
        assert self.schema is not None
        self.admit("v2")
        req = protocol.parse_v2(body, self.schema, json_length=json_length, outputs=self.outputs)
        rid, tensors = await self.infer(req, "v2", rid)
        head, tail = protocol.v2_answer(self.name, self.version, rid, tensors, req.binary_outputs)
        if not tail:
            return json_response(head)
        js = protocol.dumps(head)
        return Response(200, js + tail, OCTETS, headers=((JSON_LENGTH, str(len(js)).encode()),))

    async def infer(self, req: protocol.V2Request, proto: str, rid: str | None = None) -> tuple[str, list[protocol.OutputTensor]]:
        """Predict a parsed V2 request (REST or gRPC) through the batcher; remember it for feedback."""
        preds, proba = await self._predict(req.rows, "predict_proba" in req.outputs, proto)
        rid = req.id or rid or self.ids()
        if self.memory is not None:
            self.memory.remember(rid, req.rows, preds)
        return rid, protocol.output_tensors(preds, proba, req.outputs)

    async def v1_feedback(self, body: bytes) -> Response:
        if self.feedback is None:
            return error(404, "feedback is disabled on this server", "path")
        assert self.model is not None and self.schema is not None
        items = protocol.parse_feedback(body)
        carried = [it for it in items if it.instance is not None]
        inline = None
        if carried:
            rows = protocol.feedback_rows(carried, self.schema)
            # Straight to the model, not through the batcher: these rows are not new traffic,
            # so they must not count in the drift sensor or the prediction distribution.
            preds, _ = await asyncio.to_thread(self.model.predict, rows, False)
            inline = (rows, preds)
        return json_response(self.feedback.apply(items, inline))


def plain_list(a: Any) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in list(a)]


def class_datatype(model: LoadedModel) -> str:
    classes = getattr(model.pipeline, "classes_", None)
    if classes is None:
        return "BYTES"
    return protocol.v2_datatype(np.asarray(classes))


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlops-operator")
    except Exception:
        return "0"
