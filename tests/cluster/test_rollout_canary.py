"""Canary and shadow rollouts on the cluster (issue 19): real pods, the champion's router, live feedback.

They run after test_rollout.py (name order) on the session's release and its
``iris`` ModelDeployment, and put it back to ``replace`` on the newest
passing version afterwards.

- a canary with a deliberately worse challenger (a one-split tree) is rolled
  back by the operator, with no human step and no request failing, while a
  load runs through the Service and a labeller sends true labels back;
- a shadow challenger never changes what a client receives: every answer
  comes from the champion's version, and the challenger still saw the traffic.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from sklearn.datasets import load_iris

from tests.cluster.load import Load
from tests.cluster.test_install import (
    ANSWERS, NAMESPACE, ROOT, SERVING_TIMEOUT, TRAINING_TIMEOUT, V1_BODY, explained, get_json, iris_training_job, post,
    wait_until,
)
from tests.cluster.test_rollout import rolled_out
from tests.cluster.test_smoke import kubectl

WORSE_JOB = "iris-stump"
SHADOW_JOB = "iris-shadow"
LOAD_SECONDS = 240
DECISION_TIMEOUT = 180
CANARY = {"strategy": "canary", "steps": [50, 100], "stepDuration": "10s",
          "analysis": {"minSamples": 60, "maxSamples": 600, "margin": 0.05}}


def _worse_job(name: str) -> dict:
    tj = iris_training_job(name, params={"max_depth": 1, "random_state": 0})
    tj["spec"]["estimator"] = {"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1, "random_state": 0}}
    tj["spec"]["qualityGate"] = {"metric": "accuracy", "minimum": 0.5}  # passes its gate, and is still far worse
    return tj


def _set_rollout(cluster, rollout: dict | None) -> None:
    kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps({"spec": {"rollout": rollout, "version": "latest"}}))


def _train(cluster, tj: dict) -> str:
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(tj))
    name = tj["metadata"]["name"]
    status = wait_until(lambda: (s := get_json(cluster, "trainingjob", name).get("status") or {}).get("phase")
                        in ("Succeeded", "Failed") and s, TRAINING_TIMEOUT, f"TrainingJob {name} to finish")
    assert status["phase"] == "Succeeded", status
    return status["modelVersion"]


def settled_champion(cluster) -> str:
    """The version the ModelDeployment serves once nothing moves: the newest succeeded iris run, fully rolled out.

    test_rollout's module ends by deleting its iris-v2 run, so the ModelDeployment may still be rolling back to
    iris-v1 when these tests start; a champion read before that would change under the test.
    """
    def settled() -> str | None:
        runs = [t for t in get_json(cluster, "trainingjobs")["items"]
                if t["spec"].get("model") == "iris" and (t.get("status") or {}).get("phase") == "Succeeded"
                and not t["metadata"].get("deletionTimestamp")]
        newest = max(runs, key=lambda t: t["status"].get("completionTime") or "")["status"]["modelVersion"] if runs else None
        served = get_json(cluster, "modeldeployment", "iris")["status"].get("modelVersion")
        return served if served == newest and rolled_out(cluster, served) else None

    return wait_until(settled, SERVING_TIMEOUT, "the ModelDeployment settled on the newest run")


def _routes(cluster) -> bool:
    """The champion's Deployment has its router (set once the challenger's Service has an address)."""
    (container,) = get_json(cluster, "deployment", "iris")["spec"]["template"]["spec"]["containers"]
    return "--route-to" in container.get("args", [])


class Labeller:
    """Predicts iris rows through the Service and sends each true label back, until stopped (bounded)."""

    def __init__(self, base: str, max_seconds: float) -> None:
        data = load_iris()
        self.rows, self.labels = data.data.tolist(), [str(data.target_names[k]) for k in data.target]
        self.base, self.deadline = base, time.monotonic() + max_seconds
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Labeller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            batch = [(i + k) % len(self.rows) for k in range(10)]
            i += 10
            try:
                out = post(f"{self.base}/v1/models/iris:predict", {"instances": [self.rows[j] for j in batch]})
                post(f"{self.base}/v1/models/iris/feedback",
                     {"feedback": [{"id": pid, "label": self.labels[j]} for pid, j in zip(out["ids"], batch)]})
                self.sent += len(batch)
            except Exception as exc:  # noqa: BLE001 - a failed request is the test's finding
                self.errors.append(repr(exc))


@pytest.fixture(scope="module")
def no_drift_policy(cluster, served):
    """examples/iris' DriftPolicy away for the module, back afterwards.

    The load sends the same two rows thousands of times: real data drift to the
    policy, whose retrain would supersede the challenger under test.
    """
    kubectl(cluster, "delete", "driftpolicy", "iris", "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s", timeout=150)
    yield
    kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "iris" / "driftpolicy.yaml"))


@pytest.fixture
def rollout_reset(cluster, served, no_drift_policy):
    """Back to replace (the example's default) and the newest passing version after each test."""
    yield
    _set_rollout(cluster, None)
    for name in (WORSE_JOB, SHADOW_JOB):
        kubectl(cluster, "delete", "trainingjob", name, "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s", timeout=150)


def test_canary_worse_challenger_is_rolled_back_with_no_request_failing(cluster, served, rollout_reset, capsys) -> None:
    with explained(cluster):
        champion = settled_champion(cluster)
        _set_rollout(cluster, CANARY)
        kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"version": champion}}))  # hold the champion while the stump trains
        worse = _train(cluster, _worse_job(WORSE_JOB))
        with Load(f"{served}/v1/models/iris:predict", V1_BODY, ANSWERS, max_seconds=LOAD_SECONDS) as load, \
                Labeller(served, LOAD_SECONDS) as labeller:
            wait_until(lambda: len(load.outcomes) >= 20, 30, "the load's first answers", interval=0.2)
            kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
                    "-p", json.dumps({"spec": {"version": "latest"}}))
            status = wait_until(lambda: ((s := get_json(cluster, "modeldeployment", "iris")["status"]).get("rollout") or {})
                                .get("phase") in ("RolledBack", "Promoted") and s, DECISION_TIMEOUT, "the canary's decision")
            wait_until(lambda: rolled_out(cluster, champion), SERVING_TIMEOUT, f"{champion} alone again")
        ro = status["rollout"]
        assert ro["challenger"] == worse and ro["phase"] == "RolledBack" and ro["reason"] == "Worse", ro
        assert status["rejectedVersions"][0] == worse and status["modelVersion"] == champion
        # The Load also checks the answers of V1_BODY, which the stump gets wrong while it answers its share:
        # those count as wrong answers, not as failed requests. No request may fail.
        failed = [o for o in load.failures if not (o.error or "").startswith("wrong answer")]
        assert not failed, f"{load.summary()}; first failures: {failed[:5]}"
        assert set(load.versions()) <= {champion, worse}, load.summary()
        assert not labeller.errors, labeller.errors[:5]
        assert get_json(cluster, "deployments", "-l", "app.kubernetes.io/component=serving-challenger")["items"] == []
    with capsys.disabled():
        print(f"\ncluster canary rolled back: {ro['message']}; {load.summary()}; {labeller.sent} labels")


def test_shadow_challenger_never_changes_what_a_client_receives(cluster, served, rollout_reset, capsys) -> None:
    with explained(cluster):
        champion = settled_champion(cluster)
        _set_rollout(cluster, {"strategy": "shadow", "stepDuration": "10m", "analysis": {"minSamples": 100000,
                                                                                       "maxSamples": 100000}})
        kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"version": champion}}))
        shadow = _train(cluster, _worse_job(SHADOW_JOB))
        kubectl(cluster, "patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"version": "latest"}}))
        wait_until(lambda: get_json(cluster, "deployments", "iris-challenger").get("status", {}).get("readyReplicas"),
                   SERVING_TIMEOUT, "the shadow challenger's pods")
        wait_until(lambda: _routes(cluster) and rolled_out(cluster, champion), SERVING_TIMEOUT,
                   "the champion's pods with the router")
        with Load(f"{served}/v1/models/iris:predict", V1_BODY, ANSWERS, max_seconds=60) as load:
            wait_until(lambda: len(load.outcomes) >= 200, 60, "200 answers", interval=0.5)
        assert not load.failures, f"{load.summary()}; first failures: {load.failures[:5]}"
        assert load.versions() == [champion], load.summary()  # every answer is the champion's, never the shadow's
        # The copies reached the challenger: its own counters, scraped into the rollout's evidence (each reconcile).
        status = wait_until(lambda: ((s := get_json(cluster, "modeldeployment", "iris")["status"]).get("rollout") or {})
                            .get("challengerEvidence", {}).get("requests", 0) > 0 and s, 90, "the challenger's evidence")
        ro = status["rollout"]
        assert ro["challenger"] == shadow and ro["phase"] == "Analysing" and status["modelVersion"] == champion
    with capsys.disabled():
        print(f"\ncluster shadow: {load.summary()}; challenger answered {ro['challengerEvidence']['requests']} copies")
