"""Reconcile a ModelDeployment: resolve its version, apply its children, report status."""

from __future__ import annotations


from .. import labels, modeldeployment
from ..cluster import DEPLOYMENTS, HPAS, MODEL_DEPLOYMENTS, PDBS, SERVICES, TRAINING_JOBS, Cluster, Obj
from ..settings import Settings
from ..storage import STORE_RECHECK_SECONDS, blocked_by_store
from . import Changes, Clock, Result, StoreCheck, apply_decision, owner_name, utcnow



async def observe(cluster: Cluster, namespace: str, name: str) -> modeldeployment.Observed:
    """The children of one ModelDeployment as they are now (all share its name)."""
    return modeldeployment.Observed(
        deployment=await cluster.get(DEPLOYMENTS, namespace, name),
        service=await cluster.get(SERVICES, namespace, name),
        hpa=await cluster.get(HPAS, namespace, name),
        pdb=await cluster.get(PDBS, namespace, name),
    )


async def reconcile_model_deployment(
    cluster: Cluster, namespace: str, name: str, settings: Settings, clock: Clock = utcnow,
    store_check: StoreCheck | None = None,
) -> Result:
    """Bring one ModelDeployment's children and status in line.

    With ``store_check``, the first Deployment is created only once the
    namespace's pods can reach the object store (a server that cannot load its
    model would crash-loop); until then the status says why.
    """
    md = await cluster.get(MODEL_DEPLOYMENTS, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return Result(None)  # owner references cascade; nothing to build for an object on its way out
    model = (md.get("spec") or {}).get("model")
    training_jobs = await cluster.list(TRAINING_JOBS, namespace, fields={"spec.model": model} if model else None)
    observed = await observe(cluster, namespace, name)
    now = clock()
    decision = modeldeployment.decide(md, training_jobs, observed, settings, now)
    first = observed.deployment is None and any(c.get("kind") == "Deployment" for c in decision.apply)
    if first and store_check is not None:
        problem = await store_check(namespace)
        if problem is not None:
            status, events = blocked_by_store(md, problem.reason, problem.message, now)
            status = await apply_decision(cluster, MODEL_DEPLOYMENTS, md, status, Changes(events=events), now)
            return Result(status, STORE_RECHECK_SECONDS)
    changes = Changes(apply=decision.apply, delete=decision.delete, events=decision.events)
    return Result(await apply_decision(cluster, MODEL_DEPLOYMENTS, md, decision.status, changes, now))


def model_deployment_of(obj: Obj) -> str | None:
    """The ModelDeployment a child belongs to: its controlling owner, else its label."""
    return owner_name(obj, MODEL_DEPLOYMENTS.kind) or (obj.get("metadata", {}).get("labels") or {}).get(labels.DEPLOYMENT)
