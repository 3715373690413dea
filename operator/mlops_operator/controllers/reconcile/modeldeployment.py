"""Reconcile a ModelDeployment: resolve its version, apply its children, report status."""

from __future__ import annotations

from typing import Sequence


from .. import labels, modeldeployment
from ..cluster import DEPLOYMENTS, HPAS, MODEL_DEPLOYMENTS, PDBS, SERVICES, TRAINING_JOBS, Cluster, Obj
from ..settings import Settings
from ..storage import STORE_RECHECK_SECONDS, blocked_by_store
from ..tracking import RETRY_SECONDS, AliasMover, champion_condition, champion_move
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
    store_check: StoreCheck | None = None, alias_mover: AliasMover | None = None,
) -> Result:
    """Bring one ModelDeployment's children and status in line.

    With ``store_check``, a Deployment that would start pods of a new version
    (the first one, or a rollout) is applied only once the namespace's pods
    can reach the object store (a server that cannot load its model would
    crash-loop); until then the status says why and what serves keeps serving.
    With ``alias_mover``, a version that serves gets MLflow's champion alias
    (when its TrainingJob registered it there).
    """
    md = await cluster.get(MODEL_DEPLOYMENTS, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return Result(None)  # owner references cascade; nothing to build for an object on its way out
    model = (md.get("spec") or {}).get("model")
    training_jobs = await cluster.list(TRAINING_JOBS, namespace, fields={"spec.model": model} if model else None)
    observed = await observe(cluster, namespace, name)
    now = clock()
    decision = modeldeployment.decide(md, training_jobs, observed, settings, now)
    if store_check is not None and _starts_pods_of_a_new_version(observed.deployment, decision.apply):
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
    return Result(status, RETRY_SECONDS if moved is not None else None)


def _starts_pods_of_a_new_version(current: Obj | None, apply: Sequence[Obj]) -> bool:
    """Whether applying ``apply`` creates the Deployment or changes the version its pods serve."""
    wanted = next((c for c in apply if c.get("kind") == "Deployment"), None)
    if wanted is None:
        return False
    if current is None:
        return True

    def version(dep: Obj) -> str | None:
        return ((dep.get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(labels.VERSION)

    return version(current) != version(wanted)


def model_deployment_of(obj: Obj) -> str | None:
    """The ModelDeployment a child belongs to: its controlling owner, else its label."""
    return owner_name(obj, MODEL_DEPLOYMENTS.kind) or (obj.get("metadata", {}).get("labels") or {}).get(labels.DEPLOYMENT)
