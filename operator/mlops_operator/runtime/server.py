"""The model server: one model version over KServe V1 and Open Inference Protocol V2.

``mlops-operator serve --store DIR --model NAME [...]`` (see :func:`build_parser`
and ``docs/serving.md``).  HTTP/1.1 with keep-alive and pipelining on a bare
``asyncio.Protocol`` with the ``httptools`` parser; requests are validated by
:mod:`.protocol`, combined by :mod:`.batching`, counted by
:mod:`.serving_metrics`, and their labels come back through :mod:`.feedback`.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when the model cannot
be loaded (missing, digest mismatch, untrusted types, warm-up failure) or the
address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import httptools
import numpy as np

from . import protocol
from .batching import Batcher, ModelError
from .feedback import FeedbackProcessor, FeedbackWriter, IdFactory, PredictionMemory, row_ids
from .protocol import ProtocolError, Schema
from .serving_metrics import CONTENT_TYPE, ServingMetrics

EXIT_OK, EXIT_START = 0, 2
KEEP_ALIVE_SECONDS = 75.0  # an idle keep-alive connection is closed after this long
SERVER_NAME = "mlops-operator"
JSON = b"application/json"


class StartupError(Exception):
    """The server cannot start; the message is printed as one line."""


# --------------------------------------------------------------------------
# the model


@dataclass
class LoadedModel:
    namespace: str
    name: str
    version: str
    sha256: str
    metadata: dict[str, Any]
    reference: Any
    pipeline: Any
    schema: Schema

    @property
    def task(self) -> str:
        return self.schema.task

    def predict(self, rows: np.ndarray, want_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        preds = np.asarray(self.pipeline.predict(rows))
        proba = np.asarray(self.pipeline.predict_proba(rows), dtype=np.float64) if want_proba else None
        return preds, proba


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Load and check one version; every failure is a :class:`StartupError`."""
    from ..store import ArtifactError, ModelStore

    store = ModelStore(args.store)
    ns, name = args.namespace, args.model
    try:
        version = args.version
        if not version or version == "latest":
            versions = store.list_versions(ns, name)
            if not versions:
                raise StartupError(f"no version of model {ns}/{name} in the store {args.store}")
            version = versions[-1]
        meta = store.read_metadata(ns, name, version)
        pipeline = store.load_model(ns, name, version, expected_sha256=args.sha256)
    except (ArtifactError, ValueError, OSError) as exc:
        raise StartupError(str(exc)) from None
    digest = str((meta.get("sha256") or {}).get("model.skops", ""))
    try:
        schema = Schema.from_metadata(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"{ns}/{name}/{version}: metadata.json: {exc}") from None
    if schema.task not in ("classification", "regression"):
        raise StartupError(f"{ns}/{name}/{version}: unknown task {schema.task!r}")
    reference = None
    try:
        from ..drift.profile import Reference

        reference = Reference.from_dict(store.read_reference(ns, name, version))
    except Exception as exc:  # the model still serves; drift sensing and prediction bins are off
        print(f"warning: {ns}/{name}/{version}: no usable drift reference ({exc}); drift sensor off", file=sys.stderr)
    if reference is not None and not set(reference.features) <= set(schema.names):
        print(f"warning: {ns}/{name}/{version}: reference features differ from the model's; drift sensor off", file=sys.stderr)
        reference = None
    return LoadedModel(ns, name, version, digest.split(":")[-1], meta, reference, pipeline, schema)


def _base_row(model: LoadedModel) -> list[Any]:
    row: list[Any] = []
    ref_feats = model.reference.features if model.reference is not None else {}
    for f in model.schema.features:
        prof = ref_feats.get(f.name)
        if f.numeric:
            mean = getattr(prof, "mean", math.nan)
            row.append(float(mean) if mean is not None and math.isfinite(mean) else (1.0 if f.boolean else 0.0))
        else:
            cats = list(f.categories or ()) or list(getattr(prof, "levels", ()))
            row.append(cats[0] if cats else {"str": "", "int": 0, "bool": False}[f.value_type])
    return row


def warm_up(model: LoadedModel) -> Schema:
    """Run a warm-up prediction and probe how the pipeline treats missing values and unseen levels.

    Returns the schema with the probed policy: numeric ``null`` is accepted only
    if the pipeline predicts a finite value for a row whose numeric features are
    all NaN (it imputes or handles NaN natively); unseen category levels only if
    the pipeline accepts one (e.g. ``OneHotEncoder(handle_unknown="ignore")``).
    """
    schema = model.schema
    base = _base_row(model)
    x = np.array([base], dtype=schema.dtype)
    try:
        preds, _ = model.predict(x, schema.task == "classification" and hasattr(model.pipeline, "predict_proba"))
    except Exception as exc:
        raise StartupError(f"{model.namespace}/{model.name}/{model.version}: warm-up prediction failed: {type(exc).__name__}: {exc}") from None
    if preds.shape[:1] != (1,):
        raise StartupError(f"{model.namespace}/{model.name}/{model.version}: predict returned shape {preds.shape} for one row")

    def accepts(row: list[Any]) -> bool:
        try:
            p, _ = model.predict(np.array([row], dtype=schema.dtype), False)
        except Exception:
            return False
        return p.dtype.kind != "f" or bool(np.isfinite(p).all())

    numeric = [i for i, f in enumerate(schema.features) if f.numeric]
    allow_missing = False
    if numeric:
        row = list(base)
        for i in numeric:
            row[i] = math.nan
        allow_missing = accepts(row)
    categorical = [i for i, f in enumerate(schema.features) if not f.numeric]
    allow_unseen = True
    allow_missing_cat = False
    if categorical:
        row = list(base)
        for i in categorical:
            vt = schema.features[i].value_type
            row[i] = {"str": "\u0000unseen-probe", "int": -(2**62) + 7, "bool": base[i]}[vt]
        allow_unseen = accepts(row)
        row = list(base)
        for i in categorical:
            row[i] = math.nan
        allow_missing_cat = accepts(row)
    return schema.with_policy(
        allow_missing=allow_missing, allow_unseen=allow_unseen, allow_missing_categorical=allow_missing_cat
    )


# --------------------------------------------------------------------------
# HTTP plumbing


def _status_line(code: int) -> bytes:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {code} {reason}\r\n".encode()


_STATUS = {c: _status_line(c) for c in (100, 200, 400, 404, 405, 413, 422, 500, 503)}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _error(status: int, error: str, field: str = "path", headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(status, protocol.dumps({"error": error, "field": field}), headers=headers)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(status, protocol.dumps(obj))


Handler = Callable[[bytes], "Response | Awaitable[Response]"]


async def complete(result: Awaitable[Response]) -> Response:
    """Await a handler's answer; errors become responses (as ``HttpConnection._done`` does)."""
    try:
        return await result
    except ProtocolError as exc:
        return Response(exc.status, protocol.dumps(exc.to_dict()))
    except Exception as exc:
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return _error(422, f"request could not be processed: {type(exc).__name__}", "body")


class HttpConnection(asyncio.Protocol):
    """One client connection: parse with httptools, answer in request order."""

    __slots__ = (
        "app", "transport", "parser", "url", "headers_ok", "body", "size", "expect", "slots",
        "closing", "closed", "t0", "paused", "in_message", "last_active",
    )

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.expect = False
        self.slots: deque[list[Any]] = deque()
        self.closing = False  # no more requests are read from this connection
        self.closed = False  # the transport was closed after the last answer
        self.paused = False
        self.in_message = False
        self.t0 = 0.0
        self.last_active = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # Requests still running finish on their own; their answers are dropped.
        self.app.connections.discard(self)
        self.transport = None
        self.closing = self.closed = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.size = 0
        self.expect = False
        self.in_message = True
        self.t0 = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > 8192:
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length":
            try:
                if int(value) > self.app.max_body_bytes:
                    self._too_large()
            except ValueError:
                pass  # the parser rejects it
        elif n == b"expect" and value.lower() == b"100-continue":
            self.expect = True

    def on_headers_complete(self) -> None:
        if self.expect and not self.closing and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.app.max_body_bytes:
            self._too_large()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.closing:
            return
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body = []
        proto, result = self.app.dispatch(method, self.url, body)
        t0 = self.t0
        if isinstance(result, Response):
            self._queue(result, keep_alive, proto, t0, None)
        else:
            slot = self._queue(None, keep_alive, proto, t0, None)
            task = asyncio.ensure_future(result)
            slot[2] = task
            self.app.inflight += 1
            task.add_done_callback(lambda t, s=slot: self._done(s, t))

    # -- responses ---------------------------------------------------------

    def _queue(self, resp: Response | None, keep_alive: bool, proto: str, t0: float, task: Any) -> list[Any]:
        slot = [resp, keep_alive, task, proto, t0]
        self.slots.append(slot)
        if resp is not None:
            self._flush()
        elif len(self.slots) > 32 and not self.paused and self.transport is not None:
            self.paused = True  # too many pipelined requests in flight: stop reading for now
            self.transport.pause_reading()
        return slot

    def _done(self, slot: list[Any], task: asyncio.Task[Response]) -> None:
        self.app.inflight -= 1
        try:
            resp = task.result()
        except ProtocolError as exc:
            resp = Response(exc.status, protocol.dumps(exc.to_dict()))
        except BaseException as exc:  # never a 5xx for a request's content; report and keep serving
            print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
            resp = _error(422, f"request could not be processed: {type(exc).__name__}", "body")
        slot[0] = resp
        self._flush()
        self.app.idle_check()

    def _flush(self) -> None:
        app = self.app
        while self.slots and self.slots[0][0] is not None:
            resp, keep_alive, _, proto, t0 = self.slots.popleft()
            close = not keep_alive or app.shutting_down
            if self.transport is not None and not self.closed:
                self.transport.write(app.encode(resp, close))
                if close:
                    self.closing = self.closed = True
                    self.transport.close()
            app.metrics.observe_request(proto, resp.status, time.perf_counter() - t0)
        if self.paused and len(self.slots) <= 8 and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _fail(self, status: int, error: str) -> None:
        """Answer a request we cannot parse and close the connection (after earlier answers)."""
        if self.closing:
            return
        resp = _error(status, error, "body")
        self.in_message = False
        self.closing = True
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self.slots.append([resp, False, None, "other", time.perf_counter()])
        self._flush()

    def _too_large(self) -> None:
        self._fail(413, f"request body larger than {self.app.max_body_bytes} bytes")

    @property
    def idle(self) -> bool:
        return not self.slots and not self.in_message

    def close_if_idle(self) -> None:
        if self.idle and self.transport is not None:
            self.closing = self.closed = True
            self.transport.close()


# --------------------------------------------------------------------------
# the application


class App:
    """Routing and handlers; ``dispatch`` returns a Response or an awaitable of one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.max_body_bytes = args.max_body_bytes
        self.connections: set[HttpConnection] = set()
        self.inflight = 0
        self.shutting_down = False
        self.ready = False
        self.model: LoadedModel | None = None
        self.schema: Schema | None = None
        self.batcher: Batcher | None = None
        self.memory: PredictionMemory | None = None
        self.feedback: FeedbackProcessor | None = None
        self.writer: FeedbackWriter | None = None
        self.ids = IdFactory()
        self.name = args.model
        self.version = args.version or ""
        self.metrics = ServingMetrics(
            model=args.model, namespace=args.namespace, version=self.version, sha256="", task="classification",
            classes=None, reference=None, drift_sensor=False,
        )
        self._idle_waiter: asyncio.Future[None] | None = None
        self._headers_cache: dict[tuple[int, bytes, bool], bytes] = {}

    # -- lifecycle ---------------------------------------------------------

    def install(self, model: LoadedModel, schema: Schema) -> None:
        args = self.args
        self.model = model
        self.schema = schema
        self.version = model.version
        self._headers_cache.clear()
        classes = _plain_list(getattr(model.pipeline, "classes_", ())) if schema.task == "classification" else None
        self.metrics = ServingMetrics(
            model=model.name, namespace=model.namespace, version=model.version, sha256=model.sha256,
            task=schema.task, classes=classes or schema.classes, reference=model.reference,
            drift_sensor=not args.no_drift_sensor, feature_names=schema.names,
        )
        self.batcher = Batcher(
            model.predict, args.max_batch_size, args.max_batch_delay_ms / 1000.0, after=self.metrics.observe_batch
        )
        self.batcher.start()
        if not args.no_feedback:
            self.memory = PredictionMemory(args.feedback_keep_seconds, args.feedback_max_pending)
            if args.feedback_dir:
                self.writer = FeedbackWriter(args.feedback_dir, model.namespace, model.name, list(schema.names) + [schema.target])
            self.feedback = FeedbackProcessor(schema, self.memory, self.metrics, self.writer)
        self.ready = True
        self.metrics.ready = True

    def idle_check(self) -> None:
        if self.inflight == 0 and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    async def sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than KEEP_ALIVE_SECONDS (bounded: runs until cancelled)."""
        while True:
            await asyncio.sleep(KEEP_ALIVE_SECONDS / 5)
            horizon = time.monotonic() - KEEP_ALIVE_SECONDS
            for c in list(self.connections):
                if c.last_active < horizon:
                    c.close_if_idle()

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for in-flight requests, then close every connection."""
        self.shutting_down = True
        self.ready = False
        self.metrics.ready = False
        deadline = time.monotonic() + timeout
        for c in list(self.connections):
            c.close_if_idle()
        while self.inflight > 0 and time.monotonic() < deadline:
            self._idle_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._idle_waiter, max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        # Give the last responses a moment to leave, then close the rest.
        for _ in range(50):
            if not any(c.slots for c in self.connections):
                break
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        if self.batcher is not None:
            await self.batcher.close()
        if self.writer is not None:
            self.writer.close()

    # -- encoding ----------------------------------------------------------

    def encode(self, resp: Response, close: bool) -> bytes:
        key = (resp.status, resp.content_type, close)
        head = self._headers_cache.get(key) if not resp.headers else None
        if head is None:
            parts = [
                _STATUS.get(resp.status) or _status_line(resp.status),
                b"Content-Type: " + resp.content_type + b"\r\n",
                b"Server: " + SERVER_NAME.encode() + b"\r\n",
                b"X-Model-Version: " + self.version.encode() + b"\r\n",
            ]
            if close:
                parts.append(b"Connection: close\r\n")
            for k, v in resp.headers:
                parts.append(k + b": " + v + b"\r\n")
            head = b"".join(parts)
            if not resp.headers and self.ready:
                self._headers_cache[key] = head
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(resp.body), resp.body)

    # -- routing -----------------------------------------------------------

    def dispatch(self, method: bytes, url: bytes, body: bytes) -> tuple[str, Response | Awaitable[Response]]:
        try:
            path = unquote(url.split(b"?", 1)[0].decode("latin-1"))
        except Exception:
            return "other", _error(400, "malformed URL")
        try:
            return self._route(method, path, body)
        except ProtocolError as exc:
            return "other", Response(exc.status, protocol.dumps(exc.to_dict()))

    def _method(self, method: bytes, allowed: bytes) -> Response | None:
        if method == allowed:
            return None
        return _error(405, f"method {method.decode('latin-1')} not allowed; use {allowed.decode()}", "method",
                      headers=((b"Allow", allowed),))

    def _route(self, method: bytes, path: str, body: bytes) -> tuple[str, Response | Awaitable[Response]]:
        if path.startswith("/v1/models/"):
            rest = path[len("/v1/models/"):]
            if rest.endswith(":predict"):
                return "v1", self._model_call(rest[:-8], method, body, self.v1_predict)
            if rest.endswith("/feedback"):
                return "feedback", self._model_call(rest[:-9], method, body, self.v1_feedback)
            if "/" in rest or ":" in rest:
                return "v1", _error(404, f"no endpoint {path}")
            return "v1", self._model_get(rest, method, self.v1_status)
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/"):].split("/")
            name = parts[0]
            tail = parts[1:]
            if len(tail) >= 2 and tail[0] == "versions":
                if tail[1] != self.version:
                    return "v2", _error(404, f"model {name!r} has no version {tail[1]!r} here (serving {self.version!r})")
                tail = tail[2:]
            if not tail:
                return "v2", self._model_get(name, method, self.v2_metadata)
            if tail == ["ready"]:
                return "v2", self._model_get(name, method, self.v2_model_ready)
            if tail == ["infer"]:
                return "v2", self._model_call(name, method, body, self.v2_infer)
            if tail == ["reference"]:
                return "v2", self._model_get(name, method, self.v2_reference)
            return "v2", _error(404, f"no endpoint {path}")
        if path in ("/v2/health/live", "/v2/health/ready", "/v2"):
            bad = self._method(method, b"GET")
            if bad:
                return "health", bad
            if path == "/v2/health/live":
                return "health", _json({"live": True})
            if path == "/v2":
                return "health", _json({"name": SERVER_NAME, "version": _package_version(), "extensions": []})
            return "health", _json({"ready": self.ready}, 200 if self.ready else 503)
        if path == "/metrics":
            bad = self._method(method, b"GET")
            return "metrics", bad or Response(200, self.metrics.render(), CONTENT_TYPE.encode())
        if path in ("/", "/v1/models", "/v1/models/", "/v2/models", "/v2/models/"):
            bad = self._method(method, b"GET")
            return "other", bad or _json({"models": [self.name]})
        return "other", _error(404, f"no endpoint {path}")

    def v2_reference(self) -> Response:
        """The drift reference of the serving version and its training baseline.

        The operator checks drift from counter deltas against this profile; it
        does not mount the model store, so the server that loaded the version
        hands it out (``/v2/models/{name}/versions/{version}/reference``).
        """
        model = self.model
        if model is None or model.reference is None:
            return _error(404, "this server has no drift reference for its model", "reference")
        return _json({"reference": model.reference.to_dict(),
                      "metadata": {"baseline": model.metadata.get("baseline") or {}, "task": model.task}})

    def _unknown(self, name: str) -> Response | None:
        if name != self.name:
            return _error(404, f"model {name!r} not found; this server serves {self.name!r}", "name")
        return None

    def _model_get(self, name: str, method: bytes, fn: Callable[[], Response]) -> Response:
        return self._unknown(name) or self._method(method, b"GET") or fn()

    def _model_call(self, name: str, method: bytes, body: bytes, fn: Callable[[bytes], Awaitable[Response] | Response]) -> Any:
        early = self._unknown(name) or self._method(method, b"POST")
        if early is not None:
            return early
        if not self.ready:
            return _error(503, "model is not ready", "name")
        try:
            return fn(body)
        except ProtocolError as exc:
            return Response(exc.status, protocol.dumps(exc.to_dict()))

    # -- handlers ----------------------------------------------------------

    def v1_status(self) -> Response:
        return _json({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)

    def v2_model_ready(self) -> Response:
        return _json({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)

    def v2_metadata(self) -> Response:
        if self.schema is None or self.model is None:
            return _json({"name": self.name, "versions": [], "platform": "sklearn", "inputs": [], "outputs": []}, 503)
        s = self.schema
        outputs: list[dict[str, Any]]
        if s.task == "classification":
            classes = self.metrics.class_counts.keys()
            outputs = [
                {"name": "predict", "datatype": _class_datatype(self.model), "shape": [-1]},
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes)]},
            ]
        else:
            outputs = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        meta: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": [{"name": f.name, "datatype": f.v2_datatype, "shape": [-1]} for f in s.features],
            "outputs": outputs,
            "parameters": {
                "task": s.task,
                "target": s.target,
                "namespace": self.model.namespace,
                "sha256": self.model.sha256,
                "allow_missing": s.allow_missing,
                "allow_unseen_categories": s.allow_unseen,
            },
        }
        if s.task == "classification":
            meta["parameters"]["classes"] = [c for c in _plain_list(getattr(self.model.pipeline, "classes_", []))]
        return _json(meta)

    async def v1_predict(self, body: bytes) -> Response:
        assert self.schema is not None and self.batcher is not None
        rows = protocol.parse_v1(body, self.schema)
        try:
            preds, _ = await self.batcher.submit(rows, False)
        except ModelError as exc:
            return _error(422, f"the model refused the input: {exc}", "instances")
        rid = self.ids()
        if self.memory is not None:
            self.memory.remember(rid, rows, preds)
        return _json(protocol.v1_response(preds, row_ids(rid, rows.shape[0])))

    async def v2_infer(self, body: bytes) -> Response:
        assert self.schema is not None and self.batcher is not None
        req = protocol.parse_v2(body, self.schema)
        want_proba = "predict_proba" in req.outputs
        try:
            preds, proba = await self.batcher.submit(req.rows, want_proba)
        except ModelError as exc:
            return _error(422, f"the model refused the input: {exc}", "inputs")
        rid = req.id or self.ids()
        if self.memory is not None:
            self.memory.remember(rid, req.rows, preds)
        return _json(protocol.v2_response(self.name, self.version, rid, preds, proba, req.outputs))

    async def v1_feedback(self, body: bytes) -> Response:
        if self.feedback is None:
            return _error(404, "feedback is disabled on this server", "path")
        assert self.model is not None and self.schema is not None
        items = protocol.parse_feedback(body)
        carried = [it for it in items if it.instance is not None]
        inline = None
        if carried:
            rows = protocol.feedback_rows(carried, self.schema)
            try:
                # Straight to the model, not through the batcher: these rows are not new traffic,
                # so they must not count in the drift sensor or the prediction distribution.
                preds, _ = await asyncio.to_thread(self.model.predict, rows, False)
            except Exception as exc:  # noqa: BLE001 - the model's refusal is the client's problem
                return _error(422, f"the model refused an instance: {exc}", "feedback")
            inline = (rows, preds)
        return _json(self.feedback.apply(items, inline))


def _plain_list(a: Any) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in list(a)]


def _class_datatype(model: LoadedModel) -> str:
    classes = getattr(model.pipeline, "classes_", None)
    if classes is None:
        return "BYTES"
    return protocol.v2_datatype(np.asarray(classes))


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlops-operator")
    except Exception:
        return "0"


# --------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-operator serve", description="Serve one model version (KServe V1 and Open Inference Protocol V2).")
    p.add_argument("--store", required=True, help="model store root")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--namespace", default="default", help="namespace in the store (default: default)")
    p.add_argument("--version", default=None, help="version to serve (default: the newest in the store)")
    p.add_argument("--sha256", default=None, help="expected sha256 of model.skops (hex or sha256:hex)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in pods)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--max-batch-size", type=int, default=1024, help="most rows in one predict call (default 1024)")
    p.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill (default 2)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body (default 4 MiB)")
    p.add_argument("--no-drift-sensor", action="store_true", help="do not count inputs in the reference bins")
    p.add_argument("--no-feedback", action="store_true", help="disable the feedback endpoint and prediction memory")
    p.add_argument("--feedback-dir", default=None, help="append labelled rows as CSV under this folder")
    p.add_argument("--feedback-keep-seconds", type=float, default=3600.0, help="how long a prediction id takes a label (default 3600)")
    p.add_argument("--feedback-max-pending", type=int, default=100_000, help="most predicted rows remembered (default 100000)")
    p.add_argument("--http-engine", choices=("builtin", "uvicorn"), default="builtin", help=argparse.SUPPRESS)
    p.add_argument("--grace-seconds", type=float, default=20.0, help="longest wait for in-flight requests on SIGTERM (default 20)")
    return p


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if not 1 <= a.max_batch_size <= 1_000_000:
        p.error("--max-batch-size must be between 1 and 1000000")
    if not (0 <= a.max_batch_delay_ms <= 60_000) or math.isnan(a.max_batch_delay_ms):
        p.error("--max-batch-delay-ms must be between 0 and 60000")
    if a.max_body_bytes < 64:
        p.error("--max-body-bytes must be at least 64")
    if not 0 <= a.port <= 65535:
        p.error("--port must be between 0 and 65535")
    if a.feedback_keep_seconds <= 0 or a.feedback_max_pending < 0:
        p.error("--feedback-keep-seconds must be positive and --feedback-max-pending not negative")


async def serve(args: argparse.Namespace, started: Callable[[int], None] | None = None) -> int:
    loop = asyncio.get_running_loop()
    app = App(args)
    if args.http_engine == "uvicorn":
        return await serve_uvicorn(app, args, started)
    try:
        server = await loop.create_server(lambda: HttpConnection(app), args.host, args.port, backlog=1024, reuse_address=True)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_START
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    app.stop_event = stop  # type: ignore[attr-defined]
    try:
        model = await asyncio.to_thread(load_model, args)
        schema = await asyncio.to_thread(warm_up, model)
    except StartupError as exc:
        server.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START
    app.install(model, schema)
    print(
        f"serving {model.namespace}/{model.name} version {model.version} on http://{args.host}:{port} "
        f"(missing values {'allowed' if schema.allow_missing else 'rejected'}, "
        f"drift sensor {'on' if app.metrics.drift_sensor else 'off'})",
        file=sys.stderr, flush=True,
    )
    if started is not None:
        started(port)
    sweeper = asyncio.ensure_future(app.sweep_idle())
    await stop.wait()
    sweeper.cancel()
    server.close()
    await app.drain(args.grace_seconds)
    try:
        await asyncio.wait_for(server.wait_closed(), 1.0)
    except (asyncio.TimeoutError, Exception):
        pass
    return EXIT_OK


async def serve_uvicorn(app: App, args: argparse.Namespace, started: Callable[[int], None] | None) -> int:
    import socket

    import uvicorn

    from .asgi import AsgiApp

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_START
    sock.listen(1024)
    port = sock.getsockname()[1]
    config = uvicorn.Config(AsgiApp(app), http="httptools", lifespan="off", access_log=False, log_level="warning",
                            server_header=False, date_header=False, timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
                            timeout_graceful_shutdown=int(args.grace_seconds))
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        model = await asyncio.to_thread(load_model, args)
        schema = await asyncio.to_thread(warm_up, model)
    except StartupError as exc:
        server.should_exit = True
        await task
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START
    app.install(model, schema)
    print(f"serving {model.namespace}/{model.name} version {model.version} on http://{args.host}:{port} (uvicorn)",
          file=sys.stderr, flush=True)
    await task
    app.ready = False
    if app.batcher is not None:
        await app.batcher.close()
    return EXIT_OK


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    warnings.filterwarnings("ignore", module=r"sklearn\..*")
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        if args.http_engine == "uvicorn":
            import uvloop

            return uvloop.run(serve(args))
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
