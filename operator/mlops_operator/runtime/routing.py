"""Which handler answers a request: method and path to a handler of :class:`.handlers.ServerApp`.

:func:`dispatch` returns the metrics label of the request's protocol and
either a ready :class:`Response` (health, metadata, every refusal) or an
awaitable of one (predict, infer, feedback), so the cheap answers never cost
a task.  Any exception inside a handler becomes a response here or in
:func:`.handlers.complete`, never an exception for the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote

from .handlers import Response, ServerApp, error, internal_error, json_response, protocol_error
from .protocol import JSON_LENGTH_HEADER, ProtocolError, decode_body
from .router import forwarded_headers

Result = tuple[str, "Response | Awaitable[Response]"]


@dataclass(frozen=True)
class BodyHeaders:
    """The request headers that change how a body is read (raw header values, as received)."""

    content_encoding: bytes | None = None
    json_length: bytes | None = None  # Inference-Header-Content-Length: the V2 binary data extension
    request_id: bytes | None = None  # X-Mlops-Request-Id: the id a shadow copy is remembered under (router.py)


NO_HEADERS = BodyHeaders()


def dispatch(app: ServerApp, method: bytes, url: bytes, body: bytes, headers: BodyHeaders = NO_HEADERS) -> Result:
    try:
        path = unquote(url.split(b"?", 1)[0].decode("latin-1"))
    except Exception:
        return "other", error(400, "malformed URL")
    try:
        if headers.content_encoding is not None:
            body = decode_body(body, headers.content_encoding, app.max_body_bytes)
        return _route(app, method, path, body, headers)
    except ProtocolError as exc:
        return "other", protocol_error(exc)
    except Exception as exc:
        return "other", internal_error(exc, f"{method.decode('latin-1')} {path}")


def _method(method: bytes, allowed: bytes) -> Response | None:
    if method == allowed or (method == b"HEAD" and allowed == b"GET"):
        return None
    allow = b"GET, HEAD" if allowed == b"GET" else allowed
    return error(405, f"method {method.decode('latin-1')} not allowed; use {allow.decode()}", "method",
                 headers=((b"Allow", allow),))


def _json_length(headers: BodyHeaders) -> int | None:
    raw = headers.json_length
    if raw is None:
        return None
    try:
        return int(raw.decode("latin-1").strip())
    except ValueError:
        raise ProtocolError(400, f"{JSON_LENGTH_HEADER} must be an integer", JSON_LENGTH_HEADER) from None


def _unknown(app: ServerApp, name: str) -> Response | None:
    if name != app.name:
        return error(404, f"model {name!r} not found; this server serves {app.name!r}", "name")
    return None


def _get(app: ServerApp, name: str, method: bytes, fn: Callable[[], Response]) -> Response:
    return _unknown(app, name) or _method(method, b"GET") or fn()


def _post(app: ServerApp, name: str, method: bytes, body: bytes,
          fn: Callable[[bytes], Awaitable[Response]]) -> Response | Awaitable[Response]:
    early = _unknown(app, name) or _method(method, b"POST")
    if early is not None:
        return early
    if not app.ready:
        return error(503, "model is not ready", "name")
    return fn(body)


def _request_id(headers: BodyHeaders) -> str | None:
    raw = headers.request_id
    if raw is None:
        return None
    rid = raw.decode("latin-1").strip()
    if not rid or len(rid) > 128 or not rid.isprintable():
        raise ProtocolError(400, "X-Mlops-Request-Id must be 1 to 128 printable characters", "X-Mlops-Request-Id")
    return rid


def _predict(app: ServerApp, proto: str, name: str, method: bytes, body: bytes, headers: BodyHeaders,
             fn: Callable[[bytes, str | None], Awaitable[Response]], path: str | None = None) -> Result:
    """A predict or infer request: answered here, or, during a rollout, by the router (``router.py``)."""
    early = _unknown(app, name) or _method(method, b"POST")
    if early is not None:
        return proto, early
    if not app.ready:
        return proto, error(503, "model is not ready", "name")
    rid = _request_id(headers)
    router = app.router
    if router is None:
        return proto, fn(body, rid)
    url = (path or f"/v1/models/{name}:predict").encode("latin-1")
    if router.mode == "canary":
        if router.choose():
            fwd = forwarded_headers(headers.json_length, rid)
            return "routed", router.forward(url, body, fwd, lambda: fn(body, rid))
        return proto, fn(body, rid)
    rid = rid or app.ids()  # shadow: the copy is remembered under the id the client receives
    router.mirror(url, body, forwarded_headers(headers.json_length, rid))
    return proto, fn(body, rid)


def _feedback(app: ServerApp, path: str) -> Callable[[bytes], Awaitable[Response]]:
    router = app.router
    if router is None:
        return app.v1_feedback
    return lambda b: router.feedback(path.encode("latin-1"), b, lambda: app.v1_feedback(b))


def _route(app: ServerApp, method: bytes, path: str, body: bytes, headers: BodyHeaders) -> Result:
    if path.startswith("/v1/models/"):
        rest = path[len("/v1/models/"):]
        if rest.endswith(":predict"):
            return _predict(app, "v1", rest[:-8], method, body, headers, lambda b, rid: app.v1_predict(b, rid))
        if rest.endswith("/feedback"):
            return "feedback", _post(app, rest[:-9], method, body, _feedback(app, path))
        if "/" in rest or ":" in rest:
            return "v1", error(404, f"no endpoint {path}")
        return "v1", _get(app, rest, method, app.model_ready)
    if path.startswith("/v2/models/"):
        name, *tail = path[len("/v2/models/"):].split("/")
        if len(tail) >= 2 and tail[0] == "versions":
            if tail[1] != app.version:
                return "v2", error(404, f"model {name!r} has no version {tail[1]!r} here (serving {app.version!r})")
            tail = tail[2:]
        if not tail:
            return "v2", _get(app, name, method, app.v2_metadata)
        if tail == ["ready"]:
            return "v2", _get(app, name, method, app.model_ready)
        if tail == ["infer"]:
            json_length = _json_length(headers)
            return _predict(app, "v2", name, method, body, headers, lambda b, rid: app.v2_infer(b, json_length, rid),
                            "/" + "/".join(["v2", "models", name, *tail]))
        if tail == ["reference"]:
            return "v2", _get(app, name, method, app.v2_reference)
        return "v2", error(404, f"no endpoint {path}")
    health = {"/v2/health/live": _live, "/v2/health/ready": app.server_ready, "/v2": app.server_metadata}.get(path)
    if health is not None:
        return "health", _method(method, b"GET") or health()
    if path == "/metrics":
        return "metrics", _method(method, b"GET") or app.prometheus()
    if path == "/":  # KServe's V1 liveness: its SDK's is_server_live reads exactly this
        return "health", _method(method, b"GET") or json_response({"status": "alive"})
    if path in ("/v1/models", "/v1/models/", "/v2/models", "/v2/models/"):
        return "other", _method(method, b"GET") or app.listing()
    return "other", error(404, f"no endpoint {path}")


def _live() -> Response:
    return json_response({"live": True})
