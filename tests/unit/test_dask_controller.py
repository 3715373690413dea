"""Distributed TrainingJobs on a cluster: the DaskJob built for them and their status read back from it.

Pure decisions (``decide`` with ``Settings(dask_jobs=True)``), as the reconcile takes them.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers import daskjob as dj
from mlops_operator.controllers import trainingjob as ctl
from mlops_operator.controllers.reconcile.watches import affected
from mlops_operator.controllers.settings import Settings
from tests.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ON_DASK = Settings(image="example/mlops:1", dask_jobs=True, dask_image="example/mlops:1-dask")


@pytest.fixture
def tj() -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "dask" / "trainingjob.yaml").read_text())
    obj["metadata"].update(uid="uid-1", generation=1, namespace="ml")
    return obj


def _daskjob(name: str, job_status: str | None, **status) -> dict:
    st = {"jobStatus": job_status, **status} if job_status else {}
    return {"apiVersion": dj.DASK_API_VERSION, "kind": "DaskJob", "metadata": {"name": name, "namespace": "ml"}, "status": st}


def _runner(summary: dict | None, exit_code: int) -> dict:
    term = {"exitCode": exit_code, "finishedAt": "2026-01-02T03:10:00Z", "message": json.dumps(summary) if summary else ""}
    return {"metadata": {"name": "runner"}, "status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]}}


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _after(decision, tj: dict) -> dict:
    """The TrainingJob as the next reconcile reads it: the decision's status written."""
    out = copy.deepcopy(tj)
    out["status"] = decision.status
    return out


OK = {"version": "cancer-dask-g1", "uri": "s3://models/ml/cancer-dask/cancer-dask-g1", "sha256": "ab" * 32,
      "metrics": {"accuracy": 0.96}, "gate": {"result": "Passed", "metric": "accuracy", "value": 0.96, "bound": 0.9}}


# -- the builder ------------------------------------------------------------------------


def test_dask_new_generation_asks_for_a_daskjob_not_a_batch_job(tj) -> None:
    d = ctl.decide(tj, None, [], ON_DASK, NOW)
    assert d.job is not None and d.job["kind"] == "DaskJob" and d.job["apiVersion"] == "kubernetes.dask.org/v1"
    assert d.job["metadata"]["name"] == "cancer-dask-g1" and d.status["jobName"] == "cancer-dask-g1"
    assert d.status["phase"] == "Pending" and [e.reason for e in d.events] == ["DaskJobCreated"]


def test_dask_off_the_distributed_run_is_a_batch_job(tj) -> None:
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job is not None and d.job["kind"] == "Job"


def test_dask_job_spec_runner_is_the_trainer_and_owned(tj) -> None:
    job = ctl.decide(tj, None, [], ON_DASK, NOW).job
    batch = ctl.build_job(tj, ON_DASK)
    assert job["metadata"]["ownerReferences"] == batch["metadata"]["ownerReferences"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    runner = job["spec"]["job"]
    trainer = runner["spec"]["containers"][0]
    assert trainer["name"] == "trainer" and trainer["image"] == "example/mlops:1-dask"
    assert trainer["args"] == batch["spec"]["template"]["spec"]["containers"][0]["args"]
    assert runner["spec"]["restartPolicy"] == "Never"
    # The spec reaches the runner through the same downward-API annotation as a batch Job's pod.
    assert json.loads(runner["metadata"]["annotations"][ctl.SPEC_ANNOTATION])["spec"] == tj["spec"]
    assert runner["metadata"]["labels"]["mlops.dev/training-job"] == "cancer-dask"


def test_dask_job_spec_workers_and_scheduler(tj) -> None:
    tj["spec"]["distributed"]["scheduler"] = {"resources": {"limits": {"cpu": "1", "memory": "256Mi"}}}
    cluster = ctl.decide(tj, None, [], ON_DASK, NOW).job["spec"]["cluster"]["spec"]
    worker = cluster["worker"]
    assert worker["replicas"] == 2
    wc = worker["spec"]["containers"][0]
    assert wc["image"] == "example/mlops:1-dask" and wc["command"][:2] == ["dask", "worker"]
    assert wc["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    # Dask's own bound is the pod's limit, so a worker spills before the kernel kills it; it never pauses.
    assert wc["command"][wc["command"].index("--memory-limit") + 1] == str(2**30)
    assert {"name": "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE", "value": "False"} in wc["env"]
    sc = cluster["scheduler"]["spec"]["containers"][0]
    assert sc["command"] == ["dask", "scheduler"] and sc["resources"] == {"limits": {"cpu": "1", "memory": "256Mi"}}
    assert cluster["scheduler"]["service"]["selector"] == {"dask.org/cluster-name": "cancer-dask-g1",
                                                           "dask.org/component": "scheduler"}


def test_dask_workers_of_an_s3_source_get_the_store_secret_by_reference_and_nothing_else(tj) -> None:
    settings = Settings(image="example/mlops:1", dask_jobs=True, store_uri="pvc://models/store", store_secret="s3-reader",
                        s3_endpoint="https://s3.example:9000", store_ca_config_map="s3-ca")
    tj["spec"]["data"]["source"] = "s3://datasets/cancer/"
    tj["spec"]["tracking"] = {"mlflow": {"trackingUri": "https://mlflow.example", "credentialsSecret": "mlflow-token"}}
    built = ctl.decide(tj, None, [], settings, NOW).job["spec"]
    worker = built["cluster"]["spec"]["worker"]["spec"]
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.example:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-reader"
    assert not any(k.startswith("MLFLOW") for k in env)  # the runner's tracking credentials stay the runner's
    mounts = {m["name"]: m for m in worker["containers"][0]["volumeMounts"]}
    assert set(mounts) == {"tmp", "store-ca"} and mounts["store-ca"]["readOnly"]  # no store claim on a worker
    assert {v["name"] for v in worker["volumes"]} == {"tmp", "store-ca"}
    # The runner reads the source's first rows: it gets the object store's settings even with a claim as the store.
    runner_env = {e["name"] for e in built["job"]["spec"]["containers"][0]["env"]}
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= runner_env
    assert any(name.startswith("MLFLOW") for name in runner_env)

    tj["spec"]["data"]["source"] = "sklearn://breast_cancer"
    worker = ctl.decide(tj, None, [], settings, NOW).job["spec"]["cluster"]["spec"]["worker"]["spec"]
    assert not any(e["name"].startswith("AWS_") for e in worker["containers"][0]["env"])


def test_dask_workers_and_runner_of_a_pvc_source_mount_its_claim_read_only_where_the_trainer_reads(tj) -> None:
    from mlops_operator.controllers.storage import DATA_CLAIMS_PATH
    from mlops_operator.runtime.data import DEFAULT_PVC_ROOT

    assert DATA_CLAIMS_PATH == DEFAULT_PVC_ROOT  # the trainer's --pvc-root, left at its default
    tj["spec"]["data"]["source"] = "pvc://training-data/cancer/"
    built = ctl.decide(tj, None, [], ON_DASK, NOW).job["spec"]
    for pod in (built["cluster"]["spec"]["worker"]["spec"], built["job"]["spec"]):
        (volume,) = [v for v in pod["volumes"] if v["name"] == "data"]
        assert volume["persistentVolumeClaim"] == {"claimName": "training-data", "readOnly": True}
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data"]
        assert mount == {"name": "data", "mountPath": "/mnt/pvc/training-data", "readOnly": True}
        assert restricted_violations(pod) == []
    worker = built["cluster"]["spec"]["worker"]["spec"]
    assert {v["name"] for v in worker["volumes"]} == {"tmp", "data"}  # the data, not the store
    assert not any(e["name"].startswith("AWS_") for e in worker["containers"][0]["env"])


def test_dask_job_pods_are_restricted(tj) -> None:
    job = ctl.decide(tj, None, [], ON_DASK, NOW).job
    for pod_spec in (job["spec"]["job"]["spec"], job["spec"]["cluster"]["spec"]["worker"]["spec"],
                     job["spec"]["cluster"]["spec"]["scheduler"]["spec"]):
        assert restricted_violations(pod_spec) == []
        assert pod_spec["automountServiceAccountToken"] is False


# -- the status mapping (decision table) -------------------------------------------------


@pytest.mark.parametrize(("job_status", "phase", "reason"), [
    (None, "Pending", "DaskClusterStarting"),
    ("JobCreated", "Pending", "DaskClusterStarting"),
    ("ClusterCreated", "Pending", "DaskClusterStarting"),
    ("Running", "Running", "Running"),
    ("SomethingNew", "Pending", "DaskClusterStarting"),
])
def test_dask_phase_while_it_runs(tj, job_status, phase, reason) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    d = ctl.decide(started, _daskjob("cancer-dask-g1", job_status), [], ON_DASK, NOW + timedelta(seconds=5))
    assert d.status["phase"] == phase and d.job is None and d.delete is None
    ready = _cond(d.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason
    # The deadline is the TrainingJob's: a timed look comes back when it would pass.
    assert d.requeue_after == pytest.approx(3600 - 5)


def test_dask_successful_records_the_summary_and_deletes_the_daskjob(tj) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    finished = _daskjob("cancer-dask-g1", "Successful", endTime="2026-01-02T03:10:01Z")
    d = ctl.decide(started, finished, [_runner(OK, 0)], ON_DASK, NOW + timedelta(minutes=6))
    assert d.status["phase"] == "Succeeded" and d.delete is finished and d.job is None
    assert d.status["artifact"] == {"uri": OK["uri"], "sha256": OK["sha256"]}
    assert d.status["metrics"] == {"accuracy": 0.96} and d.status["gate"]["result"] == "Passed"
    assert d.status["completionTime"] == "2026-01-02T03:10:01Z"
    assert _cond(d.status, "Succeeded")["status"] == "True" and _cond(d.status, "Ready")["status"] == "True"
    # Settled: the next reconcile reads nothing more and deletes nothing more.
    assert ctl.settled(_after(d, started))


def test_dask_successful_without_summary_fails(tj) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    d = ctl.decide(started, _daskjob("cancer-dask-g1", "Successful"), [], ON_DASK, NOW)
    assert d.status["phase"] == "Failed" and _cond(d.status, "Failed")["reason"] == "NoSummary"


def test_dask_retryable_failure_starts_a_new_attempt_within_backoff(tj) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    failed = _daskjob("cancer-dask-g1", "Failed")
    crash = {"reason": "Error", "message": "KilledWorker: worker died"}
    d = ctl.decide(started, failed, [_runner(crash, 1)], ON_DASK, NOW)
    assert d.delete is failed and d.job is not None and d.job["metadata"]["name"] == "cancer-dask-g1-r1"
    assert d.status["phase"] == "Pending" and d.status["jobName"] == "cancer-dask-g1-r1"
    assert "KilledWorker" in _cond(d.status, "Ready")["message"]
    retried = _after(d, started)
    assert ctl.current_child_name(retried) == "cancer-dask-g1-r1"
    # backoffLimit 1: the second failure is the last.
    again = ctl.decide(retried, _daskjob("cancer-dask-g1-r1", "Failed"), [_runner(crash, 1)], ON_DASK, NOW)
    assert again.status["phase"] == "Failed" and again.job is None and again.delete is not None
    failed_cond = _cond(again.status, "Failed")
    assert failed_cond["reason"] == "BackoffLimitExceeded" and "2 attempts failed" in failed_cond["message"]


@pytest.mark.parametrize(("summary", "code", "reason"), [
    ({"reason": "InvalidSpec", "message": "bad params"}, 2, "InvalidSpec"),
    ({"reason": "GateFailed", "message": "accuracy 0.5 < 0.9",
      "gate": {"result": "Failed", "metric": "accuracy", "value": 0.5, "bound": 0.9}, "metrics": {"accuracy": 0.5}}, 3, "GateFailed"),
])
def test_dask_permanent_failure_never_retries(tj, summary, code, reason) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    d = ctl.decide(started, _daskjob("cancer-dask-g1", "Failed"), [_runner(summary, code)], ON_DASK, NOW)
    assert d.status["phase"] == "Failed" and d.job is None and d.delete is not None
    assert _cond(d.status, "Failed")["reason"] == reason
    if code == 3:
        assert d.status["gate"]["result"] == "Failed" and d.status["metrics"] == {"accuracy": 0.5}


def test_dask_an_out_of_memory_runner_says_so_and_is_retried(tj) -> None:
    tj["spec"]["backoffLimit"] = 1
    first = ctl.decide(tj, None, [], ON_DASK, NOW)
    tj = _after(first, tj)
    runner = _runner(None, 137)
    runner["status"]["containerStatuses"][0]["state"]["terminated"].update(reason="OOMKilled", message='{"event": "split"}')
    retry = ctl.decide(tj, _daskjob("cancer-dask-g1", "Failed"), [runner], ON_DASK, NOW)
    assert retry.job["metadata"]["name"] == "cancer-dask-g1-r1"
    assert "OOMKilled" in _cond(retry.status, "Ready")["message"]
    tj = _after(retry, tj)
    last = ctl.decide(tj, _daskjob("cancer-dask-g1-r1", "Failed"), [runner], ON_DASK, NOW + timedelta(minutes=1))
    ready = _cond(last.status, "Ready")
    assert last.status["phase"] == "Failed" and ready["reason"] == "BackoffLimitExceeded"
    assert "2 attempts failed; last: the trainer used more than" in ready["message"]


def test_dask_deadline_is_the_trainingjobs(tj) -> None:
    tj["spec"]["activeDeadlineSeconds"] = 60
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    running = _daskjob("cancer-dask-g1", "Running")
    assert ctl.decide(started, running, [], ON_DASK, NOW + timedelta(seconds=59)).status["phase"] == "Running"
    d = ctl.decide(started, running, [], ON_DASK, NOW + timedelta(seconds=61))
    assert d.status["phase"] == "Failed" and d.delete is running
    assert _cond(d.status, "Failed")["reason"] == "DeadlineExceeded"


def test_dask_new_generation_starts_from_the_first_attempt(tj) -> None:
    started = _after(ctl.decide(tj, None, [], ON_DASK, NOW), tj)
    retried = _after(ctl.decide(started, _daskjob("cancer-dask-g1", "Failed"), [_runner(None, 1)], ON_DASK, NOW), started)
    retried["metadata"]["generation"] = 2
    assert ctl.current_child_name(retried) == "cancer-dask-g2"
    d = ctl.decide(retried, None, [], ON_DASK, NOW)
    assert d.job["metadata"]["name"] == "cancer-dask-g2"


def test_dask_invalid_spec_creates_nothing(tj) -> None:
    tj["spec"]["estimator"]["class"] = "sklearn.ensemble.RandomForestClassifier"
    d = ctl.decide(tj, None, [], ON_DASK, NOW)
    assert d.job is None and d.status["phase"] == "Failed"
    assert "spec.estimator.class" in _cond(d.status, "Failed")["message"]


def test_dask_job_event_wakes_its_trainingjob() -> None:
    obj = {"kind": "DaskJob", "metadata": {"name": "cancer-dask-g1", "namespace": "ml",
                                            "labels": {"mlops.dev/training-job": "cancer-dask"}}}
    keys = affected("DaskJob", obj, deployments_of_model=lambda *_: [], policies_of_deployment=lambda *_: [])
    assert keys == {("TrainingJob", "ml", "cancer-dask")}
