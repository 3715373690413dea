"""DriftPolicy handlers: the policy, its retrains, the watched deployment, and the periodic checks.

Watch events keep an index of the policies (and reconcile them, which follows
their retrains); a small loop started with the operator runs the checks of
the policies that are due, a few at a time. No kopf timers: they would put
finalizers on every policy.

The sensors (``mlops_operator.sensors``) scrape each serving pod's
``/metrics`` over HTTP and parse it with the server's own parser.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import kopf
from prometheus_client import Counter, Gauge

from ...controllers import labels
from ...controllers.cluster import DRIFT_POLICIES
from ...controllers.driftpolicy import PolicyDecision, is_due
from ...controllers.reconcile import utcnow
from ...controllers.reconcile.driftpolicy import Sensors, policy_of, reconcile_drift_policy
from ...sensors import HttpSensors
from .. import metrics
from ..context import current
from .lifecycle import register_resync

log = logging.getLogger("mlops_operator")

KIND = "DriftPolicy"
TICK_SECONDS = 2.0
MAX_CONCURRENT_CHECKS = 4

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
        metrics.remove_series(DRIFT_SCORE, namespace, name, check_name, feature)
    _score_labels[key] = seen


def forget_metrics(namespace: str, name: str) -> None:
    for check_name, feature in _score_labels.pop((namespace, name), set()):
        metrics.remove_series(DRIFT_SCORE, namespace, name, check_name, feature)


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


async def reconcile(namespace: str, name: str) -> Obj | None:
    ctx = current()
    decision = await reconcile_drift_policy(ctx.cluster, namespace, name, ctx.settings, sensors=sensors())
    record_metrics(namespace, name, decision)
    key = (namespace, name)
    if decision is None:
        _policies.pop(key, None)
    elif key in _policies:
        _policies[key] = {**_policies[key], "status": decision.status}
    return decision.status if decision is not None else None


register_resync(KIND, DRIFT_POLICIES, reconcile)


@kopf.on.event("mlops.dev", "v1alpha1", "driftpolicies")
async def drift_policy_changed(type: str, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    key = (namespace, name)
    if type == "DELETED":
        _policies.pop(key, None)
        forget_metrics(namespace, name)
        metrics.forget(KIND, namespace, name)
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
