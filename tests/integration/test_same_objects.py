"""The embedded default runs the very same controllers on the very same objects as the cluster.

One manifest goes to the real API server and to the in-memory cluster; the
TrainingJob and ModelDeployment reconciles run against each; what the
controllers read (the defaulted objects) and what they write (children,
status) must match, but for what only a server assigns (uids, times,
resource versions).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import yaml

from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.controllers.reconcile.trainingjob import reconcile_training_job
from mlops_operator.controllers.settings import Settings
from mlops_operator.k8s.client import KubeCluster
from mlops_operator.local.cluster import MemoryCluster

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="example.invalid/mlops-operator:test")
SERVER_ASSIGNED = {"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace", "selfLink"}


class Recording:
    """A Cluster wrapper that keeps every object the controllers read and write."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.read: list[dict] = []
        self.written: list[dict] = []

    async def get(self, res, namespace, name):
        obj = await self.inner.get(res, namespace, name)
        if obj is not None:
            self.read.append(copy.deepcopy(obj))
        return obj

    async def list(self, res, namespace, labels=None, fields=None):
        objs = await self.inner.list(res, namespace, labels, fields)
        self.read.extend(copy.deepcopy(objs))
        return objs

    async def apply(self, obj):
        self.written.append(copy.deepcopy(obj))
        return await self.inner.apply(obj)

    async def create(self, obj):
        self.written.append(copy.deepcopy(obj))
        return await self.inner.create(obj)

    async def delete(self, res, namespace, name):
        return await self.inner.delete(res, namespace, name)

    async def patch_status(self, res, namespace, name, status, resource_version=None):
        self.written.append({"kind": res.kind, "name": name, "status": copy.deepcopy(status)})
        return await self.inner.patch_status(res, namespace, name, status, resource_version)

    async def event(self, obj, type_, reason, message):
        return await self.inner.event(obj, type_, reason, message)


def _normal(obj: Any) -> Any:
    """Drop what only a server assigns, and times; keep every decision."""
    if isinstance(obj, dict):
        return {k: _normal(v) for k, v in obj.items()
                if k not in SERVER_ASSIGNED and k not in ("lastTransitionTime", "uid") and not k.startswith("last-applied")}
    if isinstance(obj, list):
        return [_normal(v) for v in obj]
    return obj


async def _run(cluster: Any, namespace: str) -> Recording:
    rec = Recording(cluster)
    await reconcile_training_job(rec, namespace, "iris-v1", SETTINGS)
    await reconcile_model_deployment(rec, namespace, "iris", SETTINGS)
    return rec


def test_controllers_see_and_do_the_same_in_both_worlds(control_plane, namespace) -> None:
    files = [ROOT / "examples" / "iris" / n for n in ("trainingjob.yaml", "modeldeployment.yaml")]
    docs = [yaml.safe_load(f.read_text()) for f in files]
    for f in files:
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(f))
    kube = KubeCluster(control_plane.api_client())
    memory = MemoryCluster()
    for doc in docs:
        memory.apply_now({**doc, "metadata": {**doc["metadata"], "namespace": namespace}})

    in_cluster = asyncio.run(_run(kube, namespace))
    in_memory = asyncio.run(_run(memory, namespace))

    # What the controllers read: the user's objects with the same defaults filled in.
    def specs(rec: Recording) -> dict:
        return {(o["kind"], o["metadata"]["name"]): o["spec"] for o in rec.read if o.get("kind") in ("TrainingJob", "ModelDeployment")}

    assert specs(in_memory) == specs(in_cluster)
    # What they wrote: the same Job, the same statuses (the Deployment waits for a passing run in both).
    assert _normal(in_memory.written) == _normal(in_cluster.written)
    assert any(o.get("kind") == "Job" for o in in_cluster.written)
