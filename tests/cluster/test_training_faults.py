"""Faults around training on the cluster (issue 14, test 5): the operator pods die while a TrainingJob runs.

The TrainingJob trains a model of its own (``iris-faults``), so no
ModelDeployment rolls because of it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.test_install import (
    NAMESPACE, OPERATOR, OPERATOR_READY_TIMEOUT, TRAINING_TIMEOUT, explained, get_json, iris_training_job, wait_until,
)
from tests.cluster.test_smoke import kubectl

JOB = "iris-faults-v1"
K8S_JOB = f"{JOB}-g1"
JOB_APPEARS_TIMEOUT = 60
OPERATOR_PODS = "app.kubernetes.io/component=operator"

TRAINING_JOB = iris_training_job(JOB, model="iris-faults")


@pytest.fixture
def training_job(cluster, installed):
    """The TrainingJob, deleted afterwards while the operator runs (its Job goes with it)."""
    yield JOB
    kubectl(cluster, "delete", "trainingjob", JOB, "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s",
            timeout=150)
    wait_until(lambda: not get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={JOB}")["items"], 120,
               f"the Jobs of {JOB} gone")


def operator_pods(cluster) -> set[str]:
    return {p["metadata"]["name"] for p in get_json(cluster, "pods", "-l", OPERATOR_PODS)["items"]}


def test_the_operator_pods_deleted_while_a_training_job_runs(cluster, installed, training_job, capsys) -> None:
    """After the operator comes back: one Job for the TrainingJob (no second run), and it ends Succeeded."""
    with explained(cluster):
        started = time.monotonic()
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(TRAINING_JOB))
        wait_until(lambda: get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={JOB}")["items"],
                   JOB_APPEARS_TIMEOUT, f"the Job of {JOB}", interval=0.2)
        old = operator_pods(cluster)
        assert old, "no operator pod"
        kubectl(cluster, "delete", "pods", "-n", NAMESPACE, "-l", OPERATOR_PODS, "--wait=false")
        phase_at_fault = (get_json(cluster, "trainingjob", JOB).get("status") or {}).get("phase")
        # The fault hit a run in progress, not a finished one.
        assert phase_at_fault != "Succeeded", phase_at_fault

        # A new set of operator pods, one of them leading again.
        wait_until(lambda: (pods := operator_pods(cluster)) and not pods & old, OPERATOR_READY_TIMEOUT,
                   "the old operator pods gone")
        kubectl(cluster, "-n", NAMESPACE, "rollout", "status", OPERATOR, f"--timeout={OPERATOR_READY_TIMEOUT}s",
                timeout=OPERATOR_READY_TIMEOUT + 30)
        new = operator_pods(cluster)
        wait_until(lambda: any((lease["spec"].get("holderIdentity") or "").startswith(tuple(new))
                               for lease in get_json(cluster, "leases")["items"]), 60,
                   "a new operator pod holding the Lease")
        back = time.monotonic()

        def finished():
            status = get_json(cluster, "trainingjob", JOB).get("status") or {}
            assert status.get("phase") != "Failed", status
            return status if status.get("phase") == "Succeeded" else None

        status = wait_until(finished, TRAINING_TIMEOUT, f"TrainingJob {JOB} Succeeded")
        done = time.monotonic()
        assert status["modelVersion"] == K8S_JOB and status["artifact"]["sha256"]
        jobs = get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={JOB}")["items"]
        assert [j["metadata"]["name"] for j in jobs] == [K8S_JOB], "a second run was started"
        assert jobs[0]["status"].get("succeeded") == 1, jobs[0]["status"]
        assert len(get_json(cluster, "pods", "-l", f"job-name={K8S_JOB}")["items"]) == 1  # and it ran once
    with capsys.disabled():
        print(f"\ncluster operator pods deleted mid-training (phase {phase_at_fault}): operator back "
              f"{back - started:.1f}s, TrainingJob Succeeded {done - started:.1f}s after apply")


APISERVER_DOWN_SECONDS = 20
AFTER_OUTAGE_JOB = "iris-faults-v2"
RESUME_TIMEOUT = 180  # the leader's exit, the kubelet's restart of it (back-off 10 s), its watches' first listing


@pytest.fixture
def after_outage_job(cluster, installed):
    yield AFTER_OUTAGE_JOB
    kubectl(cluster, "delete", "trainingjob", AFTER_OUTAGE_JOB, "-n", NAMESPACE, "--ignore-not-found",
            "--timeout=120s", timeout=150)
    wait_until(lambda: not get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={AFTER_OUTAGE_JOB}")["items"],
               120, f"the Jobs of {AFTER_OUTAGE_JOB} gone")


def test_a_training_job_created_after_an_api_server_outage_gets_its_job(cluster, installed, after_outage_job,
                                                                        capsys) -> None:
    """kube-apiserver is down for 20 s; afterwards the operator reconciles a new TrainingJob.

    The leader cannot renew its Lease during the outage, so it stops leading
    and exits (docs/operations.md, leader election); the kubelet restarts it.
    Either way, what a user sees is that new objects are reconciled again.
    Most of the wait is the cluster's: pods reach the API server through the
    ``kubernetes`` Service, and kube-proxy routes it again only some 50 s after
    the server is back here; the operator leads within seconds of that.
    """
    with explained(cluster):
        kubectl(cluster, "-n", NAMESPACE, "rollout", "status", OPERATOR, f"--timeout={OPERATOR_READY_TIMEOUT}s",
                timeout=OPERATOR_READY_TIMEOUT + 30)
        started = time.monotonic()
        cluster.plane.restart_apiserver(APISERVER_DOWN_SECONDS)
        back = time.monotonic()
        body = json.loads(json.dumps(TRAINING_JOB))
        body["metadata"]["name"] = AFTER_OUTAGE_JOB
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(body))
        jobs = wait_until(lambda: get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={AFTER_OUTAGE_JOB}")
                          ["items"], RESUME_TIMEOUT, f"the Job of {AFTER_OUTAGE_JOB}")
        got_job = time.monotonic()
        assert [j["metadata"]["name"] for j in jobs] == [f"{AFTER_OUTAGE_JOB}-g1"]

        def finished():
            status = get_json(cluster, "trainingjob", AFTER_OUTAGE_JOB).get("status") or {}
            assert status.get("phase") != "Failed", status
            return status if status.get("phase") == "Succeeded" else None

        wait_until(finished, TRAINING_TIMEOUT, f"TrainingJob {AFTER_OUTAGE_JOB} Succeeded")
        restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
                    for p in get_json(cluster, "pods", "-l", OPERATOR_PODS)["items"]}
    with capsys.disabled():
        print(f"\ncluster kube-apiserver down {APISERVER_DOWN_SECONDS}s: back {back - started:.1f}s after the stop, "
              f"Job of a new TrainingJob {got_job - back:.1f}s after; operator restarts {restarts}")
