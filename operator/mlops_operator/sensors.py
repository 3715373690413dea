"""How the operator reads serving pods' drift sensors over HTTP, in a cluster and locally.

Scrapes each serving pod's ``/metrics``, parses it with the model server's
own parser (``runtime.sensor``) and hands the DriftPolicy controller plain
:class:`~.controllers.driftpolicy.Snapshot` data; fetches a version's
reference profile from a pod serving it, or through a loader when the caller
can read the model store itself (the local mode).

Every request runs on the event loop (aiohttp, no thread) with one deadline
for all of it, connecting, headers and body: a pod that accepts and then
trickles bytes is given up at the deadline like one that never answers, so no
pod delays a check beyond ``timeout``, and a given-up request holds nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Callable

import aiohttp

from .controllers.driftpolicy import Snapshot
from .controllers.cluster import Obj

log = logging.getLogger("mlops_operator")

SCRAPE_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
SERVER_CONTAINER = "server"



ReferenceLoader = Callable[[str, str, str], Any]
"""``(namespace, model, version) -> (reference, metadata) | None``, sync or async."""


class Unreadable(Exception):
    """A sensor or a reference profile that could not be read; the message says why."""


async def _http_get(url: str, timeout: float) -> bytes:
    """The body of ``GET url``, within ``timeout`` seconds in all and at most MAX_RESPONSE_BYTES."""
    deadline = aiohttp.ClientTimeout(total=timeout)
    try:
        # trust_env=False: pod addresses never go through a proxy. A session per request: a pod is
        # scraped once per interval, and sensors outlive the event loops of tests and local runs.
        async with aiohttp.ClientSession(timeout=deadline, trust_env=False) as session:
            async with session.get(url, headers={"Accept": "text/plain, application/json"}) as resp:
                if resp.status != 200:
                    raise Unreadable(f"HTTP {resp.status} {resp.reason or ''}".strip())
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise Unreadable(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    except asyncio.TimeoutError:
        raise Unreadable(f"no complete answer within {timeout:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise Unreadable(str(exc) or type(exc).__name__) from None
    return bytes(body)


def pod_address(pod: Obj, default_port: int = 8080) -> str | None:
    """``host:port`` of a serving pod: its IP and the container port named http."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = default_port
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == "http" and p.get("containerPort"):
                port = int(p["containerPort"])
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}"


def process_start(pod: Obj) -> str | None:
    """When the server container's current process started (changes on every container restart)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == SERVER_CONTAINER or len(statuses) == 1:
            running = (cs.get("state") or {}).get("running") or {}
            if running.get("startedAt"):
                return f"{running['startedAt']}#{cs.get('restartCount', 0)}"
    return None


def to_snapshot(parsed: Any, started: str | float | None = None) -> Snapshot:
    """The server's parsed ``/metrics`` (``runtime.sensor.SensorSnapshot``) as the controller's plain data."""
    features: dict[str, Any] = {name: [int(v) for v in vec] for name, vec in parsed.bins.items()}
    features.update({name: {str(k): int(v) for k, v in c.items()} for name, c in parsed.categories.items()})
    fb = parsed.feedback
    labelled = fb.correct + fb.errors if parsed.task == "classification" else fb.labels
    return Snapshot(
        version=parsed.version,
        rows=int(parsed.rows),
        features=features,
        predictions=_counts(parsed.predictions),
        prediction_rows=int(parsed.prediction_rows),
        labels=_counts(parsed.labels),
        projections={name: [int(v) for v in vec] for name, vec in parsed.projections.items()},
        feedback_rows=int(labelled or fb.labels),
        feedback_errors=int(fb.errors),
        feedback_squared_error=float(fb.squared_error),
        started=started,
    )


def _counts(c: Any) -> Any:
    """Class counts or a bin vector as plain JSON-ready data (None stays None)."""
    if c is None:
        return None
    return {str(k): int(v) for k, v in c.items()} if isinstance(c, dict) else [int(v) for v in c]


class HttpSensors:
    """Scrape serving pods; fetch a version's reference profile from a pod serving it.

    The operator pod does not mount the model store, so the reference comes
    from the server: ``GET /v2/models/{model}/versions/{version}/reference``
    (either ``{"reference": ..., "metadata"|"baseline": ...}`` or the bare
    reference.json; the training baseline then comes from the V2 model
    metadata's ``parameters.baseline``). ``reference_loader`` replaces that
    when the caller can read the store itself.
    """

    def __init__(self, *, timeout: float = SCRAPE_TIMEOUT, default_port: int = 8080,
                 reference_loader: ReferenceLoader | None = None, cache_size: int = 32, retry_seconds: float = 30.0,
                 address_of: Callable[[Obj], str | None] | None = None) -> None:
        self.timeout = timeout
        self.default_port = default_port
        self.reference_loader = reference_loader
        self.cache_size = cache_size
        self.retry_seconds = retry_seconds
        self.address_of = address_of or (lambda pod: pod_address(pod, self.default_port))
        self._refs: OrderedDict[tuple[str, str, str], tuple[Obj, Obj]] = OrderedDict()
        self._misses: dict[tuple[str, str, str], tuple[float, str]] = {}
        """(namespace, model, version) -> (when to try again, why it failed)."""
        self._servers: dict[tuple[str, str], str] = {}
        """(namespace, version) -> address of a pod that last said it serves the version."""

    async def snapshot(self, pod: Obj) -> Snapshot | None:
        from .runtime.sensor import parse_metrics

        address = self.address_of(pod)
        if not address:
            return None
        text = (await _http_get(f"http://{address}/metrics", self.timeout)).decode("utf-8", "replace")
        parsed = parse_metrics(text)
        if parsed.version:
            ns = (pod.get("metadata") or {}).get("namespace", "default")
            self._servers[(ns, parsed.version)] = address
        if not parsed.sensor_enabled:
            log.debug("pod %s: drift sensor off", (pod.get("metadata") or {}).get("name"))
        return to_snapshot(parsed, process_start(pod))

    async def reference(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        """The version's ``(reference, metadata)``; raises :class:`Unreadable` saying why when it cannot.

        A failure is remembered for ``retry_seconds`` (and raised again meanwhile), so a missing
        reference costs one request per retry period, not one per check.
        """
        key = (namespace, model, version)
        if key in self._refs:
            self._refs.move_to_end(key)
            return self._refs[key]
        retry_at, why = self._misses.get(key, (0.0, ""))
        if time.monotonic() < retry_at:
            raise Unreadable(f"{why} (next try within {self.retry_seconds:g}s)")
        try:
            profile = await self._load(namespace, model, version)
            if profile is None:
                raise Unreadable("no reference profile in the model store")
        except (Unreadable, OSError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            log.debug("reference of %s/%s/%s unavailable: %s", namespace, model, version, why)
            self._misses[key] = (time.monotonic() + self.retry_seconds, why)
            raise Unreadable(why) from None
        self._misses.pop(key, None)
        self._refs[key] = profile
        while len(self._refs) > self.cache_size:
            self._refs.popitem(last=False)
        return profile

    async def _load(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj] | None:
        if self.reference_loader is not None:
            out = self.reference_loader(namespace, model, version)
            return await out if asyncio.iscoroutine(out) else out
        address = self._servers.get((namespace, version))
        if not address:
            raise Unreadable(f"no serving pod has reported version {version} yet")
        body = json.loads(await _http_get(f"http://{address}/v2/models/{model}/versions/{version}/reference", self.timeout))
        if isinstance(body, dict) and "reference" in body:
            meta = body.get("metadata") or {"baseline": body.get("baseline") or {}}
            return body["reference"], meta
        try:
            info = json.loads(await _http_get(f"http://{address}/v2/models/{model}", self.timeout))
            meta = {"baseline": ((info.get("parameters") or {}).get("baseline") or {})}
        except (Unreadable, ValueError):
            meta = {}
        return body, meta

    async def rollout_counters(self, pod: Obj) -> Obj | None:
        """A serving pod's counters for a rollout's analysis (``PodCounters`` in the wire form).

        Its own predict requests only (v1 and v2: what the router forwarded
        is answered, and timed, by the other side), their 5xx, the latency
        histogram of those, and the labels it scored.
        """
        from .runtime.sensor import parse_metrics

        address = self.address_of(pod)
        if not address:
            return None
        text = (await _http_get(f"http://{address}/metrics", self.timeout)).decode("utf-8", "replace")
        parsed = parse_metrics(text)
        if not parsed.version:
            return None
        fb = parsed.feedback
        own = [(code, n) for (proto, code), n in parsed.requests.items() if proto in PREDICT_PROTOCOLS]
        return {
            "version": parsed.version,
            "task": parsed.task,
            "started": process_start(pod),
            "labelled": int(fb.correct + fb.errors if parsed.task == "classification" else fb.labels),
            "errors": int(fb.errors),
            "requests": int(sum(n for _, n in own)),
            "serverErrors": int(sum(n for code, n in own if str(code).startswith("5"))),
            "latency": latency_counts(text),
        }


PREDICT_PROTOCOLS = ("v1", "v2")


def latency_counts(text: str) -> list[int]:
    """Per-bucket counts (not cumulative; the last is +Inf) of the v1 and v2 request-duration histograms, summed."""
    from prometheus_client.parser import text_string_to_metric_families

    cumulative: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mlops_request_duration_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket") and s.labels.get("protocol") in PREDICT_PROTOCOLS:
                le = float(s.labels["le"])
                cumulative[le] = cumulative.get(le, 0.0) + s.value
    bounds = sorted(cumulative)
    out, before = [], 0.0
    for le in bounds:
        out.append(int(cumulative[le] - before))
        before = cumulative[le]
    return out
