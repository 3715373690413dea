"""ModelDeployment handlers: the object, the Deployments it owns, and the TrainingJobs of its lineage."""

from __future__ import annotations

from typing import Any

import kopf

from ...controllers import labels
from ...controllers.cluster import MODEL_DEPLOYMENTS
from ...controllers.modeldeployment import model_deployments_for
from ...controllers.reconcile.modeldeployment import (
    model_deployment_of,
    reconcile_model_deployment,
)
from .. import metrics
from ..context import current
from .lifecycle import register_resync

Obj = dict[str, Any]
KIND = "ModelDeployment"


async def reconcile(namespace: str, name: str) -> Obj | None:
    ctx = current()
    return await reconcile_model_deployment(ctx.cluster, namespace, name, ctx.settings)


register_resync(KIND, MODEL_DEPLOYMENTS, reconcile)


_known: dict[tuple[str, str], dict[str, Any]] = {}
"""Every ModelDeployment the watch has seen: which lineage each serves, so a TrainingJob's
events (one per status write while it trains) find theirs without a LIST each time."""


@kopf.on.event("mlops.dev", "v1alpha1", "modeldeployments")
async def model_deployment_changed(type: str, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        _known.pop((namespace, name), None)
        metrics.forget(KIND, namespace, name)
        return  # owner references cascade to the Deployment, Service, HPA and PDB
    _known[(namespace, name)] = {"metadata": {"name": name}, "spec": dict(body.get("spec") or {})}
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
    mine = [md for (ns, _), md in list(_known.items()) if ns == namespace]
    for name in model_deployments_for(dict(body), mine):
        await current().runner.run(KIND, reconcile, namespace, name)
