"""Reconcile a DriftPolicy: run a check when one is due, start a retrain when the trigger fires, follow it.

The sensor I/O (scraping a serving pod's ``/metrics``, fetching a version's
reference profile) sits behind an injected :class:`Sensors`, so this module
sees only plain data; the cluster operator and the local runner each bring
their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Protocol

from ...api.base import parse_duration
from ...api.driftpolicy import DriftPolicySpec
from ...drift import Reference
from .. import driftpolicy, labels
from ..driftpolicy.importance import rank_by_importance
from ..conditions import parse_timestamp, set_condition
from ..cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, PODS, TRAINING_JOBS, Cluster, Obj
from ..settings import Settings
from ..decision import Event
from . import Changes, Clock, apply_decision, utcnow

log = logging.getLogger("mlops_operator")

SCRAPE_CONCURRENCY = 8
SENSOR_FAILURES = ("SensorUnreadable", "ReferenceUnavailable")


class Sensors(Protocol):
    """Where drift observations come from."""

    async def snapshot(self, pod: Obj) -> driftpolicy.Snapshot | None:
        """The counters of one serving pod's drift sensor; None or an exception saying why when it cannot be read.

        Bound it in time: a check waits for its slowest pod.
        """

    async def reference(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj] | None:
        """``(reference.json, metadata.json)`` of a model version as dicts; None or an exception saying why when unavailable."""


class WindowBaselines:
    """Each serving pod's counters at the last check, per policy: in memory, not in status.

    In status they would grow with pods x features x bins (see the window
    notes in ``controllers.driftpolicy.window``). Losing them (a restart) only means
    the pods count from the next check. Bounded: the least recently checked
    policies are forgotten first.
    """

    def __init__(self, max_policies: int = 10_000) -> None:
        self._by_policy: OrderedDict[str, dict[str, Obj]] = OrderedDict()
        self.max_policies = max_policies

    def get(self, policy_uid: str) -> dict[str, Obj]:
        return dict(self._by_policy.get(policy_uid) or {})

    def put(self, policy_uid: str, baselines: dict[str, Obj]) -> None:
        self._by_policy[policy_uid] = baselines
        self._by_policy.move_to_end(policy_uid)
        while len(self._by_policy) > self.max_policies:
            self._by_policy.popitem(last=False)

    def clear(self) -> None:
        self._by_policy.clear()


BASELINES = WindowBaselines()
"""The process's baselines, shared by every reconcile of this operator (or local runner)."""


def pod_ready(pod: Obj) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


async def _observe(sensors: Sensors, pods: list[Obj]) -> tuple[list[tuple[Obj, driftpolicy.Snapshot]], dict[str, str]]:
    """Scrape every pod, a few at a time: ``(the pods that answered with their snapshots, unreadable pod -> why)``."""
    scrape_slots = asyncio.Semaphore(SCRAPE_CONCURRENCY)

    async def one(pod: Obj) -> tuple[Obj, driftpolicy.Snapshot | None, str]:
        async with scrape_slots:
            try:
                snap = await sensors.snapshot(pod)
            except Exception as exc:  # noqa: BLE001 - one pod that cannot be read must not stop the check
                # Reported in the policy's SensorsReadable condition (and logged on its transitions).
                log.debug("drift sensor of pod %s unreadable: %r", pod["metadata"].get("name"), exc)
                return pod, None, _why(exc)
            return pod, snap, "" if snap is not None else "no address"

    answers = await asyncio.gather(*(one(p) for p in pods))
    observed = [(p, s) for p, s, _ in answers if s is not None]
    unreadable = {p["metadata"].get("name", ""): why for p, s, why in answers if s is None}
    return observed, unreadable


def _why(exc: BaseException) -> str:
    """An exception as a short reason for a condition (a timeout's str() is empty)."""
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__


async def run_check(
    cluster: Cluster, policy: Obj, deployment: Obj | None, sensors: Sensors | None, now: Any,
    baselines: dict[str, Obj] | None = None,
) -> tuple[driftpolicy.CheckResult, driftpolicy.WindowUpdate | None, str | None]:
    """One check: ``(result, the window update or None, task of the reference)``."""
    ns = policy["metadata"].get("namespace", "default")
    spec = DriftPolicySpec.model_validate(policy["spec"])
    if deployment is None:
        return driftpolicy.unavailable(f"ModelDeployment {spec.deployment} does not exist"), None, None
    version = (deployment.get("status") or {}).get("modelVersion")
    if not version:
        return driftpolicy.unavailable(f"ModelDeployment {spec.deployment} serves no version yet"), None, None
    if sensors is None:
        return driftpolicy.unavailable("no drift sensor source is configured"), None, None
    pods = await cluster.list(PODS, ns, {labels.DEPLOYMENT: deployment["metadata"]["name"]})
    ready = [p for p in pods if pod_ready(p)]
    if not ready:
        return driftpolicy.unavailable(f"no ready serving pod of {spec.deployment}"), None, None
    observed, unreadable = await _observe(sensors, ready)
    reading = {"scraped": len(ready), "unreadable": unreadable}
    if not observed:
        return driftpolicy.unavailable(driftpolicy.unreadable_text(unreadable, len(ready)), **reading), None, None
    max_age = parse_duration(spec.window.max_age) if spec.window.max_age else None
    old_window = (policy.get("status") or {}).get("window")
    update = driftpolicy.advance_window(old_window, version, observed, [p["metadata"]["name"] for p in pods], now, max_age,
                                        baselines)
    if update.reporting == 0:  # no pod serves the version yet: its reference is not missing, only not needed yet
        return driftpolicy.unavailable(f"the serving pods answered for another version than {version} (rollout in progress?)",
                                       **reading), None, None
    model = (deployment.get("spec") or {}).get("model", "")
    reference, metadata, reference_error = await _reference(sensors, ns, model, version)
    result = driftpolicy.run_checks(spec, reference, metadata, update.counts)
    rank_by_importance(result, metadata)
    result.scraped, result.unreadable, result.reference_error = len(ready), unreadable, reference_error
    if reference is None and result.verdict == "Unavailable":
        result.message = f"{reference_error}; " + result.message
    if update.reset:
        result.message = f"new window ({update.reset}); " + result.message
    return result, update, reference.task if reference else None


async def _reference(sensors: Sensors, namespace: str, model: str, version: str) -> tuple[Reference | None, Obj | None, str]:
    """``(reference profile, metadata, '' or why the profile could not be had)`` of the serving version."""
    try:
        profile = await sensors.reference(namespace, model, version)
    except Exception as exc:  # noqa: BLE001 - reported in status, retried next interval
        return None, None, f"the reference profile of {model}/{version} could not be read: {_why(exc)}"
    if profile is None:
        return None, None, f"no reference profile for {model}/{version}"
    ref_doc, metadata = profile
    if not ref_doc:
        return None, metadata, f"no reference profile for {model}/{version}"
    try:
        return Reference.from_dict(ref_doc), metadata, ""
    except (ValueError, KeyError, TypeError) as exc:
        return None, metadata, f"the reference profile of {model}/{version} is invalid: {_why(exc)}"


async def reconcile_drift_policy(
    cluster: Cluster,
    namespace: str,
    name: str,
    settings: Settings | None = None,
    clock: Clock = utcnow,
    sensors: Sensors | None = None,
    *,
    force: bool = False,
    baselines: WindowBaselines | None = None,
) -> driftpolicy.PolicyDecision | None:
    """Bring one DriftPolicy up to date; returns the decision applied (None when the policy is gone).

    A check runs only when due (``force`` runs one regardless); otherwise the
    reconcile only follows the retrains the policy started.
    """
    policy = await cluster.get(DRIFT_POLICIES, namespace, name)
    if policy is None:
        return None
    now = clock()
    spec = policy.get("spec") or {}
    deployment = await cluster.get(MODEL_DEPLOYMENTS, namespace, spec["deployment"]) if spec.get("deployment") else None
    retrains = await cluster.list(TRAINING_JOBS, namespace, {labels.TRIGGERED_BY: name})
    source_name = (spec.get("retrain") or {}).get("from")
    source = await cluster.get(TRAINING_JOBS, namespace, source_name) if source_name else None

    baselines = BASELINES if baselines is None else baselines
    uid = policy["metadata"].get("uid") or f"{namespace}/{name}"
    check, update, task = None, None, None
    if (force or driftpolicy.is_due(policy, now)) and not driftpolicy.spec_errors(policy):
        check, update, task = await run_check(cluster, policy, deployment, sensors, now, baselines.get(uid))
    window = update.state if update is not None else None
    decision = driftpolicy.decide(policy, check, retrains, deployment, source, now, window=window, task=task)

    if decision.retrain is not None:
        taken = await cluster.get(TRAINING_JOBS, namespace, decision.retrain["metadata"]["name"])
        if taken is not None and not driftpolicy.owned_by(taken, policy):
            _name_taken(decision, decision.retrain["metadata"]["name"], now)
    for ev in decision.events:
        if ev.reason in SENSOR_FAILURES:
            log.warning("DriftPolicy %s/%s: %s", namespace, name, ev.message)  # once per transition, not per check
    changes = Changes(create=[decision.retrain] if decision.retrain is not None else (), events=decision.events)
    decision.status = await apply_decision(cluster, DRIFT_POLICIES, policy, decision.status, changes, now)
    if update is not None:
        baselines.put(uid, update.baselines)  # only once the window they belong to is stored
    decision.requeue_after = _until_next_check(policy, decision.status, now)
    return decision


def _until_next_check(policy: Obj, status: Obj, now: Any) -> float | None:
    """When the queue should bring the policy back for its next check (None: never by itself)."""
    if driftpolicy.spec_errors(policy):
        return None  # nothing to check until the spec changes, which is an event
    due = driftpolicy.next_check({**policy, "status": status})
    scheduled = parse_timestamp((status.get("schedule") or {}).get("nextScheduleTime"))
    if due is not None and scheduled is not None:
        due = min(due, scheduled)
    return max(0.5, (due - now).total_seconds()) if due is not None else 0.5


def _name_taken(decision: driftpolicy.PolicyDecision, name: str, now: Any) -> None:
    """The retrain's name belongs to a TrainingJob this policy does not own: record it as failed, move on."""
    status = decision.status
    msg = f"a TrainingJob named {name} already exists and is not owned by this policy; the next retrain takes the next number"
    for rec in status.get("retrains") or []:
        if rec["name"] == name:
            rec["result"] = "Failed"
    if status.get("activeRetrain") == name:
        status.pop("activeRetrain")
    status["conditions"] = set_condition(status.get("conditions"), "Retraining", False, "NameTaken", msg, now, status.get("observedGeneration"))
    decision.events = [e for e in decision.events if e.reason != "RetrainTriggered"] + [Event("Warning", "NameTaken", msg)]
    decision.retrain = None


def policy_of(tj: Obj) -> str | None:
    """The DriftPolicy a retrain TrainingJob belongs to, by label."""
    return (tj.get("metadata", {}).get("labels") or {}).get(labels.TRIGGERED_BY)
