"""The narrow view of a cluster the reconcilers need, implemented by ``k8s/`` and ``local/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]
"""A Kubernetes object (or a part of one) as JSON: what every reconcile reads and writes."""


@dataclass(frozen=True)
class Resource:
    """An API resource: what a REST path needs."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


TRAINING_JOBS = Resource("mlops.dev/v1alpha1", "TrainingJob", "trainingjobs")
MODEL_DEPLOYMENTS = Resource("mlops.dev/v1alpha1", "ModelDeployment", "modeldeployments")
DRIFT_POLICIES = Resource("mlops.dev/v1alpha1", "DriftPolicy", "driftpolicies")
JOBS = Resource("batch/v1", "Job", "jobs")
PODS = Resource("v1", "Pod", "pods")
SERVICES = Resource("v1", "Service", "services")
DEPLOYMENTS = Resource("apps/v1", "Deployment", "deployments")
HPAS = Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDBS = Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
DASK_JOBS = Resource("kubernetes.dask.org/v1", "DaskJob", "daskjobs")

RESOURCES = {r.kind: r for r in (TRAINING_JOBS, MODEL_DEPLOYMENTS, DRIFT_POLICIES, JOBS, PODS, SERVICES, DEPLOYMENTS, HPAS, PDBS, DASK_JOBS)}


def resource_of(obj: Obj) -> Resource:
    return RESOURCES[obj["kind"]]


class Conflict(Exception):
    """The object changed since it was read (409 on a conditional write): re-read and re-decide."""


class Refused(Exception):
    """The API server refused an object we built (invalid, forbidden by admission or quota).

    Not a bug of ours to retry quietly: the owner's status and events say it,
    with the API server's own words, because usually only its user can fix it.
    """

    def __init__(self, kind: str, name: str, status: int, message: str):
        super().__init__(f"the API server refused {kind} {name}: {message}")
        self.kind, self.name, self.status, self.message = kind, name, status, message


class Cluster(Protocol):
    """What a reconciler may do. Every method is idempotent where Kubernetes makes it so."""

    async def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""

    async def list(self, res: Resource, namespace: str, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]:
        """Objects of one resource in one namespace matching all the labels and fields (``{"spec.model": "iris"}``)."""

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply with the operator's field manager; creates or updates. :class:`Refused` when refused."""

    async def create(self, obj: Obj) -> Obj:
        """Create; when the name is taken, return the existing object (409 is success). :class:`Refused` when refused."""

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        """Delete (children cascade in the background); an absent object is success."""

    async def patch_status(self, res: Resource, namespace: str, name: str, status: Obj,
                           resource_version: str | None = None) -> None:
        """Replace the status subresource (never the spec); a vanished object is not an error.

        With ``resource_version`` the write is conditional: :class:`Conflict` when
        the object changed since it was read, so no other writer is overwritten.
        """

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event about the object (Normal or Warning)."""


def field_value(obj: Obj, path: str) -> str | None:
    """The value at a dotted path (``spec.model``) as a field selector compares it: a string, or None."""
    node: object = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return None if node is None or isinstance(node, (dict, list)) else str(node)


def matches_fields(obj: Obj, fields: dict[str, str] | None) -> bool:
    return all(field_value(obj, path) == want for path, want in (fields or {}).items())
