"""The operator causes no drift: after it reconciled the iris example, the manifests in Git still match.

This is what Argo CD's self-heal and Flux's drift detection compare; ``kubectl
diff --server-side`` asks the real API server the same question.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlops_operator.controllers.cluster import DEPLOYMENTS, DRIFT_POLICIES, MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.k8s.client import KubeCluster
from tests.envtest.fixtures import operator_running
from tests.envtest.kubelet import finish_training_pod
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris"
NAMES = {TRAINING_JOBS: "iris-v1", MODEL_DEPLOYMENTS: "iris", DRIFT_POLICIES: "iris"}


def _get(cluster: KubeCluster, res, namespace: str, name: str) -> dict | None:
    return asyncio.run(cluster.get(res, namespace, name))


def test_no_diff_after_the_operator_reconciled_the_example(crds, namespace, tmp_path) -> None:
    control_plane = crds
    with operator_running(control_plane, namespace):
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(IRIS))
        cluster = KubeCluster(control_plane.api_client())
        finish_training_pod(cluster, namespace, "iris-v1-g1", message={
            "version": "iris-v1-g1", "uri": "store://x/iris/iris-v1-g1", "sha256": "cd" * 32, "task": "classification",
            "metrics": {"accuracy": 0.96}, "gate": {"result": "Passed", "metric": "accuracy", "value": 0.96, "bound": 0.9}})
        wait_until(lambda: (_get(cluster, TRAINING_JOBS, namespace, "iris-v1").get("status") or {}).get("phase") == "Succeeded",
                   timeout=60, what="the operator to record the run as Succeeded")
        wait_until(lambda: (_get(cluster, MODEL_DEPLOYMENTS, namespace, "iris").get("status") or {}).get("modelVersion") == "iris-v1-g1",
                   timeout=60, what="the ModelDeployment to roll out iris-v1-g1")
        assert _get(cluster, DEPLOYMENTS, namespace, "iris") is not None
        wait_until(lambda: _get(cluster, DRIFT_POLICIES, namespace, "iris").get("status"), what="the DriftPolicy's status")

    for res, name in NAMES.items():
        obj = _get(cluster, res, namespace, name)
        meta = obj["metadata"]
        # Only kubectl's (the user's) metadata: no finalizer and no annotation of the operator or kopf.
        assert not meta.get("finalizers"), (res.kind, meta.get("finalizers"))
        assert not meta.get("annotations"), (res.kind, meta.get("annotations"))
        assert obj["status"]["observedGeneration"] == meta["generation"] == 1, res.kind
        managers = {(m["manager"], m.get("subresource", "")) for m in meta["managedFields"]}
        assert ("mlops-operator", "") not in managers, (res.kind, managers)  # the operator wrote status only

    diff = control_plane.kubectl("diff", "--server-side", "-n", namespace, "-f", str(IRIS), check=False)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr

    # The same check does see a change in Git.
    edited = tmp_path / "modeldeployment.yaml"
    edited.write_text((IRIS / "modeldeployment.yaml").read_text().replace("replicas: 2", "replicas: 3"))
    diff = control_plane.kubectl("diff", "--server-side", "-n", namespace, "-f", str(edited), check=False)
    assert diff.returncode == 1 and "replicas: 3" in diff.stdout, diff.stdout + diff.stderr
