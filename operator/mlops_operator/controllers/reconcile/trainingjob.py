"""Reconcile a TrainingJob: its Job, then its status from the Job and the trainer's summary."""

from __future__ import annotations


from .. import labels, trainingjob
from ..cluster import DASK_JOBS, JOBS, PODS, TRAINING_JOBS, Cluster, Obj
from ..daskjob import runner_selector
from ..settings import Settings
from ..storage import STORE_RECHECK_SECONDS, blocked_by_store
from ..versions import newest_promotable
from . import Changes, Clock, Result, StoreCheck, apply_decision, utcnow



async def reconcile_training_job(cluster: Cluster, namespace: str, name: str, settings: Settings, clock: Clock = utcnow,
                                 store_check: StoreCheck | None = None) -> Result:
    """Bring one TrainingJob's Job and status in line.

    With ``store_check``, a Job is created only once the namespace's pods can
    reach the object store; until then the status says why.
    """
    tj = await cluster.get(TRAINING_JOBS, namespace, name)
    if tj is None:
        return Result(None)
    # A settled run (its outcome recorded) needs nothing more from the API server: most of the
    # TrainingJobs of a busy namespace are settled, and the periodic resync visits them all.
    settled = trainingjob.settled(tj)
    if trainingjob.runs_on_dask(tj, settings):
        child = trainingjob.current_child_name(tj)
        job = None if settled else await cluster.get(DASK_JOBS, namespace, child)
        pods = await cluster.list(PODS, namespace, runner_selector(child)) if job else []
    else:
        job = None if settled else await cluster.get(JOBS, namespace, trainingjob.job_name(tj))
        pods = await cluster.list(PODS, namespace, {"job-name": trainingjob.job_name(tj)}) if job else []
    champion = None
    gate = (tj.get("spec") or {}).get("qualityGate") or {}
    if job is None and not settled and gate.get("mustBeat") == "current":
        lineage = await cluster.list(TRAINING_JOBS, namespace, fields={"spec.model": tj["spec"].get("model", "")})
        best = newest_promotable([t for t in lineage if t["metadata"]["name"] != name], tj["spec"].get("model", ""))
        champion = (best or {}).get("status", {}).get("modelVersion")
    now = clock()
    decision = trainingjob.decide(tj, job, pods, settings, now, champion=champion)
    if decision.job is not None and trainingjob.runs_on_dask(tj, settings) and not await _still_current(cluster, tj):
        # A DaskJob is deleted once its run is recorded, so a reconcile working from a cached TrainingJob that
        # does not show the record yet would create it again (same name: a second run). Look again shortly.
        return Result(tj.get("status"), STALE_RECHECK_SECONDS)
    if decision.job is not None and store_check is not None:
        problem = await store_check(namespace)
        if problem is not None:
            status, events = blocked_by_store(tj, problem.reason, problem.message, now, phase="Pending")
            status = await apply_decision(cluster, TRAINING_JOBS, tj, status, Changes(events=events), now)
            return Result(status, STORE_RECHECK_SECONDS)
    changes = Changes(create=[decision.job] if decision.job is not None else (),
                      delete=[decision.delete] if decision.delete is not None else (), events=decision.events)
    status = await apply_decision(cluster, TRAINING_JOBS, tj, decision.status, changes, now)
    return Result(status, decision.requeue_after)


STALE_RECHECK_SECONDS = 1.0


async def _still_current(cluster: Cluster, tj: Obj) -> bool:
    """Whether the API server still has this version of the TrainingJob (clusters without a cache: always)."""
    read = getattr(cluster, "read", None)
    if read is None:
        return True
    meta = tj["metadata"]
    fresh = await read(TRAINING_JOBS, meta.get("namespace", "default"), meta["name"])
    return fresh is not None and fresh["metadata"].get("resourceVersion") == meta.get("resourceVersion")


def training_job_of(obj: Obj) -> str | None:
    """The TrainingJob a Job or Pod belongs to, by label (pods carry the Job's template labels)."""
    return (obj.get("metadata", {}).get("labels") or {}).get(labels.TRAINING_JOB)
