"""The operator pods die while a drift retrain runs (issue 14, test 5): one retrain, promoted once.

A second copy of the demo's loop (model ``cancer-faults``: its own
TrainingJob, ModelDeployment and DriftPolicy, applied next to the loop
test's) is driven into drift through its Service. The moment the DriftPolicy
names its active retrain, every operator pod is deleted. The Deployment
brings new ones; the new leader has to find the retrain it did not start
(adopted from its owner reference and name if the status write was lost),
follow it to the end and promote it, without starting a second one and
without promoting twice.
"""

from __future__ import annotations

import json
import time

import pytest

from mlops_operator.local.demo import Client, Traffic, rolled_out
from tests.cluster.test_install import (
    NAMESPACE, OPERATOR, OPERATOR_READY_TIMEOUT, SERVICE_PREFIX, SERVING_TIMEOUT, TRAINING_TIMEOUT, explained, get_json,
    wait_until,
)
from tests.cluster.test_loop import (
    BASELINE_ROUNDS, LOOP_TIMEOUT, MAX_DRIFT_ROUNDS, ROUND_ROWS, cancer_jobs, delete_loop, demo_objects, status,
)
from tests.cluster.test_smoke import kubectl
from tests.cluster.test_training_faults import OPERATOR_PODS, operator_pods

MODEL = "cancer-faults"
FIRST_JOB = f"{MODEL}-v1"
# After the promotion, the policy keeps checking every 5 s; three more checks show nothing else starts.
SETTLE_SECONDS = 20


@pytest.fixture(scope="module")
def loop(cluster, installed):
    objects = demo_objects(MODEL)
    kubectl(cluster, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    yield objects
    delete_loop(cluster, MODEL)


def events(cluster, reason: str) -> list[dict]:
    """The DriftPolicy's Events of one reason (the operator posts each as an Event of its own)."""
    selector = f"involvedObject.kind=DriftPolicy,involvedObject.name={MODEL},reason={reason}"
    return get_json(cluster, "events", f"--field-selector={selector}")["items"]


def test_operator_pods_deleted_during_a_drift_retrain_promote_it_exactly_once(cluster, loop, capsys) -> None:
    traffic = Traffic(seed=1)
    with explained(cluster):
        first_tj = wait_until(lambda: (s := status(cluster, "trainingjob", FIRST_JOB)).get("phase")
                              in ("Succeeded", "Failed") and s, TRAINING_TIMEOUT, f"TrainingJob {FIRST_JOB} finished")
        assert first_tj["phase"] == "Succeeded", first_tj
        first = first_tj["modelVersion"]
        wait_until(lambda: rolled_out(status(cluster, "modeldeployment", MODEL), first), SERVING_TIMEOUT,
                   f"ModelDeployment {MODEL} serving {first}")
        service = get_json(cluster, "service", MODEL)
        assert service["spec"]["clusterIP"].startswith(SERVICE_PREFIX), service["spec"]["clusterIP"]
        client = Client(f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}", MODEL)
        for _ in range(BASELINE_ROUNDS):
            client.round(*traffic.batch(ROUND_ROWS, False))

        # Drifted traffic until the policy starts its retrain; then the fault, at once.
        retrain = None
        deadline = time.monotonic() + LOOP_TIMEOUT
        for _ in range(MAX_DRIFT_ROUNDS // 4):
            if time.monotonic() > deadline:
                break
            for _ in range(4):
                client.round(*traffic.batch(ROUND_ROWS, True))
            retrain = status(cluster, "driftpolicy", MODEL).get("activeRetrain")
            if retrain:
                break
        assert retrain, f"the DriftPolicy started no retrain within {LOOP_TIMEOUT}s: {status(cluster, 'driftpolicy', MODEL)}"
        old = operator_pods(cluster)
        faulted = time.monotonic()
        kubectl(cluster, "delete", "pods", "-n", NAMESPACE, "-l", OPERATOR_PODS, "--wait=false")
        phase_at_fault = status(cluster, "trainingjob", retrain).get("phase")
        assert phase_at_fault not in ("Succeeded", "Failed"), phase_at_fault  # the fault hit a running retrain

        wait_until(lambda: (pods := operator_pods(cluster)) and not pods & old, OPERATOR_READY_TIMEOUT,
                   "the old operator pods gone")
        kubectl(cluster, "-n", NAMESPACE, "rollout", "status", OPERATOR, f"--timeout={OPERATOR_READY_TIMEOUT}s",
                timeout=OPERATOR_READY_TIMEOUT + 30)
        back = time.monotonic()

        def promoted():
            tj = status(cluster, "trainingjob", retrain)
            assert tj.get("phase") != "Failed", tj
            version = tj.get("modelVersion")
            return version if tj.get("phase") == "Succeeded" and rolled_out(
                status(cluster, "modeldeployment", MODEL), version) else None

        version = wait_until(promoted, TRAINING_TIMEOUT + SERVING_TIMEOUT, f"retrain {retrain} promoted and rolled out")
        done = time.monotonic()
        wait_until(lambda: any(r.get("promoted") for r in status(cluster, "driftpolicy", MODEL).get("retrains") or []),
                   60, "the DriftPolicy recording the promotion")
        time.sleep(SETTLE_SECONDS)  # three more checks: nothing else may start or be promoted

        policy = status(cluster, "driftpolicy", MODEL)
        retrains = [t["metadata"]["name"] for t in cancer_jobs(cluster, MODEL) if t["metadata"]["name"] != FIRST_JOB]
        assert retrains == [retrain], f"one retrain expected: {retrains}"
        assert policy.get("retrainCount") == 1, policy
        assert [(r["name"], r["result"], r["promoted"]) for r in policy.get("retrains") or []] == [
            (retrain, "Succeeded", True)], policy.get("retrains")
        assert "activeRetrain" not in policy, policy
        assert status(cluster, "modeldeployment", MODEL).get("modelVersion") == version != first
        jobs = get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={retrain}")["items"]
        assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]  # the retrain ran once
        assert sum(e.get("count") or 1 for e in events(cluster, "Promoted")) == 1, events(cluster, "Promoted")
        assert sum(e.get("count") or 1 for e in events(cluster, "RetrainTriggered")) == 1
    with capsys.disabled():
        print(f"\ncluster operator pods deleted during retrain {retrain} (phase {phase_at_fault or 'none yet'}): "
              f"operator back {back - faulted:.1f}s later, {version} promoted {done - faulted:.1f}s after the fault")
