"""TrainingJob handlers: the object itself and the Jobs it owns."""

from __future__ import annotations

from typing import Any

import kopf

from ...controllers import labels
from ...controllers.cluster import TRAINING_JOBS
from ...controllers.reconcile.trainingjob import reconcile_training_job, training_job_of
from .. import metrics
from ..context import current
from .lifecycle import register_resync

Obj = dict[str, Any]
KIND = "TrainingJob"


async def reconcile(namespace: str, name: str) -> Obj | None:
    ctx = current()
    return await reconcile_training_job(ctx.cluster, namespace, name, ctx.settings)


register_resync(KIND, TRAINING_JOBS, reconcile)


@kopf.on.event("mlops.dev", "v1alpha1", "trainingjobs")
async def training_job_changed(type: str, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        metrics.forget(KIND, namespace, name)
        return  # owner references cascade to the Job; nothing else of ours to clean up
    await current().runner.run(KIND, reconcile, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={labels.TRAINING_JOB: kopf.PRESENT})
async def job_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    owner = training_job_of(dict(body))
    if owner:
        await current().runner.run(KIND, reconcile, namespace, owner)
