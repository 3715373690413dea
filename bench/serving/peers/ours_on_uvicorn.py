"""Our handlers and routing behind an ASGI adapter on uvicorn (httptools parser, uvloop).

The peer that decided the server's HTTP stack (``bench/README.md``): the same
model loading, validation, batching, metrics and feedback as ``serve``; only
the HTTP engine differs.  Needs ``pip install 'uvicorn[standard]'`` in the
interpreter that runs it (``pip install -e '.[bench]'``).

    python bench/serving/peers/ours_on_uvicorn.py STORE NAMESPACE MODEL PORT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "operator"))

import uvicorn  # noqa: E402
import uvloop  # noqa: E402

from mlops_operator.runtime.handlers import SERVER_NAME, Response, ServerApp, complete, error  # noqa: E402
from mlops_operator.runtime.model_loading import load_model, warm_up  # noqa: E402
from mlops_operator.runtime.routing import dispatch  # noqa: E402


class AsgiApp:
    def __init__(self, app: ServerApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        app = self.app
        limit = app.max_body_bytes
        too_large = any(k == b"content-length" and v.isdigit() and int(v) > limit for k, v in scope["headers"])
        chunks: list[bytes] = []
        size = 0
        while not too_large:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            b = msg.get("body", b"")
            size += len(b)
            if size > limit:
                too_large = True
                break
            if b:
                chunks.append(b)
            if not msg.get("more_body", False):
                break
        if too_large:
            await self._send(send, error(413, f"request body larger than {limit} bytes", "body"), True)
            app.metrics.observe_request("other", 413, time.perf_counter() - t0)
            return
        url = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        method = scope["method"].encode()
        proto, result = dispatch(app, method, url, b"".join(chunks))
        resp = result if isinstance(result, Response) else await complete(result, scope["path"])
        await self._send(send, resp, app.shutting_down)
        app.metrics.observe_request(proto, resp.status, time.perf_counter() - t0)

    async def _send(self, send: Any, resp: Response, close: bool) -> None:
        headers = [
            (b"content-type", resp.content_type),
            (b"content-length", b"%d" % len(resp.body)),
            (b"server", SERVER_NAME.encode()),
            (b"x-model-version", self.app.version.encode()),
            *resp.headers,
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})


async def main(store: str, namespace: str, model_name: str, port: int) -> None:
    app = ServerApp(model_name, namespace, None, max_body_bytes=4 * 1024 * 1024)
    model = load_model(store, namespace, model_name, None, None)
    schema = warm_up(model)
    app.install(model, schema, max_batch_size=1024, max_batch_delay=0.002, max_queue_rows=2048, drift_sensor=True,
                feedback=True, feedback_keep_seconds=3600.0, feedback_max_pending=100_000, feedback_dir=None)
    config = uvicorn.Config(AsgiApp(app), host="127.0.0.1", port=port, http="httptools", lifespan="off",
                            access_log=False, log_level="warning", server_header=False, date_header=False,
                            timeout_keep_alive=75)
    await uvicorn.Server(config).serve()
    await app.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
