"""Labels and annotations the operator puts on what it owns.

Only ``mlops.dev/*`` and ``app.kubernetes.io/*`` keys of our own: the owner's
labels are never copied (Argo CD's ``app.kubernetes.io/instance`` on a child
would make Argo CD prune it).
"""

from __future__ import annotations

from typing import Any

PREFIX = "mlops.dev"
MODEL = f"{PREFIX}/model"
VERSION = f"{PREFIX}/version"
TRAINING_JOB = f"{PREFIX}/training-job"
DEPLOYMENT = f"{PREFIX}/model-deployment"
POLICY = f"{PREFIX}/drift-policy"
TRIGGERED_BY = f"{PREFIX}/triggered-by"
RETRAIN_TRIGGER = f"{PREFIX}/retrain-trigger"
"""Annotation of a retrain: what started it ('schedule', or the drift checks that breached)."""
PARENT_VERSION = f"{PREFIX}/parent-version"
APPROVED = f"{PREFIX}/approved"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "mlops-operator"


def owned_labels(component: str, **extra: str) -> dict[str, str]:
    out = {MANAGED_BY: OPERATOR, COMPONENT: component}
    out.update({k: v for k, v in extra.items() if v})
    return out


def owner_reference(owner: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference so deleting the owner cascades to the child."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
