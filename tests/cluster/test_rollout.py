"""Serving under load on the cluster (issue 14, tests 4 and 5): a rollout and a lost pod cost no request.

A few host threads (tests/cluster/load.py) send V1 predictions to the ``iris``
Service's ClusterIP, a new connection per request, while the
ModelDeployment rolls to a new version or one of its pods is deleted.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.load import Load
from tests.cluster.test_install import (
    ANSWERS, NAMESPACE, SERVING_TIMEOUT, TRAINING_K8S_JOB, TRAINING_TIMEOUT, V1_BODY, explained, get_json, iris_training_job,
    wait_until,
)
from tests.cluster.test_smoke import kubectl

NEW_JOB = "iris-v2"
NEW_VERSION = "iris-v2-g1"
LOAD_SECONDS = 120  # the load's own bound; a rollout of two pods takes well under a minute warm
WARM_REQUESTS = 20  # answers seen before the change, so the load is known to flow
SETTLE_SECONDS = 3  # load kept after the last old pod is gone: late failures show up too

NEW_TRAINING_JOB = iris_training_job(NEW_JOB, params={"n_estimators": 50, "max_depth": 4, "random_state": 1})


@pytest.fixture(scope="module")
def second_job(cluster, served):
    """iris-v2 exists for the module; deleted at its end (while the operator still runs)."""
    yield NEW_JOB
    kubectl(cluster, "delete", "trainingjob", NEW_JOB, "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s",
            timeout=150)


def serving_pods(cluster) -> list[dict]:
    # The champion's pods only (its Deployment's selector): a rollout's challenger pods carry the same
    # mlops.dev/model-deployment label under another component.
    return get_json(cluster, "pods", "-l", "app.kubernetes.io/component=serving,mlops.dev/model-deployment=iris")["items"]


def rolled_out(cluster, version: str, replicas: int = 2):
    """Every pod of the Deployment serves ``version``, is Ready, and no other pod (not even a terminating one) is left."""
    dep = get_json(cluster, "deployment", "iris")
    st = dep.get("status") or {}
    if dep["spec"]["template"]["metadata"]["annotations"].get("mlops.dev/version") != version:
        return None
    if st.get("observedGeneration", 0) < dep["metadata"]["generation"]:
        return None
    if not (st.get("updatedReplicas") == st.get("readyReplicas") == st.get("availableReplicas") == st.get("replicas")
            == replicas):
        return None
    pods = serving_pods(cluster)
    if len(pods) != replicas or any(p["metadata"].get("deletionTimestamp") for p in pods):
        return None
    return pods


def set_version(cluster, version: str) -> None:
    kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps({"spec": {"version": version}}))


def test_a_rollout_under_load_fails_no_request(cluster, served, second_job, capsys) -> None:
    """Readiness gating, maxUnavailable 0 and a drain longer than the endpoints' update: zero failed requests."""
    with explained(cluster):
        # Hold the current version while iris-v2 trains, so the load spans the rollout and not the training.
        set_version(cluster, TRAINING_K8S_JOB)
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(NEW_TRAINING_JOB))
        wait_until(lambda: (s := (get_json(cluster, "trainingjob", NEW_JOB).get("status") or {}).get("phase"))
                   == "Succeeded" or (s == "Failed" and pytest.fail(f"{NEW_JOB} failed")), TRAINING_TIMEOUT,
                   f"TrainingJob {NEW_JOB} Succeeded")
        assert rolled_out(cluster, TRAINING_K8S_JOB), "the pinned ModelDeployment moved before it was told to"

        started = time.monotonic()
        with Load(f"{served}/v1/models/iris:predict", V1_BODY, ANSWERS, max_seconds=LOAD_SECONDS) as load:
            wait_until(lambda: len(load.outcomes) >= WARM_REQUESTS, 30, "the load's first answers", interval=0.2)
            set_version(cluster, "latest")  # back to the example's spec: the newest passed model, iris-v2
            pods = wait_until(lambda: rolled_out(cluster, NEW_VERSION), SERVING_TIMEOUT, f"a rollout to {NEW_VERSION}")
            rolled = time.monotonic()
            time.sleep(SETTLE_SECONDS)  # not a wait for a state: the load's tail, after the last old pod left
        elapsed = rolled - started
        print(load.summary())
        assert not load.failures, f"{load.summary()}; first failures: {load.failures[:5]}"
        assert load.versions() == [TRAINING_K8S_JOB, NEW_VERSION], load.summary()
        tail = [o.version for o in load.outcomes if o.at > rolled]
        assert tail and set(tail) == {NEW_VERSION}, load.summary()
        assert {p["metadata"]["labels"].get("mlops.dev/version") for p in pods} == {NEW_VERSION}

        status = get_json(cluster, "modeldeployment", "iris")["status"]
        assert status["modelVersion"] == NEW_VERSION
        history = [h["version"] for h in status.get("history") or []]
        assert history[:1] == [NEW_VERSION] and TRAINING_K8S_JOB in history, status.get("history")
    with capsys.disabled():
        print(f"\ncluster rollout under load: {load.summary()}; rollout {elapsed:.1f}s")


def test_a_serving_pod_deleted_under_load_fails_no_request(cluster, served, capsys) -> None:
    """A deleted serving pod is replaced and costs no request.

    The bound is zero: the pod leaves the Service's endpoints as soon as it is
    marked for deletion, and keeps listening through its preStop delay (5 s)
    while kube-proxy catches up; the requests it already took it finishes in
    its drain. The Deployment's other replica serves meanwhile.
    """
    with explained(cluster):
        before = wait_until(lambda: rolled_out(cluster, get_json(cluster, "modeldeployment", "iris")["status"]
                                               ["modelVersion"]), SERVING_TIMEOUT, "a settled ModelDeployment")
        victim = before[0]["metadata"]["name"]
        started = time.monotonic()
        with Load(f"{served}/v1/models/iris:predict", V1_BODY, ANSWERS, max_seconds=LOAD_SECONDS) as load:
            wait_until(lambda: len(load.outcomes) >= WARM_REQUESTS, 30, "the load's first answers", interval=0.2)
            kubectl(cluster, "delete", "pod", victim, "-n", NAMESPACE, "--wait=false")

            def replaced():
                pods = rolled_out(cluster, get_json(cluster, "modeldeployment", "iris")["status"]["modelVersion"])
                return pods if pods and victim not in {p["metadata"]["name"] for p in pods} else None

            after = wait_until(replaced, SERVING_TIMEOUT, f"a replacement for {victim}, and {victim} gone")
            replaced_at = time.monotonic()
            time.sleep(SETTLE_SECONDS)  # not a wait for a state: the load's tail, on the new pair of pods
        print(load.summary())
        assert not load.failures, f"{load.summary()}; first failures: {load.failures[:5]}"
        assert len([o for o in load.outcomes if o.at > replaced_at]) > 0, load.summary()
        assert len(after) == 2 and victim not in {p["metadata"]["name"] for p in after}
    with capsys.disabled():
        print(f"\ncluster serving pod deleted under load: {load.summary()}; replaced in {replaced_at - started:.1f}s")
