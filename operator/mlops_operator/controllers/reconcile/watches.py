"""Which objects a change concerns: the one table both drivers read.

The kopf operator (``k8s/handlers``) and the local manager (``local/manager``)
each watch changes in their own way; both ask :func:`affected` which owners
must be reconciled, so a TrainingJob's change reaches the same ModelDeployments
and DriftPolicies on a cluster and locally.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .. import labels
from ..cluster import Obj

Key = tuple[str, str, str]
"""(kind, namespace, name) of an object to reconcile."""

Lookup = Callable[[str, str], Iterable[str]]
"""(namespace, value) -> names: the ModelDeployments serving a model, the DriftPolicies watching a ModelDeployment."""

OWNED_KINDS = ("TrainingJob", "ModelDeployment", "DriftPolicy")


def affected(kind: str, obj: Obj, *, deployments_of_model: Lookup, policies_of_deployment: Lookup) -> set[Key]:
    """The objects to reconcile after ``obj`` (of ``kind``) was added, changed or deleted.

    - one of ours: itself;
    - a TrainingJob: also the ModelDeployments of its model (``latest`` may move)
      and the DriftPolicy that triggered it (its retrain's progress);
    - a ModelDeployment: also the DriftPolicies watching it (a new serving version);
    - a Job, a DaskJob or a trainer Pod: its TrainingJob; a Deployment or a serving Pod: its ModelDeployment.
    """
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace", "default"), meta.get("name", "")
    own = meta.get("labels") or {}
    out: set[Key] = set()
    if kind in OWNED_KINDS:
        out.add((kind, namespace, name))
    if kind == "TrainingJob":
        model = (obj.get("spec") or {}).get("model")
        if model:
            out.update(("ModelDeployment", namespace, md) for md in deployments_of_model(namespace, model))
        if own.get(labels.TRIGGERED_BY):
            out.add(("DriftPolicy", namespace, own[labels.TRIGGERED_BY]))
    elif kind == "ModelDeployment":
        out.update(("DriftPolicy", namespace, dp) for dp in policies_of_deployment(namespace, name))
    elif kind in ("Job", "Pod", "DaskJob") and own.get(labels.TRAINING_JOB):
        out.add(("TrainingJob", namespace, own[labels.TRAINING_JOB]))
    if kind in ("Deployment", "Pod") and own.get(labels.DEPLOYMENT):
        out.add(("ModelDeployment", namespace, own[labels.DEPLOYMENT]))
    return out
