"""TrainingJob against a real kube-apiserver with the job and garbage-collector controllers running."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers.cluster import JOBS, PODS, TRAINING_JOBS
from mlops_operator.controllers.reconcile.trainingjob import reconcile_training_job
from mlops_operator.controllers.settings import Settings
from mlops_operator.k8s.client import KubeCluster
from tests.envtest.fixtures import admission_refusal, operator_running
from tests.envtest.kubelet import finish_training_pod, set_training_pod_status
from tests.pss import restricted_violations
from tests.waiting import wait_until as _wait

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="example.invalid/mlops-operator:test")


def _apply_example(control_plane, namespace: str, name: str = "trainingjob.yaml") -> dict:
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "iris" / name))
    return yaml.safe_load((ROOT / "examples" / "iris" / name).read_text())


def _reconcile(cluster: KubeCluster, namespace: str, name: str) -> dict:
    return asyncio.run(reconcile_training_job(cluster, namespace, name, SETTINGS)).status


def _jobs(cluster: KubeCluster, namespace: str) -> list[dict]:
    return asyncio.run(cluster.list(JOBS, namespace))


def test_apply_makes_exactly_one_restricted_job(control_plane, namespace) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    status = _reconcile(cluster, namespace, "iris-v1")
    assert status["phase"] == "Pending" and status["modelVersion"] == "iris-v1-g1"
    _reconcile(cluster, namespace, "iris-v1")
    _reconcile(cluster, namespace, "iris-v1")
    jobs = _jobs(cluster, namespace)
    assert [j["metadata"]["name"] for j in jobs] == ["iris-v1-g1"]
    job = jobs[0]
    tj = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    assert job["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert restricted_violations(job) == []
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == SETTINGS.image
    # The API server defaulted the spec the way the CRD says, and the operator never wrote it.
    assert tj["spec"]["data"]["validation"] == {"fraction": 0.25, "stratify": True, "seed": 0}
    assert "modelVersion" not in tj["spec"]


def test_completed_job_turns_the_run_succeeded(control_plane, namespace) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    _reconcile(cluster, namespace, "iris-v1")
    summary = {"version": "iris-v1-g1", "uri": "store://x/iris/iris-v1-g1", "sha256": "cd" * 32, "task": "classification",
               "metrics": {"accuracy": 0.96}, "gate": {"result": "Passed", "metric": "accuracy", "value": 0.96, "bound": 0.9}}
    finish_training_pod(cluster, namespace, "iris-v1-g1", exit_code=0, message=summary)

    def succeeded():
        s = _reconcile(cluster, namespace, "iris-v1")
        return s if s.get("phase") == "Succeeded" else None

    status = _wait(succeeded, what="the TrainingJob to succeed")
    assert status["metrics"]["accuracy"] == pytest.approx(0.96) and status["artifact"]["sha256"] == "cd" * 32
    out = control_plane.kubectl("get", "tj", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    for column in ("READY", "PHASE", "MODEL", "VERSION", "METRIC", "SCORE", "GATE", "AGE"):
        assert column in header
    for value in ("True", "Succeeded", "iris", "iris-v1-g1", "accuracy", "0.96", "Passed"):
        assert value in row
    wide = control_plane.kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout
    assert "REASON" in wide and "Succeeded" in wide


def test_gate_failure_fails_at_once_with_the_reason(control_plane, namespace) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    _reconcile(cluster, namespace, "iris-v1")
    summary = {"reason": "GateFailed", "message": "accuracy 0.5 is below the minimum 0.9",
               "gate": {"result": "Failed", "metric": "accuracy", "value": 0.5, "bound": 0.9}}
    finish_training_pod(cluster, namespace, "iris-v1-g1", exit_code=3, message=summary)

    def failed():
        s = _reconcile(cluster, namespace, "iris-v1")
        return s if s.get("phase") == "Failed" else None

    status = _wait(failed, what="the TrainingJob to fail")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "GateFailed" and "below the minimum" in ready["message"]
    # podFailurePolicy failed the Job on exit code 3 without using up its retries.
    job = asyncio.run(cluster.get(JOBS, namespace, "iris-v1-g1"))
    assert any(c["type"] == "Failed" and c.get("reason") == "PodFailurePolicy" for c in job["status"]["conditions"])
    assert len(asyncio.run(cluster.list(PODS, namespace, {"job-name": "iris-v1-g1"}))) == 1


def test_spec_change_starts_a_new_generation(control_plane, namespace) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    _reconcile(cluster, namespace, "iris-v1")
    control_plane.kubectl("patch", "tj", "iris-v1", "-n", namespace, "--type=merge", "-p",
                          '{"spec":{"estimator":{"params":{"n_estimators":50}}}}')
    status = _reconcile(cluster, namespace, "iris-v1")
    assert status["modelVersion"] == "iris-v1-g2"
    assert sorted(j["metadata"]["name"] for j in _jobs(cluster, namespace)) == ["iris-v1-g1", "iris-v1-g2"]


def test_invalid_spec_caught_by_the_server(control_plane, namespace) -> None:
    bad = ROOT / "tests" / "data" / "invalid" / "tj-gate-minimum-for-rmse.yaml"
    result = control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(bad), check=False)
    assert result.returncode != 0 and "spec.qualityGate.minimum" in result.stderr


def test_kopf_operator_reacts_to_kubectl_apply(control_plane, namespace) -> None:
    """The real wiring: kopf watches, the handler reconciles, the Job appears."""
    with operator_running(control_plane, namespace):
        started = time.monotonic()
        _apply_example(control_plane, namespace)
        cluster = KubeCluster(control_plane.api_client())
        _wait(lambda: _jobs(cluster, namespace), what="the operator to create the Job")
        tj = _wait(lambda: (asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1")) or {}).get("status"),
                   what="status written by the operator")
        assert tj["phase"] in ("Pending", "Running") and time.monotonic() - started < 30
        events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "JobCreated" in events


def test_a_waiting_run_follows_its_pod_without_a_timer(control_plane, namespace) -> None:
    """Why a run waits, then that it runs, comes from its pod's changes (the pod watch), not from polling.

    The operator's periodic resync is 300 s and nothing re-checks a waiting
    run on a timer, so only the pod's events can bring these updates within
    the wait below.
    """
    cluster = KubeCluster(control_plane.api_client())
    with operator_running(control_plane, namespace):
        _apply_example(control_plane, namespace)

        def ready_reason():
            status = (asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1")) or {}).get("status") or {}
            return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {}).get("reason"), status

        _wait(lambda: ready_reason()[0] == "Pending", what="the run waiting for its pod")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        set_training_pod_status(cluster, namespace, "iris-v1-g1", {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": now,
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]})
        reason, status = _wait(lambda: (r := ready_reason())[0] == "Unschedulable" and r, what="Unschedulable")
        assert status["phase"] == "Pending"
        assert "Insufficient cpu" in next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
        set_training_pod_status(cluster, namespace, "iris-v1-g1", {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "trainer", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                                   "state": {"running": {"startedAt": now}}}]})
        _, status = _wait(lambda: (r := ready_reason())[1].get("phase") == "Running" and r, what="Running")
        events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "Unschedulable" in events


def test_a_succeeded_run_survives_its_pods(control_plane, namespace) -> None:
    """Pod garbage collection (or `kubectl delete pod`) leaves the Job: the run stays Succeeded, artifact and all."""
    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    _reconcile(cluster, namespace, "iris-v1")
    summary = {"version": "iris-v1-g1", "uri": "store://x/iris/iris-v1-g1", "sha256": "ef" * 32, "task": "classification",
               "metrics": {"accuracy": 0.97}, "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9}}
    finish_training_pod(cluster, namespace, "iris-v1-g1", exit_code=0, message=summary)
    done = _wait(lambda: (lambda s: s if s.get("phase") == "Succeeded" else None)(_reconcile(cluster, namespace, "iris-v1")),
                 what="the TrainingJob to succeed")
    control_plane.kubectl("delete", "pods", "-n", namespace, "-l", "job-name=iris-v1-g1", "--wait=true")
    assert asyncio.run(cluster.list(PODS, namespace, {"job-name": "iris-v1-g1"})) == []
    assert asyncio.run(cluster.get(JOBS, namespace, "iris-v1-g1")) is not None, "the Job stays"
    after = _reconcile(cluster, namespace, "iris-v1")
    assert after == done and after["artifact"]["sha256"] == "ef" * 32 and after["metrics"]["accuracy"] == pytest.approx(0.97)


def test_a_status_decided_on_a_stale_read_is_refused_not_written(control_plane, namespace) -> None:
    """Two writers (an upgrade's overlap, `kubectl edit --subresource=status`): the later one never overwrites blindly."""
    from mlops_operator.controllers.cluster import Conflict

    cluster = KubeCluster(control_plane.api_client())
    _apply_example(control_plane, namespace)
    stale = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    _reconcile(cluster, namespace, "iris-v1")  # another writer moves the object on
    with pytest.raises(Conflict):
        asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, "iris-v1", {"phase": "Failed"},
                                         stale["metadata"]["resourceVersion"]))
    assert asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))["status"]["phase"] == "Pending"
    fresh = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    assert cluster.wrote(TRAINING_JOBS, namespace, "iris-v1", fresh["metadata"]["resourceVersion"]), \
        "the watch event of our own write is recognised (no reconcile of the object for it)"
    control_plane.kubectl("annotate", "tj", "iris-v1", "-n", namespace, "note=someone else")
    other = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    assert not cluster.wrote(TRAINING_JOBS, namespace, "iris-v1", other["metadata"]["resourceVersion"])
    asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, "iris-v1", {**other["status"], "phase": "Pending"},
                                     other["metadata"]["resourceVersion"]))  # a current read writes fine


def test_a_refused_job_is_reported_on_the_training_job_and_retried_until_it_is_allowed(control_plane, namespace) -> None:
    from mlops_operator.k8s.context import current

    cluster = KubeCluster(control_plane.api_client())
    with admission_refusal(control_plane, namespace, "batch", "jobs", "training is frozen for maintenance") as lift, \
            operator_running(control_plane, namespace):
        _apply_example(control_plane, namespace)

        def refused():
            s = (asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1")) or {}).get("status") or {}
            ready = next((c for c in s.get("conditions") or [] if c["type"] == "Ready"), {})
            return ready if ready.get("reason") == "JobRefused" else None

        ready = _wait(refused, what="the refusal on the TrainingJob's status")
        assert "frozen for maintenance" in ready["message"] and "iris-v1-g1" in ready["message"]
        events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        assert len([e for e in events if e["reason"] == "JobRefused" and e["involvedObject"]["name"] == "iris-v1"]) == 1
        # The policy stays for a while: the operator keeps trying (the old runner gave up after two tries).
        _wait(lambda: current().queue.failures(("TrainingJob", namespace, "iris-v1")) >= 6, what="six refused tries")
        assert _jobs(cluster, namespace) == []
        lift()
        lifted = time.monotonic()
        _wait(lambda: _jobs(cluster, namespace), timeout=60, what="the Job once the policy is lifted")
        recovery = time.monotonic() - lifted
        assert recovery < 20, f"the Job came {recovery:.0f}s after the policy was lifted"
        status = _wait(lambda: (lambda s: s if s.get("phase") in ("Pending", "Running") and
                                next(c for c in s["conditions"] if c["type"] == "Stalled")["status"] == "False" else None)(
            asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))["status"]), what="the refusal to clear")
        assert status["jobName"] == "iris-v1-g1"


def test_the_resync_lists_names_page_by_page_without_specs(control_plane, namespace) -> None:
    """What the periodic resync reads: every run's name, in pages, as metadata only (no spec, no status)."""
    cluster = KubeCluster(control_plane.api_client())
    example = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    for i in range(5):
        asyncio.run(cluster.create({**example, "metadata": {"name": f"iris-{i}", "namespace": namespace}}))
    assert sorted(asyncio.run(cluster.names(TRAINING_JOBS, namespace, page=2))) == [(namespace, f"iris-{i}") for i in range(5)]
    raw = cluster._request("GET", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/trainingjobs", query={"limit": 2},
                           accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
    assert raw["kind"] == "PartialObjectMetadataList" and raw["metadata"]["continue"]
    assert all("spec" not in item for item in raw["items"]) and len(raw["items"]) == 2


def test_the_operator_reads_from_its_watches_not_the_api_server(control_plane, namespace) -> None:
    """Once kopf's indices hold the objects, a reconcile's reads cost no API request (k8s/cache.py).

    Everything the test itself reads or writes goes through kubectl (another
    process), so the operator's request counter (this process) counts only
    the operator.
    """
    from prometheus_client import REGISTRY

    def requests(method: str) -> float:
        return REGISTRY.get_sample_value("mlops_operator_api_requests_total", {"method": method}) or 0.0

    def status() -> dict:
        out = control_plane.kubectl("get", "trainingjob", "iris-v1", "-n", namespace, "-o", "json").stdout
        return json.loads(out).get("status") or {}

    with operator_running(control_plane, namespace):
        _apply_example(control_plane, namespace)
        _wait(lambda: status().get("phase") == "Pending", what="the run waiting for its pod")
        pod = _wait(lambda: [p["metadata"]["name"] for p in json.loads(control_plane.kubectl(
            "get", "pods", "-n", namespace, "-l", "job-name=iris-v1-g1", "-o", "json").stdout)["items"]],
                    what="the Job's pod")[0]
        reads, writes = requests("GET"), requests("PATCH")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        running = {"status": {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {"startedAt": now}}}]}}
        control_plane.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
                              "-p", json.dumps(running))
        _wait(lambda: status().get("phase") == "Running", what="the run Running")
        # The reconciles since read the run, its Job and its pods from memory; they only wrote (the status,
        # and again when the Job controller's own update of the Job brought the run back).
        assert requests("GET") == reads
        assert requests("PATCH") - writes >= 1
