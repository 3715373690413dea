"""TrainingJob decisions: the Job built for a generation and the status read back from it."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers import trainingjob as ctl
from mlops_operator.controllers.settings import Settings
from tests.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def tj() -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    obj["metadata"].update(uid="uid-1", generation=1, namespace="ml")
    return obj


def _job(status: dict) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "iris-v1-g1"}, "status": status}


def _pod(message: str, exit_code: int = 0) -> dict:
    term = {"exitCode": exit_code, "finishedAt": "2026-01-02T03:10:00Z", "message": message}
    return {"status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]}}


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_new_generation_asks_for_its_job(tj) -> None:
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job is not None and d.job["metadata"]["name"] == "iris-v1-g1"
    assert d.status["phase"] == "Pending" and d.status["modelVersion"] == "iris-v1-g1"
    assert _cond(d.status, "Ready")["status"] == "False" and _cond(d.status, "Reconciling")["status"] == "True"
    assert [e.reason for e in d.events] == ["JobCreated"]


def test_job_spec(tj) -> None:
    job = ctl.build_job(tj, Settings(image="example/mlops:1", service_account="trainer"))
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "name": "iris-v1", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }
    assert job["metadata"]["labels"]["mlops.dev/model"] == "iris"
    assert "app.kubernetes.io/instance" not in job["metadata"]["labels"]
    spec = job["spec"]
    assert spec["backoffLimit"] == 1 and spec["activeDeadlineSeconds"] == 3600 and spec["ttlSecondsAfterFinished"] == 86400
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "example/mlops:1" and pod["serviceAccountName"] == "trainer"
    assert c["args"][:3] == ["train", "--spec", "/etc/mlops/trainingjob.json"]
    assert "--champion" not in c["args"]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    doc = json.loads(spec["template"]["metadata"]["annotations"][ctl.SPEC_ANNOTATION])
    assert doc["spec"] == tj["spec"] and doc["metadata"]["namespace"] == "ml"


def test_job_passes_restricted_pod_security(tj) -> None:
    assert restricted_violations(ctl.build_job(tj, Settings())) == []


def test_the_pss_helper_catches_a_root_pod(tj) -> None:
    job = ctl.build_job(tj, Settings())
    bad = copy.deepcopy(job)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    bad["spec"]["template"]["spec"]["securityContext"] = {}
    bad["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    problems = "\n".join(restricted_violations(bad))
    for word in ("privileged", "allowPrivilegeEscalation", "drop ALL", "runAsNonRoot", "seccompProfile", "hostPath"):
        assert word in problems


def test_champion_passed_only_when_the_gate_asks(tj) -> None:
    tj["spec"]["qualityGate"]["mustBeat"] = "current"
    job = ctl.build_job(tj, Settings(), champion="iris-v0-g3")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--champion") + 1] == "iris-v0-g3"


def test_feedback_mounted_read_only_when_asked(tj) -> None:
    tj["spec"]["data"]["includeFeedback"] = True
    c = ctl.build_job(tj, Settings())["spec"]["template"]["spec"]["containers"][0]
    assert "--feedback" in c["args"]
    assert {"name": "feedback", "mountPath": "/var/lib/mlops/feedback", "readOnly": True} in c["volumeMounts"]


def test_a_pvc_source_mounts_its_claim_read_only_where_the_trainer_reads_it(tj) -> None:
    tj["spec"]["data"]["source"] = "pvc://training-data/sets/iris.csv"
    pod = ctl.build_job(tj, Settings())["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "training-data", "readOnly": True}} in pod["volumes"]
    c = pod["containers"][0]
    assert {"name": "data", "mountPath": "/mnt/pvc/training-data", "readOnly": True} in c["volumeMounts"]
    assert "--pvc-root" not in c["args"]  # the trainer's default, /mnt/pvc
    assert restricted_violations(pod) == []
    tj["spec"]["data"]["source"] = "sklearn://iris"
    assert "data" not in {v["name"] for v in ctl.build_job(tj, Settings())["spec"]["template"]["spec"]["volumes"]}


def _live_pod(phase: str = "Running", *, waiting: dict | None = None, scheduled: dict | None = None) -> dict:
    state = {"waiting": waiting} if waiting else ({"running": {"startedAt": "2026-01-02T03:05:01Z"}} if phase == "Running" else {})
    status: dict = {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}] if state else []}
    if scheduled:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", **scheduled}]
    return {"metadata": {"name": "iris-v1-g1-abcde"}, "status": status}


def test_running(tj) -> None:
    job = _job({"active": 1, "startTime": "2026-01-02T03:05:00Z"})
    d = ctl.decide(tj, job, [_live_pod()], Settings(), NOW)
    assert d.job is None and d.status["phase"] == "Running" and d.status["startTime"] == "2026-01-02T03:05:00Z"
    assert [e.reason for e in d.events] == ["Running"] and d.requeue_after is None


def test_an_active_job_whose_pod_waits_is_pending_not_running(tj) -> None:
    # The Job controller counts a pod that is not scheduled yet as active.
    job = _job({"active": 1, "startTime": "2026-01-02T03:05:00Z"})
    d = ctl.decide(tj, job, [_live_pod("Pending")], Settings(), NOW)
    assert d.status["phase"] == "Pending" and _cond(d.status, "Ready")["reason"] == "Pending"
    assert d.events == [] and d.requeue_after is None  # its pods' changes wake it up, not a timer


def test_pending_says_why(tj) -> None:
    job = _job({"active": 1})
    unschedulable = _live_pod("Pending", scheduled={"reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."})
    d = ctl.decide(tj, job, [unschedulable], Settings(), NOW)
    ready = _cond(d.status, "Ready")
    assert d.status["phase"] == "Pending" and ready["reason"] == "Unschedulable" and "Insufficient cpu" in ready["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Unschedulable")]
    tj["status"] = d.status
    assert ctl.decide(tj, job, [unschedulable], Settings(), NOW).events == [], "one event per transition"
    pulling = _live_pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""})
    d = ctl.decide(tj, job, [pulling], Settings(), NOW)
    assert _cond(d.status, "Ready")["reason"] == "ImagePullBackOff" and "pulling image" in _cond(d.status, "Ready")["message"]


SUMMARY = {
    "version": "iris-v1-g1", "uri": "store://ml/iris/iris-v1-g1", "sha256": "ab" * 32, "task": "classification",
    "metrics": {"accuracy": 0.973, "f1_macro": 0.97}, "dataDigest": "sha256:00", "scikitLearn": "1.5.2", "inference": "onnx",
    "gate": {"result": "Passed", "metric": "accuracy", "value": 0.973, "bound": 0.9},
}


def test_succeeded_reads_the_termination_summary(tj) -> None:
    job = _job({"succeeded": 1, "completionTime": "2026-01-02T03:10:01Z", "conditions": [{"type": "Complete", "status": "True"}]})
    d = ctl.decide(tj, job, [_pod(json.dumps(SUMMARY))], Settings(), NOW)
    s = d.status
    assert s["phase"] == "Succeeded" and s["artifact"] == {"uri": SUMMARY["uri"], "sha256": SUMMARY["sha256"]}
    assert s["metrics"]["accuracy"] == pytest.approx(0.973) and s["gate"]["result"] == "Passed"
    assert s["completionTime"] == "2026-01-02T03:10:01Z" and s["lineage"]["scikitLearn"] == "1.5.2"
    assert s["lineage"]["inference"] == "onnx"
    assert _cond(s, "Ready")["status"] == "True" and "accuracy 0.973" in _cond(s, "Ready")["message"]
    assert _cond(s, "Reconciling")["status"] == "False" and _cond(s, "Stalled")["status"] == "False"
    assert [e.reason for e in d.events] == ["Succeeded"]
    tj["status"] = s
    again = ctl.decide(tj, job, [_pod(json.dumps(SUMMARY))], Settings(), NOW)
    assert again.status == s and again.events == [] and again.job is None


def test_gate_failure_is_reported_with_the_trainers_reason(tj) -> None:
    summary = {"reason": "GateFailed", "message": "accuracy 0.62 < minimum 0.9",
               "gate": {"result": "Failed", "metric": "accuracy", "value": 0.62, "bound": 0.9}}
    job = _job({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                              "lastTransitionTime": "2026-01-02T03:10:00Z"}]})
    d = ctl.decide(tj, job, [_pod(json.dumps(summary), exit_code=3)], Settings(), NOW)
    assert d.status["phase"] == "Failed" and d.status["gate"]["result"] == "Failed"
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "GateFailed" and "0.62" in ready["message"]
    assert _cond(d.status, "Stalled")["status"] == "True"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "GateFailed")]


@pytest.mark.parametrize("reason", ["BackoffLimitExceeded", "DeadlineExceeded"])
def test_job_controller_failures(tj, reason: str) -> None:
    job = _job({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": "x"}]})
    d = ctl.decide(tj, job, [], Settings(), NOW)
    assert d.status["phase"] == "Failed" and _cond(d.status, "Ready")["reason"] == reason


def test_an_out_of_memory_trainer_is_reported_as_oomkilled_with_what_to_do(tj) -> None:
    tj["spec"]["resources"] = {"limits": {"memory": "512Mi"}}
    # The kubelet's account of a container the kernel killed: the message is the log's tail (FallbackToLogsOnError).
    killed = _pod('{"event": "loaded_data", "level": "info", "reason": "not a summary"}', exit_code=137)
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    job = _job({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "Job has reached the specified backoff limit"}]})
    d = ctl.decide(tj, job, [killed], Settings(), NOW)
    ready = _cond(d.status, "Ready")
    assert d.status["phase"] == "Failed" and ready["reason"] == "OOMKilled"
    assert "more than its memory limit (512Mi)" in ready["message"] and "spec.distributed" in ready["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "OOMKilled")]
    # Any other death keeps the Job controller's reason: a log line is never taken for the trainer's summary.
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "Error"
    assert _cond(ctl.decide(tj, job, [killed], Settings(), NOW).status, "Ready")["reason"] == "BackoffLimitExceeded"


@pytest.mark.parametrize("pods", [[], [{"metadata": {"name": "other"}, "status": {"phase": "Failed"}}]], ids=["pods gone", "another pod"])
def test_a_succeeded_run_stays_succeeded_when_its_pods_are_gone(tj, pods) -> None:
    # Pod garbage collection, `kubectl delete pod` or a cascading delete can remove the pods
    # while the Job stays: the recorded outcome must not be re-derived from what is left.
    job = _job({"succeeded": 1, "completionTime": "2026-01-02T03:10:01Z", "conditions": [{"type": "Complete", "status": "True"}]})
    tj["status"] = ctl.decide(tj, job, [_pod(json.dumps(SUMMARY))], Settings(), NOW).status
    d = ctl.decide(tj, job, pods, Settings(), NOW)
    assert d.status == tj["status"] and d.events == [] and d.job is None
    assert d.status["phase"] == "Succeeded" and d.status["artifact"]["sha256"] == SUMMARY["sha256"]


def test_a_failed_run_stays_failed_for_its_generation(tj) -> None:
    job = _job({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    tj["status"] = ctl.decide(tj, job, [], Settings(), NOW).status
    complete = _job({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert ctl.decide(tj, complete, [_pod(json.dumps(SUMMARY))], Settings(), NOW).status == tj["status"]


def test_finished_run_whose_job_expired_is_left_alone(tj) -> None:
    job = _job({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    tj["status"] = ctl.decide(tj, job, [_pod(json.dumps(SUMMARY))], Settings(), NOW).status
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job is None and d.status == tj["status"]


def test_new_generation_starts_a_new_job(tj) -> None:
    job = _job({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    tj["status"] = ctl.decide(tj, job, [_pod(json.dumps(SUMMARY))], Settings(), NOW).status
    tj["metadata"]["generation"] = 2
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job["metadata"]["name"] == "iris-v1-g2" and d.status["phase"] == "Pending"
    assert "artifact" not in d.status and d.status["modelVersion"] == "iris-v1-g2"
    assert {c["type"] for c in d.status["conditions"]} == {"Ready", "Reconciling", "Stalled"}  # g1's Succeeded is gone


def test_invalid_spec_makes_no_job_and_names_the_field(tj) -> None:
    tj["spec"]["qualityGate"] = {"metric": "rmse", "minimum": 3}
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job is None and d.status["phase"] == "Failed"
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.qualityGate.minimum" in ready["message"]


def test_condition_transition_time_only_moves_on_flips(tj) -> None:
    first = ctl.decide(tj, _job({"active": 1}), [_live_pod()], Settings(), NOW)
    tj["status"] = first.status
    later = datetime(2026, 1, 2, 4, 0, 0, tzinfo=timezone.utc)
    second = ctl.decide(tj, _job({"active": 1}), [_live_pod()], Settings(), later)
    assert _cond(second.status, "Ready")["lastTransitionTime"] == _cond(first.status, "Ready")["lastTransitionTime"]


def test_a_spec_too_large_for_the_pod_template_is_refused_by_us_not_by_the_api_server(tj) -> None:
    tj["spec"]["estimator"]["params"]["class_weight"] = {str(i): 1.0 for i in range(30_000)}  # ~300 KB of JSON
    d = ctl.decide(tj, None, [], Settings(), NOW)
    assert d.job is None and d.status["phase"] == "Failed"
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "InvalidSpec" and "KiB as JSON" in ready["message"] and _cond(d.status, "Stalled")["status"] == "True"
