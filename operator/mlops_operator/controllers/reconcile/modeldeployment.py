"""Reconcile a ModelDeployment: resolve its version, apply its children, report status."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, Sequence

from .. import labels, modeldeployment, rollout
from ..cluster import DEPLOYMENTS, HPAS, MODEL_DEPLOYMENTS, PDBS, PODS, SERVICES, TRAINING_JOBS, Cluster, Obj
from ..settings import Settings
from ..storage import STORE_RECHECK_SECONDS, blocked_by_store
from ..tracking import RETRY_SECONDS, AliasMover, champion_condition, champion_move
from . import Changes, Clock, Result, StoreCheck, apply_decision, owner_name, utcnow



log = logging.getLogger("mlops_operator")
SCRAPE_CONCURRENCY = 8


class RolloutProbe(Protocol):
    """Where a rollout's evidence comes from: one serving pod's counters."""

    async def rollout_counters(self, pod: Obj) -> Obj | None:
        """``PodCounters`` in the wire form (version, started, labelled, errors, requests, serverErrors, latency);
        None or an exception when the pod cannot be read. Bound it in time."""


async def observe(cluster: Cluster, namespace: str, name: str) -> modeldeployment.Observed:
    """The children of one ModelDeployment as they are now (the challenger's carry a suffix)."""
    challenger = name + modeldeployment.CHALLENGER_SUFFIX
    return modeldeployment.Observed(
        deployment=await cluster.get(DEPLOYMENTS, namespace, name),
        service=await cluster.get(SERVICES, namespace, name),
        hpa=await cluster.get(HPAS, namespace, name),
        pdb=await cluster.get(PDBS, namespace, name),
        challenger_deployment=await cluster.get(DEPLOYMENTS, namespace, challenger),
        challenger_service=await cluster.get(SERVICES, namespace, challenger),
    )


async def scrape(cluster: Cluster, probe: RolloutProbe, namespace: str, name: str,
                 observed: modeldeployment.Observed) -> None:
    """Read the counters of both sides' ready serving pods into ``observed`` (a pod that cannot be read is skipped)."""
    from .driftpolicy import pod_ready

    pods = await cluster.list(PODS, namespace, {labels.DEPLOYMENT: name})
    observed.live_pods = {p["metadata"]["name"] for p in pods}
    slots = asyncio.Semaphore(SCRAPE_CONCURRENCY)

    async def one(pod: Obj) -> rollout.PodReading | None:
        async with slots:
            try:
                counters = await probe.rollout_counters(pod)
            except Exception as exc:  # noqa: BLE001 - one unreadable pod must not stop the analysis
                log.debug("rollout counters of pod %s unreadable: %r", pod["metadata"].get("name"), exc)
                return None
        return rollout.PodReading(pod["metadata"]["name"], counters) if counters else None

    readings = await asyncio.gather(*(one(p) for p in pods if pod_ready(p)))
    observed.readings = [r for r in readings if r is not None]


async def reconcile_model_deployment(
    cluster: Cluster, namespace: str, name: str, settings: Settings, clock: Clock = utcnow,
    store_check: StoreCheck | None = None, alias_mover: AliasMover | None = None,
    probe: RolloutProbe | None = None,
) -> Result:
    """Bring one ModelDeployment's children and status in line.

    With ``store_check``, a Deployment that would start pods of a new version
    (the first one, or a rollout) is applied only once the namespace's pods
    can reach the object store (a server that cannot load its model would
    crash-loop); until then the status says why and what serves keeps serving.
    With ``alias_mover``, a version that serves gets MLflow's champion alias
    (when its TrainingJob registered it there).
    With ``probe``, an active shadow or canary rollout reads both sides' pods'
    counters for its analysis; without one its evidence never grows, so it holds.
    """
    md = await cluster.get(MODEL_DEPLOYMENTS, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return Result(None)  # owner references cascade; nothing to build for an object on its way out
    model = (md.get("spec") or {}).get("model")
    training_jobs = await cluster.list(TRAINING_JOBS, namespace, fields={"spec.model": model} if model else None)
    observed = await observe(cluster, namespace, name)
    if probe is not None and ((md.get("status") or {}).get("rollout") or {}).get("phase") in rollout.ACTIVE:
        await scrape(cluster, probe, namespace, name, observed)
    now = clock()
    decision = modeldeployment.decide(md, training_jobs, observed, settings, now)
    if store_check is not None and _starts_pods_of_a_new_version(observed.deployment, decision.apply, observed.challenger_deployment):
        problem = await store_check(namespace)
        if problem is not None:
            message = problem.message + ("; the serving version stays" if observed.deployment is not None else "")
            status, events = blocked_by_store(md, problem.reason, message, now)
            status = await apply_decision(cluster, MODEL_DEPLOYMENTS, md, status, Changes(events=events), now)
            return Result(status, STORE_RECHECK_SECONDS)
    move = champion_move(decision.status, training_jobs) if alias_mover is not None else None
    moved = None if move is None or alias_mover is None else await alias_mover(namespace, move)
    if move is not None:
        decision.events += champion_condition(decision.status, move, moved, now, md["metadata"].get("generation"))
    changes = Changes(apply=decision.apply, delete=decision.delete, events=decision.events)
    status = await apply_decision(cluster, MODEL_DEPLOYMENTS, md, decision.status, changes, now)
    retries = [t for t in (RETRY_SECONDS if moved is not None else None, decision.requeue_after) if t is not None]
    return Result(status, min(retries) if retries else None)


def _starts_pods_of_a_new_version(current: Obj | None, apply: Sequence[Obj], challenger: Obj | None = None) -> bool:
    """Whether applying ``apply`` creates a Deployment (the champion's or the challenger's) or changes its version."""

    def version(dep: Obj) -> str | None:
        return ((dep.get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(labels.VERSION)

    for wanted in apply:
        if wanted.get("kind") != "Deployment":
            continue
        have = challenger if wanted["metadata"]["name"].endswith(modeldeployment.CHALLENGER_SUFFIX) else current
        if have is None or version(have) != version(wanted):
            return True
    return False


def model_deployment_of(obj: Obj) -> str | None:
    """The ModelDeployment a child belongs to: its controlling owner, else its label."""
    return owner_name(obj, MODEL_DEPLOYMENTS.kind) or (obj.get("metadata", {}).get("labels") or {}).get(labels.DEPLOYMENT)
