"""Standing in for the kubelet, which the test control plane does not run.

The job and ReplicaSet controllers of the real kube-controller-manager make
the pods; these helpers write the pod status a kubelet would report once the
container ran, so the operator's reading of pods is tested against objects
the real API server validated. What only a real kubelet can show (an image
that starts, probes, a termination message written by the trainer itself)
belongs to tests/cluster, on a real node.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from mlops_operator.controllers.cluster import PODS
from tests.waiting import wait_until


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def finish_training_pod(cluster: Any, namespace: str, job: str, *, exit_code: int = 0, message: dict | None = None) -> None:
    """The Job's pod ran its trainer to ``exit_code``, leaving ``message`` as its termination message."""
    pods = wait_until(lambda: asyncio.run(cluster.list(PODS, namespace, {"job-name": job})), what=f"a pod of Job {job}")
    now = _now()
    term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": json.dumps(message or {}),
            "startedAt": now, "finishedAt": now}
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"terminated": term}}],
    }
    asyncio.run(cluster.patch_status(PODS, namespace, pods[0]["metadata"]["name"], status))


def set_training_pod_status(cluster: Any, namespace: str, job: str, status: dict) -> None:
    """Write the status of the Job's pod: what kube-scheduler (PodScheduled) or the kubelet would report."""
    pods = wait_until(lambda: asyncio.run(cluster.list(PODS, namespace, {"job-name": job})), what=f"a pod of Job {job}")
    asyncio.run(cluster.patch_status(PODS, namespace, pods[0]["metadata"]["name"], status))


def make_serving_pods_ready(cluster: Any, namespace: str, deployment: str, want: int) -> None:
    """The ModelDeployment's ``want`` serving pods run and pass their readiness probe."""
    pods = wait_until(lambda: (lambda p: p if len(p) >= want else None)(
        asyncio.run(cluster.list(PODS, namespace, {"mlops.dev/model-deployment": deployment}))), what=f"{want} serving pods")
    now = _now()
    for pod in pods:
        status = {
            "phase": "Running",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": "server", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                                   "started": True, "state": {"running": {"startedAt": now}}}],
            "startTime": now,
        }
        asyncio.run(cluster.patch_status(PODS, namespace, pod["metadata"]["name"], status))
