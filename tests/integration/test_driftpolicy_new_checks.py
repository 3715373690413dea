"""labelDrift and multivariateDrift end to end: a real kube-apiserver, a real model server on 127.0.0.1.

The iris model is trained by the real trainer (its reference profiles the
training labels and the pair projections), served with feedback on, and the
DriftPolicy reconcile scrapes the server's ``/metrics`` through the
cluster-side HTTP sensors, as in ``test_driftpolicy.py`` (whose helpers this
module uses). Two changes the per-feature tests cannot see:

* the concept moves: the same inputs, but the labels users send back call
  every versicolor a virginica;
* two features stop moving together: petal width is shuffled across rows,
  so each feature's distribution is what it was and their correlation is
  gone.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlops_operator.k8s.client import KubeCluster
from mlops_operator.controllers.cluster import DRIFT_POLICIES

from tests.integration.test_driftpolicy import (
    ROOT,
    STORE_NS,
    Clock,
    Server,
    _apply,
    _example,
    _reconcile_fresh,
    _serving_world,
)

CHECKS = [{"type": "dataDrift"}, {"type": "predictionDrift"}, {"type": "labelDrift"}, {"type": "multivariateDrift"}]


@pytest.fixture(scope="module")
def served_with_feedback():
    from mlops_operator.runtime.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
        tj["metadata"].update(namespace=STORE_NS, generation=1)
        train(tj, store, log=lambda *a, **k: None)
        server = Server(store, feedback=True)
        try:
            yield store, server
        finally:
            server.stop()


def _iris_rows(rows: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Rows drawn from iris (with a little noise) and their true species."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(iris.data), rows)
    x = np.round(iris.data[idx] + rng.normal(0, 0.05, (rows, 4)), 3)
    return x, [str(iris.target_names[t]) for t in iris.target[idx]]


def _policy_with_new_checks(control_plane, namespace: str) -> None:
    policy = _example("driftpolicy.yaml")
    policy["spec"].update(window={"minSamples": 200}, checks=CHECKS, action="alert")
    policy["spec"].pop("retrain", None)
    _apply(control_plane, namespace, policy)


def _check(control_plane, namespace: str, store: Path, clock: Clock):
    clock.tick()
    return _reconcile_fresh(control_plane, namespace, store, clock)


def _outcomes(result) -> dict[str, str]:
    return {c.type: c.outcome for c in result.check.checks}


def test_labels_that_change_meaning_are_label_drift(crds, namespace, served_with_feedback) -> None:
    store, server = served_with_feedback
    control_plane = crds
    _serving_world(control_plane, namespace, server.port)
    _policy_with_new_checks(control_plane, namespace)
    clock = Clock()
    assert _reconcile_fresh(control_plane, namespace, store, clock).check.verdict == "NotEnoughData"  # starts the window

    x, truth = _iris_rows(300, seed=1)
    server.predict(x.tolist())
    server.post("/v1/models/iris/feedback", {"feedback": [{"instance": r, "label": y} for r, y in zip(x.tolist(), truth)]})
    calm = _check(control_plane, namespace, store, clock)
    assert calm.check.verdict == "NoDrift", calm.check.message
    assert _outcomes(calm)["labelDrift"] == "ok"

    x, truth = _iris_rows(300, seed=2)
    relabelled = ["virginica" if y == "versicolor" else y for y in truth]
    server.predict(x.tolist())
    server.post("/v1/models/iris/feedback", {"feedback": [{"instance": r, "label": y} for r, y in zip(x.tolist(), relabelled)]})
    moved = _check(control_plane, namespace, store, clock)
    assert moved.check.verdict == "Drift"
    assert [c.type for c in moved.check.breaches] == ["labelDrift"], moved.check.message
    status = asyncio.run(KubeCluster(control_plane.api_client()).get(DRIFT_POLICIES, namespace, "iris"))["status"]
    label = next(s for s in status["scores"] if s["check"] == "labelDrift")
    assert label["feature"] == "label" and label["drifted"] and label["reason"] == "drift"
    assert status["window"]["counts"]["labels"]["virginica"] > status["window"]["counts"]["labels"]["setosa"]
    assert moved.check.reason == "labelDrift on 600 labelled rows"


def test_two_features_that_stop_moving_together_are_multivariate_drift(crds, namespace, served_with_feedback) -> None:
    store, server = served_with_feedback
    control_plane = crds
    _serving_world(control_plane, namespace, server.port)
    _policy_with_new_checks(control_plane, namespace)
    clock = Clock()
    assert _reconcile_fresh(control_plane, namespace, store, clock).check.verdict == "NotEnoughData"

    x, _ = _iris_rows(400, seed=3)
    server.predict(x.tolist())
    calm = _check(control_plane, namespace, store, clock)
    assert calm.check.verdict == "NoDrift", calm.check.message
    assert _outcomes(calm)["multivariateDrift"] == "ok" and _outcomes(calm)["labelDrift"] == "insufficient"

    x, _ = _iris_rows(400, seed=4)
    x[:, 3] = np.random.default_rng(5).permutation(x[:, 3])  # petal width: the same values, no longer with petal length
    server.predict(x.tolist())
    moved = _check(control_plane, namespace, store, clock)
    assert moved.check.verdict == "Drift"
    assert "multivariateDrift" in [c.type for c in moved.check.breaches], moved.check.message
    assert _outcomes(moved)["dataDrift"] == "ok", "each feature's own distribution did not move"
    status = asyncio.run(KubeCluster(control_plane.api_client()).get(DRIFT_POLICIES, namespace, "iris"))["status"]
    top = next(s for s in status["scores"] if s["check"] == "multivariateDrift")  # its most drifted projection
    assert top["drifted"] and "petal width (cm)" in top["feature"].split("~"), top
    assert set(status["window"]["counts"]["projections"]) >= {"petal length (cm)~petal width (cm)"}
