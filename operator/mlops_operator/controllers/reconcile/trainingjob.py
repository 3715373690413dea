"""Reconcile a TrainingJob: its Job, then its status from the Job and the trainer's summary."""

from __future__ import annotations

from typing import Any

from .. import labels, trainingjob
from ..cluster import JOBS, PODS, TRAINING_JOBS, Cluster
from ..settings import Settings
from ..versions import newest_promotable
from . import Clock, changed, utcnow

Obj = dict[str, Any]


async def reconcile_training_job(cluster: Cluster, namespace: str, name: str, settings: Settings, clock: Clock = utcnow) -> Obj | None:
    """Bring one TrainingJob's Job and status in line; returns the status written (or None if gone)."""
    tj = await cluster.get(TRAINING_JOBS, namespace, name)
    if tj is None:
        return None
    job = await cluster.get(JOBS, namespace, trainingjob.job_name(tj))
    pods = await cluster.list(PODS, namespace, {"job-name": trainingjob.job_name(tj)}) if job else []
    champion = None
    gate = (tj.get("spec") or {}).get("qualityGate") or {}
    if job is None and gate.get("mustBeat") == "current":
        lineage = await cluster.list(TRAINING_JOBS, namespace)
        best = newest_promotable([t for t in lineage if t["metadata"]["name"] != name], tj["spec"].get("model", ""))
        champion = (best or {}).get("status", {}).get("modelVersion")
    decision = trainingjob.decide(tj, job, pods, settings, clock(), champion=champion)
    if decision.job is not None:
        await cluster.create(decision.job)
    if changed(tj.get("status"), decision.status):
        await cluster.patch_status(TRAINING_JOBS, namespace, name, decision.status)
    for ev in decision.events:
        await cluster.event(tj, ev.type, ev.reason, ev.message)
    return decision.status


def training_job_of(obj: Obj) -> str | None:
    """The TrainingJob a Job or Pod belongs to, by label (pods carry the Job's template labels)."""
    return (obj.get("metadata", {}).get("labels") or {}).get(labels.TRAINING_JOB)
