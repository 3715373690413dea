"""The handlers as an ASGI application, for an ASGI server (uvicorn)."""

from __future__ import annotations

import time
from typing import Any

from .server import App, Response, _error, complete

SERVER = b"mlops-operator"


class AsgiApp:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        app = self.app
        limit = app.max_body_bytes
        too_large = False
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    too_large = int(v) > limit
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while not too_large:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            b = msg.get("body", b"")
            if b:
                size += len(b)
                if size > limit:
                    too_large = True
                    break
                chunks.append(b)
            if not msg.get("more_body", False):
                break
        if too_large:
            await self._send(send, _error(413, f"request body larger than {limit} bytes", "body"), True)
            app.metrics.observe_request("other", 413, time.perf_counter() - t0)
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        url = scope["raw_path"]
        if scope["query_string"]:
            url += b"?" + scope["query_string"]
        proto, result = app.dispatch(scope["method"].encode(), url, body)
        resp = await complete(result) if hasattr(result, "__await__") else result
        await self._send(send, resp, app.shutting_down)
        app.metrics.observe_request(proto, resp.status, time.perf_counter() - t0)

    async def _send(self, send: Any, resp: Response, close: bool) -> None:
        headers = [
            (b"content-type", resp.content_type),
            (b"content-length", b"%d" % len(resp.body)),
            (b"server", SERVER),
            (b"x-model-version", self.app.version.encode()),
            *resp.headers,
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})
