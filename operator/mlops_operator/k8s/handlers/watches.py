"""Watch events become work-queue keys, through the table ``controllers.reconcile.watches`` keeps.

Two kopf indices (``indices.py``) answer "which ModelDeployments serve this
model" and "which DriftPolicies watch this ModelDeployment" from memory, so no
event costs a LIST. No finalizers and no kopf timers: a DriftPolicy's next
check is a delayed key in the queue.
"""

from __future__ import annotations

from typing import Any

import kopf

from ...controllers import labels
from ...controllers.cluster import RESOURCES
from ...controllers.reconcile.watches import affected
from ..context import current

GROUP, VERSION = "mlops.dev", "v1alpha1"


def enqueue(kind: str, body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index) -> None:
    """Add every object the event concerns; also on deletion (a reconcile of what is gone cleans up).

    The event of our own status write is no news to the object itself (it was
    just reconciled), only to the objects that read its status.
    """
    keys = affected(
        kind, dict(body),
        deployments_of_model=lambda ns, model: deployments_by_model.get((ns, model), []),
        policies_of_deployment=lambda ns, name: policies_by_deployment.get((ns, name), []),
    )
    ctx = current()
    # kopf runs handlers only once every index holds its initial listing: reads may use them now.
    ctx.cluster.cache.mark_ready()
    meta = body.get("metadata") or {}
    own = (kind, meta.get("namespace", "default"), meta.get("name", ""))
    if own in keys and ctx.cluster.wrote(RESOURCES[kind], own[1], own[2], meta.get("resourceVersion")):
        keys.discard(own)
    for key in sorted(keys):
        ctx.queue.add(key)


@kopf.on.event(GROUP, VERSION, "trainingjobs")
async def training_job_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    enqueue("TrainingJob", body, deployments_by_model, policies_by_deployment)


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def model_deployment_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    enqueue("ModelDeployment", body, deployments_by_model, policies_by_deployment)


@kopf.on.event(GROUP, VERSION, "driftpolicies")
async def drift_policy_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    enqueue("DriftPolicy", body, deployments_by_model, policies_by_deployment)


@kopf.on.event("batch", "v1", "jobs", labels={labels.TRAINING_JOB: kopf.PRESENT})
async def job_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    enqueue("Job", body, deployments_by_model, policies_by_deployment)


@kopf.on.event("apps", "v1", "deployments", labels={labels.DEPLOYMENT: kopf.PRESENT})
async def deployment_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    # Also on deletion: a Deployment removed by hand is recreated with the version that served.
    enqueue("Deployment", body, deployments_by_model, policies_by_deployment)


@kopf.on.event("", "v1", "pods", labels={labels.TRAINING_JOB: kopf.PRESENT})
async def training_pod_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    # A waiting run's reasons (Unschedulable, ImagePullBackOff, Running at last) change on its pod,
    # not on its Job: this event, not a timer, brings the TrainingJob back.
    enqueue("Pod", body, deployments_by_model, policies_by_deployment)
