"""kopf indices: every object the reconciles read (``k8s/cache.py``), and the lookups the watches use.

kopf fills each index from its watch's initial listing before it runs any
handler, then keeps it current from the watch stream; a deleted object's
values leave with it. Of the built-in kinds only ours are indexed, by the
labels the operator puts on them. The functions are coroutines so kopf calls
them on its loop: a sync handler would cost a thread hop per index per event.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import kopf

from ...controllers import labels
from ..cache import kept

GROUP, VERSION = "mlops.dev", "v1alpha1"
TRAINING, SERVING, TRIGGERED = labels.TRAINING_JOB, labels.DEPLOYMENT, labels.TRIGGERED_BY


def _keep(kind: str) -> Callable[..., Awaitable[dict[tuple[str, str], str]]]:
    async def index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
        return {(namespace, name): kept(kind, body)}
    return index


# Each kind's objects by (namespace, name), as the index objects_<plural> (cache.index_name).
for group, version, plural, kind, only in (
    (GROUP, VERSION, "trainingjobs", "TrainingJob", None),
    (GROUP, VERSION, "modeldeployments", "ModelDeployment", None),
    (GROUP, VERSION, "driftpolicies", "DriftPolicy", None),
    ("batch", "v1", "jobs", "Job", TRAINING),
    ("apps", "v1", "deployments", "Deployment", SERVING),
    ("", "v1", "services", "Service", SERVING),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", SERVING),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", SERVING),
):
    kopf.index(group, version, plural, id=f"objects_{plural}",
               labels={only: kopf.PRESENT} if only else None)(_keep(kind))


def _training_or_serving(labels: kopf.Labels, **_: Any) -> bool:
    return TRAINING in labels or SERVING in labels


kopf.index("", "v1", "pods", id="objects_pods", when=_training_or_serving)(_keep("Pod"))


@kopf.index("", "v1", "pods", labels={"job-name": kopf.PRESENT, TRAINING: kopf.PRESENT})
async def pods_by_job(namespace: str, name: str, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, labels["job-name"]): name}


@kopf.index("", "v1", "pods", labels={SERVING: kopf.PRESENT})
async def pods_by_deployment(namespace: str, name: str, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, labels[SERVING]): name}


@kopf.index(GROUP, VERSION, "trainingjobs")
async def training_jobs_by_model(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, spec.get("model", "")): name}


@kopf.index(GROUP, VERSION, "trainingjobs", labels={TRIGGERED: kopf.PRESENT})
async def training_jobs_by_policy(namespace: str, name: str, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, labels[TRIGGERED]): name}


@kopf.index(GROUP, VERSION, "modeldeployments")
async def deployments_by_model(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, spec.get("model", "")): name}


@kopf.index(GROUP, VERSION, "driftpolicies")
async def policies_by_deployment(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    return {(namespace, spec.get("deployment", "")): name}
