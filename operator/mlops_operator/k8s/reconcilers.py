"""The reconcile of each kind as the work queue runs it: the shared loops, bound to this operator's I/O."""

from __future__ import annotations

from ..controllers import driftpolicy
from ..controllers.cluster import DRIFT_POLICIES, Cluster
from ..controllers.reconcile import Result, utcnow
from ..controllers.reconcile.driftpolicy import Sensors, reconcile_drift_policy
from ..controllers.reconcile.modeldeployment import reconcile_model_deployment
from ..controllers.reconcile.trainingjob import reconcile_training_job
from ..controllers.settings import Settings
from . import metrics
from .queue import Reconcile


def reconcilers(cluster: Cluster, settings: Settings, sensors: Sensors) -> dict[str, Reconcile]:
    async def training_job(namespace: str, name: str) -> Result:
        return await reconcile_training_job(cluster, namespace, name, settings)

    async def model_deployment(namespace: str, name: str) -> Result:
        return await reconcile_model_deployment(cluster, namespace, name, settings)

    async def drift_policy(namespace: str, name: str) -> Result:
        decision = await reconcile_drift_policy(cluster, namespace, name, settings, sensors=sensors)
        metrics.record_drift(namespace, name, decision)
        if decision is None:
            return Result(None)
        # The next check is due at a time kept in status: the queue wakes the policy then.
        policy = await cluster.get(DRIFT_POLICIES, namespace, name)
        if policy is None or driftpolicy.spec_errors(policy):
            return Result(decision.status)  # nothing to check until the spec changes (an event)
        due = driftpolicy.next_check(policy)
        wait = max(0.0, (due - utcnow()).total_seconds()) if due else 0.0
        return Result(decision.status, requeue_after=max(wait, 0.5))

    return {"TrainingJob": training_job, "ModelDeployment": model_deployment, "DriftPolicy": drift_policy}
