"""A distributed TrainingJob against the real API server and the real Dask operator.

The Dask operator runs from its package (``dask_kubernetes.operator.controller``,
a kopf operator) as a process, with its own CRDs. Our reconcile creates the
DaskJob; the Dask operator turns it into a DaskCluster (scheduler Service and
Deployment, a worker group) and the runner pod. Pods do not run on this control
plane: the runner's status is written as a kubelet would (tests/envtest/kubelet.py
explains why), and from there the Dask operator moves the DaskJob to Running and
Successful, which our reconcile records before deleting the DaskJob.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dask_kubernetes", reason="the dask extra is not installed")

from mlops_operator.controllers.cluster import DASK_JOBS, PODS, Resource  # noqa: E402
from mlops_operator.controllers.reconcile.trainingjob import reconcile_training_job  # noqa: E402
from mlops_operator.controllers.settings import Settings  # noqa: E402
from mlops_operator.k8s.client import KubeCluster  # noqa: E402
from tests.daskoperator import running_dask_operator  # noqa: E402
from tests.pss import restricted_violations  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="example.invalid/mlops-operator:test", dask_jobs=True,
                    dask_image="example.invalid/mlops-operator:test-dask")
DASK_CLUSTERS = Resource("kubernetes.dask.org/v1", "DaskCluster", "daskclusters")
SERVICES = Resource("v1", "Service", "services")


@pytest.fixture
def dask_operator(control_plane, namespace, tmp_path):
    """The Dask operator's CRDs installed and its controller running for ``namespace``."""
    with running_dask_operator(control_plane.kubeconfig, namespace, tmp_path / "dask-operator.log") as log:
        yield log


def _reconcile(cluster: KubeCluster, namespace: str, name: str) -> dict:
    return asyncio.run(reconcile_training_job(cluster, namespace, name, SETTINGS)).status


def _runner_status(phase: str, exit_code: int | None = None, message: dict | None = None) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if exit_code is None:
        state = {"running": {"startedAt": now}}
    else:
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                "message": json.dumps(message or {}), "startedAt": now, "finishedAt": now}}
    return {"phase": phase, "containerStatuses": [{"name": "trainer", "ready": phase == "Running", "restartCount": 0,
                                                   "image": "x", "imageID": "", "state": state}]}


def test_dask_operator_turns_the_daskjob_into_a_cluster_and_the_run_succeeds(control_plane, crds, namespace,
                                                                            dask_operator) -> None:
    cluster = KubeCluster(control_plane.api_client())
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "dask" / "trainingjob.yaml"))
    spec = yaml.safe_load((ROOT / "examples" / "dask" / "trainingjob.yaml").read_text())["spec"]

    status = _reconcile(cluster, namespace, "cancer-dask")
    assert status["phase"] == "Pending" and status["jobName"] == "cancer-dask-g1"
    daskjob = asyncio.run(cluster.get(DASK_JOBS, namespace, "cancer-dask-g1"))
    assert daskjob is not None and daskjob["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"

    def log_tail() -> str:
        return dask_operator.read_text()[-3000:]

    # The Dask operator makes the runner pod from the DaskJob: our trainer container, pointed at the scheduler.
    runner = wait_until(lambda: asyncio.run(cluster.get(PODS, namespace, "cancer-dask-g1-runner")), timeout=60,
                        what=f"the Dask operator's runner pod; its log:\n{log_tail()}")
    trainer = runner["spec"]["containers"][0]
    assert trainer["name"] == "trainer" and trainer["image"] == SETTINGS.dask_image and trainer["args"][0] == "train"
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://cancer-dask-g1-scheduler.{namespace}.svc.cluster.local:8786"
    assert runner["metadata"]["labels"]["mlops.dev/training-job"] == "cancer-dask"
    assert json.loads(runner["metadata"]["annotations"]["mlops.dev/trainingjob"])["spec"]["distributed"]["workers"] == 2
    assert restricted_violations(runner) == []

    # ... and the Dask cluster: the scheduler's Service and Deployment, two workers of the same image.
    dask_cluster = wait_until(lambda: asyncio.run(cluster.get(DASK_CLUSTERS, namespace, "cancer-dask-g1")), timeout=30,
                              what="the DaskCluster")
    assert dask_cluster["spec"]["worker"]["replicas"] == spec["distributed"]["workers"]
    service = wait_until(lambda: asyncio.run(cluster.get(SERVICES, namespace, "cancer-dask-g1-scheduler")), timeout=60,
                         what=f"the scheduler Service; the Dask operator's log:\n{log_tail()}")
    assert {p["port"] for p in service["spec"]["ports"]} == {8786, 8787}
    worker_spec = dask_cluster["spec"]["worker"]["spec"]
    assert worker_spec["containers"][0]["image"] == SETTINGS.dask_image
    assert worker_spec["containers"][0]["resources"]["limits"]["memory"] == "1Gi"

    # The runner runs: the Dask operator says Running, and so does the TrainingJob.
    asyncio.run(cluster.patch_status(PODS, namespace, "cancer-dask-g1-runner", _runner_status("Running")))
    wait_until(lambda: (asyncio.run(cluster.get(DASK_JOBS, namespace, "cancer-dask-g1"))["status"] or {}).get("jobStatus")
               == "Running", timeout=30, what="the DaskJob to run")
    assert _reconcile(cluster, namespace, "cancer-dask")["phase"] == "Running"

    # The runner's trainer finishes and leaves its summary: Successful, then Succeeded and the DaskJob deleted.
    summary = {"version": "cancer-dask-g1", "uri": "store://x/cancer-dask/cancer-dask-g1", "sha256": "ef" * 32,
               "task": "classification", "metrics": {"accuracy": 0.97},
               "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9}}
    asyncio.run(cluster.patch_status(PODS, namespace, "cancer-dask-g1-runner", _runner_status("Succeeded", 0, summary)))
    wait_until(lambda: asyncio.run(cluster.get(DASK_JOBS, namespace, "cancer-dask-g1"))["status"].get("jobStatus")
               == "Successful", timeout=30, what=f"the DaskJob to succeed; the Dask operator's log:\n{log_tail()}")
    status = _reconcile(cluster, namespace, "cancer-dask")
    assert status["phase"] == "Succeeded" and status["artifact"]["sha256"] == "ef" * 32
    assert status["metrics"] == {"accuracy": 0.97} and status["gate"]["result"] == "Passed"
    # The outcome is recorded once: a later reconcile changes nothing and creates nothing.
    assert _reconcile(cluster, namespace, "cancer-dask") == status
    assert all(j["metadata"].get("deletionTimestamp") for j in asyncio.run(cluster.list(DASK_JOBS, namespace)))


def test_dask_runner_crash_is_retried_with_a_new_daskjob(control_plane, crds, namespace, dask_operator) -> None:
    cluster = KubeCluster(control_plane.api_client())
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "dask" / "trainingjob.yaml"))
    _reconcile(cluster, namespace, "cancer-dask")
    wait_until(lambda: asyncio.run(cluster.get(PODS, namespace, "cancer-dask-g1-runner")), timeout=60,
               what=f"the runner pod; the Dask operator's log:\n{dask_operator.read_text()[-3000:]}")
    crash = {"reason": "Error", "message": "KilledWorker: a worker died three times"}
    asyncio.run(cluster.patch_status(PODS, namespace, "cancer-dask-g1-runner", _runner_status("Failed", 1, crash)))
    wait_until(lambda: (asyncio.run(cluster.get(DASK_JOBS, namespace, "cancer-dask-g1"))["status"] or {}).get("jobStatus")
               == "Failed", timeout=30, what="the DaskJob to fail")
    status = _reconcile(cluster, namespace, "cancer-dask")
    # backoffLimit 1 (the default): one more attempt, as a new DaskJob the Dask operator starts again.
    assert status["phase"] == "Pending" and status["jobName"] == "cancer-dask-g1-r1"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Retrying" and "KilledWorker" in ready["message"]
    wait_until(lambda: asyncio.run(cluster.get(PODS, namespace, "cancer-dask-g1-r1-runner")), timeout=60,
               what="the second attempt's runner pod")
    first = asyncio.run(cluster.get(DASK_JOBS, namespace, "cancer-dask-g1"))
    assert first is None or first["metadata"].get("deletionTimestamp")


@pytest.fixture
def our_operator(control_plane, namespace, tmp_path):
    """``mlops-operator run`` as a process, told to run DaskJobs (what the chart's ``dask.enabled`` sets)."""
    log = open(tmp_path / "operator.log", "w")
    env = {**os.environ, "MLOPS_DASK_JOBS": "true", "MLOPS_DASK_IMAGE": SETTINGS.dask_image, "MLOPS_IMAGE": SETTINGS.image}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_operator.cli", "run", "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig),
         "--liveness", "", "--metrics-port", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield tmp_path / "operator.log"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_dask_both_operators_carry_a_run_to_succeeded(control_plane, crds, namespace, dask_operator, our_operator) -> None:
    """No reconcile by hand: our operator's watches (DaskJobs, runner pods) follow what the Dask operator writes."""
    cluster = KubeCluster(control_plane.api_client())
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "dask" / "trainingjob.yaml"))

    def logs() -> str:
        return f"ours:\n{our_operator.read_text()[-2000:]}\nDask's:\n{dask_operator.read_text()[-2000:]}"

    def phase() -> str | None:
        tj = asyncio.run(cluster.get(Resource("mlops.dev/v1alpha1", "TrainingJob", "trainingjobs"), namespace, "cancer-dask"))
        return ((tj or {}).get("status") or {}).get("phase")

    wait_until(lambda: asyncio.run(cluster.get(PODS, namespace, "cancer-dask-g1-runner")), timeout=90,
               what=f"the runner pod, from our DaskJob; logs:\n{logs()}")
    asyncio.run(cluster.patch_status(PODS, namespace, "cancer-dask-g1-runner", _runner_status("Running")))
    wait_until(lambda: phase() == "Running", timeout=60, what=f"the TrainingJob to be Running; logs:\n{logs()}")
    summary = {"version": "cancer-dask-g1", "uri": "store://x/cancer-dask/cancer-dask-g1", "sha256": "12" * 32,
               "task": "classification", "metrics": {"accuracy": 0.95},
               "gate": {"result": "Passed", "metric": "accuracy", "value": 0.95, "bound": 0.9}}
    asyncio.run(cluster.patch_status(PODS, namespace, "cancer-dask-g1-runner", _runner_status("Succeeded", 0, summary)))
    wait_until(lambda: phase() == "Succeeded", timeout=60, what=f"the TrainingJob to succeed; logs:\n{logs()}")
    wait_until(lambda: all(j["metadata"].get("deletionTimestamp") for j in asyncio.run(cluster.list(DASK_JOBS, namespace))),
               timeout=30, what="the finished DaskJob to be deleted")
