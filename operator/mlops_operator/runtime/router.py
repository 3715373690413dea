"""The champion's router: exact canary fractions and shadow mirroring without a service mesh.

During a shadow or canary rollout the operator starts the serving (champion)
pods with ``--route-to`` the challenger's own Service. For every REST predict
or infer request:

* ``canary``: an exact fraction ``weight`` of them (request *n* goes to the
  challenger when ``floor(n·w) > floor((n−1)·w)``, so every window of requests
  holds its share up to one) is forwarded and the challenger's answer returned.
  When the challenger cannot answer (connection refused, timeout, a 5xx) the
  champion answers itself: a bad challenger never fails a client's request;
  its own metrics count the failure, and the operator rolls it back.
* ``shadow``: the champion answers, and a copy goes to the challenger in the
  background, under the same request id (``X-Mlops-Request-Id``), so a label
  sent for that id scores both. The client only ever receives the champion's
  answer. Copies beyond :attr:`Router.max_in_flight` are dropped (counted),
  so a slow challenger cannot hold the champion's memory.

Feedback is sent to both: in shadow as a background copy; in canary the two
answers are merged (:func:`merge_feedback`), since the client does not know
which side answered. gRPC requests are always answered by the champion.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Awaitable, Callable

import aiohttp

from .handlers import JSON, Response

REQUEST_ID_HEADER = "X-Mlops-Request-Id"
DEFAULT_TIMEOUT = 2.0
MAX_IN_FLIGHT = 64
_PASSED_HEADERS = ("content-type", "inference-header-content-length")
OUTCOMES = ("forwarded", "fallback", "mirrored", "mirror_failed", "mirror_dropped")


class Router:
    """Sends a share of requests (canary) or a copy of each (shadow) to ``target``."""

    def __init__(self, target: str, mode: str, weight: float = 0.0, *, timeout: float = DEFAULT_TIMEOUT,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if mode not in ("canary", "shadow"):
            raise ValueError(f"mode must be canary or shadow, not {mode!r}")
        if not 0.0 <= weight <= 1.0 or math.isnan(weight):
            raise ValueError("weight must be between 0 and 1")
        self.target = target.rstrip("/")
        self.mode = mode
        self.weight = weight
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.n = 0
        self.in_flight = 0
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- choosing ----------------------------------------------------------

    def choose(self) -> bool:
        """Whether the next request goes to the challenger: exactly ``weight`` of any run of requests, up to one."""
        self.n += 1
        return math.floor(self.n * self.weight) > math.floor((self.n - 1) * self.weight)

    # -- I/O ---------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: the challenger is a Service in the cluster, never behind a proxy.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=False,
                                                  connector=aiohttp.TCPConnector(limit=self.max_in_flight))
        return self._session

    async def _send(self, url: bytes, body: bytes, headers: dict[str, str]) -> Response:
        async with self._client().post(self.target + url.decode("latin-1"), data=body, headers=headers) as resp:
            data = await resp.read()
            passed = tuple((k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower() in _PASSED_HEADERS[1:])
            ctype = resp.headers.get("Content-Type", "application/json").encode()
            return Response(resp.status, data, ctype, passed, resp.headers.get("X-Model-Version"))

    async def forward(self, url: bytes, body: bytes, headers: dict[str, str],
                      local: Callable[[], Awaitable[Response]]) -> Response:
        """The challenger's answer; the champion's own (``local``) when the challenger fails."""
        try:
            resp = await self._send(url, body, headers)
            if resp.status < 500:
                self.counts["forwarded"] += 1
                return resp
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        self.counts["fallback"] += 1
        return await local()

    def mirror(self, url: bytes, body: bytes, headers: dict[str, str]) -> None:
        """Send a copy in the background; dropped when ``max_in_flight`` copies are already on their way."""
        if self.in_flight >= self.max_in_flight:
            self.counts["mirror_dropped"] += 1
            return
        self.in_flight += 1
        task = asyncio.ensure_future(self._mirror(url, body, headers))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mirror(self, url: bytes, body: bytes, headers: dict[str, str]) -> None:
        try:
            resp = await self._send(url, body, headers)
            self.counts["mirrored" if resp.status < 500 else "mirror_failed"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            self.counts["mirror_failed"] += 1
        finally:
            self.in_flight -= 1

    async def feedback(self, url: bytes, body: bytes, local: Callable[[], Awaitable[Response]]) -> Response:
        """Labels go to both sides; shadow answers with the champion's response, canary with both merged."""
        headers = {"Content-Type": "application/json"}
        if self.mode == "shadow":
            self.mirror(url, body, headers)
            return await local()
        remote = asyncio.ensure_future(self._send(url, body, headers))
        try:
            mine = await local()
        except BaseException:
            remote.cancel()  # the client's request was refused here (a 400): nothing to merge
            raise
        try:
            theirs = await remote
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return mine
        if mine.status != 200 or theirs.status != 200:
            return mine
        try:
            merged = merge_feedback(json.loads(mine.body), json.loads(theirs.body))
        except (ValueError, TypeError, AttributeError):
            return mine
        return Response(200, json.dumps(merged).encode(), JSON)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def render(self, model: str) -> bytes:
        """Prometheus text for the router's counters (appended to the server's ``/metrics``)."""
        lines = [
            "# HELP mlops_router_requests_total Requests the rollout router sent to the challenger, by outcome.",
            "# TYPE mlops_router_requests_total counter",
        ]
        lines += [f'mlops_router_requests_total{{model="{model}",mode="{self.mode}",outcome="{k}"}} {v}'
                  for k, v in self.counts.items()]
        lines += [
            "# HELP mlops_router_weight Share of predict requests the challenger answers (canary; 0 in shadow).",
            "# TYPE mlops_router_weight gauge",
            f'mlops_router_weight{{model="{model}",mode="{self.mode}"}} {self.weight if self.mode == "canary" else 0.0:g}',
        ]
        return ("\n".join(lines) + "\n").encode()


def merge_feedback(champion: dict[str, Any], challenger: dict[str, Any]) -> dict[str, Any]:
    """The feedback answer a client would get from one server holding both sides' predictions.

    An id the champion does not know but the challenger accepted was
    predicted by the challenger: it counts as accepted. Labels carrying their
    instance were scored on both sides and count once (the champion's).
    """
    rejected = set()
    for key in ("unknown", "expired", "duplicate", "invalid"):
        rejected.update(challenger.get(key) or [])
    expired_here = set(champion.get("expired") or [])
    theirs = [i for i in champion.get("unknown") or [] if i not in rejected and i not in expired_here]
    out = dict(champion)
    out["accepted"] = int(champion.get("accepted") or 0) + len(theirs)
    taken = set(theirs)
    out["unknown"] = [i for i in champion.get("unknown") or [] if i not in taken]
    duplicate = [i for i in challenger.get("duplicate") or [] if i in set(champion.get("unknown") or [])]
    if duplicate:
        out["unknown"] = [i for i in out["unknown"] if i not in set(duplicate)]
        out["duplicate"] = list(champion.get("duplicate") or []) + duplicate
    return out


def forwarded_headers(json_length: bytes | None, request_id: str | None) -> dict[str, str]:
    """The request headers the challenger needs (the body is already decoded, so no Content-Encoding)."""
    out = {"Content-Type": "application/json" if json_length is None else "application/octet-stream"}
    if json_length is not None:
        out["Inference-Header-Content-Length"] = json_length.decode("latin-1")
    if request_id:
        out[REQUEST_ID_HEADER] = request_id
    return out
