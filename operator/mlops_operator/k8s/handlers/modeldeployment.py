"""ModelDeployment handlers: the object, the Deployments it owns, and the TrainingJobs of its lineage."""

from __future__ import annotations

from typing import Any

import kopf

from ...controllers import labels
from ...controllers.cluster import MODEL_DEPLOYMENTS
from ...controllers.reconcile.modeldeployment import (
    model_deployment_of,
    model_deployments_of_lineage,
    reconcile_model_deployment,
)
from ..context import current
from .lifecycle import register_resync

KIND = "ModelDeployment"


async def reconcile(namespace: str, name: str) -> None:
    ctx = current()
    await reconcile_model_deployment(ctx.cluster, namespace, name, ctx.settings)


register_resync(KIND, MODEL_DEPLOYMENTS, reconcile)


@kopf.on.event("mlops.dev", "v1alpha1", "modeldeployments")
async def model_deployment_changed(type: str, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        return  # owner references cascade to the Deployment, Service, HPA and PDB
    await current().runner.run(KIND, reconcile, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={labels.DEPLOYMENT: kopf.PRESENT})
async def serving_deployment_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    # Also on deletion: a Deployment removed by hand is recreated with the version that served.
    owner = model_deployment_of(dict(body))
    if owner:
        await current().runner.run(KIND, reconcile, namespace, owner)


@kopf.on.event("mlops.dev", "v1alpha1", "trainingjobs")
async def lineage_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    # A run that succeeds, fails, is approved or deleted may change what `latest` resolves to.
    ctx = current()
    for name in await model_deployments_of_lineage(ctx.cluster, dict(body)):
        await ctx.runner.run(KIND, reconcile, namespace, name)
