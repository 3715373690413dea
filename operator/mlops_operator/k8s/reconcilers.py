"""The reconcile of each kind as the work queue runs it: the shared loops, bound to this operator's I/O."""

from __future__ import annotations

from ..controllers.cluster import Cluster
from ..controllers.reconcile import Result, StoreCheck
from ..controllers.reconcile.driftpolicy import Sensors, reconcile_drift_policy
from ..controllers.reconcile.modeldeployment import reconcile_model_deployment
from ..controllers.reconcile.trainingjob import reconcile_training_job
from ..controllers.settings import Settings
from . import metrics
from .queue import Reconcile
from .tracking import alias_mover


def reconcilers(cluster: Cluster, settings: Settings, sensors: Sensors,
                store_check: StoreCheck | None = None) -> dict[str, Reconcile]:
    async def training_job(namespace: str, name: str) -> Result:
        return await reconcile_training_job(cluster, namespace, name, settings, store_check=store_check)

    mover = alias_mover(cluster)

    async def model_deployment(namespace: str, name: str) -> Result:
        return await reconcile_model_deployment(cluster, namespace, name, settings, store_check=store_check,
                                                alias_mover=mover, probe=sensors)

    async def drift_policy(namespace: str, name: str) -> Result:
        decision = await reconcile_drift_policy(cluster, namespace, name, settings, sensors=sensors)
        metrics.record_drift(namespace, name, decision)
        if decision is None:
            return Result(None)
        return Result(decision.status, requeue_after=decision.requeue_after)

    return {"TrainingJob": training_job, "ModelDeployment": model_deployment, "DriftPolicy": drift_policy}
