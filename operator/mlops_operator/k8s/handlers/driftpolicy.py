"""DriftPolicy handlers: the policy, its retrains, the watched deployment, and the periodic checks.

Watch events keep an index of the policies (and reconcile them, which follows
their retrains); a small loop started with the operator runs the checks of
the policies that are due, a few at a time. No kopf timers: they would put
finalizers on every policy.

The sensors here scrape each serving pod's ``/metrics`` over HTTP and parse
it with the server's own parser (``runtime.sensor``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable

import kopf
from prometheus_client import Counter, Gauge

from ...controllers import labels
from ...controllers.cluster import DRIFT_POLICIES
from ...controllers.driftpolicy import PolicyDecision, Snapshot, is_due
from ...controllers.reconcile import utcnow
from ...controllers.reconcile.driftpolicy import Sensors, policy_of, reconcile_drift_policy
from ..context import current
from .lifecycle import register_resync

log = logging.getLogger("mlops_operator")

KIND = "DriftPolicy"
TICK_SECONDS = 2.0
MAX_CONCURRENT_CHECKS = 4
SCRAPE_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
SERVER_CONTAINER = "server"

Obj = dict[str, Any]
Key = tuple[str, str]

# --------------------------------------------------------------------------- operator metrics

DRIFT_SCORE = Gauge(
    "mlops_operator_drift_score",
    "Per check and feature: effect size (drift checks), PSI (psi) or the live metric (errorRate, rmse) of the last check.",
    ["namespace", "policy", "check", "feature"],
)
DRIFT_CHECKS = Counter("mlops_operator_drift_checks", "DriftPolicy checks by verdict.", ["namespace", "policy", "verdict"])
DRIFT_BREACHES = Counter("mlops_operator_drift_breaches", "DriftPolicy checks that found drift.", ["namespace", "policy"])
DRIFT_RETRAINS = Counter(
    "mlops_operator_drift_retrains",
    "Retrains by outcome: Started, Succeeded, GateFailed, Failed, Deleted, Promoted.",
    ["namespace", "policy", "result"],
)
_RESULT_OF_EVENT = {
    "RetrainTriggered": "Started",
    "RetrainSucceeded": "Succeeded",
    "AwaitingApproval": "Succeeded",
    "RetrainGateFailed": "GateFailed",
    "RetrainFailed": "Failed",
    "RetrainDeleted": "Deleted",
    "NameTaken": "Failed",
    "Promoted": "Promoted",
}
_score_labels: dict[Key, set[tuple[str, str]]] = {}


def record_metrics(namespace: str, name: str, decision: PolicyDecision | None) -> None:
    """Export what one reconcile decided."""
    key = (namespace, name)
    if decision is None:
        forget_metrics(namespace, name)
        return
    for ev in decision.events:
        result = _RESULT_OF_EVENT.get(ev.reason)
        if result:
            DRIFT_RETRAINS.labels(namespace, name, result).inc()
    check = decision.check
    if check is None:
        return
    DRIFT_CHECKS.labels(namespace, name, check.verdict).inc()
    if check.verdict == "Drift":
        DRIFT_BREACHES.labels(namespace, name).inc()
    if check.verdict not in ("Drift", "NoDrift"):
        return
    seen: set[tuple[str, str]] = set()
    for s in check.scores:
        value = next((s[k] for k in ("effect", "psi", "statistic") if s.get(k) is not None), None)
        if value is None:
            continue
        DRIFT_SCORE.labels(namespace, name, s["check"], s["feature"]).set(value)
        seen.add((s["check"], s["feature"]))
    for check_name, feature in _score_labels.get(key, set()) - seen:
        _remove(DRIFT_SCORE, namespace, name, check_name, feature)
    _score_labels[key] = seen


def forget_metrics(namespace: str, name: str) -> None:
    for check_name, feature in _score_labels.pop((namespace, name), set()):
        _remove(DRIFT_SCORE, namespace, name, check_name, feature)


def _remove(metric: Any, *label_values: str) -> None:
    try:
        metric.remove(*label_values)
    except KeyError:
        pass


# --------------------------------------------------------------------------- sensors over HTTP

ReferenceLoader = Callable[[str, str, str], Any]
"""``(namespace, model, version) -> (reference, metadata) | None``, sync or async."""


def _http_get(url: str, timeout: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod addresses never go through a proxy
    with opener.open(urllib.request.Request(url, headers={"Accept": "text/plain, application/json"}), timeout=timeout) as resp:
        data = resp.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        raise ValueError(f"{url}: response larger than {MAX_RESPONSE_BYTES} bytes")
    return data


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
    preds = parsed.predictions
    if preds is not None:
        preds = {str(k): int(v) for k, v in preds.items()} if isinstance(preds, dict) else [int(v) for v in preds]
    fb = parsed.feedback
    labelled = fb.correct + fb.errors if parsed.task == "classification" else fb.labels
    return Snapshot(
        version=parsed.version,
        rows=int(parsed.rows),
        features=features,
        predictions=preds,
        prediction_rows=int(parsed.prediction_rows),
        feedback_rows=int(labelled or fb.labels),
        feedback_errors=int(fb.errors),
        feedback_squared_error=float(fb.squared_error),
        started=started,
    )


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
        self._misses: dict[tuple[str, str, str], float] = {}
        self._servers: dict[tuple[str, str], str] = {}
        """(namespace, version) -> address of a pod that last said it serves the version."""

    async def snapshot(self, pod: Obj) -> Snapshot | None:
        from ...runtime.sensor import parse_metrics

        address = self.address_of(pod)
        if not address:
            return None
        text = (await asyncio.to_thread(_http_get, f"http://{address}/metrics", self.timeout)).decode("utf-8", "replace")
        parsed = parse_metrics(text)
        if parsed.version:
            ns = (pod.get("metadata") or {}).get("namespace", "default")
            self._servers[(ns, parsed.version)] = address
        if not parsed.sensor_enabled:
            log.debug("pod %s: drift sensor off", (pod.get("metadata") or {}).get("name"))
        return to_snapshot(parsed, process_start(pod))

    async def reference(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj] | None:
        key = (namespace, model, version)
        if key in self._refs:
            self._refs.move_to_end(key)
            return self._refs[key]
        if time.monotonic() < self._misses.get(key, 0.0):
            return None
        try:
            found = await self._load(namespace, model, version)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            log.info("reference of %s/%s/%s unavailable: %s", namespace, model, version, exc)
            found = None
        if found is None:
            self._misses[key] = time.monotonic() + self.retry_seconds
            return None
        self._misses.pop(key, None)
        self._refs[key] = found
        while len(self._refs) > self.cache_size:
            self._refs.popitem(last=False)
        return found

    async def _load(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj] | None:
        if self.reference_loader is not None:
            out = self.reference_loader(namespace, model, version)
            return await out if asyncio.iscoroutine(out) else out
        address = self._servers.get((namespace, version))
        if not address:
            return None
        body = json.loads(await asyncio.to_thread(_http_get, f"http://{address}/v2/models/{model}/versions/{version}/reference", self.timeout))
        if isinstance(body, dict) and "reference" in body:
            meta = body.get("metadata") or {"baseline": body.get("baseline") or {}}
            return body["reference"], meta
        try:
            info = json.loads(await asyncio.to_thread(_http_get, f"http://{address}/v2/models/{model}", self.timeout))
            meta = {"baseline": ((info.get("parameters") or {}).get("baseline") or {})}
        except (OSError, ValueError, urllib.error.URLError):
            meta = {}
        return body, meta


_sensors: Sensors | None = None


def sensors() -> Sensors:
    """The sensors the handlers use (HTTP scraping unless :func:`use_sensors` installed others)."""
    global _sensors
    if _sensors is None:
        _sensors = HttpSensors(default_port=current().settings.server_port)
    return _sensors


def use_sensors(s: Sensors | None) -> None:
    global _sensors
    _sensors = s


# --------------------------------------------------------------------------- reconcile and watches

_policies: dict[Key, Obj] = {}
"""Every policy the watch has seen, with its last known status: what the check loop reads."""


async def reconcile(namespace: str, name: str) -> None:
    ctx = current()
    decision = await reconcile_drift_policy(ctx.cluster, namespace, name, ctx.settings, sensors=sensors())
    record_metrics(namespace, name, decision)
    key = (namespace, name)
    if decision is None:
        _policies.pop(key, None)
    elif key in _policies:
        _policies[key] = {**_policies[key], "status": decision.status}


register_resync(KIND, DRIFT_POLICIES, reconcile)


@kopf.on.event("mlops.dev", "v1alpha1", "driftpolicies")
async def drift_policy_changed(type: str, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    key = (namespace, name)
    if type == "DELETED":
        _policies.pop(key, None)
        forget_metrics(namespace, name)
        return  # owner references cascade to the retrain TrainingJobs
    _policies[key] = {"metadata": dict(body.get("metadata") or {}), "spec": dict(body.get("spec") or {}),
                      "status": dict(body.get("status") or {})}
    await current().runner.run(KIND, reconcile, namespace, name)


@kopf.on.event("mlops.dev", "v1alpha1", "trainingjobs", labels={labels.TRIGGERED_BY: kopf.PRESENT})
async def retrain_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    # Also on deletion: a retrain deleted before it finished releases the policy's slot.
    policy = policy_of(dict(body))
    if policy:
        await current().runner.run(KIND, reconcile, namespace, policy)


@kopf.on.event("mlops.dev", "v1alpha1", "modeldeployments")
async def watched_deployment_changed(namespace: str, name: str, **_: Any) -> None:
    # A new serving version is a promotion to record (and starts a new window at the next check).
    for (ns, policy), obj in list(_policies.items()):
        if ns == namespace and (obj.get("spec") or {}).get("deployment") == name:
            await current().runner.run(KIND, reconcile, ns, policy)


# --------------------------------------------------------------------------- the check loop

_task: asyncio.Task | None = None
_running: set[Key] = set()
_checks: set[asyncio.Task] = set()
_gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None


def _semaphore(limit: int) -> asyncio.Semaphore:
    global _gate
    loop = asyncio.get_running_loop()
    if _gate is None or _gate[0] is not loop:
        _gate = (loop, asyncio.Semaphore(limit))
    return _gate[1]


async def check_due(now: datetime | None = None, *, limit: int = MAX_CONCURRENT_CHECKS, wait: bool = False) -> list[Key]:
    """Start a reconcile of every known policy whose check is due, at most ``limit`` running at once.

    Returns the policies started; ``wait`` waits for their reconciles. A
    policy still being checked is not started again.
    """
    now = now or utcnow()
    due = [key for key, obj in list(_policies.items()) if key not in _running and is_due(obj, now)]
    gate = _semaphore(limit)
    runner = current().runner

    async def one(key: Key) -> None:
        try:
            async with gate:
                await runner.run(KIND, reconcile, key[0], key[1])
        finally:
            _running.discard(key)

    started = []
    for key in due:
        _running.add(key)
        task = asyncio.get_running_loop().create_task(one(key))
        _checks.add(task)
        task.add_done_callback(_checks.discard)
        started.append(task)
    if wait and started:
        await asyncio.gather(*started)
    return due


async def _checks_forever(tick: float) -> None:
    while True:
        await asyncio.sleep(tick)
        try:
            await check_due()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the loop alive; the next tick retries
            log.warning("drift checks failed: %s", exc)


@kopf.on.startup()
async def start_checks(**_: Any) -> None:
    global _task
    _task = asyncio.get_running_loop().create_task(_checks_forever(TICK_SECONDS))


@kopf.on.cleanup()
async def stop_checks(**_: Any) -> None:
    if _task:
        _task.cancel()
    for task in list(_checks):
        task.cancel()
